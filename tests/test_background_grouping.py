"""A run that leaves a large grouping backlog: ``run(defer_grouping_over=...)``, ``finish_grouping``, ``agg group``.

``agg fetch`` hands what it did not group, and its run lock, to an
``agg group`` it starts in the background. These tests drive that path
through the real command line (subprocesses), catching the background
grouper with SIGSTOP where a test needs it still at work: it is then frozen
with reports left to place, whatever the machine's speed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator import dedup, pipeline
from aggregator.config import load_config
from aggregator.dedup import WRITE_CHUNK
from aggregator.lock import RunLock, lock_path_for
from aggregator.pipeline import GroupingWorker, StageClock, describe, finish_grouping, run
from aggregator.pipeline import grouping as grouping_module
from aggregator.store import Store, utc_now
from tests.conftest import PROJECT_ROOT, rss_document
from tests.faults import agg_command, run_agg
from tests.server import Reply
from tests.terminal import run_on_terminal_behind_the_lock
from tests.test_grouping_session import STORIES
from tests.test_pipeline import items, query, write_config

EX_TEMPFAIL = 75
FEEDS = 25
# Feeds 0..8 each carry one of the three STORIES: three stories of three reports.
SHARING_FEEDS = 3 * len(STORIES)
BACKGROUND = "agg group (in the background, after agg fetch)"
WAITING_NOTE = "reports are waiting to be grouped into stories, so left out here; the run in progress or the next one groups them, 'agg group' now"
WHOLE = ("SELECT count(*) FROM stories s WHERE merged_into IS NULL AND n_reports != "
         "(SELECT count(*) FROM story_members m WHERE m.story_id = s.id)")


# --- feeds ------------------------------------------------------------------------------------


def made_up_title(*seed: int) -> str:
    """Five words of ten letters that no other title shares (two alike are a chance in 10**12)."""
    digest = hashlib.sha256(repr(seed).encode()).hexdigest()
    return " ".join("".join(chr(ord("a") + int(c, 16)) for c in digest[i:i + 10]) for i in range(0, 50, 10)).capitalize()


def serve_feeds(tmp_path: Path, server, feeds: int, per_feed: int, batch: int = 0) -> Path:
    """``feeds`` feeds of ``per_feed`` entries; a config for them.

    Titles are made-up words no other title shares, so grouping is quick
    and places each alone, except that the first SHARING_FEEDS feeds each
    carry one of STORIES (the same three stories in every ``batch``, whose
    entries are new: another guid, another link).
    """
    urls = []
    for n in range(feeds):
        titles = [made_up_title(batch, n, k) for k in range(per_feed)]
        if n < SHARING_FEEDS:
            titles[0] = STORIES[n % len(STORIES)]
        urls.append(server.route(f"/feed{n}.xml", Reply(body=rss_document(items(f"b{batch}-f{n}", titles)))))
    return write_config(tmp_path, [{"url": url} for url in urls])


# --- the database and its lock, as another process sees them -------------------------------------


def waiting_for_story(db: Path) -> int:
    return query(db, "SELECT count(*) FROM entries WHERE story_id IS NULL")[0][0]


def lock_is_held(db: Path) -> bool:
    """Whether some process holds the run lock (probed without taking it for more than an instant)."""
    fd = os.open(lock_path_for(db), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def holder(db: Path) -> str:
    """The lock file's line: who holds the lock, or who held it last."""
    return lock_path_for(db).read_text()


def holder_pid(db: Path) -> int:
    return int(re.match(r"pid (\d+),", holder(db))[1])


def group_log(db: Path) -> Path:
    return db.with_name(db.name + ".group.log")


