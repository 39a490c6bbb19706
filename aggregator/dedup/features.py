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
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from itertools import repeat
from typing import Any

import numpy as np

from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.text import (
    NO_TOKENS,
    NUMBER,
    TITLE_PREFIX,
    body_fingerprint,
    clean_title,
    entities_normalised,
    figures,
    first_tokens,
    fold_normalised,
    is_generic_title,
    lead_of,
    normalise_numbers,
    token_counts,
    tokens,
    without_chrome,
    years,
)
from aggregator.dedup.vectors import NO_COUNTS, NO_IDS, NO_VECTOR, TOKENS, Counts, Vector, distinct_ids
from aggregator.urls import canonical_url

__all__ = ["Features", "Frequencies", "Report", "TextReading", "Vector", "NO_VECTOR", "make_features",
           "read_text"]

# A word of frequency p turns up in a text of this many words with probability 1 - exp(-p * words).
PRIOR_TEXT_WORDS = 300
# Rarer words than this add nothing measurable to a window's document frequencies.
PRIOR_MIN_FREQUENCY = 1e-6


# How much more of a text than is scored is read for its page chrome (a page may open with long menus).
CHROME_READ = 3


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
    # ``published`` is when the report was fetched, not a time its feed gave (an entry without one): it places
    # the report among the reports of its run, and says nothing of when its event happened.
    time_estimated: bool = False




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
    vocabulary: np.ndarray  # ids of the distinct tokens of title and body: what the window's frequencies count
    # Counts of the three texts, dropped once weighted.
    text_counts: Counts | None
    lead_counts: Counts | None
    name_counts: Counts | None
    title_numbers: frozenset[str]
    figures: frozenset[str]  # figures of title and body
    years: frozenset[str]  # years named in title and body
    length: int  # informative tokens of the body
    hour: float | None  # publication time in hours since the epoch
    dated: bool  # the time is the report's own (its feed gave it), not the time it was fetched
    canonical: str
    fingerprint: str | None
    seq: int = -1  # arrival order, given when the report is placed
    # A stored member seeded without its title, weights and vectors: the blob they are still in
    # (aggregator.dedup.stored.complete reads them when its story is first compared).
    deferred: bytes | None = None
    key_ids: np.ndarray | None = None  # the key tokens' ids, where they were read as ids (a deferred member's)
    # Frozen when the report is placed (see Frequencies.weigh).
    title_weights: dict[str, float] = field(default_factory=dict)
    title_mass: float = 0.0
    text: Vector = NO_VECTOR
    lead: Vector = NO_VECTOR
    names: Vector = NO_VECTOR

    def retire(self) -> None:
        """Drop what comparisons read, once none can reach the report again (it is past its story's compared
        members for good); what finding candidates and leaving the window read stays."""
        self.sorted_title = ""
        self.title_weights = {}
        self.text = self.lead = self.names = NO_VECTOR
        self.deferred = None

    def release(self) -> None:
        """Drop what only comparisons need, once the report has left the window for good."""
        self.key_tokens = ()
        self.vocabulary = NO_IDS
        self.sorted_title = ""
        self.title_weights = {}
        self.text = self.lead = self.names = NO_VECTOR


@dataclass(slots=True)
class TextReading:
    """What reading a report's text gives, its tokens as strings: a pure function of the report, so it can be
    computed in another process (:class:`aggregator.dedup.readahead.ReadAhead`) and turned into features here."""

    title: str
    sorted_title: str
    generic_title: bool
    title_tokens: tuple[str, ...]
    has_body: bool
    key_tokens: tuple[str, ...]
    text_counts: dict[str, int]
    lead_counts: dict[str, int]
    name_counts: dict[str, int]
    title_numbers: frozenset[str]
    figures: frozenset[str]
    years: frozenset[str]
    length: int
    canonical: str
    fingerprint: str | None


