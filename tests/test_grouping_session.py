"""Grouping batch after batch (dedup.GroupingSession) and in a worker during a run (pipeline.GroupingWorker)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from aggregator import dedup, pipeline
from aggregator.config import load_config
from aggregator.dedup import WRITE_CHUNK, DedupSettings, GroupingSession, Report, group_new_entries
from aggregator.dedup.readahead import read_waiting
from aggregator.pipeline import GroupingWorker, run
from aggregator.store import Store
from tests.conftest import rss_document
from tests.server import Reply
from tests.test_dedup import T0, _feeds, _insert_entries, fixture_reports, headline
from tests.test_pipeline import items, query, write_config

FIRST = ("hf1", "hf2", "hf3", "no1", "no2", "no3")
SECOND = ("hf4", "no4", "hb1", "hb2")


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    yield store
    store.close()


def stories_by_title(db) -> set[frozenset[str]]:
    """The stories as sets of their entries' titles: ids aside, what was grouped with what."""
    groups: dict[int, set[str]] = {}
    for title, story_id in db.execute("SELECT title, story_id FROM entries"):
        groups.setdefault(story_id, set()).add(title)
    return {frozenset(titles) for titles in groups.values()}


def test_writing_in_chunks_of_one_decides_exactly_as_one_transaction(tmp_path):
    results = []
    for chunk in (1000, 1):
        store = Store.open(tmp_path / f"chunk{chunk}.db")
        db = store.db
        _insert_entries(db, fixture_reports(*FIRST, *SECOND), _feeds(db, fixture_reports(*FIRST, *SECOND)))
        assert GroupingSession(db, DedupSettings(), chunk=chunk).place_ready().placed == 10
        counts = db.execute(
            "SELECT s.n_reports, (SELECT count(*) FROM story_members m WHERE m.story_id = s.id) FROM stories s "
            "WHERE s.merged_into IS NULL").fetchall()
        assert all(n_reports == members for n_reports, members in counts)  # every chunk left its stories whole
        results.append((stories_by_title(db), db.execute(
            "SELECT entry_id, story_id, rule, score, evidence FROM story_members ORDER BY entry_id").fetchall()))
        store.close()
    assert results[0] == results[1]
    assert len(results[0][0]) == 3  # the Halvard firing, the Oregon lawsuit, the reinstatement


def test_stored_stories_read_a_few_rows_at_a_time_decide_exactly_as_read_at_once(tmp_path, monkeypatch):
    results = []
    for rows_per_read in (dedup.SEED_ROWS, 1):  # 1: every story read alone, and larger ones in parts
        monkeypatch.setattr(dedup, "SEED_ROWS", rows_per_read)
        store = Store.open(tmp_path / f"seed{rows_per_read}.db")
        db = store.db
        feed_ids = _feeds(db, fixture_reports(*FIRST, *SECOND))
        _insert_entries(db, fixture_reports(*FIRST), feed_ids)
        assert group_new_entries(db, DedupSettings()).placed == 6
        # Each stored story is loaded with its representative first, then its members oldest first;
        # its newest member made the face, as when the original source is reported late.
        db.execute("UPDATE stories SET representative_id = (SELECT e.id FROM entries e WHERE e.story_id = stories.id "
                   "ORDER BY coalesce(e.published, e.first_seen) DESC, e.id DESC LIMIT 1)")
        loaded_as: dict[int, list[int]] = {}
        for entry_id, story_id, representative in db.execute(
                "SELECT e.id, e.story_id, s.representative_id FROM entries e JOIN stories s ON s.id = e.story_id "
                "ORDER BY coalesce(e.published, e.first_seen), e.id"):
            members = loaded_as.setdefault(story_id, [])
            members.insert(0, entry_id) if entry_id == representative else members.append(entry_id)
        _insert_entries(db, fixture_reports(*SECOND), feed_ids)
        # A new session, as a later run's: the stories stored so far are loaded before SECOND is placed.
        session = GroupingSession(db, DedupSettings())
        assert session.place_ready().placed == 4
        assert len(loaded_as) == 2 and set(loaded_as) <= set(session.grouper.stories)
        assert {story_id: [doc.report.id for doc in session.grouper.stories[story_id].members][:len(members)]
                for story_id, members in loaded_as.items()} == loaded_as
        results.append((stories_by_title(db), db.execute(
            "SELECT entry_id, story_id, rule, score, evidence FROM story_members ORDER BY entry_id").fetchall()))
        store.close()
    assert results[0] == results[1]
    assert len(results[0][0]) == 3
    assert any(rule not in ("seed", "merge") for _, _, rule, _, _ in results[0][1][6:])  # SECOND joined stored stories


def test_a_session_keeps_its_stories_between_batches_and_their_ids(store):
    db = store.db
    feed_ids = _feeds(db, fixture_reports(*FIRST, *SECOND))
    _insert_entries(db, fixture_reports(*FIRST), feed_ids)
    session = GroupingSession(db, DedupSettings())
    assert session.place_ready(at_least=7).placed == 0  # too few to weigh words by yet
    assert session.place_ready(at_least=6).placed == 6
    fired = dict(db.execute("SELECT title, story_id FROM entries"))["Halvard Systems ousts CEO Dana Pryce"]
    _insert_entries(db, fixture_reports(*SECOND), feed_ids)
    assert session.place_ready().placed == 4
    assert session.place_ready().placed == 0  # nothing left
    assert session.summary.placed == 10
    story_of = dict(db.execute("SELECT title, story_id FROM entries"))
    assert story_of["Halvard Systems ousts CEO Dana Pryce"] == fired
    assert story_of["Halvard shares slide 9% after CEO Pryce dismissed"] == fired
    assert db.execute("SELECT n_reports FROM stories WHERE id = ?", [fired]).fetchone()[0] == 4


