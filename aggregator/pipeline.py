"""One run of agg: fetch the feeds, parse them, extract their new articles, group stories, store.

This is the library API the command line is a thin shell over::

    from aggregator.config import load_config
    from aggregator.store import Store
    from aggregator.pipeline import run

    summary = run(load_config("feeds.yaml"), Store.open("data/agg.db"))

Every feed is handled on its own: one broken feed, page or entry never stops
the others, and each feed's results are stored in one transaction, so a run
killed half-way leaves a consistent database that the next run completes.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from multiprocessing.connection import Connection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aggregator import dedup, schedule
from aggregator.config import Config, FeedConfig
from aggregator.extract import ExtractorPool, available_cores, choose_text
from aggregator.fetch import PAGE_ACCEPT, Fetcher
from aggregator.models import FetchResult, ParsedFeed
from aggregator.parse import html_to_text, parse_feed
from aggregator.store import (
    FetchRecord,
    SavedFetch,
    Store,
    StoreError,
    describe_sqlite_error,
    from_db_time,
    utc_now,
)
from aggregator.workers import WorkerDied, WorkerProcesses

log = logging.getLogger(__name__)

# What an article page's failed fetch is recorded as.
_PAGE_STATUS_BY_ERROR = {"timeout": "timeout", "too-large": "too-large"}
_HTML_TYPES = ("text/html", "application/xhtml+xml", "")


@dataclass
class FeedOutcome:
    """How one feed's fetch went: ``fetched``, ``unchanged`` or ``failed``."""

    url: str
    status: str
    new_entries: int = 0
    updated_entries: int = 0
    error: str | None = None
    moved_to: str | None = None


@dataclass
class RunSummary:
    feeds: list[FeedOutcome] = field(default_factory=list)
    pages_extracted: int = 0
    pages_failed: int = 0
    grouping: dedup.GroupingSummary = field(default_factory=dedup.GroupingSummary)
    seconds: float = 0.0
    # Set when the run was asked to stop: the feeds not listed were left for the next run.
    stopped: bool = False
    # Seconds each stage (fetch, parse, extract, group, store, index) was busy: see StageClock.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Reports left without a story for finish_grouping, with the search index (run's defer_grouping_over).
    grouping_deferred: int = 0

    def count(self, status: str) -> int:
        return sum(1 for feed in self.feeds if feed.status == status)

    @property
    def failures(self) -> list[FeedOutcome]:
        return [feed for feed in self.feeds if feed.status == "failed"]

    @property
    def new_entries(self) -> int:
        return sum(feed.new_entries for feed in self.feeds)


ProgressCallback = Callable[[FeedOutcome, int, int], None]
# ``(pages done, pages queued so far)``: called as article pages are queued and as each is done.
PageProgressCallback = Callable[[int, int], None]


