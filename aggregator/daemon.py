"""``agg daemon``: fetch each feed when it is due, for months, without a person watching.

One process holds the run lock (see :mod:`aggregator.lock`) for its whole
life and runs two APScheduler jobs on a single worker thread, so they never
overlap on the one database connection:

- ``fetch``: runs :func:`aggregator.pipeline.run` with ``due_only``, logs one
  line, then moves its own next run to the earliest ``next_check_at`` of the
  configured feeds (never sooner than :data:`MIN_WAKE_SECONDS`, never later
  than :data:`MAX_WAKE_SECONDS`, so a database changed behind its back is
  noticed). The runs share one :class:`dedup.GroupingSession`, so the
  stories of the window are loaded once and kept warm, not loaded again for
  every run's few new reports;
- ``maintenance``: daily, :func:`maintain` prunes entries older than
  ``retention`` (a story keeps its representative and original report),
  runs ``PRAGMA optimize`` and checkpoints the WAL.

SIGTERM and SIGINT set the stop event: the run in progress abandons its
requests, each feed's write completes or never starts, and the process exits
0 within a few seconds. SIGHUP, or a change of the config file's mtime,
reloads the config (a config with problems is reported and the old one kept).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator import dedup, pipeline, schedule
from aggregator.config import Config, ConfigError, load_config
from aggregator.store import Store, to_db_time, utc_now

log = logging.getLogger(__name__)

MIN_WAKE_SECONDS = 5.0
MAX_WAKE_SECONDS = 3600.0
# A run that starts this late (the machine slept, a run overran) still runs; coalesce folds repeats.
MISFIRE_GRACE_SECONDS = 3600
CONFIG_POLL_SECONDS = 2.0
MAINTENANCE_HOUR = 4  # local time: when servers and people are quiet
# The grouping session the runs share is renewed once its stories span this many windows: the new
# entries' window and the one each side of it, and as much again for the runs to come.
KEPT_WINDOWS = 4


@dataclass
class MaintenanceReport:
    entries_pruned: int = 0
    fetch_log_pruned: int = 0


def maintain(store: Store, retention_seconds: float, now: datetime) -> MaintenanceReport:
    """Prune what is older than ``retention``, then ``PRAGMA optimize`` and a WAL checkpoint.

    An entry goes when both its first sighting and its date are older than
    the cutoff, unless it is a story's representative or original report (so
    every story keeps a title and a link); its story membership goes with it.
    Fetch log rows older than the cutoff go too.
    """
    cutoff = to_db_time(now - timedelta(seconds=retention_seconds))
    report = MaintenanceReport()
    with store.transaction() as conn:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS prunable (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM prunable")
        conn.execute(
            "INSERT INTO prunable (id) SELECT id FROM entries "
            "WHERE first_seen < :cutoff AND COALESCE(published, first_seen) < :cutoff "
            "AND id NOT IN (SELECT representative_id FROM stories WHERE representative_id IS NOT NULL) "
            "AND id NOT IN (SELECT original_entry_id FROM stories WHERE original_entry_id IS NOT NULL)",
            {"cutoff": cutoff},
        )
        conn.execute("DELETE FROM story_members WHERE entry_id IN (SELECT id FROM prunable)")
        report.entries_pruned = conn.execute("DELETE FROM entries WHERE id IN (SELECT id FROM prunable)").rowcount
        report.fetch_log_pruned = conn.execute("DELETE FROM fetch_log WHERE started_at < ?", [cutoff]).rowcount
        conn.execute("DROP TABLE prunable")
    store.db.conn.execute("PRAGMA optimize")
    if store.path is not None:
        store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return report


def wake_time(config: Config, store: Store, now: datetime) -> datetime:
    """When the fetch job should next run: the earliest due feed, within the wake bounds.

    A configured feed with no row yet (just added to the config) is due now.
    """
    configured = {feed.url for feed in config.feeds if feed.enabled}
    rows = [row for row in store.feeds() if row["url"] in configured]
    earliest = now if len(rows) < len(configured) else schedule.next_wake(rows)
    if earliest is None:
        earliest = now + timedelta(seconds=MAX_WAKE_SECONDS)
    low, high = now + timedelta(seconds=MIN_WAKE_SECONDS), now + timedelta(seconds=MAX_WAKE_SECONDS)
    return min(max(earliest, low), high)


class Daemon:
    """The scheduler, the config it follows, and the stop event. Call :meth:`serve` from the main thread."""

    def __init__(self, config: Config, store: Store, *, concurrency: int | None = None):
        self.config_path = config.path
        self.store = store
        self.concurrency = concurrency
        self.config = config
        self._config_mtime = _mtime(config.path)
        self.stop = threading.Event()
        self._reload_requested = threading.Event()
        # Kept from run to run, so a run places its few new reports among the window's stories without
        # loading them again (it starts afresh by itself when another process has grouped meanwhile).
        self._grouping: dedup.GroupingSession | None = None
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        )

    # -- jobs ----------------------------------------------------------------

    def fetch_due(self) -> None:
        """The fetch job: one run over the due feeds, one log line, then sleep until the next is due."""
        try:
            if self.stop.is_set():
                return
            summary = pipeline.run(self.config, self.store, due_only=True, concurrency=self.concurrency,
                                   stop=self.stop, grouping_session=self._grouping_session())
            if summary.feeds or summary.stopped:
                grouping = summary.grouping
                log.info("run: %s; %d reports placed in stories, %d stored reports loaded to place them",
                         pipeline.describe(summary), grouping.placed, grouping.loaded)
            for outcome in summary.failures:
                log.warning("%s: %s", outcome.url, outcome.error)
        except Exception:  # a failed run must not end the daemon: the next one retries
            log.exception("run failed")
            self._grouping = None  # its grouping may have stopped half-way: the next run loads afresh
        finally:
            self._reschedule()

    def _grouping_session(self) -> dedup.GroupingSession:
        """The session the runs share; a new one when the grouping settings changed, or when the stories it
        holds span ``KEPT_WINDOWS`` windows (those behind the window only cost memory)."""
        settings = self.config.settings.dedup
        if self._grouping is None or self._grouping.settings != settings or \
                self._grouping.span() > KEPT_WINDOWS * timedelta(hours=settings.window_hours):
            self._grouping = dedup.GroupingSession(self.store.db, settings)
        return self._grouping

    def maintenance(self) -> None:
        try:
            report = maintain(self.store, self.config.settings.retention, utc_now())
            log.info("maintenance: pruned %d entries and %d fetch log rows older than %s; optimized, checkpointed",
                     report.entries_pruned, report.fetch_log_pruned,
                     timedelta(seconds=self.config.settings.retention))
        except Exception:
            log.exception("maintenance failed")

    def _reschedule(self, at: datetime | None = None) -> None:
        if self.stop.is_set():
            return
        when = at or wake_time(self.config, self.store, utc_now())
        self.scheduler.modify_job("fetch", next_run_time=when)

    # -- lifecycle -----------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self.stop.set()

    def request_reload(self, *_: object) -> None:
        self._reload_requested.set()

    def reload_if_needed(self) -> bool:
        """Reload the config after SIGHUP or when its file changed; True when a new config was taken."""
        mtime = _mtime(self.config_path)
        if not self._reload_requested.is_set() and mtime == self._config_mtime:
            return False
        self._reload_requested.clear()
        self._config_mtime = mtime
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded, the old one stays in use:\n  %s", "\n  ".join(exc.problems))
            return False
        self.config = config
        log.info("config reloaded from %s: %d feeds", self.config_path, len(config.feeds))
        # New feeds are due at once: run now rather than at the old wake time.
        self.scheduler.modify_job("fetch", next_run_time=utc_now())
        return True

    def add_jobs(self) -> None:
        """The fetch job (first run at once) and the daily maintenance job."""
        self.scheduler.add_job(self.fetch_due, "interval", seconds=MAX_WAKE_SECONDS, id="fetch",
                               name="fetch due feeds", next_run_time=utc_now())
        self.scheduler.add_job(self.maintenance, "cron", hour=MAINTENANCE_HOUR, minute=17, id="maintenance",
                               name="daily maintenance")

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT. Installs signal handlers, so call it from the main thread."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.add_jobs()
        self.scheduler.start()
        log.info("daemon started: %d feeds from %s, database %s", len(self.config.feeds), self.config_path,
                 self.store.path)
        try:
            while not self.stop.wait(CONFIG_POLL_SECONDS):
                self.reload_if_needed()
        finally:
            self.stop.set()
            log.info("stopping: finishing the writes in progress")
            self.scheduler.shutdown(wait=True)
            log.info("daemon stopped")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None