def test_a_batch_is_written_a_chunk_at_a_time_as_it_is_placed_and_merges_fold_what_is_written(tmp_path):
    """What a batch holds until it is written stays one chunk's: each chunk is written once placed, before the
    next report is placed; a merge of a story an earlier chunk wrote folds its rows, and the stories are those
    of a batch written at its end."""
    # Headlines only: A~C 0.36 keeps them apart (join 0.38), then B joins A and shows the two are one (merge 0.32).
    settings = DedupSettings(join_threshold=0.38, merge_threshold=0.32)
    reports = [headline("a", "Harbor Line ferry strike halts crossings to Vantor Island"),
               headline("c", "Vantor Island cut off as crews walk out at Harbor Line", 1),
               headline("b", "Harbor Line ferry crews strike, halting Vantor Island crossings", 2),
               headline("x", "Kestrel recalls 300,000 chargers over shock risk", 2)]
    results = {}
    for chunk in (1, 10_000):
        store = Store.open(tmp_path / f"chunk{chunk}.db")
        db = store.db
        _insert_entries(db, reports, _feeds(db, reports))
        placed_when_written: list[int] = []
        session = GroupingSession(db, settings, chunk=chunk,
                                  keep_writing=lambda: placed_when_written.append(len(session.grouper.story_of)) or True)
        assert session.place_ready().placed == len(reports)
        counts = db.execute(
            "SELECT s.n_reports, (SELECT count(*) FROM story_members m WHERE m.story_id = s.id), "
            "(SELECT count(*) FROM entries e WHERE e.story_id = s.id) FROM stories s WHERE s.merged_into IS NULL"
        ).fetchall()
        assert all(n_reports == members == entries for n_reports, members, entries in counts)
        results[chunk] = (stories_by_title(db), placed_when_written, dict(db.execute(
            "SELECT e.title, m.rule FROM story_members m JOIN entries e ON e.id = m.entry_id")),
            db.execute("SELECT count(*) FROM stories WHERE merged_into IS NOT NULL").fetchone()[0])
        store.close()
    one_by_one, at_the_end = results[1], results[10_000]
    assert one_by_one[0] == at_the_end[0] and len(at_the_end[0]) == 2
    assert one_by_one[1] == [1, 2, 3, 4]  # each report written before the next is placed
    assert at_the_end[1] == [4]
    # C's membership is the merge's either way; written before B merged it, C's story keeps a row pointing at A's.
    assert one_by_one[2] == at_the_end[2] and at_the_end[2][reports[1].title] == "merge"
    assert (one_by_one[3], at_the_end[3]) == (1, 0)


def test_a_session_told_to_stop_writing_leaves_the_entries_for_the_next_run(store):
    db = store.db
    _insert_entries(db, fixture_reports(*FIRST), _feeds(db, fixture_reports(*FIRST)))
    stopped = GroupingSession(db, DedupSettings(), keep_writing=lambda: False).place_ready()
    assert stopped.placed == 0
    assert db.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 6
    assert db.execute("SELECT count(*) FROM stories").fetchone()[0] == 0
    assert group_new_entries(db, DedupSettings()).placed == 6


def test_a_batch_older_than_what_the_grouper_let_go_still_finds_its_stories(store):
    """Entries arrive in any order of publication: one dated a month on must not cost later batches their matches."""
    db = store.db
    feed_ids = _feeds(db, fixture_reports(*FIRST, *SECOND))
    month_later = [replace(report, id="later", published=report.published + timedelta(days=30))
                   for report in fixture_reports("kx1")]
    _insert_entries(db, fixture_reports(*FIRST) + month_later, {**feed_ids, "Consumer Tech": feed_ids["Tech Pulse"]})
    session = GroupingSession(db, DedupSettings())
    assert session.place_ready().placed == 7
    fired = dict(db.execute("SELECT title, story_id FROM entries"))["Halvard Systems ousts CEO Dana Pryce"]
    _insert_entries(db, fixture_reports(*SECOND), feed_ids)
    assert session.place_ready().placed == 4
    story_of = dict(db.execute("SELECT title, story_id FROM entries"))
    assert story_of["Halvard shares slide 9% after CEO Pryce dismissed"] == fired
    assert db.execute("SELECT n_reports FROM stories WHERE id = ?", [fired]).fetchone()[0] == 4


def test_a_session_refused_a_write_places_nothing_more(store):
    db = store.db
    _insert_entries(db, fixture_reports(*FIRST), _feeds(db, fixture_reports(*FIRST)))
    session = GroupingSession(db, DedupSettings(), keep_writing=lambda: False)
    assert session.place_ready().placed == 0
    with pytest.raises(RuntimeError, match="start a new one"):
        session.place_ready()


