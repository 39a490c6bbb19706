"""What the grouper knows of each report: its features, computed once, and the window's word frequencies.

A report's text is read once, into counts (:func:`make_features`); when the
report is placed, the counts become weighted vectors (:meth:`Frequencies.weigh`)
with weights frozen from then on, so later reports never change past decisions.
Three vectors describe a report with a body: its whole text (title and body),
its title and lead (the first paragraphs of prose, past page chrome), and its
names and figures. Weights are sublinear term frequency times a sharpened
inverse document frequency; document frequencies come from the reports in the
window, smoothed by the language's own word frequencies (``wordfreq``), so a
small window still knows that "said" and "people" tell nothing.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any

from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.text import (
    NO_TOKENS,
    NUMBER,
    TITLE_PREFIX,
    body_fingerprint,
    clean_title,
    entities_normalised,
    figures,
    fold_normalised,
    is_generic_title,
    lead_of,
    normalise_numbers,
    token_counts,
    tokens,
    years,
)
from aggregator.urls import canonical_url

# A word of frequency p turns up in a text of this many words with probability 1 - exp(-p * words).
PRIOR_TEXT_WORDS = 300
# Rarer words than this add nothing measurable to a window's document frequencies.
PRIOR_MIN_FREQUENCY = 1e-6


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


@dataclass(slots=True, frozen=True)
class Vector:
    """A text's heaviest weighted terms, and the norm of all its terms (left-out terms still make texts less alike).

    Each term maps to its place in ``weights``: 8 bytes a weight in an array
    instead of a 24-byte float object, and places below 257 are shared ints.
    """

    places: dict[str, int] = field(default_factory=dict)
    weights: array = field(default_factory=lambda: array("d"))
    norm: float = 0.0

    @classmethod
    def of(cls, weighted: dict[str, float], limit: int) -> Vector:
        norm = math.sqrt(math.fsum(w * w for w in weighted.values()))
        kept = heaviest(weighted, limit)
        return cls(dict(zip(kept, range(len(kept)))), array("d", kept.values()), norm)

    def cosine(self, other: Vector) -> float:
        if not self.norm or not other.norm:
            return 0.0
        mine, my_places, theirs, their_places = self.weights, self.places, other.weights, other.places
        # A list, not a generator calling weight() twice a term: 7% less time (bench/README.md); fsum is
        # exactly rounded, so the order of the terms cannot change the result.
        products = [mine[my_places[t]] * theirs[their_places[t]] for t in my_places.keys() & their_places.keys()]
        return math.fsum(products) / (self.norm * other.norm)

    def containment(self, other: Vector) -> float:
        """Share of this vector's weight on terms the other carries too."""
        total = math.fsum(self.weights)
        return math.fsum(self.weight(t) for t in self.places if t in other.places) / total if total else 0.0

    def weight(self, term: str) -> float:
        return self.weights[self.places[term]]


NO_VECTOR = Vector()


@dataclass(slots=True)
class Features:
    """One report's features: what scoring and candidate search read. Texts are not kept."""

    report: Report
    title: str  # cleaned and folded
    sorted_title: str  # its words in sorted order: what rapidfuzz's token_sort_ratio compares
    generic_title: bool
    title_tokens: tuple[str, ...]  # distinct
    has_body: bool
    # Title and lead tokens and the heaviest names: what the inverted index holds to find candidates.
    key_tokens: tuple[str, ...]
    vocabulary: tuple[str, ...]  # distinct tokens of title and body: what the window's frequencies count
    # Counts of the three texts, dropped once weighted.
    text_counts: Counter[str] | None
    lead_counts: Counter[str] | None
    name_counts: Counter[str] | None
    title_numbers: frozenset[str]
    figures: frozenset[str]  # figures of title and body
    years: frozenset[str]  # years named in title and body
    length: int  # informative tokens of the body
    hour: float | None  # publication time in hours since the epoch
    canonical: str
    fingerprint: str | None
    seq: int = -1  # arrival order, given when the report is placed
    # Frozen when the report is placed (see Frequencies.weigh).
    title_weights: dict[str, float] = field(default_factory=dict)
    title_mass: float = 0.0
    text: Vector = NO_VECTOR
    lead: Vector = NO_VECTOR
    names: Vector = NO_VECTOR

    def release(self) -> None:
        """Drop what only comparisons need, once the report has left the window for good."""
        self.vocabulary = self.key_tokens = ()
        self.sorted_title = ""
        self.title_weights = {}
        self.text = self.lead = self.names = NO_VECTOR


