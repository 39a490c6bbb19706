"""Dedup: fold reports of one event from many outlets into one story.

This module owns the decision "is this report the same story as that one?"
and the grouping built on it. The engine (everything above the DB step at
the bottom) is pure: it takes :class:`Report` records and returns
:class:`Placement` decisions, so that the pipeline and ``agg eval-dedup``
run exactly the same code.

Decisions go from cheap to expensive:

1. identity — same canonical URL, same non-trivial GUID, or same
   fingerprint of a long enough normalised body;
2. candidates — only stories inside the time window that share informative
   (rare within the window) title or lead tokens, found through an inverted
   index, so the cost grows about linearly with the number of reports;
3. scoring — rapidfuzz ratios on cleaned titles and leads, weighted overlap
   of rare tokens, and a TF-IDF cosine of whole bodies; a short text
   (summary, teaser) is scored by how much of it the longer one contains.
   Signs of two different events lower the score: disjoint figures
   ("kills 14" / "kills 6"), opposed actions in the headlines ("fires" /
   "reinstates"), and time — beyond a day apart, each further day costs a
   share of the score, since follow-up events come days later;
4. clustering — a report joins a story only when its *average* link to the
   story's members clears the threshold (no single-link chaining); two
   stories whose average link clears the merge threshold become one, under
   the older id.

Work and memory per report are bounded, whatever the bodies and the window
hold: only the first ``max_body_chars`` of a body are read (the DB step cuts
them in SQL), texts are dropped once features are built, a body keeps its
``max_vector_terms`` heaviest terms and ``max_names`` rarest names, candidate
search reads at most ``max_candidate_postings`` postings (rarest tokens
first), and fuzzy ratios are skipped for a representative whose score cannot
reach ``min_representative_link`` whatever they say: the title ratios when
the cheap measures rule it out, the lead's ratio (the dearest) when those
and the title ratios do. Skipping changes no decision, only work. A token
of more than ``max_posting_stories`` stories finds no candidates, so it
keeps a count of its reports instead of its story list, until no more than
that many reports carry it (after a merge, a little longer than the story
count alone would say).
"""

from __future__ import annotations

import codecs
import hashlib
import heapq
import json
import math
import re
import sys
import unicodedata
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import add, itemgetter, mul, sub, truediv
from typing import Any

import sqlite_utils
from rapidfuzz import fuzz

from aggregator.store import READY_FOR_STORY, from_db_time, in_batches, sql_marks, to_db_time, write_transaction
from aggregator.urls import canonical_url, host_of

# --------------------------------------------------------------------------
# Settings and records
# --------------------------------------------------------------------------


@dataclass
class DedupSettings:
    """Thresholds of the story grouper; ``config.py`` builds it from the ``dedup:`` block by field name.

    Scores are in [0, 1]. Defaults were chosen on the labelled fixtures in
    ``tests/fixtures/dedup``, the UCI headlines file and the bundled samples
    (``data/samples/stories.jsonl``, through the real pipeline), preferring
    precision: a missed merge costs a duplicate line, a wrong one hides a story.
    """

    window_hours: float = 72.0
    """Reports further apart in publication time than this never match."""
    join_threshold: float = 0.31
    """Least average link between a report and a story's members for the report to join it."""
    merge_threshold: float = 0.30
    """Least average link between two stories' members for them to be merged (a report must join both)."""
    min_body_chars: int = 100
    """Bodies shorter than this are treated as absent (feed teasers, empty extractions)."""
    min_fingerprint_chars: int = 400
    """Least normalised body length for the exact-body fingerprint to prove identity."""
    min_title_tokens: int = 3
    """Titles with fewer informative tokens than this never match on the title alone."""
    max_candidate_stories: int = 8
    """How many of the stories sharing the most rare-token weight are scored for each report."""
    max_members_compared: int = 8
    """How many members of a story (representative first, then newest) the average link uses."""
    min_candidate_share: float = 0.1
    """A story is scored only if the rare tokens it shares with a report weigh this share of the report's title."""
    min_representative_link: float = 0.3
    """A story whose representative scores below this is not compared further (saves time; below join_threshold)."""
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
    max_vector_terms: int = 100
    """The body's TF-IDF vector keeps its heaviest terms only, so a report's memory stays small."""
    max_names: int = 48
    """The rarest names and figures of a report that are compared (long articles name many in passing)."""
    lead_chars: int = 600
    """How much of the body counts as the lead."""
    full_credit_hours: float = 24.0
    """Reports this close in time score in full; further apart they need more evidence (see ``decay_per_day``)."""
    decay_per_day: float = 0.3
    """Share of the score lost per day beyond ``full_credit_hours``: follow-up events come days later."""
    short_body_tokens: int = 120
    """A body with fewer informative tokens than this is a summary: it is scored by how much of it the other contains."""
    title_only_weight: float = 0.9
    """Share of the title score that counts when a pair has no bodies to compare: a headline alone proves less."""
    clash_factor: float = 0.75
    """Score kept when two reports' figures or key actions disagree (different events about the same subject)."""


@dataclass(slots=True)  # the DB step holds one per entry of the run
class Report:
    """One report of a story, as the engine sees it."""

    id: Any
    title: str
    text: str = ""
    url: str = ""
    source: str = ""
    published: datetime | None = None
    guid: str | None = None
    canonical_url: str | None = None


@dataclass
class Placement:
    """Where a report went, by which rule, and the scores that decided it."""

    story_id: int
    rule: str  # seed | same-url | same-guid | same-body | similar
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Merge:
    """Story ``merged`` was folded into the older story ``into``."""

    merged: int
    into: int
    score: float


# --------------------------------------------------------------------------
# Text normalisation
# --------------------------------------------------------------------------

STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without into onto over under about
    after before as than then that this these those it its is are was were be been being has have had
    do does did will would can could should may might must shall not no yes so if when while where who
    whom whose which what why how all any both each few more most other some such only own same too very
    just also up down out off again further once here there he she they them his her their our we you
    your i me my us him one two says said say saying tell told report reports reported reporting
    according new news latest update updates live watch video photos breaking exclusive
    de la le les el en y et du des der die das und""".split()
)
GENERIC_TITLES = frozenset(
    {
        "live updates", "live", "live blog", "morning briefing", "evening briefing", "news briefing",
        "the briefing", "briefing", "top stories", "news in brief", "in brief", "headlines",
        "daily digest", "the latest", "breaking news", "news", "what we know", "what to know",
        "weather", "markets wrap", "market wrap", "opinion", "letters", "editorial",
    }
)
TITLE_PREFIX = re.compile(
    r"^\s*(?:(?:watch|video|exclusive|breaking(?: news)?|update(?:d)?(?:\s*\d+)?|live|analysis|opinion|"
    r"photos?|refile|corrected|correction|rpt|factbox|explainer|just in|developing|urgent|"
    r"in pictures|podcast|listen|report)\s*[-:|–—]+\s*)+",
    re.IGNORECASE,
)
# " - BBC News", " | Reuters", " — The Guardian": a short tail after a separator.
TITLE_SUFFIX = re.compile(r"\s+[-|–—•·]\s+([^-|–—•·]{2,40})$")
TOKEN = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
NUMBER = re.compile(r"^\d")
# Most reports have no figures or key actions: they share this empty set instead of holding one each.
NO_TOKENS: frozenset[str] = frozenset()

# "…, the Financial Times reported" / "according to Reuters" / "first reported by Bloomberg".
OUTLET_NAME = r"((?:the\s+)?[A-Z][\w&.'-]*(?:\s+(?:[A-Z][\w&.'-]*|of|de|du|the)){0,5})"
CREDIT_PATTERNS = [
    re.compile(r"(?:first\s+)?reported\s+(?:earlier\s+|first\s+)?by\s+" + OUTLET_NAME),
    re.compile(r"according\s+to\s+(?:a\s+report\s+(?:by|in|from)\s+)?" + OUTLET_NAME),
    re.compile(r",\s+" + OUTLET_NAME + r"\s+(?:reported|said in a report|first reported|revealed)\b"),
    re.compile(r"\b(?:told|in an interview with)\s+" + OUTLET_NAME),
    re.compile(r"\b(?:as\s+)?(?:first\s+)?(?:reported|revealed)\s+(?:earlier\s+)?(?:in|on)\s+" + OUTLET_NAME),
]
# Every credit pattern above contains one of these words: a text without them is spared the five scans.
CREDIT_WORDS = ("report", "according", "told", "interview", "revealed")
NOT_OUTLETS = frozenset(
    {"the", "he", "she", "they", "it", "police", "officials", "sources", "the company", "the ministry",
     "people", "a", "an", "i", "we", "state", "the government", "the report", "data"}
)


# Kinds of action a headline reports. Two reports about the same people whose headlines report
# opposed kinds ("fires" / "reinstates", "launches" / "recalls") are two events, not one.
# (Winning and losing are not opposed: one match is both, told from either side.)
ACTION_CLASSES: dict[str, tuple[str, ...]] = {
    "leave": ("fire", "fires", "fired", "oust", "ousts", "sack", "sacks", "sacked", "dismiss", "dismisses", "dismissed",
              "removes", "resign", "resigns", "quits", "steps", "axed", "axes"),
    "return": ("reinstate", "reinstates", "reinstated", "rehire", "rehires", "returns", "back", "comeback"),
    "raise": ("raise", "raises", "hike", "hikes", "lifts"),
    "hold": ("hold", "holds", "keeps", "unchanged", "pause", "pauses"),
    "lower": ("cut", "cuts", "lowers", "slashes"),
    "launch": ("launch", "launches", "launched", "unveil", "unveils", "unveiled", "debut", "debuts", "release", "releases"),
    "recall": ("recall", "recalls", "recalled", "withdraw", "withdraws", "pulls"),
    "start": ("strike", "strikes", "walkout", "walk", "protest", "begins", "starts"),
    "stop": ("off", "suspend", "suspends", "suspended", "ends", "halted", "averted", "scrapped", "cancelled", "canceled"),
    "charge": ("sue", "sues", "sued", "charged", "charges", "arrested", "accused"),
    "clear": ("cleared", "acquitted", "dropped", "settles", "settled", "dismissal"),
}
OPPOSED_ACTIONS = frozenset(
    frozenset(pair) for pair in (
        ("leave", "return"), ("raise", "hold"), ("raise", "lower"), ("hold", "lower"), ("launch", "recall"),
        ("start", "stop"), ("win", "lose"), ("charge", "clear"),
    )
)
_ACTION_OF_WORD = {word: action for action, words in ACTION_CLASSES.items() for word in words}


def actions(folded_title: str) -> frozenset[str]:
    """The kinds of action a folded headline reports (see ``ACTION_CLASSES``)."""
    return frozenset(_ACTION_OF_WORD[w] for w in folded_title.split() if w in _ACTION_OF_WORD) or NO_TOKENS


def actions_clash(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether one headline reports an action opposed to one that only the other reports."""
    return bool(a) and bool(b) and a != b and any(frozenset((x, y)) in OPPOSED_ACTIONS for x in a - b for y in b - a)


THOUSANDS_SEPARATOR = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d{1,2}\b)")
NUMBER_PUNCTUATION = re.compile(r"\d[,.]\d")
# Proper names and figures: capitalised words (also hyphenated, like "Lumen-47c") and numbers.
ENTITY = re.compile(r"\b(?:[A-Z][\w'-]*[\w]|\d[\d.,:]*\d|\d)")


YEAR = re.compile(r"^(?:19|20)\d\d$")


def figures(names: Iterable[str]) -> frozenset[str]:
    """The figures among names: numbers that tell events apart (counts, amounts, scores), not years or 1-9."""
    found = frozenset(t for t in names if NUMBER.match(t) and (len(t) > 1 or "." in t) and not YEAR.match(t))
    return found or NO_TOKENS


def _normalise_numbers(text: str) -> str:
    """"1,100" and "1.100" read as 1100; "6,4" as 6.4, so figures agree across styles and languages."""
    if not NUMBER_PUNCTUATION.search(text):  # one cheap pass spares most texts the two rewriting ones
        return text
    return DECIMAL_COMMA.sub(".", THOUSANDS_SEPARATOR.sub("", text))