def test_a_session_places_at_most_so_many_at_a_time_oldest_first(store):
    db = store.db
    _insert_entries(db, fixture_reports(*FIRST, *SECOND), _feeds(db, fixture_reports(*FIRST, *SECOND)))
    session = GroupingSession(db, DedupSettings())
    assert [session.place_ready(at_most=4).placed for _ in range(4)] == [4, 4, 2, 0]
    grouped = [story_id is not None for (story_id,) in db.execute("SELECT story_id FROM entries ORDER BY id")]
    assert grouped == [True] * 10
    counts = db.execute("SELECT n_reports, (SELECT count(*) FROM story_members m WHERE m.story_id = s.id) "
                        "FROM stories s WHERE merged_into IS NULL").fetchall()
    assert all(n_reports == members for n_reports, members in counts) and sum(n for n, _ in counts) == 10


def test_batches_of_feeds_spanning_more_than_the_window_load_no_stored_story_again(store, monkeypatch):
    """A first import stores feed after feed, each over many days: batches go by publication, not by id."""
    db = store.db
    reports = [Report(f"f{feed}-{day}", f"{made_up_word(day)} {made_up_word(day, 1)} {made_up_word(2, day)} {made_up_word(3, day)}",
                      "", f"https://{feed}.example.com/{day}", f"Feed {feed}", T0 + timedelta(days=day))
               for feed in range(4) for day in range(12)]  # stored feed by feed, each spanning 12 days
    _insert_entries(db, reports, _feeds(db, reports))
    seeded = []
    real_seed = dedup.StoryGrouper.seed
    monkeypatch.setattr(dedup.StoryGrouper, "seed", lambda self, story_id, members, links=(): (
        seeded.extend(members), real_seed(self, story_id, members, links)))
    session = GroupingSession(db, DedupSettings())
    assert [session.place_ready(at_most=12).placed for _ in range(5)] == [12, 12, 12, 12, 0]
    assert seeded == []  # every batch found the stories it needed in the grouper
    assert sorted(n for (n,) in db.execute("SELECT n_reports FROM stories WHERE merged_into IS NULL")) == [4] * 12


STORIES = ["Harbour authority reopens the north bridge after three weeks of storm repairs",
           "Regional rail operator orders forty hydrogen trains for mountain lines",
           "City council approves late night bus network across eleven districts"]
FEEDS = 24


def made_up_word(*seed: int) -> str:
    """A word no other title shares: a notice of its own matches nothing."""
    return "".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha1(repr(seed).encode()).hexdigest()[:7])


def many_feeds_reporting_three_stories(tmp_path, server):
    """Each story in three feeds; besides, every feed has two notices of its own (so no word is in every title)."""
    assert FEEDS >= pipeline.PARSE_WORKERS_MIN_FEEDS, "the run must be big enough to use the grouping worker"
    urls = []
    for n in range(FEEDS):
        titles = [" ".join(made_up_word(n, k, w) for w in range(5)).capitalize() for k in range(2)]
        titles += [STORIES[n % len(STORIES)]] if n < 3 * len(STORIES) else []
        urls.append(server.route(f"/feed{n}.xml", Reply(body=rss_document(items(f"f{n}", titles)))))
    return load_config(write_config(tmp_path, [{"url": url, "extract": False} for url in urls]))


ENTRIES = 2 * FEEDS + 3 * len(STORIES)


def test_a_large_run_groups_in_the_worker(tmp_path, server, monkeypatch, caplog):
    config = many_feeds_reporting_three_stories(tmp_path, server)
    # Without pages to extract, the worker starts at the end, for a backlog of this many.
    monkeypatch.setattr(pipeline.grouping, "GROUPING_MIN_BATCH", ENTRIES)
    started = []
    original_start = GroupingWorker.start

    def recording_start(self):
        original_start(self)
        if self._process is not None:
            started.append(self._process.pid)

    monkeypatch.setattr(GroupingWorker, "start", recording_start)
    store = Store.open(tmp_path / "agg.db")
    summary = run(config, store)
    store.close()
    assert started, "the grouping worker was never started"
    assert "grouping here instead" not in caplog.text
    assert summary.grouping.placed == ENTRIES
    assert summary.stage_seconds["group"] > 0
    rows = query(tmp_path / "agg.db", "SELECT title, n_reports FROM stories WHERE n_reports > 1")
    assert sorted(rows) == sorted((title, 3) for title in STORIES)
    assert query(tmp_path / "agg.db", "SELECT count(*) FROM stories WHERE merged_into IS NULL") == [(2 * FEEDS + 3,)]


def test_a_worker_killed_mid_run_leaves_the_grouping_to_the_main_process(tmp_path, server, monkeypatch, caplog):
    config = many_feeds_reporting_three_stories(tmp_path, server)
    monkeypatch.setattr(pipeline.grouping, "GROUPING_MIN_BATCH", ENTRIES)
    original_start = GroupingWorker.start

    def start_then_kill(self):
        if self._process is None:
            original_start(self)
            os.kill(self._process.pid, signal.SIGKILL)

    monkeypatch.setattr(GroupingWorker, "start", start_then_kill)
    store = Store.open(tmp_path / "agg.db")
    with caplog.at_level(logging.WARNING):
        summary = run(config, store)
    store.close()
    assert "grouping here instead" in caplog.text
    assert summary.grouping.placed == ENTRIES
    assert query(tmp_path / "agg.db", "SELECT count(*) FROM entries WHERE story_id IS NULL") == [(0,)]
    assert query(tmp_path / "agg.db", "SELECT count(*) FROM stories WHERE n_reports = 3") == [(len(STORIES),)]


