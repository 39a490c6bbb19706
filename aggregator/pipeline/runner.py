"""The run itself: which feeds it fetches, each feed's fetch, parse and store, its article pages, its end.

:func:`run` (and :func:`run_async`, inside an event loop) drive one run;
:class:`_Run` holds what it shares across its feeds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from contextlib import nullcontext
from datetime import datetime, timedelta

from aggregator import dedup, schedule
from aggregator.config import Config, FeedConfig
from aggregator.extract import ExtractorPool, choose_text
from aggregator.fetch import PAGE_ACCEPT, Fetcher
from aggregator.models import FetchResult, ParsedFeed
from aggregator.parse import html_to_text
from aggregator.pipeline.grouping import GroupingWorker
from aggregator.pipeline.parsing import ParseWorkers
from aggregator.pipeline.summary import (
    FeedOutcome,
    PageProgressCallback,
    ProgressCallback,
    RunSummary,
    StageClock,
    feed_problem,
)
from aggregator.store import (
    FetchRecord,
    SavedFetch,
    Store,
    StoreError,
    describe_sqlite_error,
    from_db_time,
    utc_now,
)

log = logging.getLogger(__package__)

# What an article page's failed fetch is recorded as.
_PAGE_STATUS_BY_ERROR = {"timeout": "timeout", "too-large": "too-large"}
_HTML_TYPES = ("text/html", "application/xhtml+xml", "")

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
    thousand feeds returns once they are stored. A later run whose few new
    reports are placed among tens of thousands of stored ones loads those in
    its grouping worker while it fetches (``GroupingWorker.warm_up``), and
    only the placing is left to count, so it groups them itself.

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
        # With the first requests in flight: the stored stories load while the feeds come in.
        grouping.warm_up()
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
            waiting, stored = store.grouping_backlog(timedelta(hours=settings.dedup.window_hours))
            cost = grouping.cost(waiting, stored)
            if not waiting and grouping.warm:  # warmed up for entries that never came (every feed unchanged, say)
                summary.grouping = grouping.defer(clock)
            elif defer_grouping_over is not None and cost > defer_grouping_over:
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
