"""Benchmark of fetching at scale: ``agg fetch`` against the physical limit, feedparser and newsboat.

Usage: python bench/fetch_scale.py [--feeds N] [--latency SECONDS] [--concurrency C]
                                   [--sequential K] [--hosts H] [--no-newsboat] [--quick]
                                   [--repeat R] [--cold-repeat C] [--agg-only]
                                   [--content real|synthetic] [--base CHECKOUT]

A local aiohttp server, in its own process so it never shares a GIL with
the client, serves N RSS feeds of 50 entries (30-60 KB each, gzip when asked,
with ETag and Last-Modified, 304 on a matching conditional request) after an
added latency per request. The feeds are spread over H loopback addresses
(127.0.1.1 ... 127.0.1.H; Linux routes all of 127/8 to lo), so agg's
per-host cap does not bind. Side by side, each cold (nothing cached) and then
again with everything cached (every answer a 304):

- ``agg fetch --concurrency C`` as a subprocess (config with ``extract: false``),
  with the peak memory of its whole process tree (the agg process and its
  worker processes, sampled every 50 ms): the peak of the sum of their RSS,
  the peak of the sum of their PSS (a page forked workers share with their
  parent counts once, where each RSS counts it in full), and the largest
  single process. The cold run is repeated C times (``--cold-repeat``, each
  on a new database) and the all-304 run R times (``--repeat``), and the
  medians shown. A cold run leaves the grouping of its 50,000 reports to a
  background ``agg group`` (see README, "A first run over many feeds"): the
  bench waits for it (the lock it holds is free when it is done) and prints
  when it finished and its peak memory, which counts for the memory target.
  Last comes a later run, 6 feeds added to the config (300 new entries, the
  others 304), with the same measures: placing a few new reports among the
  window's 50,000 stored ones is the cost of a steady-state run. With
  ``--history K`` it runs among K more copies of the stored entries, dated
  10, 20, ... days earlier (3: among 200,000, a year's database whose window
  holds the same 50,000). With ``--later-repeat N`` each checkout's later
  run is repeated N times more, taking turns with the other's, each on a
  copy of the database this tree's later run found: runs minutes apart on
  this machine differ by more than most changes, runs seconds apart do not.
  The project's bytecode is compiled first, as installing agg
  does: a module compiled on every start would be timed otherwise;
- the floor, ``bench/aiohttp_floor.py``: a fresh Python process that imports
  aiohttp and makes the same requests, C in flight, cold and then with the
  ETags it got, and does nothing else. What is left between it and the
  physical limit is this server's and this machine's, not agg's;
- a sequential ``feedparser.parse(url)`` loop: only the first K feeds are
  timed and the time is scaled to N (the table says so);
- ``newsboat -x reload`` with ``reload-threads C``, when newsboat is installed.

The physical limit is N x latency / C: what C requests in flight at all
times would take. The server counts its answers, so the table shows that
the second run really was all 304s.

The feeds carry real news text when $AGG_SHARED_DATA is there (``--content
real``): real headlines over 4-6 paragraphs of consecutive real sentences,
one entry in five a syndicated copy of another feed's entry; else synthetic
pseudo-words, lighter to group. A fetch is done for the user when its
reports are in their stories, so the verdict counts the background grouping:
targets (issues 8 and 17) are the cold fetch within 2x the limit, the
all-304 run within 1.3x, every report of the cold run in its story within
30 s of the fetch's start, a later run's 300 new reports in theirs within
5 s, 5x faster than newsboat, and under 500 MB for the whole process tree,
background grouping included. ``--base CHECKOUT`` times another checkout's
agg (a git worktree of the base commit) on the same server first, so before
and after come from one run.

``--agg-only`` skips feedparser and newsboat, for iterating on agg.
The server half (:class:`FeedServer`) is reused by ``bench/pipeline.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import fcntl
import gzip
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field, replace
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
ENTRIES_PER_FEED = 50
# Feeds added to the config for the run after the all-304 ones: what a later run brings.
LATER_FEEDS = 6
LATER_ENTRIES = LATER_FEEDS * ENTRIES_PER_FEED
LAST_MODIFIED = "Sat, 28 Nov 2026 18:00:00 GMT"
SYLLABLES = "ba ce di fo gu ha je ki lo mu na pe ri so tu va we xi yo za bre cla dro fli gra ple sto tri".split()


def _vocabulary(size: int = 5000) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf frequencies, so that token statistics (and grouping work) look like news text."""
    rng = random.Random(0)
    words = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size * 2)})
    rng.shuffle(words)
    words = words[:size]
    cumulative, total = [], 0.0
    for rank in range(1, len(words) + 1):
        total += 1 / rank
        cumulative.append(total)
    return words, cumulative


WORDS, CUMULATIVE_WEIGHTS = _vocabulary()
BOILERPLATE_LINKS = ["Home", "World", "Business", "Politics", "Science", "Sport", "Culture", "Opinion",
                     "Newsletters", "Podcasts", "Subscribe", "Sign in", "About us", "Contact", "Careers"]