def test_a_run_stopped_while_the_worker_groups_leaves_whole_stories_and_the_next_run_ends_the_work(tmp_path, server):
    rng = random.Random(5)
    words = [made_up_word(0, 0, n) for n in range(1500)]
    weights = [1 / rank for rank in range(1, len(words) + 1)]  # Zipf-like: many candidates, slow enough to stop

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(words, weights, k=rng.randint(low, high)))

    # More than one batch (dedup.settings.PLACE_BATCH) of several chunks (WRITE_CHUNK): when the first chunk is
    # written, the rest of the batch and the whole next one are still to place.
    urls, per_feed = [], 250
    total = FEEDS * per_feed
    batch = dedup.settings.PLACE_BATCH
    assert total > batch >= 3 * WRITE_CHUNK and batch % WRITE_CHUNK == 0
    for n in range(FEEDS):
        entries = [{**item, "description": text(40, 80)}
                   for item in items(f"f{n}", [text(6, 10).capitalize() for _ in range(per_feed)])]
        urls.append(server.route(f"/feed{n}.xml", Reply(body=rss_document(entries))))
    config = load_config(write_config(tmp_path, [{"url": url, "extract": False} for url in urls]))
    db_path = tmp_path / "agg.db"
    stop = threading.Event()

    def stop_once_the_worker_has_written_some():  # it is placing the rest then: that takes seconds
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stop.is_set():
            try:
                if query(db_path, "SELECT count(story_id) FROM entries")[0][0] > 0:
                    stop.set()
            except sqlite3.Error:  # not created yet, or its schema not yet written
                pass
            time.sleep(0.01)

    watcher = threading.Thread(target=stop_once_the_worker_has_written_some)
    watcher.start()
    store = Store.open(db_path)
    try:
        first = run(config, store, stop=stop)
    finally:
        stop.set()  # ends the watcher, whatever happened
        watcher.join()
    assert first.stopped
    assert query(db_path, "SELECT count(*) FROM entries") == [(total,)]  # the stop came after every feed's write
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    whole = ("SELECT count(*) FROM stories s WHERE merged_into IS NULL AND n_reports != "
             "(SELECT count(*) FROM story_members m WHERE m.story_id = s.id)")
    assert query(db_path, whole) == [(0,)]
    grouped_before = query(db_path, "SELECT count(story_id) FROM entries")[0][0]
    assert 0 < grouped_before < total  # the stop came while the worker was writing, with more to place
    assert grouped_before % WRITE_CHUNK == 0  # whole chunks only: a chunk being written was rolled back
    assert query(db_path, "SELECT count(*) FROM story_members") == [(grouped_before,)]

    second = run(config, store)
    store.close()
    assert second.grouping.placed == total - grouped_before
    assert query(db_path, "SELECT count(*), count(story_id) FROM entries") == [(total, total)]
    assert query(db_path, whole) == [(0,)]


def test_a_session_kept_between_runs_or_warmed_up_places_new_reports_without_loading_the_stored_ones_again(tmp_path):
    """What ``agg daemon`` does (one session for every run) and a run's warmed-up worker (the stored stories
    loaded before the new entries are stored): each loads the stories once, and decides as a new session."""
    first, second = ("hf1", "hf2", "hf3"), ("hf4", "hb1", "hb2")  # four days of one company's news
    decided = []
    for how in ("kept", "warmed", "new"):
        store = Store.open(tmp_path / f"{how}.db")
        db = store.db
        feed_ids = _feeds(db, fixture_reports(*first, *second))
        _insert_entries(db, fixture_reports(*first), feed_ids)
        session = GroupingSession(db, DedupSettings())
        assert session.place_ready().placed == 3
        later_session = session if how == "kept" else GroupingSession(db, DedupSettings())
        if how == "warmed":
            assert later_session.warm() == 3
        _insert_entries(db, fixture_reports(*second), feed_ids)
        later = later_session.place_ready()
        assert later.placed == 3
        # A new session loads the stored stories around the new entries; the others hold them already.
        assert later.loaded == (3 if how == "new" else 0)
        decided.append((stories_by_title(db), db.execute("SELECT entry_id, story_id, rule FROM story_members "
                                                         "ORDER BY entry_id").fetchall()))
        store.close()
    assert decided[0] == decided[1] == decided[2]


def test_warming_up_an_empty_database_loads_nothing(store):
    assert GroupingSession(store.db, DedupSettings()).warm() == 0


def test_a_kept_session_starts_afresh_when_another_writer_grouped_meanwhile(store):
    db = store.db
    feed_ids = _feeds(db, fixture_reports("hf1", "hf2", "hf3", "hf4", "hb1", "hb2"))
    _insert_entries(db, fixture_reports("hf1", "hf2"), feed_ids)
    kept = GroupingSession(db, DedupSettings())
    assert kept.place_ready().placed == 2
    _insert_entries(db, fixture_reports("hf3", "hb1"), feed_ids)
    other = GroupingSession(db, DedupSettings()).place_ready()  # another process's run, say
    assert other.placed == 2 and other.new_stories == 1  # the reinstatement is a story of its own
    _insert_entries(db, fixture_reports("hf4", "hb2"), feed_ids)
    later = kept.place_ready()
    assert (later.placed, later.loaded) == (2, 4)  # loaded again, the other writer's placements with them
    story_of = dict(db.execute("SELECT title, story_id FROM entries"))
    assert len(set(story_of.values())) == 2  # the firing and the reinstatement, whoever placed their reports
    counts = db.execute("SELECT n_reports, (SELECT count(*) FROM story_members m WHERE m.story_id = s.id) "
                        "FROM stories s WHERE merged_into IS NULL").fetchall()
    assert all(n_reports == members for n_reports, members in counts) and sum(n for n, _ in counts) == 6


