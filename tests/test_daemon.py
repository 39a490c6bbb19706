"""``agg daemon``, the daily maintenance and ``agg status``.

The daemon tests start it as a real process against a local server and
stop it with real signals; every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import daemon, pipeline
from aggregator.config import load_config
from aggregator.daemon import Daemon, maintain, wake_time
from aggregator.schedule import status_report
from aggregator.store import Store, to_db_time
from tests.conftest import PROJECT_ROOT, rss_document
from tests.server import Reply

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EX_TEMPFAIL = 75
ARTICLE = (b"<html><head><title>Harbour works</title></head><body><article><h1>Harbour works begin</h1>"
           + b"<p>The harbour authority began dredging the eastern basin on Monday, the first such work in a "
           + b"decade, and expects the channel to reopen to larger vessels by the spring.</p>" * 4
           + b"</article></body></html>")


# -- helpers -----------------------------------------------------------------------------------------


def feed_items(prefix: str, count: int, link_base: str = "http://example.test") -> list[dict]:
    return [{"guid": f"{prefix}-{i}", "title": f"{prefix} report {i}", "link": f"{link_base}/{prefix}/{i}.html"}
            for i in range(count)]


def write_config(path: Path, feeds: list[tuple[str, bool]]) -> Path:
    lines = "".join(f"  - url: {url}\n    extract: {'true' if extract else 'false'}\n" for url, extract in feeds)
    path.write_text(f"defaults:\n  allow_private_networks: true\n  extract_timeout: 10s\nfeeds:\n{lines}")
    return path


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the daemon exited ({process.returncode}) while waiting for {what}: "
                        f"{process.stderr.read() if process.stderr else ''}")
        try:
            if condition():
                return
        except sqlite3.OperationalError:
            pass  # the database is not created yet
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def start_daemon(cfg: Path, db: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "daemon"],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_daemon(process: subprocess.Popen) -> tuple[int, float, str]:
    """SIGTERM, then the exit status, the seconds it took, and its stderr."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
        pytest.fail(f"the daemon did not exit within 20 s of SIGTERM: {err}")
    return process.returncode, time.monotonic() - sent, err


@pytest.fixture
def cleanup():
    processes: list[subprocess.Popen] = []
    yield processes.append
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


# -- the daemon, as a real process -------------------------------------------------------------------


def test_daemon_fetches_due_feeds_reloads_and_exits_cleanly_on_sigterm(tmp_path, server, cleanup):
    plain = server.route("/plain.xml", Reply(body=rss_document(feed_items("plain", 3))))
    full = server.route("/full.xml", Reply(body=rss_document(feed_items("full", 2, server.base_url))))
    for i in range(2):
        server.route(f"/full/{i}.html", Reply(body=ARTICLE, content_type="text/html; charset=utf-8"))
    cfg = write_config(tmp_path / "feeds.yaml", [(plain, False), (full, True)])
    db = tmp_path / "agg.db"
    process = start_daemon(cfg, db)
    cleanup(process)

    wait_for(lambda: query(db, "SELECT count(*) FROM entries WHERE extract_status != 'pending'")[0][0] == 5,
             60, "both feeds fetched and their pages extracted", process)

    # It holds the lock: a cron run meanwhile is turned away.
    second = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == EX_TEMPFAIL and "agg daemon" in second.stderr

    # Saving feeds.yaml reloads it: the new feed is fetched without a restart.
    added = server.route("/added.xml", Reply(body=rss_document(feed_items("added", 4))))
    write_config(cfg, [(plain, False), (full, True), (added, False)])
    wait_for(lambda: query(db, "SELECT count(*) FROM entries")[0][0] == 9, 30, "the added feed", process)
    process.send_signal(signal.SIGHUP)
    time.sleep(0.5)

    status, seconds, err = stop_daemon(process)
    assert status == 0, err
    assert seconds < 5, f"took {seconds:.1f}s to stop"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT count(*) FROM entries")[0][0] == 9
    assert query(db, "SELECT count(*) FROM entries WHERE extract_status = 'ok'")[0][0] == 2
    assert len(server.hits("/plain.xml")) == 1  # not due again within its 30 minutes
    assert "run: " in err and "config reloaded" in err and "daemon stopped" in err


