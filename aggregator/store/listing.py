"""Which stories a listing shows, and in which order: the filters and pages of ``agg list`` and the exports."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aggregator.store.sql import in_batches, sql_marks, to_db_time


@dataclass(frozen=True)
class StoryListing:
    """Which stories a listing shows, newest activity first: the filters and page of ``agg list``."""

    since: datetime | None = None
    feed: str | None = None
    tag: str | None = None
    min_outlets: int = 1
    limit: int | None = None
    offset: int = 0

    def select(self, columns: str, *, by_index: bool = True) -> tuple[str, list[Any]]:
        """The query of these stories' ``columns`` (of ``stories s``) and its parameters; ``by_index=False``
        sorts them rather than following ``stories_last_seen``."""
        where, params = _stories_filter(self.since, self.feed, self.tag, self.min_outlets)
        last_seen = "s.last_seen" if by_index else "+s.last_seen"
        sql = f"SELECT {columns} FROM stories s WHERE {where} ORDER BY {last_seen} DESC, s.id DESC"
        if self.limit or self.offset:
            sql += f" LIMIT {int(self.limit) if self.limit else -1} OFFSET {int(self.offset)}"
        return sql, params


StoryRow = tuple[int, int, int, str, str, str]
"""A story as :meth:`Store.iter_story_rows` lists it: id, n_reports, n_outlets, last_seen, title, outlet_feeds."""


def _feed_filter(feed: str | None, tag: str | None) -> tuple[list[str], list[Any]]:
    """SQL conditions on a joined ``feeds f`` for ``--feed URL|TITLE`` and ``--tag``, with their parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if feed:
        clauses.append("(f.url = ? OR f.title = ?)")
        params += [feed, feed]
    if tag:
        clauses.append("EXISTS (SELECT 1 FROM json_each(f.tags) WHERE json_each.value = ?)")
        params.append(tag)
    return clauses, params


def _stories_filter(since: datetime | None, feed: str | None, tag: str | None,
                    min_outlets: int) -> tuple[str, list[Any]]:
    """The WHERE clause on ``stories s`` of a listing, with its parameters."""
    where = ["s.merged_into IS NULL", "s.n_outlets >= ?"]
    params: list[Any] = [min_outlets]
    if since is not None:
        where.append("s.last_seen >= ?")
        params.append(to_db_time(since))
    member_filter, member_params = _feed_filter(feed, tag)
    params += member_params
    if member_filter:
        where.append(
            "s.id IN (SELECT e.story_id FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE "
            + " AND ".join(member_filter) + ")"
        )
    return " AND ".join(where), params


def _outlet_name(outlets_by_feed: dict[int, tuple[str, str]], feed_id: int) -> str:
    return outlets_by_feed.get(feed_id, ("?", ""))[0]


def feed_ids(outlet_feeds: str) -> tuple[int, ...]:
    """The feed ids a story's ``outlet_feeds`` column lists, in the order they first reported it."""
    return tuple(map(int, outlet_feeds.split()))


def write_outlet_feeds(conn: sqlite3.Connection, story_ids: Sequence[int] | None = None) -> None:
    """Set the stories' ``outlet_feeds`` (migration 8) from their reports: each feed once, by its first
    report's time, then by feed id; ``None``: every story's, in one pass over ``entries_story_outlets``.

    Written with the story's row (the grouping's :func:`~aggregator.dedup.session` writes), so that a
    listing reads a story's outlets with it rather than from its reports.
    """
    firsts: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for part in [None] if story_ids is None else in_batches(list(story_ids), 500):
        where = "story_id IS NOT NULL" if part is None else f"story_id IN ({sql_marks(part)})"
        for story_id, feed_id, first in conn.execute(
                "SELECT story_id, feed_id, MIN(COALESCE(published, first_seen)) FROM entries "
                f"WHERE {where} GROUP BY story_id, feed_id", part or []):
            firsts[story_id].append((first, feed_id))
    conn.executemany("UPDATE stories SET outlet_feeds = ? WHERE id = ?",
                     [(" ".join(str(feed_id) for _, feed_id in sorted(reports)), story_id)
                      for story_id, reports in firsts.items()])
