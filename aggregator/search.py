"""Full-text search over entries: reading the query, bm25 ranking, snippets, one hit per story.

The index itself (``entries_fts``, SQLite FTS5 over each entry's title and
best text) belongs to :mod:`aggregator.store`, which refreshes it after each
run. This module turns what a person types into an FTS5 query: plain words
are matched as words (so ``AT&T`` or ``covid-19`` cannot be syntax errors),
while input that uses FTS5 syntax (``"a phrase"``, ``AND``/``OR``/``NOT``,
``prefix*``, ``title:word``, ``NEAR(…)``) is passed through as written.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from html import escape

from aggregator.store import Store, StoreError, sql_marks, to_db_time

# Highlighted matches in titles and snippets are wrapped in these private-use
# characters, which the display turns into styles or markers of its choice.
MATCH_START = "\ue000"
MATCH_END = "\ue001"
SNIPPET_TOKENS = 24
# bm25 weights of the indexed columns (title, text): a word in the title counts more.
TITLE_WEIGHT, TEXT_WEIGHT = 4.0, 1.0

_FTS_SYNTAX = re.compile(r'["*^()]|\b(?:AND|OR|NOT)\b|\bNEAR\s*\(|\b(?:title|text)\s*:|(?:^|\s)[-+]\w')
_QUERY_HELP = (
    'write phrases in "double quotes", the operators AND, OR and NOT in capitals, '
    "word* for a prefix, title:word to search titles only"
)


class SearchQueryError(ValueError):
    """The query cannot be run; the message says why and how to write it."""


@dataclass
class SearchHit:
    """The best-ranked matching report of one story (or of one entry not grouped yet)."""

    story_id: int | None
    entry_id: int
    title: str              # with matches between MATCH_START and MATCH_END
    snippet: str            # likewise
    outlet: str
    link: str | None
    published: str          # ISO UTC; first seen when the feed gave no date
    rank: float             # bm25: lower is better
    matching_reports: int   # reports of this story that match
    story_title: str | None
    story_reports: int
    story_outlets: int


def fts_query(text: str) -> str:
    """The FTS5 query for what a person typed: their own FTS5 expression, or each word quoted."""
    text = text.strip()
    if not re.search(r"\w", text):
        raise SearchQueryError("the query has no words to search for")
    if _FTS_SYNTAX.search(text):
        return text
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def search(store: Store, text: str, *, since: datetime | None = None, limit: int = 20) -> list[SearchHit]:
    """Stories matching ``text``, best first, each as its best-ranked matching report."""
    query = fts_query(text)
    try:
        best = _best_per_story(store, query, since, limit)
        details = _details(store, query, [row[0] for row in best])
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if "no such table" in message:
            raise StoreError(f"the database {store.path} has no search index yet: run 'agg fetch' once") from None
        raise SearchQueryError(f"cannot read the query {text!r} ({message}): {_QUERY_HELP}") from None
    hits = []
    for entry_id, rank, matching in best:
        row = details[entry_id]
        hits.append(SearchHit(
            story_id=row["story_id"], entry_id=entry_id, title=row["title_marked"] or "",
            snippet=row["snippet"] or "", outlet=row["outlet"], link=row["link"], published=row["published"],
            rank=rank, matching_reports=matching, story_title=row["story_title"],
            story_reports=row["n_reports"] or 1, story_outlets=row["n_outlets"] or 1,
        ))
    return hits


def _best_per_story(store: Store, query: str, since: datetime | None, limit: int) -> list[tuple[int, float, int]]:
    """(entry id, rank, matching reports) of each story's best match, best stories first."""
    sql = f"""
        WITH hits AS (
            SELECT rowid AS entry_id, bm25(entries_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS rank
            FROM entries_fts WHERE entries_fts MATCH :query
        ), placed AS (
            SELECT h.entry_id, h.rank,
                   row_number() OVER story AS place,
                   count(*) OVER (PARTITION BY COALESCE(e.story_id, -e.id)) AS matching
            FROM hits h JOIN entries e ON e.id = h.entry_id
            WHERE :since IS NULL OR COALESCE(e.published, e.first_seen) >= :since
            WINDOW story AS (PARTITION BY COALESCE(e.story_id, -e.id) ORDER BY h.rank, e.id)
        )
        SELECT entry_id, rank, matching FROM placed WHERE place = 1 ORDER BY rank, entry_id LIMIT :limit
    """
    params = {"query": query, "since": to_db_time(since), "limit": limit}
    return [tuple(row) for row in store.db.execute(sql, params).fetchall()]


def _details(store: Store, query: str, entry_ids: list[int]) -> dict[int, dict]:
    """Highlighted title, snippet, outlet and story of each of ``entry_ids``."""
    if not entry_ids:
        return {}
    marks = sql_marks(entry_ids)
    sql = f"""
        SELECT e.id, e.story_id, e.link, COALESCE(e.published, e.first_seen) AS published,
               COALESCE(f.title, f.url) AS outlet, s.title AS story_title, s.n_reports, s.n_outlets,
               highlight(entries_fts, 0, ?, ?) AS title_marked,
               snippet(entries_fts, 1, ?, ?, '…', {SNIPPET_TOKENS}) AS snippet
        FROM entries_fts
        JOIN entries e ON e.id = entries_fts.rowid
        JOIN feeds f ON f.id = e.feed_id
        LEFT JOIN stories s ON s.id = e.story_id
        WHERE entries_fts MATCH ? AND entries_fts.rowid IN ({marks})
    """
    params = [MATCH_START, MATCH_END, MATCH_START, MATCH_END, query, *entry_ids]
    return {row["id"]: row for row in store.db.query(sql, params)}


def split_matches(marked: str) -> list[tuple[str, bool]]:
    """``marked`` as (text, is_match) pieces, for displays that style the matches."""
    pieces: list[tuple[str, bool]] = []
    for index, part in enumerate(re.split(f"[{MATCH_START}{MATCH_END}]", marked)):
        if part:
            pieces.append((part, index % 2 == 1))
    return pieces


def marked_html(marked: str) -> str:
    """``marked`` as HTML: every piece escaped, the matches in ``<mark>``."""
    return "".join(f"<mark>{escape(part)}</mark>" if is_match else escape(part)
                   for part, is_match in split_matches(marked))


def with_markers(marked: str, start: str = "", end: str = "") -> str:
    """``marked`` with its match marks replaced by ``start`` and ``end`` (removed by default)."""
    return marked.replace(MATCH_START, start).replace(MATCH_END, end)