def wait_for_the_lock_to_be_free(db: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while lock_is_held(db):
        assert time.monotonic() < deadline, f"the run lock is still held after {timeout}s: {holder(db)}"
        time.sleep(0.02)


def stop_the_background_grouper(db: Path, grouped_before: int, *, once_some_are_grouped: bool = False,
                                timeout: float = 60) -> int | None:
    """SIGSTOP the ``agg group`` a deferring fetch started, while reports still wait for a story.

    With ``once_some_are_grouped``, only once it has written some: more
    entries have a story than the ``grouped_before`` the fetch. Its pid,
    frozen with the lock held; None if it finished first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if BACKGROUND not in holder(db):
            assert lock_is_held(db), f"the background agg group never took the lock over: {group_log(db).read_text()}"
        elif not once_some_are_grouped or query(db, "SELECT count(story_id) FROM entries")[0][0] > grouped_before:
            pid = holder_pid(db)
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                return None
            grouped, total = query(db, "SELECT count(story_id), count(*) FROM entries")[0]
            # Checked once it is frozen: a zombie (already ended) holds no lock.
            if lock_is_held(db) and grouped < total and (grouped > grouped_before or not once_some_are_grouped):
                return pid
            os.kill(pid, signal.SIGCONT)
            return None
        time.sleep(0.005)
    pytest.fail(f"no background agg group at work within {timeout}s: {holder(db)}")


def fetch_then_stop_the_grouper(tmp_path: Path, server, db: Path, per_feed: int, **how) -> tuple[Path, int]:
    """``agg fetch`` batch after batch until the background grouper is caught at work: (config, its pid)."""
    for batch in range(3):
        cfg = serve_feeds(tmp_path, server, FEEDS, per_feed, batch)
        grouped_before = query(db, "SELECT count(*) FROM entries")[0][0] if db.exists() else 0  # all of them
        fetched = run_agg("-v", "--config", cfg, "--db", db, "fetch")
        assert fetched.returncode == 0, fetched.stderr
        assert "left to group in the background" in fetched.stderr
        pid = stop_the_background_grouper(db, grouped_before, **how)
        if pid is not None:
            return cfg, pid
        wait_for_the_lock_to_be_free(db)  # it was quicker than the test: try again with more
    pytest.fail("the background agg group finished before it could be stopped, three times")


@pytest.fixture
def db(tmp_path):
    """The database path; a background grouper a failed test left holding its lock is ended."""
    path = tmp_path / "agg.db"
    yield path
    if lock_path_for(path).exists() and lock_is_held(path) and BACKGROUND in holder(path):
        pid = holder_pid(path)
        os.kill(pid, signal.SIGKILL)
        wait_for_the_lock_to_be_free(path, timeout=10)


# --- agg fetch: grouping in the background ----------------------------------------------------------


def test_a_large_fetch_leaves_the_grouping_to_a_background_agg_group_that_holds_the_lock(tmp_path, server, db):
    per_feed = 90
    total = FEEDS * per_feed
    assert total > pipeline.BACKGROUND_GROUPING_MIN
    cfg = serve_feeds(tmp_path, server, FEEDS, per_feed)
    fetched = run_agg("-v", "--config", cfg, "--db", db, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    held_when_it_returned = lock_is_held(db)
    waiting_when_it_returned = waiting_for_story(db)
    assert f"{total} new entries" in fetched.stderr
    assert f"; {total:,} reports left to group in the background" in fetched.stderr
    # The lock went to the grouper without a gap: held until the work is done.
    assert held_when_it_returned or waiting_when_it_returned == 0

    wait_for_the_lock_to_be_free(db)
    assert BACKGROUND in holder(db)  # the last holder: the grouper adopted the lock
    assert query(db, "SELECT count(*), count(story_id) FROM entries") == [(total, total)]
    assert sorted(query(db, "SELECT title, n_reports FROM stories WHERE n_reports > 1")) == \
        sorted((title, 3) for title in STORIES)
    assert query(db, WHOLE) == [(0,)]
    assert query(db, "SELECT indexed_through = (SELECT max(id) FROM entries) FROM search_index_state") == [(1,)]
    last_title_word = made_up_title(0, FEEDS - 1, per_feed - 1).split()[-1]
    assert query(db, "SELECT count(*) FROM entries_fts WHERE entries_fts MATCH ?", last_title_word) == [(1,)]
    log = group_log(db).read_text()
    assert f"agg group: {total:,} reports grouped: " in log


def test_fetch_no_background_groups_everything_before_it_exits(tmp_path, server, db):
    per_feed = 90
    cfg = serve_feeds(tmp_path, server, FEEDS, per_feed)
    fetched = run_agg("-v", "--config", cfg, "--db", db, "fetch", "--no-background")
    assert fetched.returncode == 0, fetched.stderr
    assert not lock_is_held(db)
    assert query(db, "SELECT count(*), count(story_id) FROM entries") == [(FEEDS * per_feed,) * 2]
    assert query(db, "SELECT count(*) FROM stories WHERE n_reports = 3") == [(len(STORIES),)]
    assert query(db, "SELECT indexed_through = (SELECT max(id) FROM entries) FROM search_index_state") == [(1,)]
    assert "in the background" not in fetched.stderr
    assert not group_log(db).exists()
    assert "fetch --no-background" in holder(db)  # the fetch was the last to hold the lock


def test_while_the_background_grouper_works_other_runs_exit_75_or_wait_for_it(tmp_path, server, db):
    cfg, pid = fetch_then_stop_the_grouper(tmp_path, server, db, per_feed=90)
    waiter = None
    try:
        requests_before = len(server.requests)
        second = run_agg("--config", cfg, "--db", db, "fetch")
        assert second.returncode == EX_TEMPFAIL, second.stderr
        assert BACKGROUND in second.stderr and f"pid {pid}" in second.stderr and "--wait" in second.stderr
        assert len(server.requests) == requests_before  # it fetched nothing
        grouping = run_agg("--config", cfg, "--db", db, "group")
        assert grouping.returncode == EX_TEMPFAIL and BACKGROUND in grouping.stderr
        waiter = subprocess.Popen(agg_command("-v", "--config", cfg, "--db", db, "group", "--wait"), cwd=PROJECT_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(2)  # long enough to start up and block on the lock
        assert waiting_for_story(db) > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    # It got the lock only when the background grouper ended, with nothing left to group.
    assert "0 reports grouped: 0 new stories" in err
    assert waiting_for_story(db) == 0
    assert "reports grouped: " in group_log(db).read_text()


def test_killing_the_background_grouper_leaves_whole_stories_and_agg_group_groups_the_rest(tmp_path, server, db):
    # More than a grouping batch (dedup.settings.PLACE_BATCH), so that it is caught with one batch written and one not.
    per_feed = 240
    assert FEEDS * per_feed > dedup.settings.PLACE_BATCH
    cfg, pid = fetch_then_stop_the_grouper(tmp_path, server, db, per_feed=per_feed, once_some_are_grouped=True)
    grouped_before, total = query(db, "SELECT count(story_id), count(*) FROM entries")[0]
    indexed_before = query(db, "SELECT indexed_through FROM search_index_state")[0][0]
    os.kill(pid, signal.SIGKILL)
    wait_for_the_lock_to_be_free(db, timeout=10)

    assert 0 < grouped_before < total
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, WHOLE) == [(0,)]
    assert query(db, "SELECT count(story_id) FROM entries")[0][0] == grouped_before
    assert query(db, "SELECT indexed_through FROM search_index_state")[0][0] == indexed_before
    # The search index, brought up to date while the grouper works, holds exactly the entries up to its watermark.
    assert query(db, "SELECT count(*) FROM entries_fts_docsize") == \
        query(db, "SELECT count(*) FROM entries WHERE id <= ?", indexed_before)

    after = run_agg("-v", "--config", cfg, "--db", db, "group")
    assert after.returncode == 0, after.stderr
    assert f"{total - grouped_before:,} reports grouped: " in after.stderr
    assert query(db, "SELECT count(*), count(story_id) FROM entries") == [(total, total)]
    assert query(db, WHOLE) == [(0,)]
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT indexed_through = (SELECT max(id) FROM entries) FROM search_index_state") == [(1,)]
    # The three stories, told in three feeds in each batch fetched: none lost or split by the kill.
    batches = total // (FEEDS * per_feed)
    assert sorted(query(db, "SELECT title, n_reports FROM stories WHERE n_reports > 1")) == \
        sorted((title, 3 * batches) for title in STORIES)


def assert_the_background_grouper_grouped_everything(db: Path, total: int) -> None:
    """Once the lock is free: every entry in a story, and the grouper's success line in its log."""
    wait_for_the_lock_to_be_free(db)
    log = group_log(db).read_text()
    assert BACKGROUND in holder(db), log  # the grouper adopted the lock
    assert query(db, "SELECT count(*), count(story_id) FROM entries") == [(total, total)], log
    assert query(db, WHOLE) == [(0,)]
    assert f"agg group: {total:,} reports grouped: " in log


# `agg fetch` as a driver runs it, reporting the lock descriptor it hands over. With ``FREE_FD_0``, the
# /dev/null that SQLite put in place of the closed stdin (it never keeps a database on 0-2) is closed once
# the database is open, so that the lock, opened next, lands on descriptor 0.
FETCH_DRIVER = """
import os, sys
from aggregator import cli
from aggregator.lock import RunLock

open_store, hand_over = cli.Context.store, RunLock.hand_over

def store_leaving_fd_0_free(self, *args, **kwargs):
    store = open_store(self, *args, **kwargs)
    if os.environ.get("FREE_FD_0") and os.readlink("/proc/self/fd/0") == "/dev/null":
        os.close(0)
    return store

def reporting_hand_over(self):
    fd = hand_over(self)
    print(f"handing over lock fd {fd}", file=sys.stderr)
    return fd

cli.Context.store = store_leaving_fd_0_free
RunLock.hand_over = reporting_hand_over
cli.main()
"""


@pytest.mark.parametrize("lock_on_fd_0", [False, True], ids=["stdin-closed", "lock-on-fd-0"])
def test_a_fetch_without_stdin_still_hands_its_lock_to_the_background_grouper(tmp_path, server, db, lock_on_fd_0):
    per_feed = 90
    total = FEEDS * per_feed
    assert total > pipeline.BACKGROUND_GROUPING_MIN
    cfg = serve_feeds(tmp_path, server, FEEDS, per_feed)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "FREE_FD_0": "1" if lock_on_fd_0 else ""}
    # The shell closes descriptor 0 before it starts Python: agg runs without a stdin.
    command = ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-P", "-c", FETCH_DRIVER,
               "-v", "--config", str(cfg), "--db", str(db), "fetch"]
    fetched = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    assert f"; {total:,} reports left to group in the background" in fetched.stderr
    handed_over = int(re.search(r"handing over lock fd (\d+)", fetched.stderr)[1])
    if lock_on_fd_0:  # the case the child's own stdin would replace, were the lock passed on as fd 0
        assert handed_over == 0
    assert_the_background_grouper_grouped_everything(db, total)