class ParseWorkers:
    """Feed parsing in worker processes, started on the first feed that needs parsing.

    feedparser takes 10-40 ms of CPU for a 50-entry feed. In the event loop's
    thread that holds up every request in flight and leaves the other cores
    idle: a cold run of 1,000 feeds spent most of its time there. Workers
    parse on every core while the loop keeps fetching. ``enabled=False``
    parses in the calling thread (small runs, where starting workers costs more).
    """

    def __init__(self, enabled: bool, workers: int | None = None):
        self.enabled = enabled
        self.workers = workers or available_cores()
        self._processes: WorkerProcesses | None = None

    async def parse(self, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
        if not self.enabled:
            return parse_feed(body, url, headers)
        if self._processes is None:
            self._processes = WorkerProcesses(parse_feed, self.workers)
        try:
            return await self._processes.call(body, url, headers)
        except WorkerDied as exc:  # killed, out of memory, or never started: parse here rather than lose the feed
            log.warning("a feed-parsing worker failed (%s); parsing %s in the main process", exc, url)
            return parse_feed(body, url, headers)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (none until the first feed is parsed)."""
        return self._processes.pids if self._processes is not None else []

    async def __aenter__(self) -> ParseWorkers:
        return self

    async def close(self) -> None:
        """Stop the workers (a later feed starts new ones)."""
        if self._processes is not None:
            processes, self._processes = self._processes, None
            await processes.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class StageClock:
    """How long each stage of a run was busy, for ``RunSummary.stage_seconds``.

    A stage is busy while at least one of its operations is in progress, so
    fifty requests in flight together count once, and a stage waiting on a
    worker pool counts while the pool works for it. Stages that overlap each
    count in full: a run whose total is close to its busiest stage overlaps well.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._active: Counter[str] = Counter()
        self._since: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Busy time measured elsewhere (in a worker process)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self._active[stage]:
            self._since[stage] = time.perf_counter()
        self._active[stage] += 1
        try:
            yield
        finally:
            self._active[stage] -= 1
            if not self._active[stage]:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - self._since[stage]


class GroupingWorker:
    """Story grouping in a worker process that places entries while the run is still extracting pages.

    Grouping is pure Python and needs each entry's final text, so run after
    the last page it would add its whole time to the end of a long run; in a
    thread it would hold up the event loop. The worker reads the database
    file on its own connection and places what is ready every
    ``GROUPING_POLL_SECONDS`` (:class:`dedup.GroupingSession`), at a lower
    priority than the run (``GROUPING_NICENESS``); :meth:`finish` has it
    place the rest. It starts on the first extracted page of a run with a
    database file and enough feeds, or at the end when the grouping left is
    worth ``GROUPING_MIN_BATCH`` fresh reports (:func:`grouping_cost`: the
    stored reports it loads count too), so that the grouper's memory goes
    when it ends. It does not start while feeds are fetched without pages:
    parsing them needs the cores more. Otherwise, or if it dies, the run
    groups in its own process at the end, as small runs always do.
    """

    def __init__(self, store: Store, settings: dedup.DedupSettings, now: datetime, enabled: bool,
                 session: dedup.GroupingSession | None = None):
        self.store = store
        self.settings = settings
        self.now = now
        # A session kept from run to run (agg daemon) holds the window's stories already: it groups here.
        self.session = session
        self.enabled = enabled and store.path is not None and session is None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the worker, if this run uses one and it is not running yet."""
        if not self.enabled or self._stopped or self._process is not None:
            return
        context = multiprocessing.get_context("forkserver")
        self._connection, theirs = context.Pipe()
        self._process = context.Process(target=_group_while_running, name="agg-grouping", daemon=True,
                                        args=(str(self.store.path.resolve()), self.settings, self.now, theirs))
        self._process.start()
        theirs.close()

    async def finish(self, clock: StageClock, cost: float) -> dedup.GroupingSummary:
        """Every ready entry placed: by the worker if it runs, else here. Adds the worker's busy time to ``clock``.

        ``cost`` is the grouping left (:func:`grouping_cost`).
        """
        if self._process is None and cost >= GROUPING_MIN_BATCH:
            self.start()  # much to load or place: the grouper's memory goes with the worker
        if self._process is not None and self._connection is not None:
            try:
                self._connection.send("finish")
            except OSError:
                reply = None
            else:
                reply = await asyncio.to_thread(self._last_reply, True)
            if self._stopped:  # the run was stopped meanwhile: the rest is the next run's
                return dedup.GroupingSummary()
            self._shut_down()
            if reply is not None and reply[0] == "done":
                _, summary, busy_seconds = reply
                clock.add("group", busy_seconds)
                if summary is not None:
                    return summary
            log.warning("the story-grouping worker stopped before the end of the run; grouping here instead")
        with clock("group"):
            if self.session is not None:
                self.session.now = self.now
                return place_all(self.session)
            return dedup.group_new_entries(self.store.db, self.settings, now=self.now)

    def defer(self, clock: StageClock) -> dedup.GroupingSummary:
        """Stop the worker where it is, for :func:`finish_grouping` to go on; what it has written so far.

        What it wrote stays, in whole stories; the rest of the batch it was
        placing is left waiting, its write in progress rolled back.
        """
        reply = self._last_reply(wait=False) if self._connection is not None else None
        self.stop()
        if reply is None:
            return dedup.GroupingSummary()
        _, done, busy_seconds = reply
        clock.add("group", busy_seconds)
        return done or dedup.GroupingSummary()

    def _last_reply(self, wait: bool) -> tuple | None:
        """The worker's newest message: ``("progress" | "done", summary so far, busy seconds)``.

        With ``wait``, read until its "done"; without, take what has come. If
        the worker is gone, the newest message read, if any.
        """
        connection = self._connection  # stop() may clear it meanwhile, from the run's thread
        assert connection is not None
        reply = None
        try:
            while wait or connection.poll():
                reply = connection.recv()
                if reply[0] == "done":
                    break
        except (EOFError, OSError):
            if wait:
                return None
        return reply

    def stop(self) -> None:
        """Stop the worker now, for a run that was stopped: a write in progress is rolled back, never half done."""
        self._stopped = True
        self._shut_down()

    def _shut_down(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None

    async def __aenter__(self) -> GroupingWorker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._shut_down()


# How often the grouping worker looks for entries ready to place, how many it waits for
# before placing any before the end of the run, and how many it places at a time
# (see GroupingSession.place_ready).
GROUPING_POLL_SECONDS = 0.5
GROUPING_MIN_BATCH = 1000
GROUPING_MAX_BATCH = 5000
# Grouping while the run extracts yields the cores to fetching, parsing and extraction,
# which the end of the run waits for first.
GROUPING_NICENESS = 10
# Grouping work, in fresh reports (about 1 ms each), above which `agg fetch` leaves it to a
# background `agg group`: more than a run of a thousand feeds takes to fetch.
BACKGROUND_GROUPING_MIN = 2000
# What loading one stored report costs, as a share of placing a fresh one: its features are
# rebuilt from its text (bench/dedup_scale.py --steady: about 0.2 ms against 1 ms). Reports
# grouped since migration 7 load from their stored features instead, about half that
# (bench/README.md, speed round 7); kept at the cost of the older ones, which still read texts.
STORED_REPORT_COST = 0.2


def grouping_cost(waiting: int, stored: int) -> float:
    """The work of placing ``waiting`` entries among ``stored`` reports, in fresh reports placed."""
    return waiting + STORED_REPORT_COST * stored


def _group_while_running(db_path: str, settings: dedup.DedupSettings, now: datetime, connection: Connection) -> None:
    """The grouping worker: place what is ready until told to finish, then the rest.

    After each chunk it writes it sends ``("progress", summary so far, busy
    seconds)``, and at the end ``("done", ...)``; the summary is None if it failed.
    """
    try:
        os.nice(GROUPING_NICENESS)
    except OSError:
        pass
    parent = multiprocessing.parent_process()
    store = Store.open(db_path)
    busy = 0.0
    started = time.perf_counter()

    def tell_progress(so_far: dedup.GroupingSummary) -> None:
        connection.send(("progress", so_far, busy + time.perf_counter() - started))

    session = dedup.GroupingSession(store.db, settings, now, on_written=tell_progress,
                                    keep_writing=lambda: parent is None or parent.is_alive())
    summary: dedup.GroupingSummary | None = None
    finishing = more_waiting = False
    try:
        while True:
            if not finishing and connection.poll(0 if more_waiting else GROUPING_POLL_SECONDS):
                connection.recv()
                finishing = True
            started = time.perf_counter()
            placed = session.place_ready(at_least=1 if finishing else GROUPING_MIN_BATCH,
                                         at_most=GROUPING_MAX_BATCH).placed
            if placed:
                busy += time.perf_counter() - started
            more_waiting = placed == GROUPING_MAX_BATCH
            if (finishing and not more_waiting) or not session.keep_writing():
                break
        summary = session.summary
    except (EOFError, OSError):  # the run is gone: nobody to answer
        return
    except Exception:
        log.exception("story grouping failed in the worker")
    finally:
        store.close()
    try:
        connection.send(("done", summary, busy))
    except OSError:
        pass


# From this many feeds in a run, feeds are parsed in worker processes (ParseWorkers):
# below it, starting the workers costs more than parsing in the event loop.
PARSE_WORKERS_MIN_FEEDS = 20

# Fetches that stored no entries are written this many to a commit (_Run.save_records).
RECORDS_PER_COMMIT = 100

# How often a run looks at its ``stop`` event.
STOP_POLL_SECONDS = 0.1


def run(
    config: Config,
    store: Store,
    *,
    due_only: bool = False,
    concurrency: int | None = None,
    re_extract: bool = False,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    defer_grouping_over: int | None = None,
    page_progress: PageProgressCallback | None = None,
    grouping_session: dedup.GroupingSession | None = None,
) -> RunSummary:
    """Fetch every enabled feed (only those due, with ``due_only``) and process what is new.

    ``progress`` is told of each feed done, ``page_progress`` of the article
    pages (done, queued so far) as they are queued and extracted.

    Setting ``stop`` (from another thread, e.g. a signal handler) ends the
    run within a fraction of a second: requests and extractions in progress
    are abandoned, each feed's write either completes or never starts, and
    whatever was left undone stays due for the next run.

    With ``defer_grouping_over``, a run that ends with more grouping work
    than that (:func:`grouping_cost`, in fresh reports placed) stops grouping
    there, and leaves the waiting reports and the search index to
    :func:`finish_grouping` (``summary.grouping_deferred`` says how many):
    ``agg fetch`` runs it in the background, so that a first run over a
    thousand feeds returns once they are stored, and so does a later run whose
    few new reports must be placed among tens of thousands of stored ones.

    With ``grouping_session`` (a :class:`dedup.GroupingSession` on ``store``'s
    database, kept from run to run by ``agg daemon``), the run places its
    reports with it, in this process: the stories it loaded for the last run
    are not loaded again.
    """
    return asyncio.run(
        run_async(config, store, due_only=due_only, concurrency=concurrency, re_extract=re_extract,
                  progress=progress, now=now, stop=stop, defer_grouping_over=defer_grouping_over,
                  page_progress=page_progress, grouping_session=grouping_session)
    )


def select_feeds(config: Config, rows: dict[str, dict], due_only: bool, now: datetime) -> list[FeedConfig]:
    """The feeds this run fetches: enabled, not disabled by the server, and due when asked."""
    chosen = []
    for feed in config.feeds:
        row = rows[feed.url]
        if not feed.enabled or row["state"] == "disabled":
            continue
        if due_only and not schedule.is_due(from_db_time(row["next_check_at"]), now):
            continue
        chosen.append(feed)
    return chosen


async def run_async(
    config: Config,
    store: Store,
    *,
    due_only: bool = False,
    concurrency: int | None = None,
    re_extract: bool = False,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    defer_grouping_over: int | None = None,
    page_progress: PageProgressCallback | None = None,
    grouping_session: dedup.GroupingSession | None = None,
) -> RunSummary:
    loop = asyncio.get_running_loop()
    started = loop.time()
    now = now or utc_now()
    clock = StageClock()
    with clock("store"):
        rows = store.sync_feeds(config.feeds, now)
    feeds = select_feeds(config, rows, due_only, now)
    summary = RunSummary(stage_seconds=clock.seconds)
    settings = config.settings
    large = len(feeds) >= PARSE_WORKERS_MIN_FEEDS
    async with Fetcher(settings, concurrency) as fetcher, ExtractorPool(time_limit=settings.extract_timeout) as pool, \
            ParseWorkers(enabled=large) as parser, GroupingWorker(store, settings.dedup, now, enabled=large,
                                                         session=grouping_session) as grouping:
        runner = _Run(config, store, fetcher, pool, summary, re_extract, now, stop, clock, parser, grouping,
                      page_progress)
        done = 0

        async def one(feed: FeedConfig) -> None:
            nonlocal done
            outcome = await runner.feed(feed, rows[feed.url])
            summary.feeds.append(outcome)
            log.debug("%s: %s, %d new, %d updated entries%s", outcome.url, outcome.status, outcome.new_entries,
                      outcome.updated_entries, f" ({outcome.error})" if outcome.error else "")
            done += 1
            if progress:
                progress(outcome, done, len(feeds))

        # Started as many at a time as may be in flight, the loop let go in between: else the
        # first requests' connections wait on every other feed's first step (queueing for a
        # slot), 35 ms for 1,000 feeds, and the first wave of answers with them.
        feed_tasks: list[asyncio.Task] = []
        try:
            for first in range(0, len(feeds), fetcher.concurrency):
                feed_tasks += [asyncio.create_task(one(feed)) for feed in feeds[first:first + fetcher.concurrency]]
                await asyncio.sleep(0)
        except BaseException:  # cancelled between two waves: the feeds started must not outlive the run
            for task in feed_tasks:
                task.cancel()
            await asyncio.gather(*feed_tasks, return_exceptions=True)
            raise
        watcher = asyncio.create_task(runner.cancel_on_stop(feed_tasks)) if stop is not None else None
        with store.checkpoints_in_background() if large else nullcontext():
            await _settle(feed_tasks)
        runner.save_records()
        # Workers no longer needed go before the wait for grouping, whose memory grows to the end.
        await parser.close()
        if re_extract and not feeds:
            await runner.extract_all()
        await _settle(runner.page_tasks)
        await asyncio.to_thread(pool.close)
        if not summary.stopped:  # grouping is incremental: a stopped run leaves the rest to the next one
            cost = grouping_cost(*store.grouping_backlog(timedelta(hours=settings.dedup.window_hours)))
            if defer_grouping_over is not None and cost > defer_grouping_over:
                summary.grouping = grouping.defer(clock)
                summary.grouping_deferred = store.count_ready_for_story()  # less what the worker wrote
            else:
                summary.grouping = await grouping.finish(clock, cost)
        if watcher is not None:
            watcher.cancel()
    if not summary.grouping_deferred:
        with clock("index"):
            log.debug("search index: %d entries added", store.refresh_search_index())
    summary.seconds = loop.time() - started
    return summary


def finish_grouping(store: Store, settings: dedup.DedupSettings, *, now: datetime | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dedup.GroupingSummary:
    """Place every stored report that has no story yet, then bring the search index up to date.

    What a run that deferred its grouping leaves (``agg group``). Reports are
    placed ``GROUPING_MAX_BATCH`` at a time, so that their texts are never
    all in memory at once (the window's stories are: see
    :class:`dedup.GroupingSession`); ``progress(placed, waiting)`` is called
    after each batch (``agg group``'s bar).
    Stopped or killed half-way, it leaves whole stories, and the next run or
    ``agg group`` places the rest.
    """
    session = dedup.GroupingSession(store.db, settings, now)
    waiting = store.count_ready_for_story()
    place_all(session, progress and (lambda placed: progress(placed, max(waiting, placed))))
    store.refresh_search_index()
    return session.summary


def place_all(session: dedup.GroupingSession,
              progress: Callable[[int], None] | None = None) -> dedup.GroupingSummary:
    """Every ready entry placed by ``session``, ``GROUPING_MAX_BATCH`` at a time; what this call placed.

    ``progress`` is told how many the session has placed after each batch.
    """
    done = dedup.GroupingSummary()
    while (batch := session.place_ready(at_most=GROUPING_MAX_BATCH)).placed:
        done.add(batch)
        if progress:
            progress(session.summary.placed)
    return done


async def _settle(tasks: list[asyncio.Task]) -> None:
    """Wait for every task; those cancelled by a stop are passed over, a failure is raised."""
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            raise result


class _Run:
    """The state one run shares across its feeds."""

    def __init__(self, config: Config, store: Store, fetcher: Fetcher, pool: ExtractorPool,
                 summary: RunSummary, re_extract: bool, now: datetime, stop: threading.Event | None = None,
                 clock: StageClock | None = None, parser: ParseWorkers | None = None,
                 grouping: GroupingWorker | None = None, page_progress: PageProgressCallback | None = None):
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.pool = pool
        self.summary = summary
        self.re_extract = re_extract
        self.now = now
        self.stop = stop
        self.clock = clock or StageClock()
        self.parser = parser or ParseWorkers(enabled=False)
        self.grouping = grouping
        self.page_tasks: list[asyncio.Task] = []
        self.pages_done = 0
        self.page_progress = page_progress
        # Fetches that stored no entries (304s, failures), written RECORDS_PER_COMMIT at a time.
        self.records: list[FetchRecord] = []
        self.rng = random.Random()

    async def cancel_on_stop(self, feed_tasks: list[asyncio.Task]) -> None:
        """Once ``stop`` is set, cancel every fetch and extraction still pending.

        Cancellation lands only at an await, and a feed's database write has
        none, so each write is either done or not begun.
        """
        assert self.stop is not None
        while not self.stop.is_set():
            await asyncio.sleep(STOP_POLL_SECONDS)
        self.summary.stopped = True
        for task in [*feed_tasks, *self.page_tasks]:
            task.cancel()
        if self.grouping is not None:
            self.grouping.stop()

    async def feed(self, feed: FeedConfig, row: dict) -> FeedOutcome:
        feed_url = row["url"]
        url = row["fetch_url"] or feed_url
        try:
            with self.clock("fetch"):
                guard = await self.fetcher.guard_for(url)
                result = await self.fetcher.fetch(url, etag=row["etag"], last_modified=row["last_modified"],
                                                  guard=guard)
            with self.clock("parse"):
                parsed = await self._parse(result)
            # A 304 answers for the document the stored validators came from, a broken one included.
            error = result.error or feed_problem(parsed) or (row["document_error"] if result.not_modified else None)
            columns = schedule.after_fetch(row, feed, self.config.settings, result, parsed, error, self.now, self.rng)
            with self.clock("store"):
                if parsed is None or error:
                    saved = SavedFetch()
                    self.records.append(FetchRecord.of(row["id"], result, columns, error))
                    if len(self.records) >= RECORDS_PER_COMMIT:
                        self.save_records()
                else:
                    saved = self.store.save_fetch(row["id"], result, parsed, columns, extract=feed.extract,
                                                  now=self.now)
        except sqlite3.Error as exc:  # a full or read-only disk fails every feed alike: stop the run, say why
            raise StoreError(describe_sqlite_error(exc, self.store.path)) from exc
        except Exception as exc:  # a bug for one feed must not stop the others
            log.exception("processing %s failed", url)
            return FeedOutcome(feed_url, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
        if error:
            return FeedOutcome(feed_url, "failed", error=error)
        if feed.extract:
            # Pending entries include those a killed run left behind.
            with self.clock("store"):
                pending = self.store.entries_needing_extraction(row["id"], include_done=self.re_extract)
            self._queue_pages([entry["id"] for entry in pending], guard)
        status = "unchanged" if result.not_modified else "fetched"
        moved_to = columns.get("fetch_url")
        if moved_to:
            log.warning("%s has moved permanently to %s: fetching it from there (update feeds.yaml)", url, moved_to)
        return FeedOutcome(feed_url, status, len(saved.new_entry_ids), saved.updated, moved_to=moved_to)

    def save_records(self) -> None:
        """Write the fetches recorded so far that stored no entries, in one transaction.

        A commit per 304 cost 0.1 ms of the event loop's time, 1,000 of them in
        an all-304 run. A run killed before it writes them leaves those feeds
        as they were, due again; a stopped run writes them on its way out. A
        database error is raised as it is, like every write's: from a feed's
        turn, :meth:`feed` turns it into the :class:`StoreError` that stops the run.
        """
        records, self.records = self.records, []
        if records:
            self.store.save_fetch_records(records, now=self.now)

    async def _parse(self, result: FetchResult) -> ParsedFeed | None:
        if not result.ok or result.not_modified:
            return None
        return await self.parser.parse(result.body or b"", result.final_url, result.headers)

    async def extract_all(self) -> None:
        """``--re-extract`` with nothing fetched: redo every stored page of the configured feeds."""
        for feed in self.config.feeds:
            row = self.store.feed_by_url(feed.url)
            if row and feed.extract:
                guard = await self.fetcher.guard_for(feed.url)
                ids = [e["id"] for e in self.store.entries_needing_extraction(row["id"], include_done=True)]
                self._queue_pages(ids, guard)

    def _queue_pages(self, entry_ids: list[int], guard: bool) -> None:
        if self.stop is not None and self.stop.is_set():
            return  # their entries stay pending for the next run
        for entry_id in entry_ids:
            task = asyncio.create_task(self._page(entry_id, guard))
            task.add_done_callback(self._page_done)
            self.page_tasks.append(task)
        if entry_ids:
            self._tell_pages()

    def _page_done(self, task: asyncio.Task) -> None:
        self.pages_done += 1
        self._tell_pages()

    def _tell_pages(self) -> None:
        if self.page_progress is not None:
            self.page_progress(self.pages_done, len(self.page_tasks))

    async def _page(self, entry_id: int, guard: bool) -> None:
        with self.clock("store"):
            entry = self.store.entry(entry_id)
        if entry is None or not entry["link"]:
            return
        try:
            with self.clock("fetch"):
                page = await self.fetcher.fetch(entry["link"], accept=PAGE_ACCEPT, untrusted=True, guard=guard)
            article_text, error, canonical, language = "", None, None, None
            if not page.ok:
                page_status = _PAGE_STATUS_BY_ERROR.get(page.error_kind or "", "http-error")
                error = page.error
            elif page.content_type not in _HTML_TYPES:
                page_status, error = "not-html", f"the page is {page.content_type}, not HTML"
            else:
                with self.clock("extract"):
                    outcome = await self.pool.extract(page.body or b"", page.final_url, page.charset)
                page_status, error = outcome.status, outcome.error
                article_text = outcome.article.text
                canonical = outcome.article.canonical_url
                language = outcome.article.language
            with self.clock("extract"):
                text, source, status = choose_text(
                    article_text, html_to_text(entry["content"]), html_to_text(entry["summary"]), page_status)
        except Exception as exc:  # one page must never stop the run
            log.exception("extracting %s failed", entry["link"])
            text, source, status, error, canonical, language = (
                entry["text"], entry["text_source"], "error", f"{type(exc).__name__}: {exc}", None, None)
        if status == "ok":
            self.summary.pages_extracted += 1
        else:
            self.summary.pages_failed += 1
        with self.clock("store"):
            self.store.save_extraction(entry_id, text=text, text_source=source, status=status, error=error,
                                       canonical_url=canonical, language=language, now=self.now)
        if self.grouping is not None and entry["story_id"] is None:  # its text is final: ready for a story
            self.grouping.start()


def feed_problem(parsed: ParsedFeed | None) -> str | None:
    """Why a parsed document counts as a failed fetch: it yielded no entries because it is not a feed
    or is broken. A valid feed with no entries (a new blog, a quiet channel) is no failure."""
    if parsed is None or parsed.entries:
        return None
    return parsed.problem


def describe(summary: RunSummary) -> str:
    """The closing summary of a run, in one line."""
    return (
        f"{summary.count('fetched')} fetched, {summary.count('unchanged')} unchanged, "
        f"{summary.count('failed')} failed; {summary.new_entries} new entries, "
        f"{summary.pages_extracted} pages extracted ({summary.pages_failed} not), "
        f"in {summary.seconds:.1f}s" + ("; stopped early" if summary.stopped else "")
        + (f"; {summary.grouping_deferred:,} reports left to group in the background"
           if summary.grouping_deferred else "")
    )


__all__ = ["FeedOutcome", "GroupingWorker", "PageProgressCallback", "ParseWorkers", "RunSummary", "StageClock",
           "describe", "feed_problem", "finish_grouping", "run", "run_async", "select_feeds"]