def read_text(report: Report, settings: DedupSettings) -> TextReading:
    """Read a report's text once into the counts its vectors are built from."""
    title = clean_title(report.title, report.source)
    # Long bodies are cut: the first pages of an article say what it is about, and cost stays bounded.
    # Page chrome goes before the cut: a page's menus must not take the room of its article. What is left of a
    # text that was mostly such lines may be too short to be a body: then the text is read as it came.
    text = (report.text or "")[: CHROME_READ * settings.max_body_chars]
    article = without_chrome(text)
    if len(article.strip()) < settings.min_body_chars:
        article = text
    body = normalise_numbers(article[: settings.max_body_chars].strip())
    has_body = len(body) >= settings.min_body_chars
    folded_body = fold_normalised(body) if has_body else ""
    title_tokens = tuple(dict.fromkeys(tokens(title)))
    generic_title = is_generic_title(title, settings.min_title_tokens)
    # A generic title ("Morning briefing") names no story: what the texts say is left to their bodies.
    telling_title = () if generic_title else title_tokens
    body_counts = token_counts(folded_body)
    # The same counts in the same order as Counter's "+", 3.7x faster: no Counter of the title, no copy of both.
    text_counts = body_counts.copy()
    text_counts.update(telling_title)
    lead = first_tokens(lead_of(body), settings.lead_tokens) if has_body else []
    lead_counts = Counter(lead)
    lead_counts.update(telling_title)
    title_text = "" if generic_title else TITLE_PREFIX.sub("", normalise_numbers(report.title or ""))
    name_counts = entities_normalised(f"{title_text}.\n{body if has_body else ''}")
    # Sorted: a Counter's order follows the text, but ties in weight must break the same way in every run.
    key_names = [name for name, _ in sorted(name_counts.items(), key=lambda kv: (-kv[1], kv[0]))[: settings.key_names]]
    return TextReading(
        title=title,
        sorted_title=" ".join(sorted(title.split())),
        generic_title=generic_title,
        title_tokens=title_tokens,
        has_body=has_body,
        key_tokens=tuple(dict.fromkeys(title_tokens + tuple(lead) + tuple(key_names))),
        text_counts=text_counts,
        lead_counts=lead_counts,
        name_counts=name_counts,
        title_numbers=frozenset(t for t in title_tokens if NUMBER.match(t)) or NO_TOKENS,
        figures=figures(name_counts),
        years=years(name_counts),
        length=sum(body_counts.values()),
        canonical=canonical_url(report.url, report.canonical_url) if (report.url or report.canonical_url) else "",
        fingerprint=body_fingerprint(folded_body) if len(folded_body) >= settings.min_fingerprint_chars else None,
    )


def make_features(report: Report, settings: DedupSettings, reading: TextReading | None = None) -> Features:
    """A report's features, from its ``reading`` (:func:`read_text`, done here when not given)."""
    reading = reading or read_text(report, settings)
    text = Counts.of(reading.text_counts)
    return Features(
        report=replace(report, text=""),  # the features are all the engine reads of the text
        title=reading.title,
        sorted_title=reading.sorted_title,
        generic_title=reading.generic_title,
        # Interned: the window holds each token once, however many reports carry it.
        title_tokens=tuple(map(sys.intern, reading.title_tokens)),
        has_body=reading.has_body,
        key_tokens=tuple(map(sys.intern, reading.key_tokens)),
        vocabulary=text.ids,
        text_counts=text,
        lead_counts=Counts.of(reading.lead_counts),
        name_counts=Counts.of(reading.name_counts),
        # Empty ones as the one shared empty set: a reading unpickled from a worker holds a new one each.
        title_numbers=reading.title_numbers or NO_TOKENS,
        figures=reading.figures or NO_TOKENS,
        years=reading.years or NO_TOKENS,
        length=reading.length,
        hour=report.published.timestamp() / 3600 if report.published else None,
        dated=report.published is not None and not report.time_estimated,
        canonical=reading.canonical,
        fingerprint=reading.fingerprint,
    )


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


# Most token ids of vocabularies waiting to be counted (Frequencies.add_all): bounds the one array counting them.
PENDING_IDS = 1_000_000
# 1 + log(count) for the counts most terms have: a table lookup instead of a log call a term.
SUBLINEAR_TF = [0.0] + [1.0 + math.log(count) for count in range(1, 64)]
SUBLINEAR_TF_ARRAY = np.array(SUBLINEAR_TF, dtype=np.float64)