def test_the_background_grouper_runs_the_parents_agg_whatever_the_working_directory_holds(tmp_path, server, db):
    per_feed = 90
    total = FEEDS * per_feed
    cfg = serve_feeds(tmp_path, server, FEEDS, per_feed)
    workdir = tmp_path / "workdir"
    marker = tmp_path / "the-decoy-ran"
    (workdir / "aggregator").mkdir(parents=True)
    (workdir / "aggregator" / "__init__.py").write_text("")
    (workdir / "aggregator" / "__main__.py").write_text(
        f"import pathlib, sys\npathlib.Path({str(marker)!r}).write_text('ran')\nsys.exit(3)\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    fetched = subprocess.run([sys.executable, "-P", "-m", "aggregator", "-v", "--config", str(cfg), "--db", str(db),
                              "fetch"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert fetched.returncode == 0, fetched.stderr
    assert f"; {total:,} reports left to group in the background" in fetched.stderr
    assert_the_background_grouper_grouped_everything(db, total)
    assert not marker.exists()


# --- agg group under a lock the test holds ------------------------------------------------------------


SMALL_FEED = 3
SMALL_RUN = SHARING_FEEDS * SMALL_FEED


@pytest.fixture
def deferred(tmp_path, server):
    """A database a library run left with its reports waiting for a story: (config path, db path, how many)."""
    cfg = serve_feeds(tmp_path, server, SHARING_FEEDS, SMALL_FEED)
    path = tmp_path / "deferred.db"
    store = Store.open(path)
    summary = run(load_config(cfg), store, defer_grouping_over=10)
    store.close()
    assert summary.grouping_deferred == SMALL_RUN
    return cfg, path, summary.grouping_deferred


def test_agg_group_exits_75_while_another_run_holds_the_lock_and_waits_with_wait(deferred):
    cfg, path, waiting = deferred
    holder_lock = RunLock(path, purpose="agg fetch --due")
    holder_lock.acquire()
    releaser = threading.Timer(2, holder_lock.release)
    try:
        refused = run_agg("--config", cfg, "--db", path, "group")
        assert refused.returncode == EX_TEMPFAIL
        assert "another agg run holds" in refused.stderr and "agg fetch --due" in refused.stderr
        assert waiting_for_story(path) == waiting
        releaser.start()
        waited = run_agg("-v", "--config", cfg, "--db", path, "group", "--wait")
    finally:
        releaser.cancel()
        releaser.join()
        holder_lock.release()
    assert waited.returncode == 0, waited.stderr
    assert f"{waiting} reports grouped: " in waited.stderr
    assert waiting_for_story(path) == 0
    assert query(path, "SELECT count(*) FROM stories WHERE n_reports = 3") == [(len(STORIES),)]
    assert query(path, "SELECT indexed_through = (SELECT max(id) FROM entries) FROM search_index_state") == [(1,)]


def test_agg_group_on_a_terminal_says_what_it_waits_for_and_shows_its_progress(deferred):
    cfg, path, waiting = deferred
    status, _, screen = run_on_terminal_behind_the_lock(
        path, "agg fetch --due", ["--config", str(cfg), "--db", str(path), "group", "--wait"])
    assert status == 0, screen
    assert f"agg: waiting for another agg run to finish (the run that holds it: pid {os.getpid()}, agg fetch --due" \
        in screen
    assert "grouping reports into stories" in screen  # the bar
    assert f"{waiting} reports grouped: " in screen
    assert waiting_for_story(path) == 0


# --- the library: run(defer_grouping_over=...) and finish_grouping --------------------------------


def test_a_run_defers_grouping_and_the_index_and_finish_grouping_does_both(tmp_path, server):
    feeds, per_feed = pipeline.PARSE_WORKERS_MIN_FEEDS, 3  # a large run: with a grouping worker
    config = load_config(serve_feeds(tmp_path, server, feeds, per_feed))
    store = Store.open(tmp_path / "agg.db")
    try:
        summary = run(config, store, defer_grouping_over=10)
        assert summary.new_entries == feeds * per_feed
        assert summary.grouping_deferred == store.count_ready_for_story() == feeds * per_feed
        assert summary.grouping.placed == 0
        assert f"; {feeds * per_feed} reports left to group in the background" in describe(summary)
        assert "index" not in summary.stage_seconds
        assert store.entries_not_indexed() == feeds * per_feed  # the index was left as it was

        calls = []
        finished = finish_grouping(store, config.settings.dedup, progress=lambda *args: calls.append(args))
        assert finished.placed == summary.grouping_deferred
        assert calls and calls[-1] == (feeds * per_feed, feeds * per_feed)
        assert store.count_ready_for_story() == 0 and store.entries_not_indexed() == 0
        assert store.db.execute(WHOLE).fetchone()[0] == 0
        assert sorted(store.db.execute("SELECT title, n_reports FROM stories WHERE n_reports > 1").fetchall()) == \
            sorted((title, 3) for title in STORIES)
        assert finish_grouping(store, config.settings.dedup).placed == 0  # nothing left
    finally:
        store.close()


def test_finish_grouping_writes_every_story_when_the_index_beside_it_fails_then_raises_its_error(
        tmp_path, server, monkeypatch):
    """The search index is brought up to date in a thread while the grouping goes on: its failure loses no
    placement, and is raised once the grouping is written; the next call indexes."""
    feeds, per_feed = pipeline.PARSE_WORKERS_MIN_FEEDS, 2
    config = load_config(serve_feeds(tmp_path, server, feeds, per_feed))
    store = Store.open(tmp_path / "agg.db")
    try:
        run(config, store, defer_grouping_over=10)

        def failing(path):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(grouping_module, "_refresh_search_index", failing)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            finish_grouping(store, config.settings.dedup)
        assert store.count_ready_for_story() == 0 and store.db.execute(WHOLE).fetchone()[0] == 0
        assert store.entries_not_indexed() == feeds * per_feed
        monkeypatch.undo()
        assert finish_grouping(store, config.settings.dedup).placed == 0
        assert store.entries_not_indexed() == 0
    finally:
        store.close()


def article(seed: str) -> bytes:
    """An article page of made-up words: a text of its own, that groups with no other."""
    title = made_up_title(seed)
    paragraphs = "".join(f"<p>{made_up_title(seed, n)}, then {made_up_title(seed, n, 1).lower()}, and at last "
                         f"{made_up_title(seed, n, 2).lower()}.</p>" for n in range(6))
    return (f"<!DOCTYPE html><html lang='en'><head><title>{title}</title></head><body><article><h1>{title}</h1>"
            f"{paragraphs}</article></body></html>").encode()


def test_a_run_that_extracts_starts_the_worker_then_defers_what_it_has_not_placed(tmp_path, server, monkeypatch):
    feeds, per_feed = pipeline.PARSE_WORKERS_MIN_FEEDS, 3  # a large run: with a grouping worker
    total = feeds * per_feed
    server.route("/article.html", lambda request: Reply(body=article(request.query),
                                                        content_type="text/html; charset=utf-8"))
    # One page is held back until the worker starts: it starts while pages are still being extracted.
    worker_started = threading.Event()

    def held_page(request):
        worker_started.wait(30)
        return Reply(body=article("held"), content_type="text/html; charset=utf-8")

    held_link = server.route("/held.html", held_page)
    urls = []
    for n in range(feeds):
        entries = [{"guid": f"x-f{n}-{k}", "title": made_up_title(7, n, k),
                    "link": held_link if (n, k) == (0, 0) else server.url(f"/article.html?e={n}-{k}")}
                   for k in range(per_feed)]
        urls.append(server.route(f"/feed{n}.xml", Reply(body=rss_document(entries))))
    config = load_config(write_config(tmp_path, [{"url": url, "extract": True} for url in urls]))
    started = []  # (the worker process, the held entry's extraction status then)
    original_start = GroupingWorker.start

    def recording_start(self):
        original_start(self)
        if self._process is not None and not started:
            status = self.store.db.execute("SELECT extract_status FROM entries WHERE link = ?", [held_link])
            started.append((self._process, status.fetchone()[0]))
        worker_started.set()

    monkeypatch.setattr(GroupingWorker, "start", recording_start)
    store = Store.open(tmp_path / "agg.db")
    try:
        summary = run(config, store, defer_grouping_over=10)
        assert summary.new_entries == total and summary.pages_extracted == total
        assert started, "the grouping worker was never started"
        process, held_status = started[0]
        assert held_status == "pending"  # started by an extracted page, before the last one
        assert summary.grouping_deferred > 10
        # None was grouped before the run: what the worker wrote and what it left are every entry.
        assert summary.grouping.placed + summary.grouping_deferred == total
        assert store.count_ready_for_story() == summary.grouping_deferred
        assert store.db.execute("SELECT count(story_id) FROM entries").fetchone()[0] == summary.grouping.placed
        assert store.db.execute(WHOLE).fetchone()[0] == 0
        # The worker was stopped and is gone, not left placing behind finish_grouping's back.
        assert not process.is_alive()
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)

        assert finish_grouping(store, config.settings.dedup).placed == summary.grouping_deferred
        assert store.db.execute("SELECT count(*), count(story_id) FROM entries").fetchone() == (total, total)
        assert store.db.execute(WHOLE).fetchone()[0] == 0
    finally:
        store.close()