def make_features(report: Report, settings: DedupSettings) -> Features:
    """Read a report's text once into the counts its vectors are built from."""
    title = clean_title(report.title, report.source)
    # Long bodies are cut: the first pages of an article say what it is about, and cost stays bounded.
    body = normalise_numbers((report.text or "")[: settings.max_body_chars].strip())
    has_body = len(body) >= settings.min_body_chars
    folded_body = fold_normalised(body) if has_body else ""
    # Interned: the window holds each token once, however many reports carry it.
    title_tokens = tuple(map(sys.intern, dict.fromkeys(tokens(title))))
    generic_title = is_generic_title(title, settings.min_title_tokens)
    # A generic title ("Morning briefing") names no story: what the texts say is left to their bodies.
    telling_title = () if generic_title else title_tokens
    body_counts = token_counts(folded_body)
    # The same counts in the same order as Counter's "+", 3.7x faster: no Counter of the title, no copy of both.
    text_counts = body_counts.copy()
    text_counts.update(telling_title)
    lead = tokens(fold_normalised(lead_of(body)))[: settings.lead_tokens] if has_body else []
    lead_counts = Counter(lead)
    lead_counts.update(telling_title)
    title_text = "" if generic_title else TITLE_PREFIX.sub("", normalise_numbers(report.title or ""))
    name_counts = entities_normalised(f"{title_text}.\n{body if has_body else ''}")
    # Sorted: a Counter's order follows the text, but ties in weight must break the same way in every run.
    key_names = [name for name, _ in sorted(name_counts.items(), key=lambda kv: (-kv[1], kv[0]))[: settings.key_names]]
    return Features(
        report=replace(report, text=""),  # the features are all the engine reads of the text
        title=title,
        sorted_title=" ".join(sorted(title.split())),
        generic_title=generic_title,
        title_tokens=title_tokens,
        has_body=has_body,
        key_tokens=tuple(map(sys.intern, dict.fromkeys(title_tokens + tuple(lead) + tuple(key_names)))),
        vocabulary=tuple(map(sys.intern, text_counts)),
        text_counts=text_counts,
        lead_counts=lead_counts,
        name_counts=name_counts,
        title_numbers=frozenset(t for t in title_tokens if NUMBER.match(t)) or NO_TOKENS,
        figures=figures(name_counts),
        years=years(name_counts),
        length=sum(body_counts.values()),
        hour=report.published.timestamp() / 3600 if report.published else None,
        canonical=canonical_url(report.url, report.canonical_url) if (report.url or report.canonical_url) else "",
        fingerprint=body_fingerprint(folded_body) if len(folded_body) >= settings.min_fingerprint_chars else None,
    )


def heaviest(weights: dict[str, float], limit: int) -> dict[str, float]:
    """The ``limit`` heaviest entries, heaviest first (ties in their order), or all of them in their order."""
    if len(weights) <= limit:
        return weights
    # A stable C-level sort: the same entries, in the same order, as heapq.nlargest, several times faster.
    return dict(sorted(weights.items(), key=itemgetter(1), reverse=True)[:limit])


@cache
def language_frequencies() -> dict[str, float]:
    """English word frequencies (``wordfreq``), the words common enough to matter: loaded once a process.

    The same as ``wordfreq.get_frequency_dict("en")`` cut at ``PRIOR_MIN_FREQUENCY``, without building
    the whole dictionary first: wordfreq's list holds one bucket of words per centibel of frequency, most
    frequent first, so reading stops at the first bucket below the cut.
    """
    from wordfreq import get_frequency_list

    frequencies: dict[str, float] = {}
    for bucket, words in enumerate(get_frequency_list("en")):
        p = 10 ** (-bucket / 100)  # wordfreq's cB_to_freq
        if p < PRIOR_MIN_FREQUENCY:
            break
        frequencies.update(dict.fromkeys(words, p))
    return frequencies


