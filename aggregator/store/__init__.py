"""The SQLite store: one file holding feeds, entries, stories and the fetch log.

This package owns the schema (``schema``: migrations applied on open), the
connection settings (WAL, busy timeout) and every read and write the
other stages need (here; ``sql`` holds what they share). Times are stored as ISO 8601 UTC strings of fixed width
(``2026-11-28T18:07:16+00:00``) so that they sort as text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.store.listing import (
    StoryListing,
    StoryRow,
    _feed_filter,
    _outlet_name,
    _stories_filter,
    feed_ids,  # noqa: F401 (public: piped agg list reads outlet_feeds with it)
    write_outlet_feeds,  # noqa: F401 (public: the grouping writes a story's outlets with its row)
)
from aggregator.store.rows import (
    _INSERT_ENTRY,
    _UPDATE_ENTRY,
    _entry_values,
    _feed_row_differs,
    _record_fetch,
    _update,
    feed_text_of,
)
from aggregator.store.schema import MIGRATIONS, _split_sql
from aggregator.store.sql import (
    BUSY_TIMEOUT_MS,
    StoreError,
    _database,
    describe_sqlite_error,
    from_db_time,
    in_batches,
    json_value,
    sql_marks,
    to_db_time,
    utc_now,
    write_transaction,
)

# How often the background checkpointer of a busy run copies the WAL into the database.
CHECKPOINT_INTERVAL_SECONDS = 0.25
# Meanwhile commits checkpoint only past this many times the usual WAL size.
WRITER_CHECKPOINT_FACTOR = 4

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import sqlite_utils


SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class SavedFetch:
    """What storing one feed's fetch changed."""

    new_entry_ids: list[int] = field(default_factory=list)
    updated: int = 0


@dataclass
class FetchRecord:
    """What one fetch writes besides entries: the feed row's new columns and its log line.

    ``error`` is what made the fetch a failure when the request itself went
    well (not a feed, no entries); the log records it, else the request's error.
    Build it with :meth:`of`: records wait in memory to be written in a
    batch, so they keep the size of the body, never the body.
    """

    feed_id: int
    url: str
    status: int | None
    body_bytes: int
    elapsed: float
    feed_columns: dict[str, Any]
    error: str | None = None

    @classmethod
    def of(cls, feed_id: int, result: FetchResult, feed_columns: dict[str, Any],
           error: str | None = None) -> FetchRecord:
        return cls(feed_id, result.url, result.status, len(result.body or b""), result.elapsed, feed_columns,
                   error or result.error)


def entry_hash(entry: ParsedEntry) -> str:
    """A fingerprint of what the feed says about an entry, to see whether it changed."""
    # One encode and one update of the NUL-terminated fields: the same bytes, so the
    # same digest as the per-field updates of earlier versions (stored hashes stay valid).
    fields = (entry.link or "", entry.title, entry.summary, entry.content, entry.author or "", "")
    return hashlib.sha256("\0".join(fields).encode("utf-8", "replace")).hexdigest()


