"""Stored entries as the engine's reports: which columns are read, and how a row becomes a :class:`Report`."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aggregator.dedup.features import Report
from aggregator.dedup.settings import DedupSettings
from aggregator.store import from_db_time, sql_marks
from aggregator.urls import host_of

TAG = re.compile(r"<[^>]+>")

ENTRY_COLUMNS = """
    e.id, e.guid, e.link, e.canonical_url, e.title, e.summary, e.text, e.published, e.first_seen,
    e.story_id, f.title AS feed_title
"""
TEXTLESS_COLUMNS = ENTRY_COLUMNS.replace("e.summary,", "'' AS summary,").replace("e.text,", "'' AS text,")


def scored_columns(settings: DedupSettings) -> str:
    """ENTRY_COLUMNS with texts cut where scoring stops reading them, so long articles never load whole."""
    cut = f"substr({{}}, 1, {int(settings.max_body_chars)})"
    return ENTRY_COLUMNS.replace("e.summary,", f"{cut.format('e.summary')} AS summary,").replace(
        "e.text,", f"{cut.format('e.text')} AS text,")


def entry_rows(connection: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    """The rows of a query, each read by column name (:class:`sqlite3.Row`, made in C: a later run reads 50,000,
    and making a dict of each took a sixth of its loading)."""
    cursor = connection.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params)


def scored_rows(connection: sqlite3.Connection, ids: Sequence[int], settings: DedupSettings) -> sqlite3.Cursor:
    """These entries' rows as scoring reads them (:func:`scored_columns`), by id: one query, so at most a few
    hundred ids."""
    return entry_rows(connection, f"SELECT {scored_columns(settings)} FROM entries e LEFT JOIN feeds f "
                      f"ON f.id = e.feed_id WHERE e.id IN ({sql_marks(ids)}) ORDER BY e.id", ids)


def report_source(feed_title: str | None, link: str | None) -> str:
    """A stored report's outlet: its feed's title, else the host of its link."""
    return (feed_title or "").strip() or host_of(link or "")


def report_time(published: str | None, first_seen: str | None) -> datetime | None:
    """A stored report's time: when its feed says it was published, else when it was first fetched."""
    return from_db_time(published) or from_db_time(first_seen)


def report_from_row(row: sqlite3.Row | Mapping[str, Any]) -> Report:
    text = row["text"] or TAG.sub(" ", row["summary"] or "")
    return Report(
        id=row["id"],
        title=row["title"] or "",
        text=text,
        url=row["link"] or "",
        source=report_source(row["feed_title"], row["link"]),
        published=report_time(row["published"], row["first_seen"]),
        time_estimated=not row["published"],
        guid=row["guid"],
        canonical_url=row["canonical_url"],
    )