class Frequencies:
    """How many reports in the window carry each token (title and body), and the weights they give.

    The counts are an array indexed by token id (:data:`TOKENS`): a report's vocabulary is added or
    removed in one numpy step, and a report's tokens are looked up in one gather.
    """

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.df = np.zeros(1024, dtype=np.int32)  # by token id
        self.n = 0
        # Vocabularies counted in n but not yet in df: added in one bincount when df is next read (seeding a
        # window of 50,000 added them story by story, a tenth of its time in np.add.at).
        self._pending: list[np.ndarray] = []
        self._pending_ids = 0
        self._prior_share = prior_shares() if settings.prior_weight else {}
        # Each token's prior share by id (0.0 for a word the language list lacks), looked up once a token: the ids
        # below _shares_through are filled.
        self._shares = np.zeros(1024)
        self._shares_through = 0
        # Each token's idf as last computed, by id, with the window size and count it was computed for: an idf is
        # a function of the token and those two, so where both are unchanged the stored double is the one
        # computing it again would give (a batch's reports are weighed against the same counts; computing
        # every token's idf again was a tenth of a first import's time).
        self._idf_value = np.zeros(1024)
        self._idf_n = np.full(1024, -1, dtype=np.int32)
        self._idf_df = np.zeros(1024, dtype=np.int32)

    def _make_room(self) -> None:
        if len(self.df) < len(TOKENS):
            size = max(2 * len(self.df), len(TOKENS))
            self.df = _grown(self.df, size, 0)
            self._idf_value = _grown(self._idf_value, size, 0.0)
            self._idf_n = _grown(self._idf_n, size, -1)
            self._idf_df = _grown(self._idf_df, size, 0)

    def _settle(self) -> None:
        """Make ``df`` cover every token and count the pending vocabularies: before any use of it."""
        self._make_room()
        if self._pending:
            ids = np.concatenate(self._pending)
            if len(ids) < len(self.df) // 16:  # a bincount goes over the whole table: few ids are added in place
                np.add.at(self.df, ids, 1)
            else:
                self.df += np.bincount(ids, minlength=len(self.df)).astype(np.int32)
            self._pending = []
            self._pending_ids = 0

    def add(self, doc_tokens: np.ndarray) -> None:
        """Count one report's distinct token ids."""
        self._settle()
        self.df[doc_tokens] += 1
        self.n += 1

    def add_all(self, vocabularies: list[np.ndarray]) -> None:
        """:meth:`add` of each report's distinct token ids, counted in ``df`` when it is next read."""
        self._pending.extend(vocabularies)
        self._pending_ids += sum(map(len, vocabularies))
        self.n += len(vocabularies)
        if self._pending_ids > PENDING_IDS:
            self._settle()

    def remove(self, doc_tokens: np.ndarray) -> None:
        self._settle()
        self.df[doc_tokens] -= 1
        self.n -= 1

    def count(self, token: str) -> int:
        """How many reports in the window carry the token."""
        if self._pending:
            self._settle()
        found = TOKENS.known(token)
        return int(self.df[found]) if found is not None and found < len(self.df) else 0

    def counts(self, tokens: list[str]) -> list[int]:
        """:meth:`count` of each token, in one gather."""
        ids = TOKENS.ids_of(tokens)
        self._settle()
        return self.df[ids].tolist()

    def idfs_of(self, tokens: list[str]) -> list[float]:
        """The idf of each token (:meth:`_idfs`), in one gather."""
        ids = TOKENS.ids_of(tokens)
        self._settle()
        return self.idfs_of_ids(ids, self.df[ids]).tolist()

    def _idfs(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Inverse document frequency of each token id carried by ``counts`` reports, sharpened by ``idf_power``; the
        language's frequency counts as documents too.

        Each idf is ``max(log((n + 1) / (count + 0.5 + prior_weight * n * share)) + 1, 0.01) ** idf_power``. Its
        sums, products and quotient are numpy's, rounded as Python's are, in the same order; its log and power are
        Python's (libm's), taken in C-level passes: the same doubles as the formula token by token, without a Python
        call a token (where the window moves with every report, every idf is computed again for every report).
        """
        n = self.n
        expected = (self.settings.prior_weight * n) * self._prior_shares_of(ids)
        quotients = (n + 1) / (counts.astype(np.float64) + 0.5 + expected)
        rarity = np.fromiter(map(math.log, quotients.tolist()), dtype=np.float64, count=len(quotients)) + 1.0
        return np.fromiter(map(pow, np.maximum(rarity, 0.01).tolist(), repeat(self.settings.idf_power)),
                           dtype=np.float64, count=len(rarity))

    def _prior_shares_of(self, ids: np.ndarray) -> np.ndarray:
        """The prior share of each token id (:func:`prior_shares`; 0.0 for a word without one)."""
        through = len(TOKENS.words)
        if self._shares_through < through:
            if len(self._shares) < through:
                self._shares = _grown(self._shares, max(2 * len(self._shares), through), 0.0)
            share_of = self._prior_share.get
            self._shares[self._shares_through:through] = [
                share_of(word, 0.0) for word in TOKENS.words[self._shares_through:through]]
            self._shares_through = through
        return self._shares[ids]

    def idfs_of_ids(self, ids: np.ndarray, dfs: np.ndarray) -> np.ndarray:
        """The idf of each token id of ``ids``, whose counts are ``dfs`` (read from ``df``): computed only
        for the ids whose idf was last computed for another window size or count."""
        n = self.n
        stale = np.flatnonzero((self._idf_n[ids] != n) | (self._idf_df[ids] != dfs))
        if len(stale):
            stale_ids = ids[stale]
            self._idf_value[stale_ids] = self._idfs(stale_ids, dfs[stale])
            self._idf_n[stale_ids] = n
            self._idf_df[stale_ids] = dfs[stale]
        return self._idf_value[ids]

    def vector(self, counts: Counts, distinct: np.ndarray, idfs: np.ndarray, dfs: np.ndarray, limit: int) -> Vector:
        """Sublinear TF-IDF of the counts (``idfs`` and ``dfs`` hold the idfs and document counts of the token ids
        ``distinct``, ascending, which hold the counts' ids); a word no other report in the window carries weighs
        less.

        Such a word matches nothing yet; at full weight it would only make a
        long text less alike every other, and leave a text whose only shared
        words are a few common ones looking like every text that has them.
        It keeps ``unique_word_weight`` of its weight, not none, so a report
        placed before the others that share its words still meets them.
        """
        at = np.searchsorted(distinct, counts.ids)
        tf = SUBLINEAR_TF_ARRAY[np.minimum(counts.counts, len(SUBLINEAR_TF) - 1)]
        for i in np.flatnonzero(counts.counts >= len(SUBLINEAR_TF)).tolist():
            tf[i] = 1.0 + math.log(int(counts.counts[i]))
        # Each product as the scalar expression (tf * idf) * share gives it: the same doubles.
        weights = tf * idfs[at]
        weights *= np.where(dfs[at] < 2, self.settings.unique_word_weight, 1.0)
        return Vector.of_arrays(counts.ids, weights, limit)

    def weigh(self, doc: Features) -> None:
        """Freeze the report's weights from the window's frequencies now; its counts are dropped."""
        settings = self.settings
        title_ids = TOKENS.ids_of(doc.title_tokens)
        parts = [counts or NO_COUNTS for counts in (doc.text_counts, doc.lead_counts, doc.name_counts)] \
            if doc.has_body else []
        # Each distinct token's count and idf once: the lead's tokens are the text's, and most names are too.
        distinct = distinct_ids(np.concatenate([title_ids, *(part.ids for part in parts)])) if parts else title_ids
        self._settle()
        dfs = self.df[distinct]
        idf_array = self.idfs_of_ids(distinct, dfs)
        # A body's distinct ids are sorted, and hold the title's; without one, they are the title's, in its order.
        title_idfs = idf_array[np.searchsorted(distinct, title_ids)] if parts else idf_array
        doc.title_weights = dict(zip(doc.title_tokens, title_idfs.tolist()))
        doc.title_mass = sum(doc.title_weights.values())
        if doc.has_body:
            doc.text = self.vector(parts[0], distinct, idf_array, dfs, settings.max_vector_terms)
            doc.lead = self.vector(parts[1], distinct, idf_array, dfs, settings.max_vector_terms)
            doc.names = self.vector(parts[2], distinct, idf_array, dfs, settings.max_names)
        doc.text_counts = doc.lead_counts = doc.name_counts = None


def _grown(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    """``array`` extended to ``size`` with ``fill``."""
    grown = np.full(size, fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def meaningful_guid(guid: str | None) -> str | None:
    """GUIDs that identify an article; short counters and bare site URLs do not."""
    if not guid or len(guid) < 8 or guid.isdigit():
        return None
    return canonical_url(guid) if guid.startswith(("http://", "https://")) else guid
