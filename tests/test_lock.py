"""The run lock: one agg run per database; a second exits at once with status 75 unless --wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator.lock import LockHeld, LockUnavailable, RunLock, lock_path_for
from tests.conftest import PROJECT_ROOT, rss_document
from tests.server import Reply
from tests.terminal import run_on_terminal_behind_the_lock

EX_TEMPFAIL = 75


def agg_process(*args: object, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aggregator", *map(str, args)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def write_config(tmp_path: Path, *urls: str) -> Path:
    path = tmp_path / "feeds.yaml"
    feeds = "".join(f"  - url: {url}\n    extract: false\n" for url in urls)
    path.write_text(f"defaults:\n  allow_private_networks: true\nfeeds:\n{feeds or '  []'}\n")
    return path


def feed_route(server, name: str = "/feed.xml", count: int = 2) -> str:
    items = [{"guid": f"{name}-{i}", "title": f"Report {i}", "link": f"http://example.test/{i}"} for i in range(count)]
    return server.route(name, Reply(body=rss_document(items)))


def test_the_lock_file_sits_next_to_the_database(tmp_path):
    assert lock_path_for(tmp_path / "data" / "agg.db") == tmp_path / "data" / "agg.db.lock"


def test_a_second_lock_is_refused_at_once_and_names_the_holder(tmp_path):
    db = tmp_path / "agg.db"
    with RunLock(db, purpose="agg fetch --due"):
        started = time.monotonic()
        with pytest.raises(LockHeld) as refused:
            RunLock(db).acquire()
        assert time.monotonic() - started < 1
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "agg fetch --due" in message and "--wait" in message
    with RunLock(db) as again:  # released on exit
        assert again.held


def test_wait_blocks_until_the_holder_lets_go(tmp_path):
    db = tmp_path / "agg.db"
    holder = RunLock(db)
    holder.acquire()
    acquired = threading.Event()

    def waiter() -> None:
        with RunLock(db, wait=True):
            acquired.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert not acquired.wait(0.5)  # still held: the waiter waits
    holder.release()
    assert acquired.wait(10)
    thread.join(10)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    db = tmp_path / "agg.db"
    code = "import sys, time; from aggregator.lock import RunLock; RunLock(sys.argv[1]).acquire(); " \
           "print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld):
            RunLock(db).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with RunLock(db) as lock:
            assert lock.held
    finally:
        holder.kill()
        holder.wait(10)


ADOPTER = ("import sys, time; from aggregator.lock import RunLock; "
           "RunLock.adopt(sys.argv[1], int(sys.argv[2]), purpose='agg group (adopted)'); "
           "print('adopted', flush=True); time.sleep(60)")


def test_a_lock_handed_over_stays_held_by_the_child_after_the_parent_lets_go(tmp_path):
    db = tmp_path / "agg.db"
    parent = RunLock(db, purpose="agg fetch")
    parent.acquire()
    fd = parent.hand_over()
    child = subprocess.Popen([sys.executable, "-c", ADOPTER, str(db), str(fd)], cwd=PROJECT_ROOT, pass_fds=(fd,),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "adopted"
        parent.release()
        assert not parent.held
        with pytest.raises(LockHeld) as refused:
            RunLock(db).acquire()
        assert f"pid {child.pid}, agg group (adopted)" in str(refused.value)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        with RunLock(db) as lock:  # the child was the last to hold it
            assert lock.held
    finally:
        parent.release()
        child.kill()
        child.wait(10)


def test_only_the_descriptor_that_holds_the_lock_can_be_adopted(tmp_path):
    db = tmp_path / "agg.db"
    with pytest.raises(RuntimeError, match="not held"):
        RunLock(db).hand_over()
    other = os.open(tmp_path / "other.txt", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(LockUnavailable, match=f"descriptor {other} does not hold"):
            RunLock.adopt(db, other)  # no lock file yet
        with RunLock(db):
            with pytest.raises(LockUnavailable):
                RunLock.adopt(db, other)  # some other file
            stranger = os.open(lock_path_for(db), os.O_RDWR)
            try:
                with pytest.raises(LockUnavailable):
                    RunLock.adopt(db, stranger)  # the lock file, but not the descriptor that locked it
            finally:
                os.close(stranger)
    finally:
        os.close(other)


def test_a_second_agg_fetch_exits_75_at_once_with_a_clear_message(tmp_path, server):
    cfg = write_config(tmp_path, feed_route(server))
    db = tmp_path / "agg.db"
    with RunLock(db, purpose="agg daemon"):
        done = agg_process("--config", cfg, "--db", db, "fetch", "--due")
        out, err = done.communicate(timeout=60)
    assert done.returncode == EX_TEMPFAIL
    assert "another agg run holds" in err and "agg daemon" in err and "--wait" in err
    assert server.requests == []  # it did nothing


def test_agg_fetch_wait_runs_once_the_lock_is_free(tmp_path, server):
    cfg = write_config(tmp_path, feed_route(server))
    db = tmp_path / "agg.db"
    holder = RunLock(db)
    holder.acquire()
    try:
        waiting = agg_process("--config", cfg, "--db", db, "fetch", "--wait")
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(3)  # long enough to start up and block on the lock
        assert server.requests == []
    finally:
        holder.release()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert len(server.hits("/feed.xml")) == 1
    assert "waiting" not in err  # piped, as under cron: silent


def test_agg_fetch_wait_on_a_terminal_says_which_run_it_waits_for(tmp_path, server):
    cfg = write_config(tmp_path, feed_route(server))
    db = tmp_path / "agg.db"
    status, _, screen = run_on_terminal_behind_the_lock(db, "agg daemon",
                                                        ["--config", str(cfg), "--db", str(db), "fetch", "--wait"])
    assert status == 0, screen
    assert f"agg: waiting for another agg run to finish (the run that holds it: pid {os.getpid()}, agg daemon, since " \
        in screen
    assert len(server.hits("/feed.xml")) == 1


def agg_lines(stderr: str) -> list[str]:
    """What agg itself printed (the in-process test server may log to the same captured stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("agg:") or " fetched, " in line]


def test_under_cron_only_failures_are_printed(tmp_path, server, agg):
    good = feed_route(server, "/good.xml")
    bad = server.route("/bad.xml", Reply(500, b"oops", content_type="text/plain"))
    cfg = write_config(tmp_path, good, bad)
    db = tmp_path / "agg.db"
    quiet = agg("--config", cfg, "--db", db, "fetch")  # CliRunner's stderr is no terminal, as under cron
    assert quiet.exit_code == 0
    assert agg_lines(quiet.stderr) == [f"agg: {bad}: HTTP 500 Internal Server Error"]
    verbose = agg("-v", "--config", cfg, "--db", db, "fetch")
    assert any(" fetched, " in line and "1 failed" in line for line in agg_lines(verbose.stderr))


def test_a_clean_run_under_cron_prints_nothing(tmp_path, server, agg):
    cfg = write_config(tmp_path, feed_route(server))
    result = agg("--config", cfg, "--db", tmp_path / "agg.db", "fetch", "--due")
    assert result.exit_code == 0
    assert agg_lines(result.stderr) == [] and result.stdout == ""
    assert len(server.hits("/feed.xml")) == 1