# --- content ------------------------------------------------------------------


def _sentence(rng: random.Random, low: int = 8, high: int = 22) -> str:
    words = rng.choices(WORDS, cum_weights=CUMULATIVE_WEIGHTS, k=rng.randint(low, high))
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


def feed_path(number: int) -> str:
    return f"/feeds/{number}.xml"


def page_path(feed: int, entry: int) -> str:
    return f"/articles/{feed}/{entry}.html"


class RealNews:
    """Real news text for the feeds: real headlines and runs of real sentences ($AGG_SHARED_DATA).

    Each entry is a real headline over 4-6 paragraphs of consecutive real
    sentences; one entry in five is a syndicated copy of another feed's
    entry (its headline and text, under this feed's link). The same feed
    number always gives the same document.
    """

    SYNDICATED_SHARE = 0.2

    def __init__(self, feeds: int) -> None:
        # The material of dedup_scale.py: UCI headlines, sentences of extraction-dev's expected texts.
        from dedup_scale import headline_pools, sentence_pool

        pools, self.origin = headline_pools()
        self.titles = [title for pool in pools for title in pool]
        self.sentences, sentences_origin = sentence_pool()
        self.origin += f"; {sentences_origin}"
        self.feeds = feeds

    @staticmethod
    def available() -> bool:
        from dedup_scale import EXTRACTION_PAGES, UCI_HEADLINES, shared_data_dir

        root = shared_data_dir()
        return (root / UCI_HEADLINES).is_file() and (root / EXTRACTION_PAGES).is_dir()

    def entry(self, feed: int, entry: int) -> tuple[str, list[str]]:
        """The headline and paragraphs of a feed's entry: its own article, or a copy of another feed's."""
        rng = random.Random(f"copy {feed} {entry}")  # a string seed: the same in every process
        if self.feeds > 1 and rng.random() < self.SYNDICATED_SHARE:
            source = (feed + rng.randrange(1, self.feeds)) % self.feeds
            return self._article(source, entry)
        return self._article(feed, entry)

    def _article(self, feed: int, entry: int) -> tuple[str, list[str]]:
        rng = random.Random(f"article {feed} {entry}")
        start = rng.randrange(len(self.sentences))
        paragraphs, at = [], start
        for _ in range(rng.randint(4, 6)):
            size = rng.randint(1, 3)
            paragraphs.append(" ".join(self.sentences[(at + i) % len(self.sentences)] for i in range(size)))
            at += size
        return rng.choice(self.titles), paragraphs


def feed_document(number: int, base_url: str, news: RealNews | None = None) -> bytes:
    """A 50-entry RSS 2.0 feed with HTML descriptions and links to article pages.

    Its text is synthetic (Zipfian pseudo-words, 30-60 KB a feed) unless
    ``news`` gives real text.
    """
    rng = random.Random(number)
    published = datetime(2026, 11, 28, 18, tzinfo=UTC)
    items = []
    for entry in range(ENTRIES_PER_FEED):
        title = _sentence(rng, 5, 11)[:-1]
        link = f"{base_url}{page_path(number, entry)}"
        body = "".join(f"<p>{_paragraph(rng, rng.randint(1, 3))}</p>" for _ in range(rng.randint(1, 3)))
        if news is not None:
            title, paragraphs = news.entry(number, entry)
            body = "".join(f"<p>{escape(paragraph)}</p>" for paragraph in paragraphs)
        body += f'<p><a href="{link}">Read more</a> <img src="/img/{number}-{entry}.jpg" alt=""></p>'
        published -= timedelta(minutes=rng.randint(5, 90))
        items.append(
            f"<item><title>{escape(title)}</title><link>{link}</link>"
            f'<guid isPermaLink="false">feed-{number}-entry-{entry}</guid>'
            f"<pubDate>{format_datetime(published)}</pubDate>"
            f"<category>{rng.choice(WORDS[:40])}</category><author>desk@example.com (News desk)</author>"
            f"<description>{escape(body)}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>Bench outlet {number}</title><link>{base_url}/</link>"
        f"<description>Synthetic feed {number}</description><language>en</language>"
        f"<lastBuildDate>{LAST_MODIFIED}</lastBuildDate>" + "".join(items) + "</channel></rss>"
    ).encode()