def test_sigterm_in_the_middle_of_a_run_stops_within_seconds_and_loses_nothing(tmp_path, server, cleanup):
    fast = server.route("/fast.xml", Reply(body=rss_document(feed_items("fast", 3))))
    slow = server.route("/slow.xml", Reply(body=rss_document(feed_items("slow", 2)), delay=25))
    cfg = write_config(tmp_path / "feeds.yaml", [(fast, False), (slow, False)])
    db = tmp_path / "agg.db"
    process = start_daemon(cfg, db)
    cleanup(process)
    wait_for(lambda: query(db, "SELECT count(*) FROM entries")[0][0] == 3, 60, "the fast feed", process)
    wait_for(lambda: len(server.hits("/slow.xml")) == 1, 10, "the slow feed's request", process)

    status, seconds, err = stop_daemon(process)
    assert status == 0, err
    assert seconds < 5, f"took {seconds:.1f}s to stop"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(db, "SELECT count(*) FROM entries")[0][0] == 3
    # The abandoned feed was not written half-way: it is simply still due.
    assert query(db, f"SELECT last_fetch_at FROM feeds WHERE url = '{slow}'") == [(None,)]
    assert "stopped early" in err


@pytest.mark.parametrize("holder", ["agg daemon", "agg fetch --due"])
def test_a_second_daemon_is_turned_away(tmp_path, server, cleanup, holder):
    from aggregator.lock import RunLock

    cfg = write_config(tmp_path / "feeds.yaml", [])
    db = tmp_path / "agg.db"
    with RunLock(db, purpose=holder):  # it exits while the lock is still held: it does not wait
        done = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "daemon"],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_TEMPFAIL and "another agg run holds" in done.stderr and holder in done.stderr


def test_a_daemon_started_during_the_background_grouping_waits_for_it_then_runs(tmp_path, server, cleanup):
    from aggregator.cli import BACKGROUND_GROUPING
    from aggregator.lock import RunLock, lock_path_for

    feed = server.route("/plain.xml", Reply(body=rss_document(feed_items("plain", 3))))
    cfg = write_config(tmp_path / "feeds.yaml", [(feed, False)])
    db = tmp_path / "agg.db"
    log = tmp_path / "daemon.log"
    grouping = RunLock(db, purpose=BACKGROUND_GROUPING)
    grouping.acquire()
    try:
        with open(log, "w") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "daemon"],
                cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
        cleanup(process)
        wait_for(lambda: "waiting for the grouping that agg fetch left in the background" in log.read_text(),
                 30, "the daemon to say what it waits for", process)
        assert BACKGROUND_GROUPING in log.read_text()
        assert process.poll() is None and server.hits("/plain.xml") == []  # waiting, not running
    finally:
        grouping.release()

    wait_for(lambda: query(db, "SELECT count(*) FROM entries")[0][0] == 3, 60, "the daemon's first run", process)
    assert lock_path_for(db).read_text().startswith(f"pid {process.pid}, agg daemon, ")
    status, _, _ = stop_daemon(process)
    assert status == 0, log.read_text()
    assert "daemon stopped" in log.read_text()


# -- reloading, in-process -------------------------------------------------------------------------


def test_reload_takes_a_changed_config_and_keeps_the_old_one_when_broken(tmp_path, caplog):
    cfg = write_config(tmp_path / "feeds.yaml", [("http://example.test/a.xml", False)])
    keeper = Daemon(load_config(cfg), Store.memory())
    keeper.add_jobs()
    assert not keeper.reload_if_needed()

    write_config(cfg, [("http://example.test/a.xml", False), ("http://example.test/b.xml", False)])
    later = time.time() + 5
    os.utime(cfg, (later, later))  # a distinct mtime whatever the file system's granularity
    assert keeper.reload_if_needed()
    assert [f.url for f in keeper.config.feeds][-1] == "http://example.test/b.xml"

    cfg.write_text("feeds:\n  - url: ftp://nope\n")
    os.utime(cfg, (later + 5, later + 5))
    with caplog.at_level(logging.ERROR, logger="aggregator.daemon"):
        assert not keeper.reload_if_needed()
    assert len(keeper.config.feeds) == 2
    assert "config not reloaded" in caplog.text

    write_config(cfg, [("http://example.test/c.xml", False)])
    os.utime(cfg, (later + 5, later + 5))  # same mtime as the broken one: only SIGHUP tells
    assert not keeper.reload_if_needed()
    keeper.request_reload()
    assert keeper.reload_if_needed()
    assert [f.url for f in keeper.config.feeds] == ["http://example.test/c.xml"]