def test_a_deferred_worker_says_what_it_had_written(tmp_path, server):
    # As many as the worker waits for before placing any during a run, written in one chunk: its one
    # progress message, once it has come, is the last.
    waiting = pipeline.GROUPING_MIN_BATCH
    assert waiting <= WRITE_CHUNK
    feeds = 10
    assert feeds < pipeline.PARSE_WORKERS_MIN_FEEDS and waiting % feeds == 0  # a small run: no worker of its own
    config = load_config(serve_feeds(tmp_path, server, feeds, waiting // feeds))
    store = Store.open(tmp_path / "agg.db")
    worker = GroupingWorker(store, config.settings.dedup, utc_now(), enabled=True)
    try:
        assert run(config, store, defer_grouping_over=0).grouping_deferred == waiting
        worker.start()
        process = worker._process
        deadline = time.monotonic() + 60
        while store.db.execute("SELECT count(story_id) FROM entries").fetchone()[0] < waiting:
            assert process.is_alive() and time.monotonic() < deadline, "the worker placed nothing"
            time.sleep(0.02)
        assert worker._connection.poll(30)  # its progress message, sent once the chunk was written
        clock = StageClock()
        deferred = worker.defer(clock)
        assert not process.is_alive()
        grouped = store.db.execute("SELECT count(story_id) FROM entries").fetchone()[0]
        assert deferred.placed == grouped == waiting
        assert (deferred.new_stories, deferred.joined) == (waiting - 2 * len(STORIES), 2 * len(STORIES))
        assert clock.seconds["group"] > 0
        assert store.db.execute(WHOLE).fetchone()[0] == 0
        assert sorted(store.db.execute("SELECT title, n_reports FROM stories WHERE n_reports > 1").fetchall()) == \
            sorted((title, 3) for title in STORIES)
    finally:
        worker.stop()
        store.close()


@pytest.mark.parametrize("threshold, deferred", [(None, False), (SMALL_RUN, False), (SMALL_RUN - 1, True)])
def test_only_a_backlog_of_more_than_the_threshold_is_deferred(tmp_path, server, threshold, deferred):
    config = load_config(serve_feeds(tmp_path, server, SHARING_FEEDS, SMALL_FEED))
    store = Store.open(tmp_path / "agg.db")
    try:
        summary = run(config, store, defer_grouping_over=threshold)
        assert summary.grouping_deferred == (SMALL_RUN if deferred else 0)
        assert summary.grouping.placed == (0 if deferred else SMALL_RUN)
        assert store.count_ready_for_story() == summary.grouping_deferred
        assert store.entries_not_indexed() == summary.grouping_deferred
        assert ("left to group in the background" in describe(summary)) is deferred
    finally:
        store.close()


def test_grouping_cost_counts_the_stored_reports_a_placement_loads():
    assert pipeline.grouping_cost(300, 0) == 300
    assert pipeline.grouping_cost(300, 50_000) == 300 + pipeline.STORED_REPORT_COST * 50_000
    assert pipeline.grouping_cost(0, 0) == 0


@pytest.mark.parametrize("room", [-1, 0], ids=["window-tips-it-over", "window-fits"])
def test_a_few_new_reports_among_many_stored_ones_are_deferred_for_the_stored_ones(tmp_path, server, room):
    """A later run brings a handful of reports; what makes its grouping dear is the window it loads."""
    store = Store.open(tmp_path / "agg.db")
    try:
        first = run(load_config(serve_feeds(tmp_path, server, FEEDS, SMALL_FEED)), store)
        stored = first.grouping.placed
        assert stored == FEEDS * SMALL_FEED and store.count_ready_for_story() == 0
        later = load_config(serve_feeds(tmp_path, server, SHARING_FEEDS, 1, batch=1))
        new = SHARING_FEEDS
        cost = pipeline.grouping_cost(new, stored)
        assert new < cost  # the threshold sits above the new reports alone
        summary = run(later, store, defer_grouping_over=int(cost) + room)
        assert summary.grouping_deferred == (new if room < 0 else 0)
        assert store.count_ready_for_story() == summary.grouping_deferred
        if summary.grouping_deferred:
            assert finish_grouping(store, later.settings.dedup).placed == new
        # Each story has one report a batch: placed among the stored, they join them.
        assert query(tmp_path / "agg.db", "SELECT count(*) FROM stories WHERE n_reports = 6") == [(len(STORIES),)]
    finally:
        store.close()


# --- what the story commands say meanwhile --------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["export", "digest"], ["export", "jsonfeed"], ["export", "atom"]])
def test_story_commands_say_how_many_reports_wait_for_a_story(deferred, agg, command):
    cfg, path, waiting = deferred
    noted = agg("--config", cfg, "--db", path, *command)
    assert noted.exit_code == 0, noted.stderr
    assert f"agg: {waiting} {WAITING_NOTE}" in noted.stderr
    quiet = agg("-q", "--config", cfg, "--db", path, *command)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert WAITING_NOTE not in noted.stdout  # a note for the reader, apart from the output

    assert agg("--config", cfg, "--db", path, "group").exit_code == 0
    grouped = agg("--config", cfg, "--db", path, *command)
    assert grouped.exit_code == 0 and WAITING_NOTE not in grouped.stderr


def test_agg_status_counts_the_reports_waiting_for_a_story(deferred, agg):
    cfg, path, waiting = deferred
    report = json.loads(agg("--config", cfg, "--db", path, "status", "--json").stdout)
    assert report["counts"]["reports_waiting_for_story"] == waiting
    plain = agg("--config", cfg, "--db", path, "status")
    assert f"; {waiting} reports are waiting to be grouped into stories (see 'agg group')" in plain.stderr

    assert agg("--config", cfg, "--db", path, "group").exit_code == 0
    report = json.loads(agg("--config", cfg, "--db", path, "status", "--json").stdout)
    assert report["counts"]["reports_waiting_for_story"] == 0
    assert "waiting to be grouped" not in agg("--config", cfg, "--db", path, "status").stderr


@pytest.mark.parametrize("warms", [True, False], ids=["warmed-up", "cold"])
def test_a_later_run_loads_the_stored_stories_while_it_fetches_and_groups_its_few_reports_itself(
        tmp_path, server, monkeypatch, warms):
    """What makes a later run's grouping dear is loading the window: a worker warmed up during the fetch has done
    that by the end, so the few new reports are placed by the run, not left to a background agg group."""
    monkeypatch.setattr(pipeline.grouping, "WARM_MIN_STORED", 1 if warms else 10**9)
    store = Store.open(tmp_path / "agg.db")
    try:
        stored = run(load_config(serve_feeds(tmp_path, server, FEEDS, SMALL_FEED)), store).grouping.placed
        assert stored == FEEDS * SMALL_FEED
        assert store.stored_near_newest(timedelta(hours=72)) == stored
        later = load_config(serve_feeds(tmp_path, server, FEEDS, 1, batch=1))
        assert len(later.feeds) >= pipeline.PARSE_WORKERS_MIN_FEEDS  # a run large enough for a worker
        new = FEEDS
        # Above the new reports alone, below them with the stored ones to load.
        threshold = new
        assert pipeline.grouping_cost(new, stored) > threshold
        summary = run(later, store, defer_grouping_over=threshold)
        if warms:
            assert summary.grouping_deferred == 0
            assert (summary.grouping.placed, summary.grouping.loaded) == (new, stored)
        else:
            assert summary.grouping_deferred == new
            assert finish_grouping(store, later.settings.dedup).placed == new
        assert store.count_ready_for_story() == 0
        # Each shared story has three reports a batch: placed among the stored, the new ones join them.
        assert query(tmp_path / "agg.db", "SELECT count(*) FROM stories WHERE n_reports = 6") == [(len(STORIES),)]
        assert query(tmp_path / "agg.db", "SELECT count(*) FROM stories WHERE merged_into IS NULL") == \
            [(FEEDS * SMALL_FEED + new - 2 * SHARING_FEEDS + len(STORIES),)]
        assert store.db.execute(WHOLE).fetchone()[0] == 0
        # Nothing new: a worker warmed up for nothing is stopped at the end of the run, and nothing is deferred.
        again = run(later, store, defer_grouping_over=threshold)
        assert (again.grouping.placed, again.grouping_deferred) == (0, 0)
    finally:
        store.close()


def test_a_run_without_stored_stories_does_not_warm_up(tmp_path, server, monkeypatch):
    """A first import has nothing to load: its worker waits for pages or the end, as parsing needs the cores."""
    monkeypatch.setattr(pipeline.grouping, "WARM_MIN_STORED", 1)
    started = []
    monkeypatch.setattr(GroupingWorker, "start", lambda self, warm=False: started.append(warm))
    store = Store.open(tmp_path / "agg.db")
    try:
        run(load_config(serve_feeds(tmp_path, server, FEEDS, SMALL_FEED)), store)
        assert True not in started
    finally:
        store.close()