def article_page(feed: int, entry: int) -> bytes:
    """A news article page: navigation, related links, cookie banner and footer around 5-12 paragraphs."""
    rng = random.Random(feed * 1_000 + entry)
    title = _sentence(rng, 5, 11)[:-1]
    nav = "".join(f'<li><a href="/{name.lower().replace(" ", "-")}">{name}</a></li>' for name in BOILERPLATE_LINKS)
    related = "".join(f'<li><a href="/related/{rng.randint(1, 10**6)}">{_sentence(rng, 4, 9)}</a></li>'
                      for _ in range(8))
    paragraphs = "".join(f"<p>{_paragraph(rng, rng.randint(2, 5))}</p>" for _ in range(rng.randint(5, 12)))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Bench outlet {feed}</title>'
        '<meta name="viewport" content="width=device-width"><link rel="stylesheet" href="/site.css">'
        f'<link rel="canonical" href="/articles/{feed}/{entry}.html">'
        '<script>window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}</script>'
        f'</head><body><header class="site-header"><a class="logo" href="/">Bench outlet {feed}</a>'
        f'<nav class="menu"><ul>{nav}</ul></nav></header>'
        '<div class="cookie-banner">We use cookies to improve your experience. <button>Accept</button></div>'
        f'<main><article><h1>{title}</h1><p class="byline">By News desk, 28 November 2026</p>'
        f'<div class="article-body">{paragraphs}</div></article>'
        f'<aside class="related"><h2>Related stories</h2><ul>{related}</ul></aside></main>'
        f'<footer><ul>{nav}</ul><p>Copyright 2026 Bench outlet {feed}. All rights reserved.</p></footer>'
        "</body></html>"
    ).encode()


# --- the server ---------------------------------------------------------------


def loopback_hosts(count: int) -> list[str]:
    if not 1 <= count <= 250:
        raise ValueError("between 1 and 250 loopback addresses")
    return [f"127.0.1.{i}" for i in range(1, count + 1)]


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _serve(ready, feeds: int, hosts: list[str], port: int, latency: float, real_news: bool) -> None:
    from aiohttp import web

    def base_url(number: int) -> str:
        return f"http://{hosts[number % len(hosts)]}:{port}"

    news = RealNews(feeds) if real_news else None
    documents = []
    for number in range(feeds):
        body = feed_document(number, base_url(number), news)
        documents.append((body, gzip.compress(body, 6), f'"{hashlib.sha1(body).hexdigest()[:16]}"'))
    answers: Counter[str] = Counter()

    async def feed(request: web.Request) -> web.StreamResponse:
        number = int(request.match_info["number"])
        if number >= feeds:
            raise web.HTTPNotFound()
        body, packed, etag = documents[number]
        await asyncio.sleep(latency)
        headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        if request.headers.get("If-None-Match") == etag or request.headers.get("If-Modified-Since") == LAST_MODIFIED:
            answers["feed 304"] += 1
            return web.Response(status=304, headers=headers)
        answers["feed 200"] += 1
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = packed
        return web.Response(body=body, headers=headers, content_type="application/rss+xml")

    async def page(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(latency)
        answers["page 200"] += 1
        return web.Response(body=article_page(int(request.match_info["feed"]), int(request.match_info["entry"])),
                            content_type="text/html", charset="utf-8")

    async def stats(request: web.Request) -> web.StreamResponse:
        counts = dict(answers)
        if request.query.get("reset"):
            answers.clear()
        return web.json_response(counts)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/feeds/{number:\\d+}.xml", feed)
        app.router.add_get("/articles/{feed:\\d+}/{entry:\\d+}.html", page)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in hosts:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        ready.send(True)
        await asyncio.Event().wait()

    asyncio.run(main())


class FeedServer:
    """The bench server in a child process: ``with FeedServer(1000, 0.1) as server: server.feed_urls``.

    ``spare`` more feeds are served too, but not in ``feed_urls``: ``spare_urls`` lists them.
    """

    def __init__(self, feeds: int, latency: float, hosts: int = 50, spare: int = 0, real_news: bool = False):
        self.feeds = feeds
        self.spare = spare
        self.real_news = real_news
        self.latency = latency
        self.hosts = loopback_hosts(hosts)
        self.port = _free_port(self.hosts[0])
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> FeedServer:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve, args=(sender, self.feeds + self.spare, self.hosts, self.port, self.latency, self.real_news),
            daemon=True)
        self._process.start()
        if not receiver.poll(120):
            raise RuntimeError("the bench server did not start within 120 s")
        receiver.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.join(10)

    @property
    def feed_urls(self) -> list[str]:
        return [self._url(n) for n in range(self.feeds)]

    @property
    def spare_urls(self) -> list[str]:
        return [self._url(n) for n in range(self.feeds, self.feeds + self.spare)]

    def _url(self, number: int) -> str:
        return f"http://{self.hosts[number % len(self.hosts)]}:{self.port}{feed_path(number)}"

    def answers(self, reset: bool = True) -> Counter[str]:
        """What the server answered since the last reset (``feed 200``, ``feed 304``, ``page 200``)."""
        url = f"http://{self.hosts[0]}:{self.port}/stats" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return Counter(json.load(response))


# --- the contenders -------------------------------------------------------------


@dataclass
class Timing:
    seconds: float
    peak_rss_mb: float | None = None  # the peak of the sum over the process tree
    peak_process_mb: float | None = None  # the largest single process of the tree
    peak_pss_mb: float | None = None  # the peak of the sum of PSS: pages the processes share counted once
    answers: str = ""
    note: str = ""
    # The background `agg group` a cold agg run left its grouping to (seconds from the run's start).
    background: Timing | None = None
    left_to_background: str = ""
    stored: int = 0  # a later run's: the entries stored before it

    @property
    def grouped(self) -> float:
        """Seconds from the run's start until its reports were in their stories: its end, or its background's."""
        return self.background.seconds if self.background else self.seconds


