"""Entries and fetches as rows: the columns an entry is written with, and the fetch log."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aggregator.models import ParsedEntry
from aggregator.store.sql import _json_list, to_db_time

if TYPE_CHECKING:
    from aggregator.store import FetchRecord, SavedFetch


_ENTRY_COLUMNS = ("link", "title", "summary", "content", "author", "published", "updated", "tags", "enclosures")
_INSERT_ENTRY = (
    f"INSERT INTO entries (feed_id, guid, {', '.join(_ENTRY_COLUMNS)}, content_hash, first_seen, "
    f"changed_at, text, text_source, extract_status) VALUES ({','.join('?' * (len(_ENTRY_COLUMNS) + 8))})"
)
_UPDATE_ENTRY = (
    f"UPDATE entries SET {', '.join(f'{column} = ?' for column in _ENTRY_COLUMNS)}, content_hash = ?, changed_at = ?, "
    "text = CASE WHEN text_source = 'page' THEN text ELSE ? END, "
    "text_source = CASE WHEN text_source = 'page' THEN text_source ELSE ? END "
    "WHERE feed_id = ? AND guid = ?"
)


def _entry_values(entry: ParsedEntry) -> tuple:
    return (
        entry.link, entry.title, entry.summary, entry.content, entry.author,
        to_db_time(entry.published), to_db_time(entry.updated),
        _json_list(entry.tags), _json_list([asdict(e) for e in entry.enclosures]),
    )


def feed_text_of(entry: ParsedEntry) -> tuple[str, str]:
    """The best plain text the feed itself gives, and which field it came from."""
    if entry.content_text:
        return entry.content_text, "feed-content"
    return entry.summary_text, "feed-summary"


def _record_fetch(conn: sqlite3.Connection, record: FetchRecord, now_text: str, saved: SavedFetch) -> None:
    """The feed row and the fetch_log line of one fetch, inside the caller's transaction."""
    _update(conn, "feeds", record.feed_id, record.feed_columns)
    conn.execute(
        "INSERT INTO fetch_log (feed_id, url, started_at, status, bytes, new_entries, updated_entries, "
        "duration_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (record.feed_id, record.url, now_text, record.status, record.body_bytes, len(saved.new_entry_ids),
         saved.updated, int(record.elapsed * 1000), record.error),
    )


def _feed_row_differs(row: dict | None, feed: Any) -> bool:
    """Whether :meth:`Store.sync_feeds` must write ``feed``'s row (``None``: there is none yet)."""
    if row is None or row["tags"] != json.dumps(feed.tags):
        return True
    return feed.title is not None and feed.title != row["title"]


def _update(conn: sqlite3.Connection, table: str, row_id: int, columns: dict[str, Any]) -> None:
    if columns:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", [*columns.values(), row_id])