def _fold_to_ascii(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: accents (combining marks) vanish, other non-ASCII characters part words."""
    assert isinstance(error, UnicodeEncodeError)
    chunk = error.object[error.start:error.end]
    return "".join("" if unicodedata.combining(ch) else " " for ch in chunk), error.end


codecs.register_error("agg-fold", _fold_to_ascii)


def fold(text: str) -> str:
    """Lower case, accents removed, punctuation turned into spaces, spaces collapsed."""
    return _fold_normalised(_normalise_numbers(text or ""))


def _fold_normalised(text: str) -> str:
    """:func:`fold` of text whose numbers are normalised already."""
    if not text.isascii():
        # Tokens are ASCII: decompose, then let the codec drop the marks in one C-level pass
        # (the handler sees only the few runs of non-ASCII characters).
        text = unicodedata.normalize("NFKD", text).encode("ascii", "agg-fold").decode("ascii")
    return " ".join(TOKEN.findall(text.lower()))


def clean_title(title: str, source: str = "") -> str:
    """The title without outlet suffixes ("- BBC News") or tags ("WATCH:", "UPDATE 2-"), folded."""
    text = (title or "").strip()
    text = TITLE_PREFIX.sub("", text)
    folded_source = fold(source)
    for _ in range(2):
        tail = TITLE_SUFFIX.search(text)
        if not tail:
            break
        folded_tail = fold(tail.group(1))
        names_outlet = folded_source and (folded_source in folded_tail or folded_tail in folded_source)
        looks_like_outlet = len(folded_tail.split()) <= 4 and tail.group(1)[:1].isupper()
        if not (names_outlet or looks_like_outlet):
            break
        text = text[: tail.start()]
    return fold(text)


def tokens(folded: str) -> list[str]:
    """Informative tokens of folded text: no stopwords, no one-letter words."""
    return [t for t in folded.split() if t not in STOPWORDS and (len(t) > 1 or t.isdigit())]


def token_counts(folded: str) -> Counter[str]:
    """How often each informative token (see :func:`tokens`) occurs, in order of first occurrence."""
    # Counting runs in C; the filter then looks at each distinct word once, not at every occurrence.
    counts = Counter(folded.split())
    for word in [w for w in counts if w in STOPWORDS or (len(w) == 1 and not w.isdigit())]:
        del counts[word]
    return counts


def entities(text: str) -> frozenset[str]:
    """Folded names and figures of a text: what tells one event from another about the same subject."""
    return _entities_normalised(_normalise_numbers(text or ""))


def _entities_normalised(text: str) -> frozenset[str]:
    """:func:`entities` of text whose numbers are normalised already."""
    # One fold for all matches: newlines keep them apart and cost nothing to fold.
    return frozenset(token_counts(_fold_normalised("\n".join(ENTITY.findall(text)))))


def body_fingerprint(folded_body: str) -> str:
    return hashlib.sha1(folded_body.encode()).hexdigest()


def is_generic_title(folded_title: str, settings: DedupSettings) -> bool:
    return folded_title in GENERIC_TITLES or len(set(tokens(folded_title))) < settings.min_title_tokens


# --------------------------------------------------------------------------
# Per-report features, computed once
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Doc:
    report: Report
    title: str  # cleaned and folded
    generic_title: bool
    title_tokens: tuple[str, ...]  # distinct
    lead: str  # folded, "" without a body
    key_tokens: tuple[str, ...]  # distinct title + lead tokens: what the inverted index holds
    # Distinct body tokens, then the title tokens the body lacks: what the window's frequencies count.
    vocabulary: tuple[str, ...]
    # How often each body token (the first len(body_counts) of vocabulary) occurs; dropped once the vector is built.
    body_counts: array | None
    names: tuple[str, ...]  # names and figures of title and body; dropped once weighted
    title_numbers: frozenset[str]
    figures: frozenset[str]  # figures of title and body
    actions: frozenset[str]  # kinds of action the title reports
    length: int  # informative tokens of the body
    hour: float | None  # publication time in hours since the epoch
    canonical: str
    fingerprint: str | None
    seq: int = -1  # arrival order, given when the report is placed
    # Rarity weights, frozen when the report arrives so that later reports never change past decisions.
    title_weights: dict[str, float] = field(default_factory=dict)
    name_weights: dict[str, float] = field(default_factory=dict)  # the rarest names only (max_names)
    title_mass: float = 0.0
    names_mass: float = 0.0
    # Body TF-IDF, heaviest terms only (max_vector_terms): each term's place in vector_weights. Weights in
    # an array take 8 bytes instead of a 24-byte float object each, and places below 257 are shared ints.
    vector: dict[str, int] = field(default_factory=dict)
    vector_weights: array = field(default_factory=lambda: array("d"))
    norm: float = 0.0

    @property
    def has_body(self) -> bool:
        return bool(self.lead)

    def release(self) -> None:
        """Drop what only comparisons need, once the report has left the window for good."""
        self.vocabulary = self.key_tokens = ()
        self.vector, self.vector_weights, self.name_weights = {}, array("d"), {}


def _make_doc(report: Report, settings: DedupSettings) -> _Doc:
    title = clean_title(report.title, report.source)
    # Long bodies are cut: the first pages of an article say what it is about, and cost stays bounded.
    body = _normalise_numbers((report.text or "")[: settings.max_body_chars].strip())
    folded_body = _fold_normalised(body) if len(body) >= settings.min_body_chars else ""
    lead = " ".join(tokens(folded_body[: settings.lead_chars]))
    # Interned: the window holds each token once, however many reports carry it.
    title_tokens = tuple(map(sys.intern, dict.fromkeys(tokens(title))))
    body_counts = token_counts(folded_body)
    title_only = tuple(t for t in title_tokens if t not in body_counts)
    names = _entities_normalised(f"{TITLE_PREFIX.sub('', _normalise_numbers(report.title or ''))}. "
                                 f"{body if folded_body else ''}")
    return _Doc(
        report=replace(report, text=""),  # the features below are all the engine reads of the text
        title=title,
        generic_title=is_generic_title(title, settings),
        title_tokens=title_tokens,
        lead=lead,
        key_tokens=tuple(dict.fromkeys(title_tokens + tuple(map(sys.intern, lead.split())))),
        vocabulary=tuple(map(sys.intern, body_counts)) + title_only,
        body_counts=array("I", body_counts.values()),
        # Sorted: a set's order follows the process's hash seed, and the order decides which names
        # are kept at max_names and how their weights add up, so every run must see the same one.
        names=tuple(map(sys.intern, sorted(names))),  # interned: shared with the body's tokens
        title_numbers=frozenset(t for t in title_tokens if NUMBER.match(t)) or NO_TOKENS,
        figures=figures(names),
        actions=actions(title),
        length=sum(body_counts.values()),
        hour=report.published.timestamp() / 3600 if report.published else None,
        canonical=canonical_url(report.url, report.canonical_url) if (report.url or report.canonical_url) else "",
        fingerprint=body_fingerprint(folded_body) if len(folded_body) >= settings.min_fingerprint_chars else None,
    )


def _heaviest(weights: dict[str, float], limit: int) -> dict[str, float]:
    """The ``limit`` heaviest entries, heaviest first (ties in their order), or all of them in their order."""
    if len(weights) <= limit:
        return weights
    # A stable C-level sort: the same entries, in the same order, as heapq.nlargest, several times faster.
    return dict(sorted(weights.items(), key=itemgetter(1), reverse=True)[:limit])


def _meaningful_guid(guid: str | None) -> str | None:
    """GUIDs that identify an article; short counters and bare site URLs do not."""
    if not guid or len(guid) < 8 or guid.isdigit():
        return None
    return canonical_url(guid) if guid.startswith(("http://", "https://")) else guid


# --------------------------------------------------------------------------
# Document frequencies inside the window
# --------------------------------------------------------------------------


class _Frequencies:
    """How many reports in the window carry each token (title + lead + body)."""

    def __init__(self) -> None:
        self.df: Counter[str] = Counter()
        self.n = 0

    def add(self, doc_tokens: frozenset[str]) -> None:
        self.df.update(doc_tokens)
        self.n += 1

    def remove(self, doc_tokens: frozenset[str]) -> None:
        for token in doc_tokens:
            left = self.df[token] - 1
            if left > 0:
                self.df[token] = left
            else:
                del self.df[token]
        self.n -= 1

    def idf(self, token: str) -> float:
        return next(self.idfs((token,)))

    def idfs(self, tokens: Sequence[str]) -> Iterator[float]:
        """:meth:`idf` of each token, as one chain of C-level maps: it runs for every name of every report."""
        ratios = map(truediv, repeat(self.n + 1), map(add, map(self.df.get, tokens, repeat(0)), repeat(0.5)))
        return map(add, map(math.log, ratios), repeat(1.0))


# --------------------------------------------------------------------------
# Pair scoring
# --------------------------------------------------------------------------


def _weighted_jaccard(a: dict[str, float], b: dict[str, float], a_mass: float, b_mass: float) -> float:
    """Jaccard overlap of two weighted token sets (title tokens or names), each token counted by its rarity."""
    if not a or not b:
        return 0.0
    common = a.keys() & b.keys()
    if not common:
        return 0.0
    # Intersection and sum run in C; fsum makes the result independent of the set's order.
    shared = math.fsum(map(add, map(a.__getitem__, common), map(b.__getitem__, common))) / 2
    union = a_mass + b_mass - shared
    return shared / union if union else 0.0


def _cosine(a: _Doc, b: _Doc) -> float:
    if not a.norm or not b.norm:
        return 0.0
    common = a.vector.keys() & b.vector.keys()
    return math.fsum(map(mul, _vector_weights(a, common), _vector_weights(b, common))) / (a.norm * b.norm)


def _vector_weights(doc: _Doc, terms: Iterable[str]) -> Iterator[float]:
    """The weights of some of the doc's vector terms, in their order."""
    return map(doc.vector_weights.__getitem__, map(doc.vector.__getitem__, terms))


def _weighted_containment(short: dict[str, float], short_mass: float, long: dict[str, float]) -> float:
    """Share of the short text's tokens, by rarity, that the long text carries too."""
    return sum([w for t, w in short.items() if t in long]) / short_mass if short_mass else 0.0


def _body_containment(short: _Doc, long: _Doc) -> float:
    """Share of the short body's TF-IDF weight on words the long body uses too."""
    total = sum(short.vector_weights)
    return sum(_vector_weights(short, filter(long.vector.__contains__, short.vector))) / total if total else 0.0


def time_factor(hours_apart: float, settings: DedupSettings) -> float:
    """Share of the score kept for reports this far apart: 1 within ``full_credit_hours``, less each day after."""
    late_days = max(0.0, hours_apart - settings.full_credit_hours) / 24
    return max(0.0, 1.0 - settings.decay_per_day * late_days)


def score_pair(a: _Doc, b: _Doc, settings: DedupSettings, floor: float = 0.0) -> tuple[float, dict[str, float]]:
    """How likely two reports tell the same story, in [0, 1], with the measures behind it.

    With a ``floor``, a pair whose score cannot reach it, whatever the fuzzy
    ratios still to compute say, is answered with that upper bound (below the
    floor) and without computing them: the cheap measures go first, then the
    title ratios, then the lead's, which costs several times theirs.
    """
    gap = abs(a.hour - b.hour) if a.hour is not None and b.hour is not None else 0.0
    if gap > settings.window_hours:
        return 0.0, {"hours_apart": gap}
    evidence: dict[str, float] = {}
    title_usable = not (a.generic_title or b.generic_title)
    both_bodies = a.has_body and b.has_body
    if not (title_usable or both_bodies):
        return 0.0, evidence
    if both_bodies:
        clash = len(a.figures) >= 2 and len(b.figures) >= 2 and not a.figures & b.figures
    else:
        clash = bool(a.title_numbers and b.title_numbers and not a.title_numbers & b.title_numbers)
    factor = settings.clash_factor if clash else 1.0
    if clash:
        # Different figures ("rate rises to 4.25%" / "to 4.5%", "kills 14" / "kills 6") mean different events.
        evidence["figures_clash"] = 1.0
    if title_usable and actions_clash(a.actions, b.actions):
        factor *= settings.clash_factor
        evidence["actions_clash"] = 1.0
    if gap > settings.full_credit_hours:
        factor *= time_factor(gap, settings)
        evidence["hours_apart"] = gap
    rare_title = _weighted_jaccard(a.title_weights, b.title_weights, a.title_mass, b.title_mass) if title_usable else 0.0
    content = None
    if both_bodies:
        names_score = _weighted_jaccard(a.name_weights, b.name_weights, a.names_mass, b.names_mass)
        body_score = _cosine(a, b)
        evidence.update(names=names_score, body_cosine=body_score)
        short, long = (a, b) if a.length <= b.length else (b, a)
        if short.length < settings.short_body_tokens and 2 * short.length <= long.length:
            # A summary or teaser: Jaccard and cosine punish it for all the long text it leaves out.
            names_contained = _weighted_containment(short.name_weights, short.names_mass, long.name_weights)
            body_contained = _body_containment(short, long)
            evidence.update(names_contained=names_contained, body_contained=body_contained)
            names_score = max(names_score, 0.5 * names_contained)
            body_score = max(body_score, 0.6 * body_contained)
        # A body match proves a report the title cannot: syndicated copies under new headlines.
        content = 0.35 * body_score + 0.5 * names_score

    def combine(title_score: float, lead_score: float) -> float:
        if content is None:
            return factor * settings.title_only_weight * title_score
        with_lead = content + 0.15 * lead_score
        return factor * (max(with_lead, 0.3 * title_score + 0.7 * with_lead) if title_usable else with_lead)

    def bounded(title_score: float) -> tuple[float, dict[str, float]] | None:
        """The pair's upper bound with the lead ratio at its best, if that is below the floor."""
        bound = combine(title_score, 1.0)
        return (bound, {**evidence, "bound": bound}) if bound < floor else None

    if floor and (pruned := bounded(0.6 + 0.4 * rare_title)):  # the title ratios at their best too
        return pruned
    if title_usable:
        set_ratio = fuzz.token_set_ratio(a.title, b.title) / 100
        sort_ratio = fuzz.token_sort_ratio(a.title, b.title) / 100
        title_score = 0.3 * set_ratio + 0.3 * sort_ratio + 0.4 * rare_title
        evidence.update(title_set=set_ratio, title_sort=sort_ratio, title_rare=rare_title)
    else:
        title_score = 0.0
        evidence["generic_title"] = 1.0
    if not both_bodies:
        return combine(title_score, 0.0), evidence
    if floor and (pruned := bounded(title_score)):
        return pruned
    lead_score = fuzz.token_set_ratio(a.lead, b.lead) / 100
    evidence["lead"] = lead_score
    return combine(title_score, lead_score), evidence


# --------------------------------------------------------------------------
# Stories and the grouper
# --------------------------------------------------------------------------


@dataclass
class _Story:
    id: int
    members: list[_Doc] = field(default_factory=list)
    representative: _Doc | None = None

    @property
    def first_compared(self) -> _Doc:
        """The member compared first: the representative, else the newest member."""
        return self.representative or self.members[-1]

    def compared_members(self, limit: int) -> list[_Doc]:
        """The representative first, then the newest members: a sample that follows the story as it moves."""
        first = self.first_compared
        newest = self.members[-limit:][::-1]
        return [first] + [m for m in newest if m is not first][: limit - 1]


class StoryGrouper:
    """Places reports into stories one at a time; ids once given never change.

    Seed it with existing stories (:meth:`seed`), then :meth:`add` or
    :meth:`add_many` new reports. New stories get ids from ``first_new_id``
    upwards. When a report shows two stories to be one, the younger is folded
    into the older and the fold is recorded in :attr:`merges`.
    """

    def __init__(self, settings: DedupSettings | None = None, first_new_id: int = 1) -> None:
        self.settings = settings or DedupSettings()
        self.next_id = first_new_id
        self.stories: dict[int, _Story] = {}
        self.story_of: dict[Any, int] = {}  # report id -> story id
        self.merges: list[Merge] = []
        self._merged_into: dict[int, int] = {}
        self._freq = _Frequencies()
        self._unplaced: dict[Any, _Doc] = {}  # observed, not placed yet
        self._counted: set[Any] = set()  # report ids whose tokens the frequencies hold
        # token -> {story id: how many of its reports in the window carry the token}; plain dicts, not
        # Counters: a Counter's missing-key hook is a Python call on nearly every posting added.
        self._postings: dict[str, dict[int, int]] = defaultdict(dict)
        # token -> how many reports in the window carry it, for the tokens of more than
        # max_posting_stories stories: they find no candidates, so their story lists are dropped
        # (common words' lists were most of the grouper's memory) until few enough reports carry them.
        self._crowded: dict[str, int] = {}
        self._docs: dict[int, _Doc] = {}
        self._doc_story: dict[int, int] = {}
        self._by_url: dict[str, int] = {}
        self._by_guid: dict[str, int] = {}
        self._by_fingerprint: dict[str, int] = {}
        self._timeline: list[tuple[datetime, int]] = []  # heap of (published, seq), for eviction
        # Reports published before this have left the index: a report older than it plus the window
        # would not find its stories here.
        self.forgotten_before: datetime | None = None
        self._seq = 0

    # -- public ------------------------------------------------------------

    def observe(self, reports: Iterable[Report]) -> None:
        """Count the reports' tokens in the window's frequencies before placing them.

        Placing a batch after observing it all gives the first reports of the
        batch the same sense of which words are rare as the last ones.
        """
        for report in reports:
            if report.id not in self._counted:
                doc = _make_doc(report, self.settings)
                self._unplaced[report.id] = doc
                self._counted.add(report.id)
                self._freq.add(doc.vocabulary)

    def seed(self, story_id: int, reports: Sequence[Report]) -> None:
        """Load an existing story with its members (oldest first); nothing is re-decided."""
        story = self.stories.setdefault(story_id, _Story(story_id))
        self.next_id = max(self.next_id, story_id + 1)
        for report in reports:
            self.observe([report])
            doc = self._new_doc(report)
            self._attach(doc, story)

    def add(self, report: Report) -> Placement:
        """Place one report: into the story it matches, else into a new story."""
        self.observe([report])
        doc = self._new_doc(report)
        self._evict_old(doc)
        identity = self._identity_match(doc)
        if identity is not None:
            rule, story_id = identity
            self._attach(doc, self.stories[story_id])
            return Placement(story_id, rule, 1.0, {"matched": rule})
        best = self._best_story(doc)
        if best is not None:
            story, score, evidence, runners_up = best
            self._attach(doc, story)
            placed_in = self._merge_related(story, runners_up)
            if placed_in != story.id:
                evidence["merged_into"] = placed_in
            return Placement(placed_in, "similar", round(score, 3), evidence)
        story = _Story(self.next_id)
        self.next_id += 1
        self.stories[story.id] = story
        self._attach(doc, story)
        return Placement(story.id, "seed", None, {})

    def add_many(self, reports: Iterable[Report]) -> dict[Any, Placement]:
        """Place reports in publication order (unknown times last); see :meth:`place_many`."""
        return {report.id: placement for report, placement in self.place_many(reports)}

    def place_many(self, reports: Iterable[Report]) -> Iterator[tuple[Report, Placement]]:
        """Place reports in publication order (unknown times last), yielding each placement as it is made.

        Each report is placed after observing every report of the batch it
        could match (published up to ``window_hours`` after it), so the first
        reports of a burst have the same sense of which words are rare as the
        last ones; reports further ahead are observed only when their time
        comes, so frequencies and memory stay those of one window.
        """
        ordered = sorted(reports, key=lambda r: (r.published is None, r.published or datetime.min.replace(tzinfo=UTC)))
        ahead = timedelta(hours=2 * self.settings.window_hours)
        observed = 0
        for report in ordered:
            horizon = report.published + ahead if report.published else None
            end = observed
            while end < len(ordered) and (horizon is None or (ordered[end].published or horizon) <= horizon):
                end += 1
            if end > observed:
                self.observe(ordered[observed:end])
                observed = end
            yield report, self.add(report)

    def resolve(self, story_id: int) -> int:
        while story_id in self._merged_into:
            story_id = self._merged_into[story_id]
        return story_id

    def clusters(self) -> dict[Any, int]:
        """Every report id placed so far, with its current story id."""
        return {report_id: self.resolve(story_id) for report_id, story_id in self.story_of.items()}

    def members(self, story_id: int) -> list[Report]:
        return [doc.report for doc in self.stories[self.resolve(story_id)].members]

    def representative(self, story_id: int) -> Report | None:
        rep = self.stories[self.resolve(story_id)].representative
        return rep.report if rep else None

    # -- internals ---------------------------------------------------------

    def _new_doc(self, report: Report) -> _Doc:
        doc = self._unplaced.pop(report.id, None) or _make_doc(report, self.settings)
        doc.seq = self._seq
        self._seq += 1
        # Weights are frozen when the report arrives, so later reports never change past decisions.
        counts = doc.body_counts or ()
        terms = doc.vocabulary[: len(counts)]
        # (1 + log count) * idf for every word of the body, as chains of C-level maps: this runs
        # for every word of every body, and Python bytecode per word was a tenth of the engine's time.
        rarity = map(sub, repeat(math.log(self._freq.n + 1) + 1.0),
                     map(math.log, map(add, map(self._freq.df.get, terms, repeat(0)), repeat(0.5))))
        weights = list(map(mul, map(add, repeat(1.0), map(math.log, counts)), rarity))
        vector = dict(zip(terms, weights))
        # The norm of the whole body: the terms left out still make a body less alike another one.
        doc.norm = math.hypot(*weights)
        vector = _heaviest(vector, self.settings.max_vector_terms)
        doc.vector = dict(zip(vector, range(len(vector))))
        doc.vector_weights = array("d", vector.values())
        doc.title_weights = dict(zip(doc.title_tokens, self._freq.idfs(doc.title_tokens)))
        names = _heaviest(dict(zip(doc.names, self._freq.idfs(doc.names))), self.settings.max_names)
        doc.name_weights = names
        doc.title_mass = sum(doc.title_weights.values())
        doc.names_mass = sum(names.values())
        doc.body_counts, doc.names = None, ()
        return doc

    def _attach(self, doc: _Doc, story: _Story) -> None:
        story.members.append(doc)
        if story.representative is None or (doc.has_body and not story.representative.has_body):
            story.representative = doc
        self.story_of[doc.report.id] = story.id
        self._docs[doc.seq] = doc
        self._doc_story[doc.seq] = story.id
        self._post(doc, story.id)
        if doc.canonical:
            self._by_url.setdefault(doc.canonical, doc.seq)
        guid = _meaningful_guid(doc.report.guid)
        if guid:
            self._by_guid.setdefault(guid, doc.seq)
        if doc.fingerprint:
            self._by_fingerprint.setdefault(doc.fingerprint, doc.seq)
        if doc.report.published:
            heapq.heappush(self._timeline, (doc.report.published, doc.seq))

    def _evict_old(self, incoming: _Doc) -> None:
        """Forget index entries too old to match anything arriving from now on."""
        if incoming.report.published is None:
            return
        # Relative to the incoming report, so a late arrival still finds the stories of its own days.
        horizon = incoming.report.published - timedelta(hours=2 * self.settings.window_hours)
        if self.forgotten_before is None or horizon > self.forgotten_before:
            self.forgotten_before = horizon
        while self._timeline and self._timeline[0][0] < horizon:
            old = self._docs.pop(heapq.heappop(self._timeline)[1])
            self._unpost(old, self._doc_story[old.seq])
            if old.report.id in self._counted:
                self._counted.discard(old.report.id)
                self._freq.remove(old.vocabulary)
            # Nothing arriving from now on is close enough in time to be compared with it.
            old.release()

    def _post(self, doc: _Doc, story_id: int) -> None:
        crowded, limit = self._crowded, self.settings.max_posting_stories
        for token in doc.key_tokens:
            if token in crowded:
                crowded[token] += 1
                continue
            stories = self._postings[token]
            stories[story_id] = stories.get(story_id, 0) + 1
            if len(stories) > limit:
                crowded[token] = sum(stories.values())
                del self._postings[token]

    def _unpost(self, doc: _Doc, story_id: int) -> None:
        """Take a report leaving the window out of the postings (its doc no longer in ``_docs``)."""
        crowded, limit = self._crowded, self.settings.max_posting_stories
        for token in doc.key_tokens:
            carried = crowded.get(token)
            if carried is not None:
                if carried - 1 > limit:
                    crowded[token] = carried - 1
                else:  # few enough reports carry it to find candidates again: list its stories anew
                    del crowded[token]
                    self._postings[token] = self._stories_carrying(token)
                continue
            self._move_posting(token, story_id, None)

    def _move_posting(self, token: str, from_story: int, to_story: int | None) -> None:
        """One report's posting of ``token`` leaves ``from_story``, for ``to_story`` if given."""
        stories = self._postings[token]
        left = stories[from_story] - 1
        if left > 0:
            stories[from_story] = left
        else:
            del stories[from_story]
        if to_story is not None:
            stories[to_story] = stories.get(to_story, 0) + 1
        elif not stories:
            del self._postings[token]

    def _stories_carrying(self, token: str) -> dict[int, int]:
        stories: dict[int, int] = {}
        for seq, doc in self._docs.items():
            if token in doc.key_tokens:
                story_id = self._doc_story[seq]
                stories[story_id] = stories.get(story_id, 0) + 1
        return stories

    def _identity_match(self, doc: _Doc) -> tuple[str, int] | None:
        guid = _meaningful_guid(doc.report.guid)
        checks = (
            ("same-url", self._by_url, doc.canonical),
            ("same-guid", self._by_guid, guid),
            ("same-body", self._by_fingerprint, doc.fingerprint),
        )
        for rule, index, key in checks:
            if key and key in index:
                return rule, self.resolve(self._doc_story[index[key]])
        return None

    def _candidate_stories(self, doc: _Doc) -> list[_Story]:
        """Stories sharing the most rare-token weight with the report, most first."""
        settings = self.settings
        cap = max(20, settings.max_token_df * self._freq.n)
        df, postings = self._freq.df, self._postings
        lists = sorted(
            (len(stories), token, stories)
            for token in doc.key_tokens
            # Tokens of more than max_posting_stories stories have no list here (see _post).
            if (stories := postings.get(token)) and df.get(token, 0) <= cap
        )
        weight: dict[int, float] = {}
        budget = settings.max_candidate_postings
        for size, token, stories in lists:  # rarest first, until the budget is spent
            budget -= size
            if budget < 0:
                break
            idf = doc.title_weights.get(token) or self._freq.idf(token)
            # weight[story] += idf for the whole list in one C-level pass (a Python loop over these
            # postings was the engine's largest cost); a story occurs once in a list, so each read
            # comes before its own write.
            weight.update(zip(stories, map(add, map(weight.get, stories, repeat(0.0)), repeat(idf))))
        # Relative to the title's weight: a shared lead adds evidence on top of it.
        floor = settings.min_candidate_share * doc.title_mass
        # The largest of all, then the floor: the same stories as the largest of those above the floor,
        # without building the list of those first.
        best = heapq.nlargest(settings.max_candidate_stories, zip(weight.values(), weight.keys()))
        return [self.stories[story_id] for shared, story_id in best if shared >= floor]

    def _story_link(self, doc: _Doc, story: _Story) -> tuple[float, dict[str, Any]]:
        """Average link between the report and the story's sampled members."""
        first = score_pair(doc, story.first_compared, self.settings, floor=self.settings.min_representative_link)
        if first[0] < self.settings.min_representative_link:
            return first[0], {"representative_link": round(first[0], 3)}
        # Sampled only now: most stories end at the first comparison.
        sample = story.compared_members(self.settings.max_members_compared)
        scored = [first] + [score_pair(doc, member, self.settings) for member in sample[1:]]
        average = sum(s for s, _ in scored) / len(scored)
        best_index = max(range(len(scored)), key=lambda i: scored[i][0])
        evidence: dict[str, Any] = {
            "average_link": round(average, 3),
            "compared": len(scored),
            "best_member": sample[best_index].report.id,
            "best": round(scored[best_index][0], 3),
            **{name: round(value, 3) for name, value in scored[best_index][1].items()},
        }
        return average, evidence

    def _best_story(self, doc: _Doc) -> tuple[_Story, float, dict[str, Any], list[tuple[_Story, float]]] | None:
        linked = []
        for story in self._candidate_stories(doc):
            average, evidence = self._story_link(doc, story)
            linked.append((average, story, evidence))
        linked.sort(key=lambda x: -x[0])
        if not linked or linked[0][0] < self.settings.join_threshold:
            return None
        score, story, evidence = linked[0]
        # Only stories the report would join as well are merge candidates: the report is the bridge.
        related = [(s, sc) for sc, s, _ in linked[1:] if sc >= self.settings.join_threshold]
        return story, score, evidence, related

    def _merge_related(self, story: _Story, others: list[tuple[_Story, float]]) -> int:
        """Fold stories that the new report joined as well, when they match as wholes."""
        current = story
        for other, _ in others:
            if self.resolve(other.id) != other.id or other.id == current.id:
                continue
            link = self._stories_link(current, other)
            if link < self.settings.merge_threshold:
                continue
            older, younger = (current, other) if current.id < other.id else (other, current)
            for member in younger.members:
                older.members.append(member)
                if member.seq in self._docs:  # still in the window: move its postings (a crowded token has none)
                    for token in member.key_tokens:
                        if token not in self._crowded:
                            self._move_posting(token, younger.id, older.id)
                self._doc_story[member.seq] = older.id
                self.story_of[member.report.id] = older.id
            if older.representative is None:
                older.representative = younger.representative
            younger.members = []
            self._merged_into[younger.id] = older.id
            self.merges.append(Merge(younger.id, older.id, round(link, 3)))
            current = older
        return current.id

    def _stories_link(self, a: _Story, b: _Story) -> float:
        limit = max(2, self.settings.max_members_compared // 2)
        pairs = [
            score_pair(x, y, self.settings)[0]
            for x in a.compared_members(limit)
            for y in b.compared_members(limit)
        ]
        return sum(pairs) / len(pairs) if pairs else 0.0


# --------------------------------------------------------------------------
# Original source
# --------------------------------------------------------------------------


def credited_outlet(text: str) -> str | None:
    """The outlet a text credits for the story ("…, the Financial Times reported"), if any."""
    if not any(word in (text or "") for word in CREDIT_WORDS):
        return None
    for pattern in CREDIT_PATTERNS:
        for match in pattern.finditer(text or ""):
            name = match.group(1).strip().rstrip(".,'")
            name = re.sub(r"^the\s+", "", name, flags=re.IGNORECASE)
            if name.lower() not in NOT_OUTLETS and not name.lower().startswith(("the ", "a ")):
                return name
    return None


def report_credit(report: Report) -> str | None:
    """The outlet a report's text credits for the story, unless it is the report's own outlet."""
    name = credited_outlet(f"{report.title}. {report.text}")
    return name if name and fold(name) != fold(report.source) else None


def original_source(
    reports: Sequence[Report], known_credits: dict[Any, str | None] | None = None
) -> tuple[Report | None, str | None]:
    """The earliest report (unknown times last), and the outlet the texts credit most often, if any.

    ``known_credits`` holds :func:`report_credit` of reports by id, found while their texts were
    at hand; the texts of the others are read here.
    """
    if not reports:
        return None, None
    known = known_credits or {}
    earliest = min(reports, key=lambda r: (r.published is None, r.published or datetime.max.replace(tzinfo=UTC)))
    credits = Counter(name for r in reports if (name := known[r.id] if r.id in known else report_credit(r)))
    return earliest, credits.most_common(1)[0][0] if credits else None


# ==========================================================================
# DB step: place stored entries that have no story yet (the only I/O here)
# ==========================================================================

TAG = re.compile(r"<[^>]+>")


@dataclass
class GroupingSummary:
    placed: int = 0
    new_stories: int = 0
    joined: int = 0
    merges: int = 0

    def add(self, other: GroupingSummary) -> None:
        self.placed += other.placed
        self.new_stories += other.new_stories
        self.joined += other.joined
        self.merges += other.merges


ENTRY_COLUMNS = """
    e.id, e.guid, e.link, e.canonical_url, e.title, e.summary, e.text, e.published, e.first_seen,
    e.story_id, f.title AS feed_title
"""


def _scored_columns(settings: DedupSettings) -> str:
    """ENTRY_COLUMNS with texts cut where scoring stops reading them, so long articles never load whole."""
    cut = f"substr({{}}, 1, {int(settings.max_body_chars)})"
    return ENTRY_COLUMNS.replace("e.summary,", f"{cut.format('e.summary')} AS summary,").replace(
        "e.text,", f"{cut.format('e.text')} AS text,")


def _report_from_row(row: dict[str, Any]) -> Report:
    text = row["text"] or TAG.sub(" ", row["summary"] or "")
    return Report(
        id=row["id"],
        title=row["title"] or "",
        text=text,
        url=row["link"] or "",
        source=(row["feed_title"] or "").strip() or host_of(row["link"] or ""),
        published=from_db_time(row["published"]) or from_db_time(row["first_seen"]),
        guid=row["guid"],
        canonical_url=row["canonical_url"],
    )


def resolve_story_id(db: sqlite_utils.Database, story_id: int) -> int:
    """The story that ``story_id`` now lives in, following ``merged_into`` links."""
    seen = set()
    while story_id not in seen:
        seen.add(story_id)
        row = db.execute("SELECT merged_into FROM stories WHERE id = ?", [story_id]).fetchone()
        if not row or row[0] is None:
            return story_id
        story_id = row[0]
    return story_id


WRITE_CHUNK = 1000
"""Placements written per transaction: short enough that the run's other writers never wait long."""

SEED_ROWS = 500
"""Stored reports read per query when a session loads the stories around its batch (one story may hold more)."""


class GroupingSession:
    """Gives stored entries without a story one, batch after batch, keeping the window's stories in memory.

    Each :meth:`place_ready` reads the entries whose extraction is done,
    outside any write lock so that the run's other writers go on, places
    them, and writes the placements in transactions of ``chunk`` entries.
    Each transaction leaves every story it touches consistent, so a kill
    between two loses nothing that the next run does not redo. Between calls
    the grouper keeps the stories it has placed, so a run that groups while
    it fetches reads each text once; ids once given never change.
    """

    def __init__(self, db: sqlite_utils.Database, settings: DedupSettings, now: datetime | None = None,
                 *, chunk: int = WRITE_CHUNK, keep_writing: Callable[[], bool] = lambda: True,
                 on_written: Callable[[GroupingSummary], None] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.now = now or datetime.now(UTC)
        self.chunk = chunk
        # Asked before each write: a worker whose run has died must not write behind the next run's back.
        self.keep_writing = keep_writing
        # Told the session's summary after each written chunk (a worker reports its progress).
        self.on_written = on_written
        # Credited outlets, found while each text is read for grouping, so writing stories reads no texts.
        self.credits: dict[Any, str | None] = {}
        self.summary = GroupingSummary()
        self._start_afresh()
        self._unwritten = False

    def _start_afresh(self) -> None:
        """A grouper that holds nothing yet: the stored stories around each batch are loaded into it."""
        first_new_id = (self.db.execute("SELECT max(id) FROM stories").fetchone()[0] or 0) + 1
        self.grouper = StoryGrouper(self.settings, first_new_id=first_new_id)
        self._seeded: tuple[str, str] | None = None
        self._merges_written = 0

    def place_ready(self, at_least: int = 1, at_most: int | None = None) -> GroupingSummary:
        """Place every entry that has no story and whose extraction is done; returns what this call did.

        With fewer than ``at_least`` such entries, nothing is placed yet: a
        report's word weights are frozen when it is placed, and weights from
        a handful of reports say little about which words are rare. With
        ``at_most``, only the oldest that many are placed, so that what a
        batch holds until it is written (its reports, placements and
        evidence) stays small however many entries wait.
        """
        if self._unwritten:
            raise RuntimeError("a grouping session that left placements unwritten cannot place more: start a new one")
        batch = f"WHERE {READY_FOR_STORY} ORDER BY e.id LIMIT {-1 if at_most is None else int(at_most)}"
        waiting, earliest = self.db.execute(
            "SELECT count(*), min(coalesce(published, first_seen)) "
            f"FROM (SELECT e.published, e.first_seen FROM entries e {batch})"
        ).fetchone()
        if waiting < at_least:
            return GroupingSummary()
        forgotten = self.grouper.forgotten_before
        window = timedelta(hours=self.settings.window_hours)
        if earliest and forgotten and from_db_time(earliest) - window < forgotten:
            # The batch reaches back past what the grouper has let go (entries arrive in any order of
            # publication): group it as a first batch would, from the stories stored so far.
            self._start_afresh()
        new_reports = _observed_reports(
            self.db,
            self.grouper,
            self.credits,
            f"SELECT {_scored_columns(self.settings)} FROM entries e LEFT JOIN feeds f ON f.id = e.feed_id {batch}",
        )
        if not new_reports:
            return GroupingSummary()
        times = [r.published for r in new_reports if r.published]
        if times:
            self._seed_window(to_db_time(min(times) - window), to_db_time(max(times) + window))
        # Placements as rows, evidence already serialised: a few hundred bytes per entry however long its text.
        placed = [
            (report.id, placement.story_id, placement.rule, placement.score,
             json.dumps(placement.evidence, default=str))
            for report, placement in self.grouper.place_many(new_reports)
        ]
        del new_reports
        merges = self.grouper.merges[self._merges_written:]
        self._merges_written = len(self.grouper.merges)
        done = GroupingSummary()
        self._unwritten = True  # until every chunk is written: a failed or refused write ends the session
        for start in range(0, len(placed), self.chunk):
            chunk = placed[start:start + self.chunk]
            with write_transaction(self.db.conn):
                # Asked again under the write lock: a run that died meanwhile has released its run lock.
                if not self.keep_writing():
                    break
                # The merges go with the first chunk: later chunks already point at the stories kept.
                self._write(chunk, merges if start == 0 else [])
            new_stories = sum(rule == "seed" for _, _, rule, _, _ in chunk)
            written = GroupingSummary(len(chunk), new_stories, len(chunk) - new_stories, len(merges) if start == 0 else 0)
            done.add(written)
            self.summary.add(written)
            if self.on_written is not None:
                self.on_written(self.summary)
        else:
            self._unwritten = False
        return done

    def _seed_window(self, start: str, end: str) -> None:
        """Load the stored stories around the new entries that the grouper does not hold yet."""
        if self._seeded is None:
            _seed_existing(self.db, self.grouper, self.credits, start, end)
            self._seeded = (start, end)
            return
        seeded_start, seeded_end = self._seeded
        if start < seeded_start:
            _seed_existing(self.db, self.grouper, self.credits, start, seeded_start)
        if end > seeded_end:
            _seed_existing(self.db, self.grouper, self.credits, seeded_end, end)
        self._seeded = (min(start, seeded_start), max(end, seeded_end))

    def _write(self, chunk: list[tuple], merges: list[Merge]) -> None:
        db, grouper = self.db, self.grouper
        stamp = to_db_time(self.now)
        touched = {grouper.resolve(story_id) for _, story_id, *_ in chunk}
        touched.update(grouper.resolve(m.into) for m in merges)
        # Placeholder rows first, so members can point at them; _write_story fills them in.
        db.conn.executemany(
            "INSERT OR IGNORE INTO stories (id, first_seen, last_seen) VALUES (?, ?, ?)",
            [(story_id, stamp, stamp) for story_id in sorted(touched)],
        )
        for merge in merges:
            # Stories born and merged within this session were never stored: nothing points at them.
            if db.execute("SELECT 1 FROM stories WHERE id = ?", [merge.merged]).fetchone():
                _fold_story(db, merge, self.now)
        db.conn.executemany(
            "INSERT OR REPLACE INTO story_members (entry_id, story_id, rule, score, evidence, joined_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(entry_id, grouper.resolve(story_id), rule, score, evidence, stamp)
             for entry_id, story_id, rule, score, evidence in chunk],
        )
        db.conn.executemany(
            "UPDATE entries SET story_id = ? WHERE id = ?",
            [(grouper.resolve(story_id), entry_id) for entry_id, story_id, *_ in chunk],
        )
        for story_id in sorted(touched):
            _write_story(db, grouper, self.credits, story_id)


def group_new_entries(
    db: sqlite_utils.Database, settings: DedupSettings, now: datetime | None = None
) -> GroupingSummary:
    """Give every extracted entry without a story one; safe to re-run (see :class:`GroupingSession`).

    Existing stories with members inside the window around the new entries
    are loaded first, so new entries join them and ids never change.
    """
    return GroupingSession(db, settings, now).place_ready()


def _observed_reports(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], sql: str
) -> list[Report]:
    """The rows' reports, observed by the grouper as they are read and kept without their texts.

    One row's text at a time is in memory, not the whole run's: the grouper
    keeps the features it needs and nothing reads the texts again.
    """
    cursor = db.execute(sql)
    names = [d[0] for d in cursor.description]
    reports = []
    for row in cursor:
        report = _report_from_row(dict(zip(names, row)))
        grouper.observe([report])
        credits[report.id] = report_credit(report)
        report.text = ""
        reports.append(report)
    return reports


def _seed_existing(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], start: str, end: str
) -> None:
    """Load the stories that have members published inside [start, end], with all their members in the window.

    Which entries those are is read first, without texts; then their rows, texts and all,
    ``SEED_ROWS`` at a time, so that one batch's texts are in memory and not the window's:
    placing a later run's 300 reports among 50,000 stored ones peaked 100 MB higher when
    every row was read before the first story was seeded.
    """
    window = "e.story_id IS NOT NULL AND coalesce(e.published, e.first_seen) BETWEEN ? AND ?"
    members_of: dict[int, list[int]] = defaultdict(list)  # in the window's order: oldest first
    for entry_id, story_id in db.execute(
        f"SELECT e.id, e.story_id FROM entries e WHERE {window} ORDER BY coalesce(e.published, e.first_seen), e.id",
        [start, end],
    ):
        members_of[resolve_story_id(db, story_id)].append(entry_id)
    stories = [(story_id, members) for story_id, members in sorted(members_of.items())
               if story_id not in grouper.stories]  # loaded already, or placed by this session
    for batch in _batches_of_rows(stories, SEED_ROWS):
        ids = [entry_id for _, members in batch for entry_id in members]
        rows: dict[int, dict[str, Any]] = {}
        for part in in_batches(ids, SEED_ROWS):  # a story larger than a batch is read in parts
            rows.update((row["id"], row) for row in db.query(
                f"SELECT {_scored_columns(grouper.settings)}, s.representative_id FROM entries e "
                "LEFT JOIN feeds f ON f.id = e.feed_id JOIN stories s ON s.id = e.story_id "
                f"WHERE e.id IN ({sql_marks(part)})",
                part,
            ))
        for story_id, members in batch:
            story_rows = [rows[entry_id] for entry_id in members if entry_id in rows]
            # The representative goes first so that the grouper keeps it as the story's face.
            story_rows.sort(key=lambda row: row["id"] != row["representative_id"])
            reports = [_report_from_row(row) for row in story_rows]
            credits.update((report.id, report_credit(report)) for report in reports)
            grouper.seed(story_id, reports)