def _children(pid: int) -> list[int]:
    """The child pids of ``pid``: from /proc/PID/task/*/children where the kernel has it, else every /proc/*/stat."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        listings = [(task / "children").read_text() for task in tasks.iterdir()]
        return [int(child) for listing in listings for child in listing.split()]
    except FileNotFoundError:  # no CONFIG_PROC_CHILDREN, or the process is gone
        pass
    except OSError:
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _proc_kb(pid: int, file: str, field: str) -> int:
    """A size in kB from a /proc/PID file: 0 once the process is gone (or a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int) -> int:
    return _proc_kb(pid, "status", "VmRSS:")


def _pss_kb(pid: int) -> int:
    """The proportional set size: each page shared with other processes counts its share."""
    return _proc_kb(pid, "smaps_rollup", "Pss:")


def tree_pids(root: int) -> list[int]:
    """``root`` and each of its descendants."""
    pending, pids = [root], []
    while pending:
        pid = pending.pop()
        pids.append(pid)
        pending.extend(_children(pid))
    return pids


class TreeMemorySampler:
    """Samples a process tree every ``interval`` s in a thread: peaks of the RSS sum and PSS sum, largest process."""

    def __init__(self, root: int, interval: float = 0.05):
        self.root = root
        self.interval = interval
        self.peak_total_kb = 0
        self.peak_process_kb = 0
        self.peak_pss_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            pids = tree_pids(self.root)
            sizes = [_rss_kb(pid) for pid in pids]
            self.peak_total_kb = max(self.peak_total_kb, sum(sizes))
            self.peak_process_kb = max(self.peak_process_kb, max(sizes))
            # Forked workers share their parent's pages, which each RSS counts in full.
            self.peak_pss_kb = max(self.peak_pss_kb, sum(map(_pss_kb, pids)))
            if self._done.wait(self.interval):
                return

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()


