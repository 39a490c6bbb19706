"""Stories as the exports see them: read from the store, each with its reports and a lead summary."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import islice
from typing import Any

from aggregator.parse import safe_http_url
from aggregator.store import Store

SUMMARY_SENTENCES = 2
SUMMARY_CHARS = 300
# The end of a sentence: punctuation (and closing quotes) before a space and
# a capital, a figure or an opening quote, or at the end. A single capital
# before the stop is an initial ("J. Smith", "U.S."), not a sentence end.
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?…][\"'”’)\]]*(?=\s+[\"“‘'(\[A-Z0-9]|\s*$)")


@dataclass
class ExportReport:
    """One outlet's report of a story."""

    id: int
    outlet: str
    feed_url: str
    title: str
    url: str | None
    published: str | None
    first_seen: str
    extract_status: str

    @property
    def time(self) -> str:
        """When it was published, else when agg first saw it (ISO 8601 UTC)."""
        return self.published or self.first_seen


@dataclass
class ExportStory:
    """One story with every report of it, oldest first."""

    id: int
    title: str
    first_seen: str
    last_seen: str
    reports: list[ExportReport] = field(default_factory=list)
    representative_id: int | None = None
    original_entry_id: int | None = None
    credited_outlet: str | None = None
    lead_text: str = ""

    @property
    def item_id(self) -> str:
        return f"urn:agg:story:{self.id}"

    @property
    def representative(self) -> ExportReport | None:
        return self._report(self.representative_id) or (self.reports[0] if self.reports else None)

    @property
    def original(self) -> ExportReport | None:
        return self._report(self.original_entry_id)

    @property
    def link(self) -> str | None:
        """The representative report's address, else the first web address any report has."""
        preferred = [self.representative] if self.representative else []
        return next(filter(None, (safe_http_url(r.url) for r in [*preferred, *self.reports])), None)

    @property
    def outlets(self) -> list[str]:
        """The outlets that carried it, one name per feed, in the order they reported it."""
        names: dict[str, str] = {}
        for report in self.reports:
            names.setdefault(report.feed_url, report.outlet)
        return list(names.values())

    @cached_property
    def summary(self) -> str:
        return lead_summary(self.lead_text)

    def _report(self, entry_id: int | None) -> ExportReport | None:
        return next((r for r in self.reports if r.id == entry_id), None) if entry_id is not None else None


def story_from_row(row: Mapping[str, Any]) -> ExportStory:
    """An :class:`ExportStory` from a row of :meth:`Store.iter_stories` with its reports and lead text."""
    return ExportStory(
        id=row["id"],
        title=row["title"] or "",
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        reports=[
            ExportReport(
                id=r["id"], outlet=r["outlet"] or r["feed_url"], feed_url=r["feed_url"], title=r["title"] or "",
                url=r["link"], published=r["published"], first_seen=r["first_seen"],
                extract_status=r["extract_status"],
            )
            for r in row["reports"]
        ],
        representative_id=row["representative_id"],
        original_entry_id=row["original_entry_id"],
        credited_outlet=row["credited_outlet"],
        lead_text=row["lead_text"] or "",
    )


def load_stories(store: Store, *, since: datetime | None = None, min_outlets: int = 1) -> list[ExportStory]:
    """The stories active since ``since`` carried by at least ``min_outlets`` outlets, newest first."""
    rows = store.iter_stories(since=since, min_outlets=min_outlets, reports=True, lead_text=True)
    return [story_from_row(row) for row in rows]


def lead_summary(text: str, sentences: int = SUMMARY_SENTENCES, max_chars: int = SUMMARY_CHARS) -> str:
    """The first ``sentences`` sentences of ``text``, cut at a word to at most ``max_chars`` characters."""
    # Only the start can make the summary: flattening and searching whole articles was most of the
    # time of an export (bench/read_scale.py). A start longer than max_chars once flattened gives the
    # same summary as the whole text: whatever the search finds past max_chars is cut off anyway.
    flat = " ".join(text[:2 * max_chars].split())
    if len(flat) <= max_chars + 1 and len(text) > 2 * max_chars:
        flat = " ".join(text.split())
    ends = [match.end() for match in islice(_SENTENCE_END.finditer(flat), sentences)]
    if len(ends) >= sentences:
        flat = flat[:ends[sentences - 1]]
    if len(flat) <= max_chars:
        return flat
    cut = flat[:max_chars - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:-–—") + "…"