def test_a_batch_reaching_back_no_further_than_what_the_grouper_holds_loads_nothing_again(store):
    """Only reports the grouper really let go make a batch start afresh: not the mere age of its last one."""
    db = store.db
    feed_ids = _feeds(db, fixture_reports("hf1", "hf2", "hf3", "hf4", "hb1"))
    _insert_entries(db, fixture_reports("hf1", "hf2", "hb1"), feed_ids)  # May 3, and four days later
    session = GroupingSession(db, DedupSettings())
    assert session.place_ready().placed == 3
    _insert_entries(db, fixture_reports("hf3", "hf4"), feed_ids)  # May 3 again, arriving late
    later = session.place_ready()
    assert (later.placed, later.loaded) == (2, 0)
    story_of = dict(db.execute("SELECT title, story_id FROM entries"))
    fired = story_of["Halvard Systems ousts CEO Dana Pryce"]
    assert story_of["Halvard shares slide 9% after CEO Pryce dismissed"] == fired


def outlets_from_reports(db, story_id: int) -> str:
    """A story's feeds in the order they first reported it, read from its reports: what listings showed."""
    firsts = db.execute("SELECT MIN(COALESCE(published, first_seen)) AS at, feed_id FROM entries WHERE story_id = ? "
                        "GROUP BY feed_id ORDER BY at, feed_id", [story_id]).fetchall()
    return " ".join(str(feed_id) for _, feed_id in firsts)


def test_each_story_row_keeps_its_outlets_in_reporting_order_as_it_grows_and_merges(store):
    db = store.db
    reports = fixture_reports()
    random.Random(38).shuffle(reports)  # an order in which a later run merges two stored stories
    feed_ids = _feeds(db, reports)
    for start in range(0, len(reports), 5):  # later runs join and merge stored stories
        _insert_entries(db, reports[start:start + 5], feed_ids)
        group_new_entries(db, DedupSettings())
    live = db.execute("SELECT id, outlet_feeds, n_outlets FROM stories WHERE merged_into IS NULL").fetchall()
    assert len(live) > 5 and any(n > 2 for _, _, n in live)
    for story_id, outlet_feeds, n_outlets in live:
        assert outlet_feeds == outlets_from_reports(db, story_id)
        assert len(outlet_feeds.split()) == n_outlets
    merged = db.execute("SELECT outlet_feeds FROM stories WHERE merged_into IS NOT NULL").fetchall()
    assert merged and all(outlet_feeds == "" for (outlet_feeds,) in merged)


def test_each_story_row_is_what_its_members_in_the_database_say_after_later_runs_join_and_merge(store):
    """The stories' rows are written from their members read off the index on story_id (``_write_stories``):
    the same counts, times, original report, credited outlet and face as reading every member's row says."""
    from aggregator.dedup.credit import original_source, report_credit
    from aggregator.dedup.rows import ENTRY_COLUMNS, entry_rows, report_from_row
    from aggregator.dedup.text import fold

    db = store.db
    reports = fixture_reports()
    random.Random(38).shuffle(reports)  # an order in which a later run merges two stored stories
    feed_ids = _feeds(db, reports)
    unnamed = min(feed_ids.values())
    db.execute("UPDATE feeds SET title = '' WHERE id = ?", [unnamed])  # its reports' outlet: their links' host
    for start in range(0, len(reports), 5):
        _insert_entries(db, reports[start:start + 5], feed_ids)
        group_new_entries(db, DedupSettings())
    live = db.execute("SELECT id, title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
                      "original_entry_id, credited_outlet FROM stories WHERE merged_into IS NULL").fetchall()
    seen_unnamed = credited = 0
    for story_id, title, first_seen, last_seen, n_reports, n_outlets, face, original, credit in live:
        rows = entry_rows(db.conn, f"SELECT {ENTRY_COLUMNS}, e.feed_id FROM entries e LEFT JOIN feeds f "
                          "ON f.id = e.feed_id WHERE e.story_id = ? ORDER BY e.feed_id, e.published, e.first_seen, "
                          "e.id", [story_id]).fetchall()
        members = [report_from_row(row) for row in rows]
        earliest, expected_credit = original_source(members, {m.id: report_credit(m) for m in members})
        assert (n_reports, original, credit) == (len(members), earliest.id, expected_credit)
        assert n_outlets == len({fold(m.source) for m in members})
        assert (first_seen, last_seen) == (min(m.published for m in members).isoformat(timespec="seconds"),
                                           max(m.published for m in members).isoformat(timespec="seconds"))
        assert title == next(m.title for m in members if m.id == face)
        seen_unnamed += any(row["feed_id"] == unnamed for row in rows)
        credited += credit is not None
    assert seen_unnamed and credited and len(live) > 5


# --- reading the next batch ahead (dedup.readahead) ---------------------------------------------------


def placements(db) -> list[tuple]:
    return db.execute("SELECT entry_id, story_id, rule, score, evidence FROM story_members ORDER BY entry_id").fetchall()


