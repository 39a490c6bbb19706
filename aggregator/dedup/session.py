"""The database step: give stored entries without a story one, batch after batch (the only I/O of grouping).

A :class:`GroupingSession` reads the entries whose extraction is done, loads
the stored stories around them into a :class:`StoryGrouper`, places the new
entries and writes the placements, each transaction leaving every story it
touches consistent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any

import sqlite_utils

from aggregator.dedup import settings as dedup_settings
from aggregator.dedup.credit import original_source, report_credit
from aggregator.dedup.features import Features, Report
from aggregator.dedup.grouper import Merge, StoryGrouper
from aggregator.dedup.readahead import ReadAhead, Reading, ReadingsAhead, reading_key
from aggregator.dedup.rows import (
    ENTRY_COLUMNS, TEXTLESS_COLUMNS, entry_rows, report_from_row, report_source, report_time, scored_columns,
    scored_rows,
)
from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.stored import StoredTokens, complete, decode_all, encode_all, snapshot
from aggregator.dedup.text import fold
from aggregator.store import (
    READY_FOR_STORY,
    from_db_time,
    in_batches,
    sql_marks,
    to_db_time,
    window_of_newest_story,
    write_outlet_feeds,
    write_transaction,
)


@dataclass
class GroupingSummary:
    placed: int = 0
    new_stories: int = 0
    joined: int = 0
    merges: int = 0
    loaded: int = 0  # stored reports read from the database to place these among

    def add(self, other: GroupingSummary) -> None:
        self.placed += other.placed
        self.new_stories += other.new_stories
        self.joined += other.joined
        self.merges += other.merges
        self.loaded += other.loaded


@lru_cache(maxsize=8192)
def outlet_key(source: str) -> str:
    """The outlet a source names, folded: a story's outlets are counted by it (a run's stories hold tens of
    thousands of members from a few thousand feeds, each folded once)."""
    return fold(source)


def resolve_story_id(db: sqlite_utils.Database, story_id: int) -> int:
    """The story that ``story_id`` now lives in, following ``merged_into`` links."""
    seen = set()
    while story_id not in seen:
        seen.add(story_id)
        row = db.execute("SELECT merged_into FROM stories WHERE id = ?", [story_id]).fetchone()
        if not row or row[0] is None:
            return story_id
        story_id = row[0]
    return story_id


WRITE_CHUNK = 1000
"""Placements written per transaction: short enough that the run's other writers never wait long."""

SEED_ROWS = 500
"""Stored reports read per query when a session loads the stories around its batch (one story may hold more)."""

LINK_RULES = ("similar", "merge")
"""Memberships that a story's link scores come from (the rest are seeds and identical reports)."""