@cache
def prior_shares() -> dict[str, float]:
    """Per word of :func:`language_frequencies`, the chance that a text of ``PRIOR_TEXT_WORDS`` words carries it.

    The part of the prior that does not depend on the window: computed once, not once a token weighed.
    """
    return {word: -math.expm1(-p * PRIOR_TEXT_WORDS) for word, p in language_frequencies().items()}


# 1 + log(count) for the counts most terms have: a table lookup instead of a log call a term.
SUBLINEAR_TF = [0.0] + [1.0 + math.log(count) for count in range(1, 64)]


class Frequencies:
    """How many reports in the window carry each token (title and body), and the weights they give."""

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.df: Counter[str] = Counter()
        self.n = 0
        self._prior_share = prior_shares() if settings.prior_weight else {}

    def add(self, doc_tokens: Iterable[str]) -> None:
        self.df.update(doc_tokens)
        self.n += 1

    def remove(self, doc_tokens: Iterable[str]) -> None:
        for token in doc_tokens:
            left = self.df[token] - 1
            if left > 0:
                self.df[token] = left
            else:
                del self.df[token]
        self.n -= 1

    def idf(self, token: str) -> float:
        """Inverse document frequency, sharpened by ``idf_power``; the language's frequency counts as documents too."""
        n = self.n
        share = self._prior_share.get(token)
        expected = 0.0 if share is None else self.settings.prior_weight * n * share
        rarity = math.log((n + 1) / (self.df.get(token, 0) + 0.5 + expected)) + 1.0
        return max(rarity, 0.01) ** self.settings.idf_power

    def idfs(self, tokens: Iterable[str]) -> dict[str, float]:
        """:meth:`idf` of each token."""
        idf = self.idf
        return {token: idf(token) for token in tokens}

    def vector(self, counts: Counter[str], idfs: dict[str, float], limit: int) -> Vector:
        """Sublinear TF-IDF of the counts (``idfs`` holds their tokens' idfs); a word no other report in the window
        carries weighs less.

        Such a word matches nothing yet; at full weight it would only make a
        long text less alike every other, and leave a text whose only shared
        words are a few common ones looking like every text that has them.
        It keeps ``unique_word_weight`` of its weight, not none, so a report
        placed before the others that share its words still meets them.
        """
        df, unique, tf, log = self.df, self.settings.unique_word_weight, SUBLINEAR_TF, math.log
        return Vector.of({t: (tf[c] if c < 64 else 1.0 + log(c)) * idfs[t] * (unique if df.get(t, 0) < 2 else 1.0)
                          for t, c in counts.items()}, limit)

    def weigh(self, doc: Features) -> None:
        """Freeze the report's weights from the window's frequencies now; its counts are dropped."""
        settings = self.settings
        # Each distinct token's idf once: the lead's tokens are the text's, and most names are too.
        idfs = self.idfs(doc.title_tokens)
        doc.title_weights = idfs.copy()
        doc.title_mass = sum(doc.title_weights.values())
        if doc.has_body:
            counts = [doc.text_counts or Counter(), doc.lead_counts or Counter(), doc.name_counts or Counter()]
            idfs.update(self.idfs(t for part in counts for t in part if t not in idfs))
            doc.text = self.vector(counts[0], idfs, settings.max_vector_terms)
            doc.lead = self.vector(counts[1], idfs, settings.max_vector_terms)
            doc.names = self.vector(counts[2], idfs, settings.max_names)
        doc.text_counts = doc.lead_counts = doc.name_counts = None


def meaningful_guid(guid: str | None) -> str | None:
    """GUIDs that identify an article; short counters and bare site URLs do not."""
    if not guid or len(guid) < 8 or guid.isdigit():
        return None
    return canonical_url(guid) if guid.startswith(("http://", "https://")) else guid