def readings_taken(monkeypatch) -> set:
    """The ids of every entry the grouper observes from now on by a reading made elsewhere, not by its text."""
    taken: set = set()
    real_observe = dedup.StoryGrouper.observe

    def observe(self, observed, readings=None):
        taken.update(readings or ())
        return real_observe(self, observed, readings)

    monkeypatch.setattr(dedup.StoryGrouper, "observe", observe)
    return taken


def rewrite_entry(db, entry_id: int) -> None:
    """Give an entry another title and no text, as a feed's update would."""
    with db.conn:
        db.execute("UPDATE entries SET title = 'Harbour authority reopens the north bridge after repairs', "
                   "text = '' WHERE id = ?", [entry_id])


def group_in_batches(tmp_path, monkeypatch, name: str, read_ahead: bool, between=None,
                     batch: int = 12) -> tuple[tuple, set]:
    """Every fixture report placed ``batch`` at a time by one session; ``between(db, session)`` runs after the first.
    The placements and stories, and the entries placed by their texts as read ahead."""
    store = Store.open(tmp_path / f"{name}.db")
    db = store.db
    reports = fixture_reports()
    _insert_entries(db, reports, _feeds(db, reports))
    read_ahead_used = readings_taken(monkeypatch)
    session = GroupingSession(db, DedupSettings(), read_ahead=read_ahead)
    try:
        placed = [session.place_ready(at_most=batch).placed]
        if between is not None:
            between(db, session)
        while placed[-1]:
            placed.append(session.place_ready(at_most=batch).placed)
    finally:
        session.close()
    assert sum(placed) == len(reports)
    result = placements(db), stories_by_title(db)
    store.close()
    return result, read_ahead_used


def first_batches(db, batch: int = 12) -> list[list[int]]:
    ids = [entry_id for entry_id, in db.execute("SELECT id FROM entries ORDER BY coalesce(published, first_seen), id")]
    return [ids[start:start + batch] for start in range(0, len(ids), batch)]


def test_texts_read_ahead_in_a_worker_decide_exactly_as_read_in_the_session(tmp_path, monkeypatch):
    ahead, used = group_in_batches(tmp_path, monkeypatch, "ahead", read_ahead=True)
    here, none_used = group_in_batches(tmp_path, monkeypatch, "here", read_ahead=False)
    assert ahead == here
    assert none_used == set()
    store = Store.open(tmp_path / "ahead.db")
    assert used == set().union(*first_batches(store.db)[1:])  # every batch but the first was read ahead
    store.close()


def test_group_new_entries_places_a_backlog_as_agg_group_does_a_batch_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup.settings, "PLACE_BATCH", 12)  # what agg group and the library call both read
    reports = fixture_reports()
    assert len(reports) > 2 * 12
    read_ahead = readings_taken(monkeypatch)
    results = {}
    for name, place in (
        ("library", lambda store: group_new_entries(store.db, DedupSettings())),
        ("library, read ahead", lambda store: group_new_entries(store.db, DedupSettings(), read_ahead=True)),
        ("agg group", lambda store: pipeline.finish_grouping(store, DedupSettings())),
    ):
        store = Store.open(tmp_path / f"{name}.db")
        _insert_entries(store.db, reports, _feeds(store.db, reports))
        read_ahead.clear()
        assert place(store).placed == len(reports)
        # Asked for, every batch but the first was read in the worker while the one before it was placed; the
        # library call does not start one unasked (a fork server imports the caller's main module).
        expected = set().union(*first_batches(store.db)[1:]) if name != "library" else set()
        assert read_ahead == expected
        results[name] = placements(store.db), stories_by_title(store.db)
        store.close()
    assert results["library"] == results["library, read ahead"] == results["agg group"]


def test_an_entry_changed_after_it_was_read_ahead_is_read_again(tmp_path, monkeypatch):
    """The second batch is read ahead while the first is placed; one of its entries is rewritten meanwhile."""
    rewritten = []

    def rewrite(db, session):
        if session._read_ahead is not None:  # the worker has read the second batch
            for _, reading in session._read_ahead._pending:
                reading.result(timeout=60)
        rewritten.append(first_batches(db)[1][0])
        rewrite_entry(db, rewritten[-1])

    ahead, used = group_in_batches(tmp_path, monkeypatch, "ahead", read_ahead=True, between=rewrite)
    here, _ = group_in_batches(tmp_path, monkeypatch, "here", read_ahead=False, between=rewrite)
    assert ahead == here  # the rewritten entry was placed by its new text
    assert rewritten[0] not in used and len(used) == len(fixture_reports()) - 12 - 1


def test_texts_read_by_the_run_for_its_worker_decide_exactly_as_read_there_and_only_for_rows_as_read(
        tmp_path, monkeypatch):
    """What a run hands its grouping worker with the word to finish (read_waiting): the waiting entries' readings,
    taken by place_ready instead of their texts, except for a row rewritten since it was read."""
    store = Store.open(tmp_path / "handed.db")
    db = store.db
    reports = fixture_reports()
    _insert_entries(db, reports, _feeds(db, reports))
    assert read_waiting(str(tmp_path / "handed.db"), DedupSettings(), len(reports) - 1) == {}  # too many wait
    readings = read_waiting(str(tmp_path / "handed.db"), DedupSettings(), len(reports))
    assert sorted(readings) == [entry_id for entry_id, in db.execute("SELECT id FROM entries ORDER BY id")]
    rewritten = first_batches(db)[0][0]
    rewrite_entry(db, rewritten)
    used = readings_taken(monkeypatch)
    assert GroupingSession(db, DedupSettings()).place_ready(readings=readings).placed == len(reports)
    assert used == set(readings) - {rewritten}
    handed = placements(db), stories_by_title(db)
    store.close()

    store = Store.open(tmp_path / "read-here.db")
    db = store.db
    _insert_entries(db, reports, _feeds(db, reports))
    rewrite_entry(db, rewritten)
    used.clear()
    assert GroupingSession(db, DedupSettings()).place_ready().placed == len(reports)
    assert used == set()
    assert (placements(db), stories_by_title(db)) == handed
    store.close()