def test_wake_time_follows_the_earliest_due_feed_within_bounds(tmp_path):
    cfg = write_config(tmp_path / "feeds.yaml", [("http://example.test/a.xml", False),
                                                 ("http://example.test/b.xml", False)])
    config = load_config(cfg)
    store = Store.memory()
    rows = store.sync_feeds(config.feeds, NOW)
    a, b = (rows[f.url]["id"] for f in config.feeds)
    store.update_feed(a, next_check_at=to_db_time(NOW + timedelta(minutes=20)))
    store.update_feed(b, next_check_at=to_db_time(NOW + timedelta(minutes=7)))
    assert wake_time(config, store, NOW) == NOW + timedelta(minutes=7)
    store.update_feed(b, next_check_at=to_db_time(NOW - timedelta(hours=1)))  # overdue: soon, not in a loop
    assert wake_time(config, store, NOW) == NOW + timedelta(seconds=daemon.MIN_WAKE_SECONDS)
    store.update_feed(b, state="disabled", next_check_at=None)
    store.update_feed(a, next_check_at=to_db_time(NOW + timedelta(days=3)))
    assert wake_time(config, store, NOW) == NOW + timedelta(seconds=daemon.MAX_WAKE_SECONDS)


def test_a_feed_added_to_the_config_is_due_at_once(tmp_path):
    cfg = write_config(tmp_path / "feeds.yaml", [("http://example.test/a.xml", False)])
    store = Store.memory()
    rows = store.sync_feeds(load_config(cfg).feeds, NOW)
    store.update_feed(rows["http://example.test/a.xml"]["id"], next_check_at=to_db_time(NOW + timedelta(hours=1)))
    config = load_config(write_config(cfg, [("http://example.test/a.xml", False), ("http://example.test/new.xml", False)]))
    assert wake_time(config, store, NOW) == NOW + timedelta(seconds=daemon.MIN_WAKE_SECONDS)


def test_the_daemons_runs_share_the_stories_they_loaded(tmp_path, server, caplog):
    """A later run places its new reports among the stories the last run held: nothing is loaded again."""
    headlines = ["Harbour authority reopens the north bridge after three weeks of storm repairs",
                 "Regional rail operator orders forty hydrogen trains for mountain lines",
                 "City council approves late night bus network across eleven districts"]
    published = "Sun, 01 Mar 2026 10:00:00 GMT"

    def outlet(name: str) -> str:
        items = [{"guid": f"{name}-{i}", "title": f"{title} ({name})", "link": f"http://example.test/{name}/{i}",
                  "pubDate": published} for i, title in enumerate(headlines)]
        return server.route(f"/{name}.xml", Reply(body=rss_document(items, title=f"The {name.title()} Post")))

    first, second = outlet("first"), outlet("second")
    cfg = write_config(tmp_path / "feeds.yaml", [(first, False)])
    store = Store.open(tmp_path / "agg.db")
    keeper = Daemon(load_config(cfg), store)
    keeper.add_jobs()
    with caplog.at_level(logging.INFO, logger="aggregator.daemon"):
        keeper.fetch_due()
        keeper.config = load_config(write_config(cfg, [(first, False), (second, False)]))  # a feed added
        keeper.fetch_due()
    runs = [record.getMessage() for record in caplog.records if record.getMessage().startswith("run: ")]
    assert len(runs) == 2
    assert runs[0].endswith("3 reports placed in stories, 0 stored reports loaded to place them")
    assert runs[1].endswith("3 reports placed in stories, 0 stored reports loaded to place them")
    stories = store.db.execute("SELECT n_reports, n_outlets FROM stories WHERE merged_into IS NULL").fetchall()
    assert sorted(stories) == [(2, 2)] * 3
    # Another process's grouping in between: the next run loads the stories again, and places among them.
    _insert_rewrite(store, headlines[0])
    assert pipeline.finish_grouping(store, keeper.config.settings.dedup).placed == 1
    caplog.clear()
    third = outlet("third")
    with caplog.at_level(logging.INFO, logger="aggregator.daemon"):
        keeper.config = load_config(write_config(cfg, [(first, False), (second, False), (third, False)]))
        keeper.fetch_due()
    run = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("run: "))
    assert run.endswith("3 reports placed in stories, 7 stored reports loaded to place them")
    stories = store.db.execute("SELECT n_reports FROM stories WHERE merged_into IS NULL").fetchall()
    assert sorted(stories) == [(3,), (3,), (4,)]
    store.close()