def run_measured(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timing:
    """Run a command, returning its wall time and the peak memory of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    # The sampler stops once the process is reaped, so its last samples see the tree as it ended.
    with TreeMemorySampler(process.pid) as memory:
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}: {errors.decode(errors='replace')[-2000:]}")
    # ru_maxrss covers the process and its waited-for children: a floor for a tree the sampler may have missed.
    single = max(memory.peak_process_kb, usage.ru_maxrss)
    return Timing(seconds, max(memory.peak_total_kb, single) / 1024, single / 1024, memory.peak_pss_kb / 1024)


def wait_for_background(db: Path, started: float) -> Timing | None:
    """Wait for the ``agg group`` an agg run left in the background, if any; its end and peak memory.

    It holds the run lock it inherited, so the lock is free exactly when it
    is done; its pid is in the lock file once it has taken the lock over.
    """
    lock_path = db.with_name(db.name + ".lock")
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None  # nothing in the background
        except BlockingIOError:
            pass
        done = threading.Event()
        samplers: list[TreeMemorySampler] = []

        def sample_the_holder() -> None:
            while not done.is_set():
                holder = os.pread(fd, 200, 0).decode(errors="replace")
                if holder.startswith("pid ") and "agg group" in holder:
                    with TreeMemorySampler(int(holder.split()[1].rstrip(","))) as memory:
                        samplers.append(memory)
                        done.wait()
                    return
                done.wait(0.01)

        watcher = threading.Thread(target=sample_the_holder)
        watcher.start()
        fcntl.flock(fd, fcntl.LOCK_EX)
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
    finally:
        os.close(fd)
    memory = samplers[0] if samplers else None
    return Timing(seconds, *((memory.peak_total_kb / 1024, memory.peak_process_kb / 1024, memory.peak_pss_kb / 1024)
                             if memory else (None, None, None)))


def write_agg_config(path: Path, urls: list[str], concurrency: int, extract: bool) -> None:
    lines = ["defaults:", f"  concurrency: {concurrency}", f"  extract: {str(extract).lower()}", "feeds:"]
    lines += [f"  - url: {url}" for url in urls]
    path.write_text("\n".join(lines) + "\n")


def agg_command(config: Path, db: Path, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "aggregator", "--config", str(config), "--db", str(db), "-q",
            "fetch", "--concurrency", str(concurrency)]


def time_agg(server: FeedServer, work: Path, concurrency: int, repeat: int = 1,
             cold_repeat: int = 1, root: Path = PROJECT, history: int = 0,
             keep_snapshot: bool = False) -> tuple[Timing, Timing, Timing | None, Path | None]:
    """Cold runs (``cold_repeat``, each on a new database), then all-304 runs (``repeat``) on the last one.

    Each is the median of its runs, with the largest peak memory seen. Last,
    with the server's spare feeds added to the config, a later run: the
    spare feeds' entries are new, the rest answer 304, after ``history``
    older copies of the stored entries were added (:func:`add_history`).
    ``root`` is the checkout whose agg runs. With ``keep_snapshot``, also
    returns a copy of the database as the later run found it
    (:func:`alternate_later_runs`).
    """
    work.mkdir(exist_ok=True)
    config, db = work / "feeds.yaml", work / "agg.db"
    write_agg_config(config, server.feed_urls, concurrency, extract=False)
    colds = []
    for _ in range(cold_repeat):
        for leftover in work.glob("agg.db*"):
            leftover.unlink()
        server.answers()
        colds.append(_time_agg_run(server, config, db, concurrency, root))
    warm = [_time_agg_run(server, config, db, concurrency, root) for _ in range(repeat)]
    later = snapshot = None
    if server.spare:
        if history:
            add_history(db, history)
        connection = sqlite3.connect(db)
        try:
            stored = connection.execute("SELECT count(*) FROM entries").fetchone()[0]
            # The whole database in its file, as the runs of a year leave it (each checkpoints its writes), not
            # a WAL of the history's gigabyte for the later run to read through and checkpoint; and to copy.
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            assert not busy, "the database is still in use: its WAL could not be checkpointed"
        finally:
            connection.close()
        if keep_snapshot:
            snapshot = work / "before-later.db"
            shutil.copy(db, snapshot)
        write_agg_config(config, server.feed_urls + server.spare_urls, concurrency, extract=False)
        os.sync()  # the bench's own writes (the history, the copy) on disk before the timed run, not during it
        later = _time_agg_run(server, config, db, concurrency, root)
        later.stored = stored
    return _median(colds, "cold"), _median(warm, "all-304"), later, snapshot


def alternate_later_runs(server: FeedServer, work: Path, concurrency: int, snapshot: Path,
                         roots: list[tuple[str, Path]], repeat: int) -> dict[str, list[Timing]]:
    """The later run of each checkout ``repeat`` times, taking turns, each on a fresh copy of ``snapshot``.

    Each checkout's own later run comes minutes after the other's, on a
    database of its own, and on this noisy machine runs that far apart
    differ by more than most changes do; taking turns seconds apart from one
    database compares the code alone.
    """
    work.mkdir(exist_ok=True)
    config, db = work / "feeds.yaml", work / "agg.db"
    write_agg_config(config, server.feed_urls + server.spare_urls, concurrency, extract=False)
    runs: dict[str, list[Timing]] = {label: [] for label, _ in roots}
    for _ in range(repeat):
        for label, root in roots:
            for leftover in work.glob("agg.db*"):
                leftover.unlink()
            shutil.copy(snapshot, db)
            os.sync()
            server.answers()
            runs[label].append(_time_agg_run(server, config, db, concurrency, root))
    return runs


# A copy of the history (add_history) is dated this much before the next: beyond twice the 72 h window and the
# two days a first import spans, so no copy reaches into another's window or the newest one's.
HISTORY_SHIFT_DAYS = 10
# Added to the ids of the n-th copy's entries and stories (n x this): above any id a first import gives.
HISTORY_ID_STRIDE = 10_000_000
# The columns that hold times, in each table add_history copies.
HISTORY_TIMES = {
    "entries": ("published", "updated", "first_seen", "changed_at", "extracted_at"),
    "stories": ("first_seen", "last_seen"),
    "story_members": ("joined_at",),
}


def add_history(db: Path, copies: int) -> None:
    """Make the database look older: ``copies`` copies of its grouped entries, with their stories, memberships
    and stored features, each dated ``HISTORY_SHIFT_DAYS`` days before the last, and indexed for search as
    ``agg fetch`` would have left them. A later run then runs among (copies + 1) x the stored entries, with as
    many in its window as before: what a year's database holds, the old stories outside the window."""
    connection = sqlite3.connect(db)
    try:
        columns = {table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
                   for table in ("entries", "stories", "story_members", "entry_features")}
        first_copy = connection.execute("SELECT max(id) FROM entries").fetchone()[0] + 1
        assert first_copy < HISTORY_ID_STRIDE, "the copies' ids would meet the originals'"
        with connection:
            for copy in range(1, copies + 1):
                offset, shift = copy * HISTORY_ID_STRIDE, f"'-{copy * HISTORY_SHIFT_DAYS} days'"
                moved = {"id": f"id + {offset}", "entry_id": f"entry_id + {offset}",
                         "story_id": f"story_id + {offset}", "representative_id": f"representative_id + {offset}",
                         "original_entry_id": f"original_entry_id + {offset}",
                         "merged_into": f"merged_into + {offset}",
                         "guid": f"guid || '#history-{copy}'", "link": f"link || '#history-{copy}'"}
                for table, names in columns.items():
                    for name in HISTORY_TIMES.get(table, ()):
                        moved[name] = f"strftime('%Y-%m-%dT%H:%M:%S+00:00', {name}, {shift})"
                    where = "WHERE story_id IS NOT NULL AND id < ?" if table == "entries" else \
                        "WHERE id < ?" if table == "stories" else \
                        "WHERE entry_id IN (SELECT id FROM entries WHERE story_id IS NOT NULL AND id < ?)"
                    connection.execute(
                        f"INSERT INTO {table} ({', '.join(names)}) "
                        f"SELECT {', '.join(moved.get(name, name) for name in names)} FROM {table} {where}",
                        [HISTORY_ID_STRIDE])
            # Whatever the runs left unindexed too, as agg's next refresh would.
            connection.execute("INSERT INTO entries_fts (rowid, title, text) SELECT id, title, text FROM entries "
                               "WHERE id > (SELECT indexed_through FROM search_index_state)")
            connection.execute("UPDATE search_index_state SET indexed_through = (SELECT max(id) FROM entries)")
    finally:
        connection.close()


def _time_agg_run(server: FeedServer, config: Path, db: Path, concurrency: int, root: Path) -> Timing:
    """One ``agg fetch``, and the background grouping it left, if any (awaited: the next run would find it)."""
    started = time.perf_counter()
    # Run from the checkout: ``python -m`` puts the working directory first on the path.
    timing = run_measured(agg_command(config, db, concurrency), cwd=root)
    timing.answers = _describe_answers(server.answers())
    with sqlite3.connect(db) as connection:
        waiting = connection.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0]
    timing.background = wait_for_background(db, started)
    if timing.background:
        timing.left_to_background = f"{waiting:,} reports"
    return timing