def _batches_of_rows(stories: list[tuple[int, list[int]]], rows: int) -> Iterator[list[tuple[int, list[int]]]]:
    """``stories`` (id, member ids) in order, a batch holding ``rows`` members at most, or one story if it has more."""
    batch: list[tuple[int, list[int]]] = []
    size = 0
    for story in stories:
        if batch and size + len(story[1]) > rows:
            yield batch
            batch, size = [], 0
        batch.append(story)
        size += len(story[1])
    if batch:
        yield batch


def _fold_story(db: sqlite_utils.Database, merge: Merge, now: datetime) -> None:
    evidence = json.dumps({"merged_from": merge.merged, "story_link": merge.score})
    db.execute(
        "UPDATE story_members SET story_id = ?, rule = 'merge', score = ?, evidence = ?, joined_at = ? "
        "WHERE story_id = ?",
        [merge.into, merge.score, evidence, to_db_time(now), merge.merged],
    )
    db.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", [merge.into, merge.merged])
    db.execute(
        "UPDATE stories SET merged_into = ?, n_reports = 0, n_outlets = 0 WHERE id = ?", [merge.into, merge.merged]
    )


def _write_story(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], story_id: int
) -> None:
    """Recompute a story's row from all its members in the database.

    Texts are read only for members whose credited outlet is not in ``credits`` (members older
    than the window around this run's entries).
    """
    textless = ENTRY_COLUMNS.replace("e.summary,", "'' AS summary,").replace("e.text,", "'' AS text,")
    reports = [
        _report_from_row(row)
        for row in db.query(
            f"SELECT {textless} FROM entries e LEFT JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?",
            [story_id],
        )
    ]
    if any(r.id not in credits for r in reports):
        rows = db.query(
            f"SELECT {ENTRY_COLUMNS} FROM entries e LEFT JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?",
            [story_id],
        )
        credits.update((row["id"], report_credit(_report_from_row(row))) for row in rows if row["id"] not in credits)
    times = [r.published for r in reports if r.published]
    earliest, credited = original_source(reports, credits)
    representative = grouper.representative(story_id) if story_id in grouper.stories else None
    representative = representative or earliest
    first_seen = to_db_time(min(times)) if times else to_db_time(datetime.now(UTC))
    last_seen = to_db_time(max(times)) if times else first_seen
    db.execute(
        "INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
        "original_entry_id, credited_outlet) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET title = excluded.title, first_seen = excluded.first_seen, "
        "last_seen = excluded.last_seen, n_reports = excluded.n_reports, n_outlets = excluded.n_outlets, "
        "representative_id = excluded.representative_id, original_entry_id = excluded.original_entry_id, "
        "credited_outlet = excluded.credited_outlet",
        [
            story_id,
            representative.title if representative else "",
            first_seen,
            last_seen,
            len(reports),
            len({fold(r.source) for r in reports}),
            representative.id if representative else None,
            earliest.id if earliest else None,
            credited,
        ],
    )