def test_the_worker_places_the_entries_left_with_the_readings_the_run_hands_over(tmp_path, monkeypatch):
    """The worker's side of the word to finish (pipeline.grouping._group_while_running, here in a thread on a
    pipe): it places every waiting entry by the readings that came with the word, reading no text itself."""
    path = tmp_path / "agg.db"
    store = Store.open(path)
    reports = fixture_reports()
    _insert_entries(store.db, reports, _feeds(store.db, reports))
    store.close()
    readings = read_waiting(str(path), DedupSettings(), len(reports))
    taken = readings_taken(monkeypatch)
    monkeypatch.setattr(pipeline.grouping.os, "nice", lambda increment: 0)  # not this test process's priority
    run_end, worker_end = multiprocessing.Pipe()
    worker = threading.Thread(target=pipeline.grouping._group_while_running,
                              args=(str(path), DedupSettings(), T0, worker_end))
    worker.start()
    run_end.send(("finish", readings))
    assert run_end.poll(60)
    replies = []
    while not replies or replies[-1][0] != "done":
        replies.append(run_end.recv())
    worker.join(60)
    done = replies[-1][1]
    assert done is not None and done.placed == len(reports)
    assert taken == set(readings) and len(taken) == len(reports)


def test_a_failed_read_ahead_worker_leaves_the_reading_to_the_session(tmp_path, caplog):
    store = Store.open(tmp_path / "agg.db")
    db = store.db
    reports = fixture_reports()
    _insert_entries(db, reports, _feeds(db, reports))
    session = GroupingSession(db, DedupSettings(), read_ahead=True)
    session._read_ahead.db_path = str(tmp_path / "missing" / "agg.db")  # the worker cannot open it
    try:
        with caplog.at_level(logging.WARNING):
            while session.place_ready(at_most=12).placed:
                pass
    finally:
        session.close()
    assert session.summary.placed == len(reports) and store.count_ready_for_story() == 0
    assert "reading texts ahead in a worker process failed" in caplog.text
    store.close()


def test_a_database_in_memory_reads_nothing_ahead():
    store = Store.memory()
    assert GroupingSession(store.db, DedupSettings(), read_ahead=True)._read_ahead is None
    store.close()


READ_AHEAD_CHILD = """
import sys, time
from aggregator.dedup import DedupSettings
from aggregator.dedup.readahead import ReadAhead
if __name__ == "__main__":
    read_ahead = ReadAhead(sys.argv[1], DedupSettings())
    read_ahead.submit([1, 2, 3])
    read_ahead._pending[0][1].result(timeout=60)
    print(read_ahead._executor._processes and list(read_ahead._executor._processes)[0], flush=True)
    time.sleep(120)
"""