class Store:
    """One agg database. Open with :meth:`Store.open`; writes go through :meth:`transaction`."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None):
        self.conn = conn
        self.path = path

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils' view of the connection, made on first use: a writable store makes it on
        open (it turns on recursive triggers); the listings read through ``conn`` and start
        without sqlite-utils' imports (40-120 ms, a quarter of piped ``agg list``'s target)."""
        return _database(self.conn)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """Open (creating it and its folder if needed) and migrate the database at ``path``."""
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"the database path {path} is a folder: pass --db FILE, like {path / 'agg.db'}")
        if path.parent.exists() and not path.parent.is_dir():
            raise StoreError(f"cannot create the database {path}: {path.parent} is a file, not a folder")
        try:
            if readonly:
                if not path.exists():
                    raise StoreError(f"no database at {path}: run 'agg fetch' first, or pass --db PATH")
                # On a read-only disk nothing can change the file, and SQLite can open a WAL
                # database there only when told so (it cannot create the -shm file).
                immutable = "&immutable=1" if os.statvfs(path).f_flag & os.ST_RDONLY else ""
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True,
                                       timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            store = cls(conn, path)
            if readonly:
                # Reading opens the file: failures are reported here.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    conn.close()
                    cls._upgrade_to_read(path, version, writable=not immutable and os.access(path, os.W_OK))
                    return cls.open(path, readonly=True)
            else:
                store._prepare()
            return store
        except OSError as exc:
            raise StoreError(f"cannot create the database folder {path.parent}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(describe_sqlite_error(exc, path)) from None

    @classmethod
    def _upgrade_to_read(cls, path: Path, version: int, *, writable: bool) -> None:
        """Migrate a database an earlier agg wrote, for a reading command: the listings read what later
        migrations add. Under the run lock, so never beneath an earlier agg that is still running."""
        from aggregator.lock import LockHeld, LockUnavailable, RunLock

        if version == 0:
            raise StoreError(f"{path} is not an agg database (it has no schema version): pass --db with the "
                             "file 'agg fetch' made")
        older = f"the database {path} was written by an earlier agg (schema version {version}; this agg reads {SCHEMA_VERSION})"
        if not writable:
            raise StoreError(f"{older} and cannot be upgraded here: run 'agg fetch' once where it is writable")
        try:
            with RunLock(path, purpose="agg: upgrading the database to read it"):
                cls.open(path).close()
        except LockHeld as held:
            raise StoreError(f"{older}, and another agg run holds its lock ({held.holder or 'unknown'}): run this "
                             "again once it ends (an earlier agg's daemon must be stopped first)") from None
        except LockUnavailable as exc:
            raise StoreError(f"{older}, and it cannot be upgraded now: {exc}") from None

    @classmethod
    def memory(cls) -> Store:
        store = cls(sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False), None)
        store._prepare()
        return store

    def close(self) -> None:
        self.conn.close()

    def _prepare(self) -> None:
        conn = self.db.conn  # sqlite-utils' settings (recursive triggers) before any write
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal" and self.path is not None:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this agg "
                f"understands ({SCHEMA_VERSION}): upgrade agg"
            )
        while version < SCHEMA_VERSION:
            with self.transaction():
                # Read again under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    migration = MIGRATIONS[version]
                    if callable(migration):
                        migration(conn)
                    else:
                        for statement in _split_sql(migration):
                            conn.execute(statement)
                    version += 1
                    conn.execute(f"PRAGMA user_version = {version}")

    @contextmanager
    def checkpoints_in_background(self, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> Iterator[None]:
        """While inside, copy the WAL into the database mostly from a thread of its own, not in commits.

        SQLite checkpoints in whichever commit takes the WAL past 1,000 pages,
        so one feed's commit in twenty also copied 4 MB and waited on fsync: a
        third of the time 1,000 feeds' writes held the event loop. A thread on
        its own connection copies passively instead, never blocking the writer
        (SQLite releases the interpreter lock meanwhile). Commits still
        checkpoint past 4x the usual size, which then costs them little (the
        thread has copied nearly everything) and lets the WAL start over: under
        steady writes, passive checkpoints alone never catch up at the moment a
        transaction begins, and the WAL grew to 180 MB in a cold run of 1,000
        feeds (17 MB this way).
        """
        if self.path is None:
            yield
            return
        conn = self.db.conn
        pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        done = threading.Event()
        try:
            checkpointer = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                           check_same_thread=False)
        except sqlite3.Error as exc:  # the commits checkpoint as usual
            log.debug("no background checkpoints: %s", exc)
            yield
            return

        def checkpoint_until_done() -> None:
            with closing(checkpointer):
                while not done.wait(interval):
                    try:
                        checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error as exc:  # the writer's own commits then fail, and say why
                        log.debug("background checkpoint failed: %s", exc)

        conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages) * WRITER_CHECKPOINT_FACTOR}")
        thread = threading.Thread(target=checkpoint_until_done, name="agg-checkpoint", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            with suppress(sqlite3.Error):  # a broken connection must not hide the error that broke it
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """All or nothing: commits on success, rolls back on any exception (or a kill)."""
        return write_transaction(self.db.conn)

    # -- feeds -------------------------------------------------------------

    def sync_feeds(self, feeds: Iterable[Any], now: datetime | None = None) -> dict[str, dict]:
        """Make sure every configured feed has a row; update titles and tags. Returns rows by URL.

        Only missing or changed rows are written: on most runs the config has
        not changed, and no write transaction is taken (it was 1,000 upserts
        before the first request of a run of 1,000 feeds).
        """
        rows = self._feeds_by_url()
        now_text = to_db_time(now or utc_now())
        changed = [(feed.url, feed.title, json.dumps(feed.tags), now_text, now_text)
                   for feed in feeds if _feed_row_differs(rows.get(feed.url), feed)]
        if not changed:
            return rows
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO feeds (url, title, tags, created_at, next_check_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(url) DO UPDATE SET tags = excluded.tags, "
                "title = COALESCE(excluded.title, feeds.title)",
                changed,
            )
        return self._feeds_by_url()

    def _feeds_by_url(self) -> dict[str, dict]:
        return {row["url"]: row for row in self.db.query("SELECT * FROM feeds")}

    def feed_by_url(self, url: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM feeds WHERE url = ?", [url]))
        return rows[0] if rows else None

    def has_feed(self, url_or_title: str) -> bool:
        """Whether a stored feed has this URL or title (what ``--feed`` of the story reads takes)."""
        clauses, params = _feed_filter(url_or_title, None)
        return bool(list(self.db.query(f"SELECT 1 FROM feeds f WHERE {' AND '.join(clauses)} LIMIT 1", params)))

    def feeds(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM feeds ORDER BY id"))

    def feed_tags(self) -> list[str]:
        """Every tag given to a feed, sorted."""
        return [row[0] for row in self.db.execute(
            "SELECT DISTINCT json_each.value FROM feeds, json_each(feeds.tags) ORDER BY 1")]

    def update_feed(self, feed_id: int, **columns: Any) -> None:
        with self.transaction() as conn:
            _update(conn, "feeds", feed_id, columns)

    # -- entries -----------------------------------------------------------

    def save_fetch(
        self,
        feed_id: int,
        result: FetchResult,
        parsed: ParsedFeed | None,
        feed_columns: dict[str, Any],
        *,
        extract: bool,
        now: datetime | None = None,
        error: str | None = None,
    ) -> SavedFetch:
        """Store one feed's fetch in one transaction: its entries, its feed row, its log line.

        ``error`` is what made the fetch a failure when the request itself went
        well (not a feed, no entries); the log records it, else the request's error.
        """
        now_text = to_db_time(now or utc_now())
        saved = SavedFetch()
        with self.transaction() as conn:
            if parsed is not None:
                saved = self._upsert_entries(conn, feed_id, parsed.entries, now_text, extract)
            _record_fetch(conn, FetchRecord.of(feed_id, result, feed_columns, error), now_text, saved)
        return saved

    def save_fetch_records(self, records: Iterable[FetchRecord], *, now: datetime | None = None) -> None:
        """Store fetches that brought no entries (304s, failures) in one transaction: each feed's row and log line.

        The same rows as :meth:`save_fetch` with ``parsed=None`` for each, but
        one commit for all: a run where 1,000 feeds answer 304 spent 0.1 ms of
        its event loop per feed on commits alone.
        """
        now_text = to_db_time(now or utc_now())
        with self.transaction() as conn:
            for record in records:
                _record_fetch(conn, record, now_text, SavedFetch())

    def _upsert_entries(
        self, conn: sqlite3.Connection, feed_id: int, entries: list[ParsedEntry], now_text: str, extract: bool
    ) -> SavedFetch:
        saved = SavedFetch()
        unique: dict[str, ParsedEntry] = {}
        for entry in entries:
            unique.setdefault(entry.guid, entry)
        existing: dict[str, str] = {}
        for batch in in_batches(list(unique)):
            rows = conn.execute(
                f"SELECT guid, content_hash FROM entries WHERE feed_id = ? AND guid IN ({sql_marks(batch)})",
                [feed_id, *batch],
            )
            existing.update(rows)
        new_guids, inserts, updates = [], [], []
        for guid, entry in unique.items():
            digest = entry_hash(entry)
            if guid in existing and existing[guid] == digest:
                continue
            feed_text, feed_source = feed_text_of(entry)
            if guid not in existing:
                status = "pending" if extract and entry.link else "skipped"
                inserts.append((feed_id, guid, *_entry_values(entry), digest, now_text, now_text, feed_text,
                                feed_source, status))
                new_guids.append(guid)
            else:
                updates.append((*_entry_values(entry), digest, now_text, feed_text, feed_source, feed_id, guid))
        # One prepared statement for all of a feed's rows: per-row execute calls were most of save_fetch.
        # (A multi-row INSERT ... RETURNING id measured no faster than this plus the SELECT of the ids.)
        conn.executemany(_INSERT_ENTRY, inserts)
        conn.executemany(_UPDATE_ENTRY, updates)
        saved.updated = len(updates)
        for batch in in_batches(new_guids):
            rows = conn.execute(
                f"SELECT id FROM entries WHERE feed_id = ? AND guid IN ({sql_marks(batch)}) ORDER BY id",
                [feed_id, *batch],
            )
            saved.new_entry_ids.extend(row[0] for row in rows)
        return saved

    def entries_needing_extraction(self, feed_id: int | None = None, *, include_done: bool = False) -> list[dict]:
        """Entries whose page has not been extracted yet (all with a link, with ``include_done``)."""
        where = ["link IS NOT NULL"]
        params: list[Any] = []
        if not include_done:
            where.append("extract_status = 'pending'")
        if feed_id is not None:
            where.append("feed_id = ?")
            params.append(feed_id)
        return list(self.db.query(
            f"SELECT id, feed_id, link FROM entries WHERE {' AND '.join(where)} ORDER BY id", params))

    # -- reading -----------------------------------------------------------

    def iter_stories(
        self,
        *,
        since: datetime | None = None,
        feed: str | None = None,
        tag: str | None = None,
        min_outlets: int = 1,
        limit: int | None = None,
        offset: int = 0,
        reports: bool = False,
        lead_text: bool = False,
    ) -> Iterator[dict]:
        """Stories, newest activity first, as they are read: each with its outlets' names (``outlets``, a list
        in order of reporting) and ``original_outlet`` (the outlet of its original report).

        With ``reports``, each has its ``reports`` (as :meth:`story` lists them, without the
        text source and evidence); with ``lead_text``, its ``lead_text``: the representative's
        text, else the text of the earliest report that has one. The stories are read
        :data:`STORY_BATCH` at a time and completed with one query per batch for each of these,
        so that the first comes at once and memory holds one batch, however many there are.
        ``offset`` skips that many (pages of ``limit``). The generator holds a read transaction
        until it is exhausted or closed.
        """
        sql, params = StoryListing(since, feed, tag, min_outlets, limit, offset).select("s.*")
        outlets_by_feed = self._outlets_by_feed()
        cursor = self.db.execute(sql, params)
        names = [column[0] for column in cursor.description]
        try:
            while rows := cursor.fetchmany(STORY_BATCH):
                batch = {row[0]: dict(zip(names, row)) for row in rows}
                ids = list(batch)
                originals = self._original_feeds(batch.values())
                if reports:
                    for story_id, story_reports in self._reports_of(ids, outlets_by_feed).items():
                        batch[story_id]["reports"] = story_reports
                if lead_text:
                    self._add_lead_texts(list(batch.values()))
                for story_id, story in batch.items():
                    story["outlets"] = [_outlet_name(outlets_by_feed, f) for f in feed_ids(story.pop("outlet_feeds"))]
                    original = originals.get(story_id)
                    story["original_outlet"] = None if original is None else _outlet_name(outlets_by_feed, original)
                    if reports:
                        story.setdefault("reports", [])
                yield from batch.values()
        finally:
            cursor.close()

    def iter_story_rows(self, listing: StoryListing) -> Iterator[list[StoryRow]]:
        """The stories :meth:`iter_stories` lists (the same ``listing``) as plain tuples, in batches:
        ``(id, n_reports, n_outlets, last_seen, title, outlet_feeds)``, where ``outlet_feeds`` is the
        story's feed ids in the order they first reported it (:func:`feed_ids` reads it; names:
        :meth:`outlet_names`).

        For listings of many stories (piped ``agg list``), where a dictionary per story costs more
        than the rest. A listing without a limit reads the table and sorts it: cheaper than
        walking ``stories_last_seen``, whose rows are scattered over the table.
        """
        sql, params = listing.select("s.id, s.n_reports, s.n_outlets, s.last_seen, s.title, s.outlet_feeds",
                                     by_index=bool(listing.limit))
        with closing(self.conn.execute(sql, params)) as cursor:
            while rows := cursor.fetchmany(LISTING_BATCH):
                yield rows

    def outlet_names(self) -> dict[int, str]:
        """Each feed's outlet name (its title, else its URL), by feed id."""
        return {feed_id: name for feed_id, (name, _) in self._outlets_by_feed().items()}

    def count_stories(self, *, since: datetime | None = None, feed: str | None = None, tag: str | None = None,
                      min_outlets: int = 1) -> int:
        """How many stories :meth:`iter_stories` lists with these filters and no limit."""
        where, params = _stories_filter(since, feed, tag, min_outlets)
        return self.db.execute(f"SELECT count(*) FROM stories s WHERE {where}", params).fetchone()[0]

    def stories(self, **filters: Any) -> list[dict]:
        """:meth:`iter_stories` as a list."""
        return list(self.iter_stories(**filters))

    def story(self, story_id: int) -> dict | None:
        """A story (following merges) with its reports, oldest first, and how each joined."""
        seen = set()
        while story_id not in seen:
            seen.add(story_id)
            rows = list(self.db.query("SELECT * FROM stories WHERE id = ?", [story_id]))
            if not rows:
                return None
            story = rows[0]
            if story["merged_into"] is None:
                break
            story_id = story["merged_into"]
        del story["outlet_feeds"]  # the listings' own (they read the outlets' names from it)
        reports = self._reports_of([story["id"]], self._outlets_by_feed(), details=True)
        story["reports"] = reports.get(story["id"], [])
        return story

    def _outlets_by_feed(self) -> dict[int, tuple[str, str]]:
        """Each feed's outlet name (its title, else its URL) and URL, by feed id."""
        return {feed_id: (name, url) for feed_id, name, url in self.conn.execute(
            "SELECT id, COALESCE(title, url), url FROM feeds")}

    def _original_feeds(self, stories: Iterable[dict]) -> dict[int, int]:
        """The feed of each story's original report, for the stories whose original is among their reports."""
        wanted = {story["original_entry_id"]: story["id"] for story in stories if story["original_entry_id"]}
        if not wanted:
            return {}
        return {story_id: feed_id for entry_id, story_id, feed_id in self.conn.execute(
            f"SELECT id, story_id, feed_id FROM entries WHERE id IN ({sql_marks(wanted)})", list(wanted))
            if wanted[entry_id] == story_id}

    def _reports_of(self, story_ids: list[int], outlets_by_feed: dict[int, tuple[str, str]],
                    details: bool = False) -> dict[int, list[dict]]:
        """Each story's reports, oldest first: outlet, title, link, times, extraction, and how it joined;
        with ``details``, also where its text came from and the evidence that joined it (an object).

        Outlets come from ``outlets_by_feed`` rather than a join, and the order is made here:
        both cost more in SQLite than in Python for a batch of stories.
        """
        extra = ", e.text_source, m.evidence" if details else ""
        cursor = self.db.execute(
            "SELECT e.story_id, e.id, e.title, e.link, e.published, e.first_seen, e.extract_status, e.feed_id, "
            f"m.rule, m.score{extra} FROM entries e LEFT JOIN story_members m ON m.entry_id = e.id "
            f"WHERE e.story_id IN ({sql_marks(story_ids)})", story_ids)
        names = [column[0] for column in cursor.description]
        rows = sorted(cursor, key=lambda row: (row[0], row[4] or row[5], row[1]))
        reports: dict[int, list[dict]] = {}
        for row in rows:
            report = dict(zip(names, row))
            story_id = report.pop("story_id")
            report["outlet"], report["feed_url"] = outlets_by_feed.get(report.pop("feed_id"), ("?", ""))
            if details:
                report["evidence"] = json_value(report["evidence"], {})
            reports.setdefault(story_id, []).append(report)
        return reports

    def _add_lead_texts(self, stories: list[dict]) -> None:
        """Give each story its ``lead_text`` (see :meth:`iter_stories`): the representatives' texts in
        one query, then, for the stories whose representative has none, their earliest report's."""
        story_of = {story["representative_id"]: story["id"] for story in stories if story["representative_id"]}
        leads = {story_of[entry_id]: text for entry_id, text in self.db.execute(
            f"SELECT id, text FROM entries WHERE id IN ({sql_marks(story_of)}) AND text != ''", list(story_of))}
        missing = [story["id"] for story in stories if story["id"] not in leads]
        if missing:
            for story_id, text in self.db.execute(
                "SELECT story_id, text FROM entries "
                f"WHERE story_id IN ({sql_marks(missing)}) AND text != '' "
                "ORDER BY story_id, COALESCE(published, first_seen) DESC, id DESC", missing,
            ):
                leads[story_id] = text  # the earliest comes last
        for story in stories:
            story["lead_text"] = leads.get(story["id"], "")

    def entries(
        self,
        *,
        since: datetime | None = None,
        feed: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Entries newest first, with their feed's title as ``outlet``."""
        where, params = ["1"], []
        if since is not None:
            where.append("COALESCE(e.published, e.first_seen) >= ?")
            params.append(to_db_time(since))
        feed_clauses, feed_params = _feed_filter(feed, tag)
        where += feed_clauses
        params += feed_params
        sql = (
            "SELECT e.id, e.story_id, e.title, e.link, e.published, e.first_seen, e.author, e.extract_status, "
            "e.text_source, length(e.text) AS text_length, COALESCE(f.title, f.url) AS outlet "
            f"FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE {' AND '.join(where)} "
            "ORDER BY COALESCE(e.published, e.first_seen) DESC, e.id DESC"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        return list(self.db.query(sql, params))

    def entry(self, entry_id: int) -> dict | None:
        """An entry's row, its ``tags`` and ``enclosures`` as lists."""
        rows = list(self.db.query("SELECT * FROM entries WHERE id = ?", [entry_id]))
        if not rows:
            return None
        entry = rows[0]
        for column in ("tags", "enclosures"):
            entry[column] = json_value(entry[column], [])
        return entry

    def save_extraction(
        self,
        entry_id: int,
        *,
        text: str,
        text_source: str | None,
        status: str,
        error: str | None = None,
        canonical_url: str | None = None,
        language: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Record what the entry's page gave; the text kept is the better of page and feed."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE entries SET text = ?, text_source = ?, extract_status = ?, extract_error = ?, "
                "canonical_url = COALESCE(?, canonical_url), language = COALESCE(?, language), extracted_at = ? "
                "WHERE id = ?",
                (text, text_source, status, error, canonical_url, language, to_db_time(now or utc_now()), entry_id),
            )

    # -- full-text search index --------------------------------------------

    def refresh_search_index(self, *, rebuild: bool = False, most_ids: int | None = None) -> int:
        """Index the entries added since the last refresh (all of them with ``rebuild``); returns how many.

        Called once at the end of each run, so indexing stays off the insert
        path; see migration 3 for how indexed entries are kept in step. With
        ``most_ids``, only the entries of the next that many ids past the last
        refresh are indexed, so that the write transaction stays short.
        """
        with self.transaction() as conn:
            newest = conn.execute("SELECT COALESCE(max(id), 0) FROM entries").fetchone()[0]
            if rebuild:
                conn.execute("INSERT INTO entries_fts (entries_fts) VALUES ('rebuild')")
                indexed = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            else:
                watermark = conn.execute("SELECT indexed_through FROM search_index_state").fetchone()[0]
                if most_ids is not None:
                    newest = min(newest, watermark + most_ids)
                indexed = conn.execute(
                    "INSERT INTO entries_fts (rowid, title, text) "
                    "SELECT id, title, text FROM entries WHERE id > ? AND id <= ?", (watermark, newest)).rowcount
            conn.execute("UPDATE search_index_state SET indexed_through = ?", (newest,))
        return indexed

    def count_ready_for_story(self) -> int:
        """How many entries wait for a story (see ``READY_FOR_STORY``)."""
        return self.conn.execute(f"SELECT count(*) FROM entries e WHERE {READY_FOR_STORY}").fetchone()[0]

    def grouping_backlog(self, window: timedelta) -> tuple[int, int]:
        """Entries waiting for a story, and the reports of the stored stories within ``window`` of them.

        Placing the waiting entries loads those stories first (their members'
        texts are read and their features rebuilt): both make the cost.
        """
        waiting, earliest, latest = self.db.execute(
            "SELECT count(*), min(coalesce(e.published, e.first_seen)), max(coalesce(e.published, e.first_seen)) "
            f"FROM entries e WHERE {READY_FOR_STORY}").fetchone()
        if not waiting:
            return 0, 0
        start, end = to_db_time(from_db_time(earliest) - window), to_db_time(from_db_time(latest) + window)
        stored = self.db.execute(
            "SELECT coalesce(sum(n_reports), 0) FROM stories WHERE merged_into IS NULL AND last_seen >= ? "
            "AND first_seen <= ?", [start, end]).fetchone()[0]
        return waiting, stored

    def stored_near_newest(self, window: timedelta) -> int:
        """The reports of the stored stories within ``window`` of the newest one: what a warmed grouping loads
        (:meth:`dedup.GroupingSession.warm`)."""
        around = window_of_newest_story(self.db, window)
        if around is None:
            return 0
        return self.db.execute(
            "SELECT coalesce(sum(n_reports), 0) FROM stories WHERE merged_into IS NULL AND last_seen >= ?",
            [around[0]]).fetchone()[0]

    def entries_not_indexed(self) -> int:
        """How many entries the next :meth:`refresh_search_index` will index."""
        return self.db.execute(
            "SELECT count(*) FROM entries WHERE id > (SELECT indexed_through FROM search_index_state)").fetchone()[0]


def window_of_newest_story(db: Any, window: timedelta) -> tuple[str, str] | None:
    """``window`` each side of the newest stored report's time (the last report of the newest story), as database
    times; None when no story is stored. What a grouping warmed up before a later run loads."""
    newest = db.execute("SELECT max(last_seen) FROM stories WHERE merged_into IS NULL").fetchone()[0]
    if newest is None:
        return None
    at = from_db_time(newest)
    return to_db_time(at - window), to_db_time(at + window)


STORY_BATCH = 200
"""Stories :meth:`Store.iter_stories` reads and completes at a time."""
LISTING_BATCH = 500
"""Stories :meth:`Store.iter_story_rows` yields at a time (within the 999 parameters of SQLite before 3.32)."""
READY_FOR_STORY = "e.story_id IS NULL AND e.extract_status != 'pending'"
"""Entries waiting for a story: none yet, and their text final (the page extracted, failed, or skipped)."""