class GroupingSession:
    """Gives stored entries without a story one, batch after batch, keeping the window's stories in memory.

    Each :meth:`place_ready` reads the entries whose extraction is done,
    outside any write lock so that the run's other writers go on, places
    them, and writes the placements in transactions of ``chunk`` entries, each
    as soon as it is placed (a merge of a story already written folds its rows).
    Each transaction leaves every story it touches consistent, so a kill
    between two loses nothing that the next run does not redo. Between calls
    the grouper keeps the stories it has placed, so a run that groups while
    it fetches reads each text once, and ``agg daemon``, which keeps one
    session from run to run (a new one once :meth:`span` grows long), loads
    the window's stored stories once, not every run. A session that finds
    story memberships changed by another writer since its last write
    (another ``agg`` process, or pruning) starts afresh from the database.
    Ids once given never change. With ``read_ahead``, a call that places at
    most so many entries has a worker process read the next batch's texts
    while it places its own (:mod:`aggregator.dedup.readahead`); :meth:`close`
    stops the worker.
    """

    def __init__(self, db: sqlite_utils.Database, settings: DedupSettings, now: datetime | None = None,
                 *, chunk: int = WRITE_CHUNK, keep_writing: Callable[[], bool] = lambda: True,
                 on_written: Callable[[GroupingSummary], None] | None = None, stored_features: bool = True,
                 read_ahead: bool = False) -> None:
        self.db = db
        self.settings = settings
        self.now = now or datetime.now(UTC)
        self.chunk = chunk
        # Asked before each write: a worker whose run has died must not write behind the next run's back.
        self.keep_writing = keep_writing
        # Told the session's summary after each written chunk (a worker reports its progress).
        self.on_written = on_written
        self.summary = GroupingSummary()
        # Placed reports' features written to entry_features, and stored reports seeded from them
        # (aggregator.dedup.stored); False reads and weighs every stored text, as before migration 7.
        self.stored_features = stored_features
        self.tokens = StoredTokens()
        # With read_ahead, a call placing at most so many reads the next batch's texts in a worker process
        # meanwhile (aggregator.dedup.readahead); a database in memory has no file for it to read.
        path = _database_file(db) if read_ahead else None
        self._read_ahead = ReadAhead(path, settings) if path else None
        self._start_afresh()
        self._unwritten = False

    def _start_afresh(self) -> None:
        """A grouper that holds nothing yet: the stored stories around each batch are loaded into it."""
        first_new_id = (self.db.execute("SELECT max(id) FROM stories").fetchone()[0] or 0) + 1
        self.grouper = StoryGrouper(self.settings, first_new_id=first_new_id)
        self.grouper.complete = partial(complete, tokens=self.tokens)
        # Credited outlets, found while each text is read for grouping, so writing stories reads no texts.
        self.credits: dict[Any, str | None] = {}
        self._seeded: tuple[str, str] | None = None
        self._merges_written = 0
        self._memberships = self._membership_mark()

    def _membership_mark(self) -> tuple[int, int]:
        """Changes whenever a story gains, loses or moves a member: how a session tells another writer was here.

        Every placement inserts a membership row (a replaced row gets a new
        rowid) and pruning deletes some, so the count and the largest rowid
        together move with every change; new entries alone leave them as they are.
        """
        count, last = self.db.execute("SELECT count(*), coalesce(max(rowid), 0) FROM story_members").fetchone()
        return count, last

    def span(self) -> timedelta:
        """The time the stories it has loaded or placed cover: what it holds behind the window only costs memory."""
        if self._seeded is None:
            return timedelta(0)
        return from_db_time(self._seeded[1]) - from_db_time(self._seeded[0])

    def place_ready(self, at_least: int = 1, at_most: int | None = None,
                    readings: Mapping[int, Reading] | None = None) -> GroupingSummary:
        """Place every entry that has no story and whose extraction is done; returns what this call did.

        With fewer than ``at_least`` such entries, nothing is placed yet: a
        report's word weights are frozen when it is placed, and weights from
        a handful of reports say little about which words are rare. With
        ``at_most``, only the oldest that many (by publication) are placed, so that a
        batch's reports and features held meanwhile stay few however many
        entries wait (its placements are written a chunk at a time as they
        are made). ``readings`` holds
        texts read already by another process (:func:`~aggregator.dedup.readahead.read_waiting`),
        each used only for a row as it was read.
        """
        if self._unwritten:
            raise RuntimeError("a grouping session that left placements unwritten cannot place more: start a new one")
        # Oldest published first, not first stored: a first import stores feed after feed, each spanning days,
        # and batches in id order each reached back past what the grouper had let go, so that each began
        # afresh and loaded every stored story again.
        # Which entries first, their rows (texts and all) after by id: sorting whole rows by time read every
        # waiting text into the sorter, batch after batch.
        # With read-ahead, the batch after this one too: its texts are read while this one is placed.
        limit = -1 if at_most is None else int(at_most) * (2 if self._read_ahead else 1)
        chosen = self.db.execute(
            "SELECT e.id, coalesce(e.published, e.first_seen) AS at FROM entries e "
            f"WHERE {READY_FOR_STORY} ORDER BY at, e.id LIMIT {limit}"
        ).fetchall()
        upcoming = sorted(entry_id for entry_id, _ in chosen[at_most:]) if at_most is not None else []
        chosen = chosen[:at_most] if at_most is not None else chosen
        if len(chosen) < at_least or not chosen:
            return GroupingSummary()
        earliest = chosen[0][1]
        ids = sorted(entry_id for entry_id, _ in chosen)
        del chosen
        read_ahead: ReadingsAhead | Mapping[int, Reading] | None = readings
        if self._read_ahead is not None:
            if readings is not None:
                raise ValueError("a session that reads ahead takes its readings from its own worker")
            read_ahead = self._read_ahead.take(ids)
            self._read_ahead.submit(upcoming)
        forgotten = self.grouper.forgotten_through
        window = timedelta(hours=self.settings.window_hours)
        if self._membership_mark() != self._memberships:
            self._start_afresh()  # another writer placed, moved or pruned reports: what the grouper holds is stale
        elif earliest and forgotten and from_db_time(earliest) - window <= forgotten:
            # The batch reaches back past what the grouper has let go (entries arrive in any order of
            # publication): group it as a first batch would, from the stories stored so far.
            self._start_afresh()
        new_reports = _observed_reports(self.db, self.grouper, self.credits, ids, read_ahead)
        if not new_reports:
            return GroupingSummary()
        times = [r.published for r in new_reports if r.published]
        done = GroupingSummary()
        if times:
            done.loaded = self._seed_window(to_db_time(min(times) - window), to_db_time(max(times) + window))
            self.summary.loaded += done.loaded
        # Placements as rows, evidence already serialised, written a chunk at a time as they are made: what a batch
        # holds until it is written (rows and the placed reports' features) stays one chunk's, however large the batch.
        placed: list[tuple] = []
        snapshots: list[tuple] = []
        self._unwritten = True  # until every placement is written: a failed or refused write ends the session
        for report, placement in self.grouper.place_many(new_reports):
            placed.append((report.id, placement.story_id, placement.rule, placement.score,
                           json.dumps(placement.evidence, default=str)))
            if self.stored_features:
                snapshots.append(snapshot(self.grouper.last_placed))
            if len(placed) == self.chunk:
                if not self._write_chunk(placed, snapshots, done):
                    break
                placed, snapshots = [], []
        else:
            if not placed or self._write_chunk(placed, snapshots, done):
                self._unwritten = False
        self._memberships = self._membership_mark()
        return done

    def place_all(self, progress: Callable[[int], None] | None = None) -> GroupingSummary:
        """Every ready entry, ``PLACE_BATCH`` at a time (the oldest first); what this call placed.

        ``progress`` is told how many the session has placed after each batch.
        """
        done = GroupingSummary()
        while (batch := self.place_ready(at_most=dedup_settings.PLACE_BATCH)).placed:
            done.add(batch)
            if progress:
                progress(self.summary.placed)
        return done

    def _write_chunk(self, placed: list[tuple], snapshots: list[tuple], done: GroupingSummary) -> bool:
        """Write these placements, with the merges made since the last write, in one transaction; False if the
        session must not write any more (see ``keep_writing``)."""
        merges = self.grouper.merges[self._merges_written:]
        with write_transaction(self.db.conn):
            # Asked again under the write lock: a run that died meanwhile has released its run lock.
            if not self.keep_writing():
                return False
            # Placements already written point at a story a merge folds: the merge moves them (_fold_story).
            self._write(placed, merges, snapshots)
        self._merges_written += len(merges)
        new_stories = sum(rule == "seed" for _, _, rule, _, _ in placed)
        written = GroupingSummary(len(placed), new_stories, len(placed) - new_stories, len(merges))
        done.add(written)
        self.summary.add(written)
        if self.on_written is not None:
            self.on_written(self.summary)
        return True

    def close(self) -> None:
        """Stop the read-ahead worker, if one was started; the session can go on placing without it."""
        if self._read_ahead is not None:
            self._read_ahead.close()
            self._read_ahead = None

    def warm(self) -> int:
        """Load the stored stories within a window of the newest stored report, before the entries to place arrive.

        What a run's grouping worker does while the run fetches: a later run's
        new entries are mostly published after the last run's, so these are
        the stories they meet, and :meth:`place_ready` then loads only what
        its entries reach beyond them (as a session kept by ``agg daemon``
        does). Returns how many reports it loaded.
        """
        around = window_of_newest_story(self.db, timedelta(hours=self.settings.window_hours))
        if around is None:
            return 0
        loaded = self._seed_window(*around)
        self.summary.loaded += loaded
        if loaded:
            self.grouper.index.index_unposted()  # what the first placement would do first
        return loaded

    def _seed_window(self, start: str, end: str) -> int:
        """Load the stored stories around the new entries that the grouper does not hold yet; how many reports."""
        tokens = self.tokens if self.stored_features else None
        if tokens is not None:
            tokens.refresh(self.db.conn)
        if self._seeded is None:
            self._seeded = (start, end)
            return _seed_existing(self.db, self.grouper, self.credits, start, end, tokens)
        seeded_start, seeded_end = self._seeded
        loaded = 0
        if start < seeded_start:
            loaded += _seed_existing(self.db, self.grouper, self.credits, start, seeded_start, tokens)
        if end > seeded_end:
            loaded += _seed_existing(self.db, self.grouper, self.credits, seeded_end, end, tokens)
        self._seeded = (min(start, seeded_start), max(end, seeded_end))
        return loaded

    def _write(self, chunk: list[tuple], merges: list[Merge], snapshots: list[tuple]) -> None:
        db, grouper = self.db, self.grouper
        stamp = to_db_time(self.now)
        touched = {grouper.resolve(story_id) for _, story_id, *_ in chunk}
        touched.update(grouper.resolve(m.into) for m in merges)
        # Placeholder rows first, so members can point at them; _write_stories fills them in.
        db.conn.executemany(
            "INSERT OR IGNORE INTO stories (id, first_seen, last_seen) VALUES (?, ?, ?)",
            [(story_id, stamp, stamp) for story_id in sorted(touched)],
        )
        born_here: dict[int, Merge] = {}  # merged stories born in this chunk, by id: never stored
        for merge in merges:
            if db.execute("SELECT 1 FROM stories WHERE id = ?", [merge.merged]).fetchone():
                _fold_story(db, merge, self.now)
            else:  # its seed's row, written below, becomes the merge's (as _fold_story makes it for a stored one)
                born_here[merge.merged] = merge
        db.conn.executemany(
            "INSERT OR REPLACE INTO story_members (entry_id, story_id, rule, score, evidence, joined_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(entry_id, grouper.resolve(story_id),
              *(_merge_membership(born_here[story_id]) if rule == "seed" and story_id in born_here
                else (rule, score, evidence)), stamp)
             for entry_id, story_id, rule, score, evidence in chunk],
        )
        db.conn.executemany(
            "UPDATE entries SET story_id = ? WHERE id = ?",
            [(grouper.resolve(story_id), entry_id) for entry_id, story_id, *_ in chunk],
        )
        if snapshots:
            db.conn.executemany(
                "INSERT OR REPLACE INTO entry_features (entry_id, features, credit) VALUES (?, ?, ?)",
                [(entry_id, blob, self.credits.get(entry_id))
                 for (entry_id, *_), blob in zip(chunk, encode_all(snapshots, self.tokens, db.conn))],
            )
        _write_stories(db, grouper, self.credits, sorted(touched))