def _median(runs: list[Timing], name: str) -> Timing:
    """The run of median time, with the largest peaks of them all; its note lists every time."""
    if len(runs) == 1:
        return runs[0]
    times = " ".join(f"{run.seconds:.2f}" for run in runs)
    median = replace(_middle(runs), note=f"{name}: median of {len(runs)}: {times}")
    backgrounds = [run.background for run in runs if run.background]
    if backgrounds:
        median.background = _middle(backgrounds)
    return median


def _middle(runs: list[Timing]) -> Timing:
    """The run of median time, with the median time and the largest peaks of all ``runs``."""
    return replace(sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2],
                   seconds=statistics.median(run.seconds for run in runs),
                   peak_rss_mb=max((run.peak_rss_mb or 0) for run in runs),
                   peak_process_mb=max((run.peak_process_mb or 0) for run in runs),
                   peak_pss_mb=max((run.peak_pss_mb or 0) for run in runs))


def time_aiohttp_floor(server: FeedServer, work: Path, concurrency: int) -> tuple[Timing, Timing]:
    """``bench/aiohttp_floor.py`` cold, then with the ETags it got: the requests alone, as fast as Python makes them."""
    urls, etags = work / "floor-urls.json", work / "floor-etags.json"
    urls.write_text(json.dumps(server.feed_urls))
    return _first_and_second_run(
        server, [sys.executable, str(PROJECT / "bench" / "aiohttp_floor.py"), str(urls), str(etags), str(concurrency)])


def time_sequential_feedparser(server: FeedServer, sample: int) -> tuple[Timing, Timing]:
    import feedparser

    urls = server.feed_urls[:sample]
    scale = server.feeds / len(urls)
    server.answers()
    etags = {}
    started = time.perf_counter()
    for url in urls:
        etags[url] = feedparser.parse(url).get("etag")
    cold = Timing((time.perf_counter() - started) * scale, note=f"first {len(urls)} timed, x{scale:g}")
    cold.answers = _describe_answers(server.answers())
    started = time.perf_counter()
    for url in urls:
        feedparser.parse(url, etag=etags[url])
    warm = Timing((time.perf_counter() - started) * scale, note=cold.note)
    warm.answers = _describe_answers(server.answers())
    return cold, warm


def time_newsboat(server: FeedServer, work: Path, threads: int) -> tuple[Timing, Timing] | None:
    newsboat = shutil.which("newsboat")
    if newsboat is None:
        return None
    home = work / "newsboat-home"
    home.mkdir()
    urls, config, cache = home / "urls", home / "config", home / "cache.db"
    urls.write_text("\n".join(server.feed_urls) + "\n")
    config.write_text(f"reload-threads {threads}\ndownload-timeout 60\n")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local")}
    return _first_and_second_run(
        server, [newsboat, "-x", "reload", "-u", str(urls), "-c", str(cache), "-C", str(config), "-q"], env)


def _first_and_second_run(server: FeedServer, command: list[str],
                          env: dict[str, str] | None = None) -> tuple[Timing, Timing]:
    """``command`` run twice, each with what the server answered it: cold, then with whatever it cached."""
    server.answers()
    runs = []
    for _ in range(2):
        timing = run_measured(command, env=env)
        timing.answers = _describe_answers(server.answers())
        runs.append(timing)
    return runs[0], runs[1]


def _describe_answers(answers: Counter[str]) -> str:
    return ", ".join(f"{count} x {kind.split()[1]}" for kind, count in sorted(answers.items()) if count)


# --- report ---------------------------------------------------------------------


