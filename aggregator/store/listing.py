"""Which stories a listing shows, and in which order: the filters and pages of ``agg list`` and the exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregator.store.sql import to_db_time

if TYPE_CHECKING:
    pass


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


StoryRow = tuple[int, int, int, str, str]
"""A story as :meth:`Store.iter_story_rows` lists it: id, n_reports, n_outlets, last_seen, title."""


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


def _in_reporting_order(reports: str) -> tuple[int, ...]:
    """The feed ids of ``reports`` (``time feed_id`` items, the id in 20 digits, separated by U+001E), each
    once, earliest first, then by feed id: sorted as text, as the times sort as text."""
    return tuple(dict.fromkeys([int(report[-20:]) for report in sorted(reports.split("\x1e"))]))