def test_the_daemons_grouping_session_is_renewed_once_its_stories_span_four_windows(tmp_path, server):
    def outlet(name: str, published: str) -> str:
        items = [{"guid": f"{name}-1", "title": f"Harbour authority reopens the north bridge ({name})",
                  "link": f"http://example.test/{name}/1", "pubDate": published}]
        return server.route(f"/{name}.xml", Reply(body=rss_document(items, title=name)))

    early, late = outlet("early", "Sun, 01 Mar 2026 10:00:00 GMT"), outlet("late", "Sat, 21 Mar 2026 10:00:00 GMT")
    cfg = write_config(tmp_path / "feeds.yaml", [(early, False)])
    store = Store.open(tmp_path / "agg.db")
    keeper = Daemon(load_config(cfg), store)
    keeper.add_jobs()
    keeper.fetch_due()
    session = keeper._grouping_session()
    assert session.span() == timedelta(days=6)  # the window each side of its one report
    keeper.config = load_config(write_config(cfg, [(early, False), (late, False)]))
    keeper.fetch_due()  # twenty days later: the session now covers 26 days
    assert session.span() == timedelta(days=26)
    assert keeper._grouping_session() is not session
    assert store.db.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
    store.close()


def _insert_rewrite(store: Store, headline: str) -> None:
    """One more report of a story, stored as another process's run would store it."""
    feed_id = store.db.execute("SELECT min(id) FROM feeds").fetchone()[0]
    stamp = to_db_time(datetime(2026, 3, 1, 10, 30, tzinfo=UTC))
    store.db.execute(
        "INSERT INTO entries (feed_id, guid, link, title, summary, text_source, extract_status, published, "
        "first_seen, changed_at, content_hash) VALUES (?, 'manual-1', 'http://example.test/manual/1', ?, '', "
        "'feed-content', 'done', ?, ?, ?, '')", [feed_id, f"{headline} (wire)", stamp, stamp, stamp])
    store.db.conn.commit()


# -- maintenance -----------------------------------------------------------------------------------


def add_entry(conn: sqlite3.Connection, feed_id: int, guid: str, first_seen: datetime,
              published: datetime | None = None) -> int:
    cursor = conn.execute(
        "INSERT INTO entries (feed_id, guid, title, first_seen, changed_at, published, content_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, '')",
        (feed_id, guid, guid, to_db_time(first_seen), to_db_time(first_seen), to_db_time(published)))
    return cursor.lastrowid