def test_a_killed_session_leaves_no_read_ahead_worker_and_the_next_one_removes_its_folder(tmp_path):
    """``agg group`` killed midway: its worker exits with it, and its leftover folder goes with the next read-ahead."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from aggregator.dedup.readahead import FOLDER_PREFIX, ReadAhead

    store = Store.open(tmp_path / "agg.db")
    reports = fixture_reports()
    _insert_entries(store.db, reports, _feeds(store.db, reports))
    store.close()
    script = tmp_path / "child.py"
    script.write_text(READ_AHEAD_CHILD)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "agg.db")], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(child.stdout.readline())
        folders = list(Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}{child.pid}-*"))
        assert len(folders) == 1
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the read-ahead worker outlived its session's process"
        time.sleep(0.05)
    assert folders[0].exists()
    read_ahead = ReadAhead(str(tmp_path / "agg.db"), DedupSettings())
    try:
        read_ahead.submit([1])
        assert not folders[0].exists()
    finally:
        read_ahead.close()


def test_grouping_makes_no_reference_cycles_so_the_worker_may_leave_its_objects_to_reference_counting(tmp_path):
    """What ``pipeline.grouping_objects`` rests on: sessions that load stored stories, place reports (joins, new
    stories, merges of stored stories) and write them leave nothing that only the cyclic collector would free."""
    import gc

    reports = fixture_reports()
    random.Random(38).shuffle(reports)  # an order in which a later run merges two stored stories

    def cyclic_garbage(path) -> int:
        """Later runs of five reports each, each by a new session; the cyclic garbage found after each, the
        collector paused meanwhile."""
        store = Store.open(path)
        db = store.db
        feed_ids = _feeds(db, reports)
        found, loaded = 0, 0
        gc.collect()
        gc.disable()
        try:
            for start in range(0, len(reports), 5):
                _insert_entries(db, reports[start:start + 5], feed_ids)
                session = GroupingSession(db, DedupSettings())
                session.warm()
                loaded += session.place_ready().loaded
                del session
                found += gc.collect()
            assert loaded and db.execute("SELECT count(*) FROM stories WHERE merged_into IS NOT NULL").fetchone()[0]
        finally:
            gc.enable()
            store.close()
        return found

    cyclic_garbage(tmp_path / "first.db")  # modules imported on first use aside (numpy.ma's import leaves cycles)
    assert cyclic_garbage(tmp_path / "second.db") == 0


def test_grouping_objects_pause_the_collector_and_are_frozen_only_when_asked(monkeypatch):
    import gc

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(gc.isenabled()))  # the test process is not frozen
    for collecting in (True, False):
        for frozen_after in (True, False):
            (gc.enable if collecting else gc.disable)()
            try:
                with pipeline.grouping_objects(frozen_after=frozen_after):
                    assert not gc.isenabled()
                assert gc.isenabled() == collecting
            finally:
                gc.enable()
    assert frozen == [False, False]  # once each time it was asked, before the collector runs again
    with pytest.raises(RuntimeError):
        with pipeline.grouping_objects(frozen_after=True):
            raise RuntimeError("grouping failed")
    assert gc.isenabled() and frozen == [False, False]  # not frozen on the way out of an error


def test_a_story_read_back_after_a_merge_has_the_links_its_grouper_had(tmp_path):
    """Cohesion judges a newcomer by the links that made a story (each join, each merge): a session that loads the
    story from the database must count the links the session that placed it counted, however its merges were
    written (folded when the merged story was stored already)."""
    # Headlines only: A~C 0.36 keeps them apart (join 0.38); C's copy joins C by its link, which is no link
    # score; B joins A and shows the two stories are one (merge 0.32).
    settings = DedupSettings(join_threshold=0.38, merge_threshold=0.32)
    reports = [headline("a", "Harbor Line ferry strike halts crossings to Vantor Island", url="https://a.example/1"),
               headline("c", "Vantor Island cut off as crews walk out at Harbor Line", 1, url="https://c.example/2"),
               headline("c2", "Vantor Island cut off as crews walk out at Harbor Line", 1.5, url="https://c.example/2"),
               headline("b", "Harbor Line ferry crews strike, halting Vantor Island crossings", 2,
                        url="https://b.example/3")]
    for chunk in (1, 1000):  # C's story written before B merges it, or in the same transaction
        store = Store.open(tmp_path / f"chunk{chunk}.db")
        db = store.db
        _insert_entries(db, reports, _feeds(db, reports))
        placing = GroupingSession(db, settings, chunk=chunk)
        placing.place_ready()
        c_id = db.execute("SELECT min(id) FROM entries WHERE link = 'https://c.example/2'").fetchone()[0]
        story = placing.grouper.stories[placing.grouper.resolve(placing.grouper.story_of[c_id])]
        assert placing.grouper.merges and story.links == 2  # B's join and the merge; C's copy is no link
        reading = GroupingSession(db, settings)
        reading.warm()
        read = reading.grouper.stories[story.id]
        assert (read.links, read.weakest_link) == (story.links, round(story.weakest_link, 3)), chunk  # 3 decimals
        # A's seed, B's join, C's story's first member as the merge, C's copy as it joined C's story.
        assert [rule for rule, in db.execute("SELECT rule FROM story_members ORDER BY entry_id")] == [
            "seed", "merge", "same-url", "similar"]
        store.close()


def test_a_merged_story_whose_seed_was_pruned_records_the_merge_on_a_report_that_joined_by_no_link(store):
    settings = DedupSettings(join_threshold=0.38, merge_threshold=0.32)
    first = [headline("a", "Harbor Line ferry strike halts crossings to Vantor Island", url="https://a.example/1"),
             headline("c", "Vantor Island cut off as crews walk out at Harbor Line", 1, url="https://c.example/2"),
             headline("c2", "Vantor Island cut off as crews walk out at Harbor Line", 1.5, url="https://c.example/2")]
    bridge = [headline("b", "Harbor Line ferry crews strike, halting Vantor Island crossings", 2,
                       url="https://b.example/3")]
    db = store.db
    feed_ids = _feeds(db, first + bridge)
    _insert_entries(db, first, feed_ids)
    GroupingSession(db, settings).place_ready()
    with db.conn:  # pruning took C's membership, the seed of its story; C's copy stays
        db.execute("DELETE FROM story_members WHERE rule = 'seed' AND entry_id = 2")
    _insert_entries(db, bridge, feed_ids)
    later = GroupingSession(db, settings)
    later.place_ready()
    assert later.grouper.merges
    rules = [rule for rule, in db.execute("SELECT rule FROM story_members ORDER BY entry_id")]
    assert rules == ["seed", "merge", "similar"]  # C's copy carries the merge; A's seed and B's join as they were


def test_a_chunk_read_ahead_holds_one_string_a_token_and_reads_the_same():
    """The worker shares a chunk's equal tokens before pickling: the readings compare equal to those read alone,
    and a token two readings carry is one object."""
    from aggregator.dedup.features import read_text
    from aggregator.dedup.readahead import _share_tokens

    settings = DedupSettings()
    body = "Harbour Board members met on Monday to discuss the harbour plan, officials said. " * 4
    reports = [Report(n, f"Harbour plan talks {n}", body, source="Herald") for n in range(2)]
    shared = [read_text(report, settings) for report in reports]
    one_of: dict[str, str] = {}
    for reading in shared:
        _share_tokens(reading, one_of)
    assert shared == [read_text(report, settings) for report in reports]
    first, second = ([token for token in reading.text_counts if token == "harbour"][0] for reading in shared)
    assert first is second
