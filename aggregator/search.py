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
# Ranked matches whose stories are looked up at once.
STORY_LOOKUP_BATCH = 500

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
    """(entry id, rank, matching reports) of each story's best match, best stories first.

    FTS5 ranks every match, best first; their stories are then looked up a batch
    at a time, only until ``limit`` stories are found. A common word matches
    thousands of entries: joining each to its entry (whose story id lies past
    its text in the row) and ranking within stories took 70-120 ms over 50,000
    entries, this 20-40 ms (bench/serve_pages.py).
    """
    since_text = to_db_time(since)
    best: dict[int, tuple[int, float]] = {}  # story id, or -entry id for an entry in no story yet
    ranked = store.db.execute(
        f"SELECT rowid, bm25(entries_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT}) AS rank FROM entries_fts "
        "WHERE entries_fts MATCH ? ORDER BY rank, rowid", [query])
    try:
        while len(best) < limit and (batch := ranked.fetchmany(STORY_LOOKUP_BATCH)):
            entries = {row[0]: row[1:] for row in store.db.execute(
                "SELECT id, story_id, COALESCE(published, first_seen) FROM entries "
                f"WHERE id IN ({sql_marks(batch)})", [entry_id for entry_id, _ in batch])}
            for entry_id, rank in batch:
                story_id, published = entries.get(entry_id, (None, None))
                if published is None or (since_text is not None and published < since_text):
                    continue
                best.setdefault(story_id if story_id is not None else -entry_id, (entry_id, rank))
                if len(best) == limit:
                    break
    finally:
        ranked.close()
    matching = _matching_reports(store, query, since_text, [key for key in best if key > 0])
    return [(entry_id, rank, matching.get(key, 1)) for key, (entry_id, rank) in best.items()]


def _matching_reports(store: Store, query: str, since_text: str | None, story_ids: list[int]) -> dict[int, int]:
    """How many reports of each of ``story_ids`` match ``query`` (published since ``since_text``)."""
    if not story_ids:
        return {}
    since_clause = "" if since_text is None else "AND COALESCE(published, first_seen) >= ?"
    # "+id": read the stories' reports from the story_id index and check each against the matches;
    # without it SQLite walks every match (thousands for a common word) and reads its entry's row.
    return dict(store.db.execute(
        f"SELECT story_id, count(*) FROM entries WHERE story_id IN ({sql_marks(story_ids)}) "
        f"AND +id IN (SELECT rowid FROM entries_fts WHERE entries_fts MATCH ?) {since_clause} GROUP BY story_id",
        [*story_ids, query, *([since_text] if since_text is not None else [])]).fetchall())


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