def test_maintenance_prunes_old_entries_but_stories_keep_their_representative(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    old, recent = NOW - timedelta(days=120), NOW - timedelta(days=3)
    with store.transaction() as conn:
        feed = conn.execute("INSERT INTO feeds (url, created_at) VALUES ('http://x.test/f', ?)",
                            [to_db_time(old)]).lastrowid
        representative = add_entry(conn, feed, "rep", old, old)
        original = add_entry(conn, feed, "orig", old, old)
        member = add_entry(conn, feed, "member", old, old)
        lone = add_entry(conn, feed, "lone", old)
        fresh = add_entry(conn, feed, "fresh", recent, recent)
        redated = add_entry(conn, feed, "redated", old, recent)  # first seen long ago, dated recently
        story = conn.execute(
            "INSERT INTO stories (title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
            "original_entry_id) VALUES ('s', ?, ?, 3, 1, ?, ?)",
            [to_db_time(old), to_db_time(old), representative, original]).lastrowid
        for entry in (representative, original, member):
            conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", [story, entry])
            conn.execute("INSERT INTO story_members (entry_id, story_id, rule, joined_at) VALUES (?, ?, 'seed', ?)",
                         [entry, story, to_db_time(old)])
        for started in (old, recent):
            conn.execute("INSERT INTO fetch_log (feed_id, url, started_at) VALUES (?, 'http://x.test/f', ?)",
                         [feed, to_db_time(started)])

    report = maintain(store, 90 * 86400, NOW)

    kept = {row[0] for row in store.db.execute("SELECT id FROM entries")}
    assert kept == {representative, original, fresh, redated}
    assert (report.entries_pruned, report.fetch_log_pruned) == (2, 1)
    assert [row[0] for row in store.db.execute("SELECT entry_id FROM story_members ORDER BY entry_id")] == \
        [representative, original]
    assert store.story(story)["reports"][0]["id"] in (representative, original)
    assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert (tmp_path / "agg.db-wal").stat().st_size == 0  # checkpointed and truncated
    assert lone not in kept and member not in kept


# -- agg status ------------------------------------------------------------------------------------


def status_store(tmp_path: Path, now: datetime) -> Path:
    db = tmp_path / "agg.db"
    store = Store.open(db)
    urls = ["http://a.test/rss", "http://b.test/rss", "http://c.test/rss"]
    with store.transaction() as conn:
        for url in urls:
            conn.execute("INSERT INTO feeds (url, created_at) VALUES (?, ?)", [url, to_db_time(now)])
    ids = {row["url"]: row["id"] for row in store.feeds()}
    store.update_feed(ids[urls[0]], title="Alpha \x1b[31mNews\x1b[0m", last_fetch_at=to_db_time(now - timedelta(hours=2)),
                      last_status=200, next_check_at=to_db_time(now + timedelta(minutes=25)))
    store.update_feed(ids[urls[1]], state="failing", error_count=12, last_status=503, last_error="HTTP 503\x07 busy",
                      last_fetch_at=to_db_time(now - timedelta(hours=1)), next_check_at=to_db_time(now - timedelta(minutes=1)))
    store.update_feed(ids[urls[2]], state="disabled", last_status=410, last_error="HTTP 410 Gone", next_check_at=None)
    store.close()
    return db


def test_status_report_counts_states():
    rows = [
        {"url": "u1", "fetch_url": None, "title": None, "state": "ok", "last_fetch_at": None, "last_status": None,
         "last_error": None, "error_count": 0, "next_check_at": to_db_time(NOW)},
        {"url": "u2", "fetch_url": None, "title": None, "state": "failing", "last_fetch_at": None, "last_status": 500,
         "last_error": "HTTP 500", "error_count": 11, "next_check_at": to_db_time(NOW + timedelta(hours=5))},
    ]
    report = status_report(rows, NOW)
    assert report["counts"] == {"ok": 1, "error": 0, "failing": 1, "disabled": 0, "feeds": 2, "with_errors": 1,
                                "due": 1}
    assert [f["due"] for f in report["feeds"]] == [True, False]


def test_agg_status_lists_each_feed_and_counts_the_failing(tmp_path, agg):
    db = status_store(tmp_path, datetime.now(UTC))
    result = agg("--db", db, "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    alpha, beta, gamma = (line.split("\t") for line in lines)
    assert alpha[:4] == ["Alpha News", "ok", "2 h ago", "200"] and alpha[4].startswith("in 2")
    assert beta[1:] == ["failing", "1 h ago", "503", "due", "HTTP 503  busy"]
    assert gamma[1:] == ["disabled", "never", "410", "-", "HTTP 410 Gone"]
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "3 feeds: 1 ok, 1 with errors (1 failing: tried daily), 1 disabled" in result.stderr


def test_agg_status_json(tmp_path, agg):
    db = status_store(tmp_path, datetime.now(UTC))
    result = agg("--db", db, "status", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["counts"]["failing"] == 1 and report["counts"]["disabled"] == 1
    assert {f["url"]: f["state"] for f in report["feeds"]} == {
        "http://a.test/rss": "ok", "http://b.test/rss": "failing", "http://c.test/rss": "disabled"}


def test_agg_status_without_a_database_says_what_to_do(tmp_path, agg):
    result = agg("--db", tmp_path / "none.db", "status")
    assert result.exit_code == 1 and "run 'agg fetch' first" in result.stderr