def _row(name: str, cold: Timing, warm: Timing, limit: float) -> str:
    rss = "-"
    if cold.peak_rss_mb is not None:
        rss = (f"{max(cold.peak_rss_mb, warm.peak_rss_mb):.0f} / {max(cold.peak_pss_mb, warm.peak_pss_mb):.0f} / "
               f"{max(cold.peak_process_mb, warm.peak_process_mb):.0f}")
    notes = "; ".join(dict.fromkeys(note for note in (cold.note, warm.note) if note))
    note = f" ({notes})" if notes else ""
    return (f"| {name}{note} | {cold.seconds:.2f} | {cold.seconds / limit:.2f}x | {warm.seconds:.2f} | "
            f"{warm.seconds / limit:.2f}x | {rss} | {cold.answers} / {warm.answers} |")


@dataclass
class AggRuns:
    """One checkout's agg runs: cold, all-304 and a later run with new entries."""

    label: str
    cold: Timing
    warm: Timing
    later: Timing | None
    snapshot: Path | None = None  # the database as its later run found it
    alternating: list[Timing] = field(default_factory=list)  # later runs taking turns (alternate_later_runs)

    def alternating_grouped(self) -> list[float]:
        return sorted(run.grouped for run in self.alternating)

    def cold_grouped(self) -> float:
        """Seconds from the cold fetch's start until every report was in its story."""
        return self.cold.grouped

    def later_grouped(self) -> float | None:
        return None if self.later is None else self.later.grouped

    def describe(self) -> str:
        lines = []
        background = self.cold.background
        if background:
            lines.append(
                f"{self.label}: the cold run left {self.cold.left_to_background} to a background 'agg group', "
                f"done {background.seconds:.2f} s after the fetch started; peak MB of the background process "
                f"(RSS / PSS / largest RSS): {background.peak_rss_mb or 0:.0f} / {background.peak_pss_mb or 0:.0f} / "
                f"{background.peak_process_mb or 0:.0f}")
        else:
            lines.append(f"{self.label}: the cold run grouped every report itself")
        if self.warm.background:
            lines.append(f"{self.label}: the all-304 run left work in the background too: done after "
                         f"{self.warm.background.seconds:.2f} s")
        later = self.later
        if later:
            left = later.background
            lines.append(
                f"{self.label}: a later run, {LATER_FEEDS} feeds added ({LATER_ENTRIES} new entries among "
                f"{later.stored:,} stored), the others 304: {later.seconds:.2f} s, peak MB {later.peak_rss_mb:.0f} / {later.peak_pss_mb:.0f} / "
                f"{later.peak_process_mb:.0f}" + (
                    f"; it left {later.left_to_background} to a background 'agg group', done after "
                    f"{left.seconds:.2f} s, peak MB {left.peak_rss_mb or 0:.0f} / {left.peak_pss_mb or 0:.0f} / "
                    f"{left.peak_process_mb or 0:.0f}" if left else "; grouped in the run"))
        if self.alternating:
            lines.append(f"{self.label}: later runs taking turns from one database (--later-repeat): "
                         + ", ".join(f"{seconds:.2f}" for seconds in self.alternating_grouped()) + " s")
        return "\n".join(lines)

    def checks(self, limit: float, newsboat: tuple[Timing, Timing] | None) -> list[tuple[str, bool]]:
        """The targets (issues 8 and 17), each with whether this checkout met it."""
        runs = [self.cold, self.warm, *([self.later] if self.later else []), *self.alternating]
        measured = runs + [run.background for run in runs if run.background and run.background.peak_rss_mb is not None]
        peak = max(run.peak_rss_mb for run in measured)
        peak_pss = max(run.peak_pss_mb for run in measured)
        grouped = self.cold_grouped()
        checks = [
            (f"cold fetch {self.cold.seconds:.2f} s <= 2x limit", self.cold.seconds <= 2 * limit),
            (f"all-304 {self.warm.seconds:.2f} s <= 1.3x limit", self.warm.seconds <= 1.3 * limit),
            (f"cold: every report in its story {grouped:.1f} s <= 30 s after the fetch started", grouped <= 30),
            (f"peak RSS of the process tree {peak:.0f} MB < 500 MB", peak < 500),
            (f"peak PSS of the process tree {peak_pss:.0f} MB < 500 MB", peak_pss < 500),
        ]
        alternating = self.alternating_grouped()
        if alternating:
            median = statistics.median(alternating)
            checks.append((f"later run, median of {len(alternating)} taking turns from one database: its "
                           f"{LATER_ENTRIES} new reports in their stories {median:.1f} s <= 5 s", median <= 5))
        later = self.later_grouped()
        if later is not None:
            checks.append((f"later run among {self.later.stored:,}: its {LATER_ENTRIES} new reports in their stories "
                           f"{later:.1f} s <= 5 s after the fetch started", later <= 5))
        if newsboat:
            speedup = newsboat[0].seconds / self.cold.seconds
            checks.append((f"{speedup:.1f}x faster than newsboat cold (>= 5x)", speedup >= 5))
        return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=1000, help="feeds served (default 1000)")
    parser.add_argument("--latency", type=float, default=0.1, help="added latency per request, seconds (0.1)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight for agg and newsboat (50)")
    parser.add_argument("--hosts", type=int, default=50, help="loopback addresses to spread the feeds over (50)")
    parser.add_argument("--sequential", type=int, default=100, help="feeds timed in the sequential loop (100)")
    parser.add_argument("--no-newsboat", action="store_true", help="skip newsboat even when installed")
    parser.add_argument("--quick", action="store_true", help="200 feeds, 20 sequential: for iterating")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="all-304 runs of agg after the cold one; the median is shown (1)")
    parser.add_argument("--cold-repeat", type=int, default=1, metavar="C",
                        help="cold runs of agg, each on a new database; the median is shown (1)")
    parser.add_argument("--agg-only", action="store_true", help="time agg alone: no feedparser, no newsboat")
    parser.add_argument("--content", choices=("real", "synthetic"), default=None,
                        help="the feeds' text: real headlines and sentences from $AGG_SHARED_DATA (the default "
                             "when it is there), or synthetic pseudo-words (lighter to group)")
    parser.add_argument("--history", type=int, default=0, metavar="K",
                        help="before the later run, add K older copies of the stored entries (dated 10, 20, ... days "
                             "earlier, outside its window): the later run among (K + 1) x 50,000 stored (3: 200,000)")
    parser.add_argument("--later-repeat", type=int, default=0, metavar="N",
                        help="then N more later runs of each checkout, taking turns, each on a copy of this tree's "
                             "database as its later run found it (with --base: before and after seconds apart)")
    parser.add_argument("--base", type=Path, metavar="CHECKOUT",
                        help="another checkout of agg (a git worktree of the base commit), timed on the same "
                             "server just before this tree")
    args = parser.parse_args()
    if args.quick:
        args.feeds, args.sequential = 200, 20
    real_news = RealNews.available() if args.content is None else args.content == "real"
    if real_news and not RealNews.available():
        parser.error("--content real needs $AGG_SHARED_DATA (the headlines file and extraction-dev)")
    limit = args.feeds * args.latency / args.concurrency
    roots = ([("base", args.base.resolve())] if args.base else []) + [("this tree", PROJECT)]
    for _, root in roots:
        compileall.compile_dir(root / "aggregator", quiet=1)

    with FeedServer(args.feeds, args.latency, args.hosts, spare=LATER_FEEDS, real_news=real_news) as server, \
            tempfile.TemporaryDirectory(prefix="agg-bench-") as tmp:
        work = Path(tmp)
        contenders = [AggRuns(label, *time_agg(server, work / label.replace(" ", "-"), args.concurrency,
                                               max(1, args.repeat), max(1, args.cold_repeat), root,
                                               max(0, args.history), args.later_repeat > 0 and root == PROJECT))
                      for label, root in roots]
        if contenders[-1].snapshot is not None:
            alternating = alternate_later_runs(server, work / "alternating", args.concurrency,
                                               contenders[-1].snapshot, roots, args.later_repeat)
            for agg in contenders:
                agg.alternating = alternating[agg.label]
        floor = time_aiohttp_floor(server, work, args.concurrency)
        sequential = None if args.agg_only else time_sequential_feedparser(server, min(args.sequential, args.feeds))
        newsboat = None if args.no_newsboat or args.agg_only else time_newsboat(server, work, args.concurrency)

    content = RealNews(1).origin + ", one entry in five a syndicated copy" if real_news else "synthetic pseudo-words"
    print(f"{args.feeds} feeds x {ENTRIES_PER_FEED} entries ({content}), {args.latency * 1000:.0f} ms latency, "
          f"{args.concurrency} in flight, {len(server.hosts)} loopback hosts, {os.cpu_count()} cores; "
          f"physical limit {limit:.2f} s\n")
    print("| approach | cold s | cold / limit | all-304 s | all-304 / limit | peak MB (process tree: RSS sum / "
          "PSS sum / largest RSS) | server answers (cold / 2nd) |")
    print("|---|---|---|---|---|---|---|")
    for agg in contenders:
        name = f"agg fetch --concurrency {args.concurrency}" + (f" ({agg.label})" if args.base else "")
        print(_row(name, agg.cold, agg.warm, limit))
    print(_row(f"the floor: aiohttp, {args.concurrency} in flight, requests only (bench/aiohttp_floor.py)",
               *floor, limit))
    if sequential:
        print(_row("sequential feedparser.parse(url)", *sequential, limit))
    if newsboat:
        print(_row(f"newsboat -x reload, reload-threads {args.concurrency}", *newsboat, limit))
    else:
        print("| newsboat | not installed (apt-get install newsboat) or skipped | | | | | |")
    print()
    for agg in contenders:
        print(agg.describe())
    print(f"\nthe requests alone (the floor): cold {floor[0].seconds / limit:.2f}x, all-304 {floor[1].seconds / limit:.2f}x "
          "the limit")
    for agg in contenders:
        verdict = "; ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in agg.checks(limit, newsboat))
        print(f"summary, {agg.label}: {verdict}")


if __name__ == "__main__":
    main()
