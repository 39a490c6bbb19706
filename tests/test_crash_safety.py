"""Storage under stress, with real ``agg`` processes: SIGKILL at random moments, readers during a write,
a read-only disk and a full one.

The feeds grow between runs and honour conditional GET, so an entry is lost
if a killed run ever stored a feed's validators without its entries; the
check after the last run compares the database with exactly what the feeds
hold. Every loop is bounded; the whole file takes well under a minute.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, rss_document
from tests.faults import agg_command, run_agg
from tests.server import Reply, ScriptedServer, SeenRequest
from tests.test_pipeline import write_config

KILL_TRIALS = 20
FEEDS = 8
PROCESS_TIMEOUT = 60


class GrowingFeed:
    """A feed whose entries grow with ``site.generation``; its ETag is the generation, honoured on If-None-Match."""

    def __init__(self, site: Site, number: int):
        self.site, self.number = site, number

    def guids(self, generation: int) -> list[str]:
        return [f"f{self.number}-e{n}" for n in range(5 + generation * (1 + self.number % 3))]

    def __call__(self, request: SeenRequest) -> Reply:
        generation = self.site.generation
        etag = f'"g{generation}"'
        delay = self.site.rng.uniform(0, 0.15)
        if request.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag}, delay=delay)
        items = [{"guid": guid, "title": f"Feed {self.number} story {guid} about topic {hash(guid) % 97}",
                  "link": self.site.server.url(f"/a/{guid}"),
                  "description": f"<p>Report {guid}: " + "words " * 40 + "</p>"}
                 for guid in self.guids(generation)]
        return Reply(body=rss_document(items, title=f"Feed {self.number}"), headers={"ETag": etag}, delay=delay)


class Site:
    """FEEDS growing feeds and their article pages on one local server."""

    def __init__(self, server: ScriptedServer, seed: int = 7):
        self.server = server
        self.generation = 0
        self.rng = random.Random(seed)
        self.feeds = [GrowingFeed(self, n) for n in range(FEEDS)]
        self.urls = [server.route(f"/feed{n}.xml", feed) for n, feed in enumerate(self.feeds)]
        article = ("<html><body><article>" + "".join(f"<p>Paragraph {n} of a story long enough to extract, "
                                                      f"with {n * 7} distinct words in it.</p>" for n in range(20))
                   + "</article></body></html>").encode()
        for guid in self.feeds[0].guids(KILL_TRIALS + 2):  # the one feed whose pages are extracted
            server.route(f"/a/{guid}", Reply(body=article, content_type="text/html", delay=0.02))

    def config(self, tmp_path: Path, defaults: str = "") -> Path:
        # Pages are extracted for one feed only: enough to kill runs mid-extraction, quick enough.
        feeds = [{"url": url, **({"extract": True} if n == 0 else {})} for n, url in enumerate(self.urls)]
        return write_config(tmp_path, feeds, defaults="allow_private_networks: true\n" + defaults)

    def expected(self) -> set[tuple[str, str]]:
        return {(url, guid) for url, feed in zip(self.urls, self.feeds) for guid in feed.guids(self.generation)}


def sql(db: Path, statement: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(statement).fetchall()


def stored(db: Path) -> list[tuple[str, str]]:
    return sql(db, "SELECT f.url, e.guid FROM entries e JOIN feeds f ON f.id = e.feed_id")


def killed_run(cfg: Path, db: Path, after: float) -> int | None:
    """Start ``agg fetch`` and SIGKILL it (and its extraction workers) ``after`` seconds later."""
    process = subprocess.Popen(agg_command("--config", cfg, "--db", db, "fetch"), cwd=PROJECT_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout=PROCESS_TIMEOUT)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, server):
    site = Site(server)
    cfg, db = site.config(tmp_path), tmp_path / "agg.db"
    started = time.monotonic()
    full = run_agg("--config", cfg, "--db", db, "fetch", timeout=PROCESS_TIMEOUT)
    assert full.returncode == 0, full.stderr
    run_seconds = time.monotonic() - started

    rng = random.Random(2026)
    killed = 0
    for trial in range(KILL_TRIALS):
        site.generation += 1
        status = killed_run(cfg, db, after=rng.uniform(0.05, min(run_seconds, 1.5)))
        killed += status == -signal.SIGKILL
        assert sql(db, "PRAGMA integrity_check") == [("ok",)], f"trial {trial}"
        assert sql(db, "PRAGMA foreign_key_check") == [], f"trial {trial}"
    print(f"\n{killed} of {KILL_TRIALS} runs killed mid-way (a whole run takes {run_seconds:.1f}s)")
    assert killed >= KILL_TRIALS // 2, f"only {killed} of {KILL_TRIALS} runs were killed before they ended"

    final = run_agg("--config", cfg, "--db", db, "fetch", timeout=PROCESS_TIMEOUT)
    assert final.returncode == 0, final.stderr
    rows = stored(db)
    assert len(rows) == len(set(rows)), "duplicate entries"
    assert set(rows) == site.expected(), "lost or unexpected entries"
    assert sql(db, "SELECT count(*) FROM entries WHERE story_id IS NULL") == [(0,)]
    assert sql(db, "SELECT count(*) FROM entries WHERE extract_status = 'pending'") == [(0,)]
    sql(db, "INSERT INTO entries_fts (entries_fts) VALUES ('integrity-check')")  # raises if the index is off
    assert sql(db, "PRAGMA integrity_check") == [("ok",)]


def test_readers_never_see_database_is_locked_while_a_run_writes(tmp_path, server):
    site = Site(server)
    cfg, db = site.config(tmp_path), tmp_path / "agg.db"
    assert run_agg("--config", cfg, "--db", db, "fetch").returncode == 0
    readers = [("list",), ("list", "--all", "--json"), ("search", "story"), ("status",)]
    failures: list[str] = []
    reads = 0
    writing = threading.Event()

    def read_loop(offset: int) -> None:
        nonlocal reads
        for n in range(40):  # bounded: stops early once the writers are done
            if not writing.is_set() and n > 2:
                return
            result = run_agg("--config", cfg, "--db", db, *readers[(n + offset) % len(readers)])
            reads += 1
            if result.returncode != 0 or "locked" in result.stderr:
                failures.append(f"{readers[(n + offset) % len(readers)]}: {result.returncode} {result.stderr}")

    writing.set()
    threads = [threading.Thread(target=read_loop, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            site.generation += 1
            result = run_agg("--config", cfg, "--db", db, "fetch")
            assert result.returncode == 0 and "locked" not in result.stderr, result.stderr
    finally:
        writing.clear()
        for thread in threads:
            thread.join(timeout=PROCESS_TIMEOUT)
    assert failures == []
    assert reads >= 6


# --- disks that refuse to be written -------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (needs mount privileges: the test is skipped without them)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_disk_gives_a_clear_error(tmp_path, server):
    site = Site(server)
    cfg = site.config(tmp_path)
    with tmpfs(tmp_path / "ro", "16m") as disk:
        db = disk / "agg.db"
        assert run_agg("--config", cfg, "--db", db, "fetch").returncode == 0
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        site.generation += 1
        result = run_agg("--config", cfg, "--db", db, "fetch")
        assert result.returncode == 1, result.stderr
        assert "read-only" in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.startswith("agg: error:")
        # Reading still works on a read-only disk.
        listed = run_agg("--config", cfg, "--db", db, "list")
        assert listed.returncode == 0 and listed.stdout, listed.stderr


FULL_DISK_MESSAGE = "free some disk space"


def big_feed_site(server: ScriptedServer) -> list[str]:
    items = [{"guid": f"big-{n}", "title": f"Big story {n}", "description": f"<p>{n} " + "padding " * 4000 + "</p>"}
             for n in range(200)]
    return [server.route(f"/big{n}.xml", Reply(body=rss_document(items, title=f"Big {n}"))) for n in range(3)]


def test_full_disk_gives_a_clear_error(tmp_path, server):
    urls = big_feed_site(server)
    cfg = write_config(tmp_path, [{"url": url} for url in urls])
    with tmpfs(tmp_path / "full", "2m") as disk:
        result = run_agg("--config", cfg, "--db", disk / "agg.db", "fetch")
    assert result.returncode == 1, result.stderr
    assert FULL_DISK_MESSAGE in result.stderr and "Traceback" not in result.stderr


def limit_file_size() -> None:
    """In the child: files may not grow past 2 MB, and writing more fails (EFBIG) rather than kill it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 10**6, 2 * 10**6))


def test_file_size_limit_gives_a_clear_error_without_privileges(tmp_path, server):
    urls = big_feed_site(server)
    cfg = write_config(tmp_path, [{"url": url} for url in urls])
    result = run_agg("--config", cfg, "--db", tmp_path / "agg.db", "fetch", preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr
    assert FULL_DISK_MESSAGE in result.stderr and "Traceback" not in result.stderr
    assert sql(tmp_path / "agg.db", "PRAGMA integrity_check") == [("ok",)]
