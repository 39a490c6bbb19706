"""Story grouping for a run: in a worker process while the run goes on, or at its end; and after it.

:class:`GroupingWorker` places a run's entries while it still extracts pages
(the worker process runs :func:`_group_while_running`) or in the run's own
process at its end; :func:`grouping_cost` says how much grouping a run leaves,
and :func:`finish_grouping` does what a run deferred (``agg group``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from datetime import datetime, timedelta
from multiprocessing.connection import Connection

from aggregator import dedup
from aggregator.dedup import settings as dedup_settings
from aggregator.dedup.readahead import Reading, read_waiting
from aggregator.pipeline.summary import StageClock
from aggregator.store import Store

log = logging.getLogger(__package__)


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
    parsing them needs the cores more; except to warm up (:meth:`warm_up`):
    when the database holds many stored reports near the newest, it starts
    with the run and loads their stories while the run fetches, so that the
    end of a later run waits for placing its few new entries among them,
    not for their loading (a run that brings nothing new stops it unused);
    it loads them at the run's priority, since the end of the run waits
    for them, and lowers its own after. With the word to finish, the run
    hands the worker the texts of the entries left, read meanwhile in its
    own process (:data:`READ_FOR_WORKER_MOST` at most).
    Otherwise, or if it dies, the run groups in its own process at the end,
    as small runs always do (a backlog of more than one batch with the next
    batch read ahead, as ``agg group`` places it).
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
        self._warm_checked = False
        # Started to load the stored stories near the newest before the run's entries are stored (warm_up).
        self.warm = False

    def start(self, warm: bool = False) -> None:
        """Start the worker, if this run uses one and it is not running yet; ``warm``: see :meth:`warm_up`."""
        if not self.enabled or self._stopped or self._process is not None:
            return
        context = multiprocessing.get_context("forkserver")
        connection, theirs = context.Pipe()
        process = context.Process(target=_group_while_running, name="agg-grouping", daemon=True,
                                  args=(str(self.store.path.resolve()), self.settings, self.now, theirs, warm))
        try:
            process.start()
        except BaseException:  # no worker: the run groups in its own process at its end
            connection.close()
            raise
        finally:
            theirs.close()
        self._process, self._connection, self.warm = process, connection, warm

    def warm_up(self) -> None:
        """Start the worker now, warm, if the stories it would load for a later run's entries are worth it.

        Called as the run starts fetching. Loading the stored stories of a
        window is most of what placing a later run's few entries costs
        (seconds among 50,000 stored reports; none below :data:`WARM_MIN_STORED`),
        and which feeds bring new entries is known only once they answer, the
        last perhaps at the end. Loaded while the run fetches, what the end of
        the run waits for is the placing alone, and the run groups them itself
        instead of leaving them to a background ``agg group`` that would load
        it all again.
        """
        if not self.enabled or self._stopped or self._process is not None or self._warm_checked:
            return
        self._warm_checked = True
        window = timedelta(hours=self.settings.window_hours)
        try:
            if self.store.stored_near_newest(window) >= WARM_MIN_STORED:
                self.start(warm=True)
        except Exception as exc:  # only a head start: the run groups as it would have without it
            log.warning("could not start the story-grouping worker early (%s: %s)", type(exc).__name__, exc)

    def cost(self, waiting: int, stored: int) -> float:
        """The grouping left (:func:`grouping_cost`), less the stored reports a warm worker has loaded already."""
        loaded = self.warm and self._process is not None and self._process.is_alive()
        return grouping_cost(waiting, 0 if loaded else stored)

    async def finish(self, clock: StageClock, cost: float) -> dedup.GroupingSummary:
        """Every ready entry placed: by the worker if it runs, else here. Adds the worker's busy time to ``clock``.

        ``cost`` is the grouping left (:func:`grouping_cost`).
        """
        if self._process is None and cost >= GROUPING_MIN_BATCH:
            self.start()  # much to load or place: the grouper's memory goes with the worker
        if self._process is not None and self._connection is not None:
            reply = await asyncio.to_thread(self._finish_worker, self._process, self._connection)
            if self._stopped:  # the run was stopped meanwhile: the rest is the next run's
                return dedup.GroupingSummary()
            self._shut_down()
            if reply is not None and reply[0] == "done":
                _, summary, busy_seconds = reply
                clock.add("group", busy_seconds)
                if summary is not None:
                    return summary
            log.warning("the story-grouping worker stopped before the end of the run; grouping here instead")
        with clock("group"), grouping_objects():
            if self.session is not None:
                self.session.now = self.now
                return self.session.place_all()
            # agg's entry points keep their work under __main__: reading ahead is safe here.
            return dedup.group_new_entries(self.store.db, self.settings, now=self.now, read_ahead=True)

    def _finish_worker(self, process: multiprocessing.process.BaseProcess, connection: Connection) -> tuple | None:
        """In a thread of the run: tell the worker to finish, and wait for its "done" (:meth:`_last_reply`).

        The word goes with the texts of the entries left, read here while the
        worker still loads or places (the run waits for it anyway); the send
        waits until the worker reads it, between two batches. ``process`` and
        ``connection`` are taken before: a stop from the run's thread clears
        them, and ends the worker, so that the send or the wait fails.
        """
        readings: dict[int, Reading] = {}
        if process.is_alive():
            try:
                readings = read_waiting(str(self.store.path), self.settings, READ_FOR_WORKER_MOST)
            except Exception as exc:  # the worker reads them, as it would have
                log.debug("could not read the waiting entries for the grouping worker (%s: %s)",
                          type(exc).__name__, exc)
        try:
            connection.send(("finish", readings))
        except OSError:
            return None
        del readings  # not held while the worker places
        return self._last_reply(True, connection)

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

    def _last_reply(self, wait: bool, connection: Connection | None = None) -> tuple | None:
        """The worker's newest message: ``("progress" | "done", summary so far, busy seconds)``.

        With ``wait``, read until its "done"; without, take what has come. If
        the worker is gone, the newest message read, if any. ``connection``:
        the worker's, taken before a stop could clear it.
        """
        if connection is None:
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


# How often the grouping worker looks for entries ready to place, and how many it waits for
# before placing any before the end of the run (it places dedup.settings.PLACE_BATCH at most at a time).
GROUPING_POLL_SECONDS = 0.5
GROUPING_MIN_BATCH = 1000
# At most this many entries left when the run tells its grouping worker to finish are read by the run
# itself meanwhile (a later run's few hundred): more would hold up the word, and both processes hold
# the readings while they go over (about 10 KB an article).
READ_FOR_WORKER_MOST = 500
# Grouping while the run extracts yields the cores to fetching, parsing and extraction,
# which the end of the run waits for first.
GROUPING_NICENESS = 10
# Stored reports near the newest from which a run warms its grouping worker up while it fetches
# (about 0.05 ms each to load from their stored features: fewer are not worth a process).
WARM_MIN_STORED = 5000
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


def _group_while_running(db_path: str, settings: dedup.DedupSettings, now: datetime, connection: Connection,
                         warm: bool = False) -> None:
    """The grouping worker: place what is ready until told to finish, then the rest; ``warm``: load the
    stored stories near the newest first (:meth:`dedup.GroupingSession.warm`).

    After each chunk it writes it sends ``("progress", summary so far, busy
    seconds)``, and at the end ``("done", ...)``; the summary is None if it failed.
    """
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
        if warm:
            # At the run's priority: a later run's end waits for this loading, not for its fetch.
            with grouping_objects(frozen_after=True):
                session.warm()
            busy += time.perf_counter() - started
        try:
            os.nice(GROUPING_NICENESS)
        except OSError:
            pass
        while True:
            readings = None
            if not finishing and connection.poll(0 if more_waiting else GROUPING_POLL_SECONDS):
                _, readings = connection.recv()  # ("finish", the readings of the entries left, read by the run)
                finishing = True
            started = time.perf_counter()
            with grouping_objects(frozen_after=True):
                placed = session.place_ready(at_least=1 if finishing else GROUPING_MIN_BATCH,
                                             at_most=dedup_settings.PLACE_BATCH, readings=readings).placed
            if placed:
                busy += time.perf_counter() - started
            more_waiting = placed == dedup_settings.PLACE_BATCH
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


def finish_grouping(store: Store, settings: dedup.DedupSettings, *, now: datetime | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dedup.GroupingSummary:
    """Place every stored report that has no story yet, then bring the search index up to date.

    What a run that deferred its grouping leaves (``agg group``). Reports are
    placed ``dedup.settings.PLACE_BATCH`` at a time, so that their texts are never
    all in memory at once (the window's stories are: see
    :class:`dedup.GroupingSession`); ``progress(placed, waiting)`` is called
    after each batch (``agg group``'s bar).
    Stopped or killed half-way, it leaves whole stories, and the next run or
    ``agg group`` places the rest.
    """
    # A backlog of several batches: the next batch's texts are read on the other core while one is placed.
    # A batch is written in one transaction, not WRITE_CHUNK at a time: no run writes meanwhile (this one holds
    # the lock), and each transaction recomputes every story it touches from all its members; a first import
    # touched most of its stories in each chunk, and rewrote them five times a batch.
    session = dedup.GroupingSession(store.db, settings, now, read_ahead=True, chunk=dedup_settings.PLACE_BATCH)
    waiting = store.count_ready_for_story()
    # The search index is brought up to date meanwhile, on a connection of its own: SQLite's indexing holds no
    # interpreter lock, and a first import's 50,000 texts took 2.7 s to index after the grouping, which the
    # user waited for too. Grouping changes no title or text, so the index is the same either way.
    indexing = _indexing_meanwhile(store)
    try:
        # Each chunk of placements rewrites a few MB of rows (an entry's row holds its text): a commit that copied
        # the WAL into the database and waited on fsync took a sixth of the writing's time.
        with grouping_objects(), store.checkpoints_in_background():
            session.place_all(progress and (lambda placed: progress(placed, max(waiting, placed))))
    finally:
        session.close()
        if indexing is not None:
            futures.wait([indexing])  # its transaction ends before this process does, whatever happened here
    if indexing is None:
        store.refresh_search_index()
    else:
        indexing.result()
    return session.summary


def _indexing_meanwhile(store: Store) -> futures.Future | None:
    """:meth:`Store.refresh_search_index` started in a thread, on its own connection; None for a database in memory."""
    if store.path is None:
        return None
    executor = futures.ThreadPoolExecutor(1, thread_name_prefix="agg-search-index")
    try:
        return executor.submit(_refresh_search_index, store.path)
    finally:
        executor.shutdown(wait=False)  # its thread ends with the task


INDEX_IDS_A_TRANSACTION = 10_000
"""Entries the search index takes a transaction while ``agg group`` places reports (about half a second each):
the grouping's writes wait for no more than that."""


def _refresh_search_index(path: os.PathLike) -> int:
    store = Store.open(path)
    try:
        indexed = 0
        while store.entries_not_indexed():
            indexed += store.refresh_search_index(most_ids=INDEX_IDS_A_TRANSACTION)
        return indexed
    finally:
        store.close()


@contextmanager
def grouping_objects(frozen_after: bool = False) -> Iterator[None]:
    """Grouping left to reference counting: the cyclic collector is paused inside, and with ``frozen_after``
    what was made inside is frozen at the end (``gc.freeze``), so that no later collection walks it.

    A grouping session holds its window's stories, hundreds of thousands of
    objects that live as long as it does, and each full pass of the cyclic
    collector walked them all again: 0.3-0.5 s of a later run's 3 s of loading
    and placing among 50,000 stored reports, 6 s of a first import's 90.
    Grouping makes no reference cycles (``tests/test_grouping_session.py``),
    so nothing is kept that the collector would have freed; what a merge or
    the window's end drops is freed by reference counting. Freeze only in a
    process that groups and then ends (the run's worker): frozen, the objects
    of anything else alive then (``agg daemon``'s fetching) would never be
    collected either. The pause is the whole process's: where other threads
    run meanwhile (the run's progress bar, a read-ahead's pool), what cycles
    they make waits for the collector until the grouping ends.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        if frozen_after:  # not on the way out of an error: its traceback's cycles would be kept for good
            gc.freeze()
    finally:
        if collecting:
            gc.enable()