def _database_file(db: sqlite_utils.Database) -> str | None:
    """The file of the database's main schema; None in memory."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or None
    return None


def group_new_entries(
    db: sqlite_utils.Database, settings: DedupSettings, now: datetime | None = None, *, read_ahead: bool = False
) -> GroupingSummary:
    """Give every extracted entry without a story one; safe to re-run (see :class:`GroupingSession`).

    Existing stories with members inside the window around the new entries
    are loaded first, so new entries join them and ids never change. A
    backlog of more than ``PLACE_BATCH`` entries is placed as ``agg group``
    places it (:meth:`GroupingSession.place_all`): a batch at a time, oldest
    first, so the same entries get the same stories whichever of the two
    placed them. With ``read_ahead`` (a database file), a worker process
    reads the next batch's texts meanwhile: it is started from a fork
    server, which imports the caller's main module first, so a script that
    asks for it must keep its work under ``if __name__ == "__main__":``.
    """
    session = GroupingSession(db, settings, now, read_ahead=read_ahead)
    try:
        return session.place_all()
    finally:
        session.close()


def _observed_reports(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], ids: list[int],
    read_ahead: ReadingsAhead | Mapping[int, Reading] | None = None,
) -> list[Report]:
    """The entries' reports (``ids`` ascending), observed by the grouper as they are read and kept without texts.

    One row's text at a time is in memory, not the whole run's: the grouper
    keeps the features it needs and nothing reads the texts again. An entry
    in ``read_ahead`` whose row is as it was read there is not read again.
    """
    reports = []
    for part in in_batches(ids, SEED_ROWS):
        for row in scored_rows(db.conn, part, grouper.settings):
            report = report_from_row(row)
            ahead = read_ahead.get(report.id) if read_ahead is not None else None
            if ahead is not None and ahead[0] == reading_key(report):
                grouper.observe([report], {report.id: ahead[1]})
                credits[report.id] = ahead[2]
            else:
                grouper.observe([report])
                credits[report.id] = report_credit(report)
            report.text = ""
            reports.append(report)
    return reports


def _seed_existing(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], start: str, end: str,
    tokens: StoredTokens | None = None,
) -> int:
    """Load the stories that have members published inside [start, end], with all their members in the window.

    Which entries those are is read first, without texts; then their rows ``SEED_ROWS`` at a
    time. With ``tokens``, a member whose features were stored when it was placed is loaded from
    them (no text read); the others' texts are read, so that one batch's texts are in memory and
    not the window's: placing a later run's 300 reports among 50,000 stored ones peaked 100 MB
    higher when every row was read before the first story was seeded. Each story comes with the
    scores of the links that made it (its cohesion). Returns how many reports it loaded.
    """
    window = "e.story_id IS NOT NULL AND coalesce(e.published, e.first_seen) BETWEEN ? AND ?"
    members_of: dict[int, list[int]] = defaultdict(list)  # in the window's order: oldest first
    resolved: dict[int, int] = {}  # one lookup a story, not one a member
    for entry_id, story_id in db.execute(
        f"SELECT e.id, e.story_id FROM entries e WHERE {window} ORDER BY coalesce(e.published, e.first_seen), e.id",
        [start, end],
    ):
        if story_id not in resolved:
            resolved[story_id] = resolve_story_id(db, story_id)
        members_of[resolved[story_id]].append(entry_id)
    stories = [(story_id, members) for story_id, members in sorted(members_of.items())
               if story_id not in grouper.stories]  # loaded already, or placed by this session
    count = 0
    for batch in _batches_of_rows(stories, SEED_ROWS):
        ids = [entry_id for _, members in batch for entry_id in members]
        read: dict[int, Report | Features] = {}
        representative: dict[int, Any] = {}
        links: dict[int, float] = {}  # the score by which each member joined its story
        for part in in_batches(ids, SEED_ROWS):  # a story larger than a batch is read in parts
            links.update(db.execute(
                f"SELECT entry_id, score FROM story_members WHERE entry_id IN ({sql_marks(part)}) "
                f"AND rule IN ({sql_marks(LINK_RULES)}) AND score IS NOT NULL", [*part, *LINK_RULES]))
            unread = part
            if tokens is not None:
                rows = entry_rows(
                    db.conn,
                    f"SELECT {TEXTLESS_COLUMNS}, s.representative_id, ef.features, ef.credit FROM entries e "
                    "LEFT JOIN feeds f ON f.id = e.feed_id JOIN stories s ON s.id = e.story_id "
                    f"LEFT JOIN entry_features ef ON ef.entry_id = e.id WHERE e.id IN ({sql_marks(part)})",
                    part,
                ).fetchall()
                # Asked after every row is read (fetchall): a blob names only tokens added before it was
                # written, and tokens are never removed.
                docs = decode_all([row["features"] for row in rows], [report_from_row(row) for row in rows], tokens,
                                  deferred=True, tokens_current=tokens.current(db.conn))
                unread = []
                for row, doc in zip(rows, docs):
                    representative[row["id"]] = row["representative_id"]
                    if doc is None:
                        unread.append(row["id"])
                    else:
                        read[row["id"]] = doc
                        credits[row["id"]] = row["credit"]
            for row in entry_rows(
                db.conn,
                f"SELECT {scored_columns(grouper.settings)}, s.representative_id FROM entries e "
                "LEFT JOIN feeds f ON f.id = e.feed_id JOIN stories s ON s.id = e.story_id "
                f"WHERE e.id IN ({sql_marks(unread)})",
                unread,
            ) if unread else ():
                representative[row["id"]] = row["representative_id"]
                report = read[row["id"]] = report_from_row(row)
                credits[report.id] = report_credit(report)
        for story_id, members in batch:
            # The representative goes first so that the grouper keeps it as the story's face.
            story_members = sorted((entry_id for entry_id in members if entry_id in read),
                                   key=lambda entry_id: entry_id != representative[entry_id])
            grouper.seed(story_id, [read[entry_id] for entry_id in story_members],
                         [links[entry_id] for entry_id in story_members if entry_id in links])
            count += len(story_members)
    return count


def _batches_of_rows(stories: list[tuple[int, list[int]]], rows: int) -> Iterator[list[tuple[int, list[int]]]]:
    """``stories`` (id, member ids) in order, a batch holding ``rows`` members at most, or one story if it has more."""
    batch: list[tuple[int, list[int]]] = []
    size = 0
    for story in stories:
        if batch and size + len(story[1]) > rows:
            yield batch
            batch, size = [], 0
        batch.append(story)
        size += len(story[1])
    if batch:
        yield batch


def _merge_membership(merge: Merge) -> tuple[str, float, str]:
    """The rule, score and evidence of the membership that records a merge: the link between the two stories."""
    return "merge", merge.score, json.dumps({"merged_from": merge.merged, "story_link": merge.score})


def _fold_story(db: sqlite_utils.Database, merge: Merge, now: datetime) -> None:
    """Fold a stored story into the one it merged into. Its members keep the rule, score and evidence that joined
    them to it (each join a link, as the grouper counts them, and as a session reading the story back counts them
    again); one membership that is no link, its seed's (or, where pruning took that, an identical report's),
    becomes the merge's. A story whose every remaining member joined by a link keeps them, and the merge's link is
    not recorded."""
    carrier = db.execute(
        f"SELECT entry_id FROM story_members WHERE story_id = ? AND rule NOT IN ({sql_marks(LINK_RULES)}) "
        "ORDER BY rule != 'seed', entry_id LIMIT 1", [merge.merged, *LINK_RULES]).fetchone()
    if carrier is not None:
        db.execute("UPDATE story_members SET rule = ?, score = ?, evidence = ?, joined_at = ? WHERE entry_id = ?",
                   [*_merge_membership(merge), to_db_time(now), carrier[0]])
    db.execute("UPDATE story_members SET story_id = ? WHERE story_id = ?", [merge.into, merge.merged])
    db.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", [merge.into, merge.merged])
    db.execute(
        "UPDATE stories SET merged_into = ?, n_reports = 0, n_outlets = 0, outlet_feeds = '' WHERE id = ?",
        [merge.into, merge.merged]
    )


# What a story's row is computed from, a member a row: all read from the index on story_id
# (entries_story_outlets), not from the entries' rows (which hold their texts), and in its order, which the
# rows of one story came in when each story was read alone: ties (the earliest, the credit most given) break
# the same way.
STORY_MEMBER_ROWS = (
    "SELECT e.story_id, e.id, e.published, e.first_seen, f.title FROM entries e "
    "LEFT JOIN feeds f ON f.id = e.feed_id WHERE e.story_id IN ({marks}) "
    "ORDER BY e.story_id, e.feed_id, e.published, e.first_seen, e.id"
)


def _write_stories(
    db: sqlite_utils.Database, grouper: StoryGrouper, credits: dict[Any, str | None], story_ids: list[int]
) -> None:
    """Recompute the stories' rows and outlets from all their members in the database, 20 stories a query (a
    later run touches 221 stories of 28,000 members: read 500 stories at a time, they took 12 MB; 20, 2.5 MB).

    Texts are read only for members whose credited outlet is not in ``credits`` (members older
    than the window around this run's entries).
    """
    for part in in_batches(story_ids, 20):
        members: dict[int, list[Report]] = {story_id: [] for story_id in part}
        for story_id, entry_id, published, first_seen, feed_title in db.conn.execute(
                STORY_MEMBER_ROWS.format(marks=sql_marks(part)), part):
            members[story_id].append(Report(id=entry_id, title="", source=report_source(feed_title, None),
                                            published=report_time(published, first_seen)))
        _read_missing(db, members, credits)
        rows = []
        untitled: dict[int, Report] = {}  # faces read here, without their titles
        for story_id, reports in members.items():
            times = [r.published for r in reports if r.published]
            earliest, credited = original_source(reports, credits)
            # A story the grouper does not hold is named by its earliest report.
            face = grouper.representative(story_id) if story_id in grouper.stories else None
            if face is None and earliest is not None:
                face = untitled[earliest.id] = earliest
            first_seen = to_db_time(min(times)) if times else to_db_time(datetime.now(UTC))
            rows.append((story_id, face, first_seen, to_db_time(max(times)) if times else first_seen, len(reports),
                         len({outlet_key(r.source) for r in reports}), earliest.id if earliest else None, credited))
        if untitled:
            ids = list(untitled)
            for entry_id, title in db.execute(f"SELECT id, title FROM entries WHERE id IN ({sql_marks(ids)})", ids):
                untitled[entry_id].title = title or ""
        db.conn.executemany(
            "INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
            "original_entry_id, credited_outlet) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET title = excluded.title, first_seen = excluded.first_seen, "
            "last_seen = excluded.last_seen, n_reports = excluded.n_reports, n_outlets = excluded.n_outlets, "
            "representative_id = excluded.representative_id, original_entry_id = excluded.original_entry_id, "
            "credited_outlet = excluded.credited_outlet",
            [(story_id, face.title if face else "", first_seen, last_seen, n_reports, n_outlets,
              face.id if face else None, original, credited)
             for story_id, face, first_seen, last_seen, n_reports, n_outlets, original, credited in rows],
        )
    write_outlet_feeds(db.conn, story_ids)


def _read_missing(db: sqlite_utils.Database, members: dict[int, list[Report]],
                  credits: dict[Any, str | None]) -> None:
    """What the index does not give of these members, read for the few that need it: the link of a member
    whose feed has no title (its outlet is the link's host), and the credit of one not in ``credits``."""
    unnamed = {report.id: report for reports in members.values() for report in reports if not report.source}
    for ids in in_batches(list(unnamed), SEED_ROWS):
        for entry_id, link in db.execute(f"SELECT id, link FROM entries WHERE id IN ({sql_marks(ids)})", ids):
            unnamed[entry_id].source = report_source(None, link)
    unknown = [report.id for reports in members.values() for report in reports if report.id not in credits]
    for ids in in_batches(unknown, SEED_ROWS):
        for row in entry_rows(db.conn, f"SELECT {ENTRY_COLUMNS} FROM entries e LEFT JOIN feeds f "
                              f"ON f.id = e.feed_id WHERE e.id IN ({sql_marks(ids)})", ids):
            credits[row["id"]] = report_credit(report_from_row(row))
