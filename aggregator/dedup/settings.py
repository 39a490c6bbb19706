"""The story grouper's settings: one dataclass, light to import (``config.py`` reads it for ``dedup:``)."""

from __future__ import annotations

from dataclasses import dataclass

PLACE_BATCH = 5000
"""Entries a grouping session places a batch when it places a backlog (``GroupingSession.place_all``): a batch's
texts are read once and dropped, so a first import of 50,000 never holds them all (and a session that reads ahead
reads the next batch's on the other core meanwhile). Read where it is used, so that one assignment changes it."""


@dataclass
class DedupSettings:
    """Thresholds of the story grouper; ``config.py`` builds it from the ``dedup:`` block by field name.

    Scores are in [0, 1]. The weights and thresholds were chosen on the two
    real development sets in ``../shared/data/stories-dev`` (AllSides leads
    and ECB+ full texts, each checked against the other) and the UCI
    headlines, preferring precision: a missed merge costs a duplicate line, a
    wrong one hides a story. ``docs/dedup.md`` has the figures.
    """

    window_hours: float = 72.0
    """Reports further apart in publication time than this never match."""
    join_threshold: float = 0.24
    """Least average link between a report and a story's compared members for the report to join it."""
    merge_threshold: float = 0.24
    """Least average link between two stories' members for them to be merged (a report must join both)."""
    cohesion_share: float = 0.8
    """A report joins a story only if its link is at least this share of the weakest link by which the story's
    members joined it: a newcomer must be about as close to the story as its members were to each other
    (two stories of one subject on one day stay apart). Applies from ``cohesion_min_joins`` links on."""
    cohesion_cap: float = 0.35
    """A link this strong always admits a report, however close the story's members are to each other (a story of
    syndicated copies must still take in the rewrites)."""
    cohesion_min_joins: int = 2
    """Links (joins and merges) a story needs before ``cohesion_share`` applies: one link says little."""
    min_body_chars: int = 100
    """Bodies shorter than this are treated as absent (feed teasers, empty extractions)."""
    min_fingerprint_chars: int = 400
    """Least normalised body length for the exact-body fingerprint to prove identity."""
    min_title_tokens: int = 3
    """Titles with fewer informative tokens than this never match on the title alone."""
    max_candidate_stories: int = 12
    """How many of the stories sharing the most rare-token weight are scored for each report."""
    max_members_compared: int = 12
    """How many members of a story (representative first, then newest) the average link uses."""
    min_candidate_share: float = 0.1
    """A story is scored only if the rare tokens it shares with a report weigh this share of the report's title."""
    min_representative_link: float = 0.08
    """A story whose representative scores below this is not compared further (saves time; far below join_threshold)."""
    max_token_df: float = 0.05
    """Tokens carried by more than this share of the window's reports are too common to find candidates."""
    max_posting_stories: int = 200
    """Tokens shared with more stories than this are too common to find candidates, however large the window.

    Such a token's story list is dropped; it comes back (rebuilt) once no more than this many of the
    window's reports carry the token.
    """
    max_candidate_postings: int = 1500
    """Most story postings read to find one report's candidates (its rarest tokens first): bounded work per report."""
    max_body_chars: int = 10_000
    """Only the start of a body is scored: it says what the article is about, and keeps the cost bounded."""
    max_vector_terms: int = 200
    """A text's TF-IDF vector keeps its heaviest terms only, so a report's memory stays small."""
    max_names: int = 60
    """The heaviest names and figures of a report that are compared (long articles name many in passing)."""
    lead_tokens: int = 60
    """How many informative words of the body, past page chrome, count as its lead."""
    key_names: int = 8
    """How many of a report's heaviest names also find candidate stories (rewrites under new headlines)."""
    unique_word_weight: float = 0.3
    """Share of its weight that a word no other report in the window carries keeps (it matches nothing yet)."""
    idf_power: float = 1.5
    """Rare words weigh more than plain TF-IDF says: the power of the inverse document frequency."""
    prior_weight: float = 0.5
    """How much the language's word frequencies add to the window's document frequencies (0: window only)."""
    text_weight: float = 0.4
    """Share of a pair's score from the cosine of their whole texts (title and body)."""
    names_weight: float = 0.5
    """Share from the cosine of their names and figures."""
    lead_weight: float = 0.1
    """Share from the cosine of their titles and leads."""
    full_credit_hours: float = 12.0
    """Reports this close in time score in full; further apart they need more evidence (see ``decay_per_day``)."""
    decay_per_day: float = 0.6
    """Share of the score lost per day beyond ``full_credit_hours``: follow-up events come days later."""
    short_body_tokens: int = 120
    """A body with fewer informative tokens than this is a summary: it is scored by how much of it the other contains."""
    summary_containment: float = 0.5
    """How much a summary's share of words found in the longer text counts as its text score."""
    title_only_weight: float = 0.75
    """Share of the title score that counts when a pair has no bodies to compare: a headline alone proves less."""
    years_clash_factor: float = 0.5
    """Score kept when a report has no time of its own (none, or when it was fetched) and both name years but share
    none (one event's reports give its year)."""
    clash_factor: float = 0.75
    """Score kept when two reports' figures disagree (different events about the same subject)."""
