"""``agg fetch``, ``agg group``, ``agg daemon`` and ``agg status``: running agg and watching it run."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aggregator.cli.app import (
    EXIT_LOCKED,
    Context,
    TerminalSafeFormatter,
    _echo_json,
    _progress_bar,
    _reports,
    _shows_progress,
    _start_up,
    _state_text,
    cli,
    fail,
    pass_context,
    terminal_safe,
)
from aggregator.config import Config
from aggregator.store import Store, StoreError, describe_sqlite_error, utc_now
from aggregator.times import time_ago, time_until

if TYPE_CHECKING:
    from aggregator.lock import LockHeld, RunLock
    from aggregator.pipeline import RunSummary



@cli.command()
@click.option("--due", is_flag=True, help="Fetch only the feeds whose next check has come (for cron).")
@click.option("--concurrency", type=click.IntRange(1, 1000), metavar="N",
              help="Requests in flight at once, for this run [default: the config's, 20].")
@click.option("--re-extract", is_flag=True, help="Fetch and extract article pages again, even those done.")
@click.option("--wait", is_flag=True, help="If another run holds the lock, wait for it instead of exiting (status 75).")
@click.option("--no-background", is_flag=True,
              help="Group every new report before exiting, however many (see 'agg group').")
@pass_context
def fetch(ctx: Context, due: bool, concurrency: int | None, re_extract: bool, wait: bool,
          no_background: bool) -> None:
    """Fetch the feeds, extract new articles, group stories, store everything.

    Each failed feed is listed on stderr with its reason. The summary line
    is printed on a terminal or with -v, not under cron, so cron mails only
    failures. Exit status 0 when every feed was tried, even if some failed;
    75 when another run (a fetch or the daemon) holds the database's lock.

    When grouping what a run brought would take more than about 2 s (a
    first run over many feeds: about 2 ms a report), the run hands it, with
    the search index, to an 'agg group' in the background, which holds the
    database's lock until it is done; its log is the database's path plus
    '.group.log'. Until then those reports are in no story. A later run of
    20 feeds or more loads the stored stories near the newest while it
    fetches, and places its few hundred new reports among them itself.

    \b
    Examples:
      agg fetch
      agg fetch --due                # from cron: silent unless something fails
      agg fetch --wait               # queue behind a run in progress
      agg fetch --concurrency 50
      agg fetch --no-background      # a first run, grouped before it exits
    """
    with _start_up():
        import sqlite3

        from aggregator.lock import LockHeld, LockUnavailable, RunLock
        from aggregator.pipeline import BACKGROUND_GROUPING_MIN, describe, run

        config = ctx.config()
        store = ctx.store()  # first, so that an unusable database path is reported as such
    if not any(feed.enabled for feed in config.feeds):
        what = "no feeds" if not config.feeds else "only feeds with enabled: false"
        click.echo(f"agg: {ctx.config_path} lists {what}, so there is nothing to fetch: "
                   "add one with 'agg feeds add URL' or 'agg import opml FILE'", err=True)
        return
    try:
        with RunLock(ctx.db_path, wait=_waiting_for_the_lock(ctx, wait)) as lock, \
                _progress_bar(ctx, "fetch") as progress:
            summary = run(config, store, due_only=due, concurrency=concurrency, re_extract=re_extract,
                          progress=progress, page_progress=progress.pages if progress else None,
                          defer_grouping_over=None if no_background else BACKGROUND_GROUPING_MIN)
            if summary.grouping_deferred:
                _group_in_background(ctx, lock, config, store, summary)
    except LockHeld as exc:
        fail(terminal_safe(exc), EXIT_LOCKED)
    except LockUnavailable as exc:
        fail(terminal_safe(exc))
    except StoreError as exc:
        fail(str(exc))
    except sqlite3.Error as exc:  # a write after the feeds' (extraction, grouping) failed the same way
        fail(describe_sqlite_error(exc, ctx.db_path))
    for outcome in summary.failures:
        click.echo(f"agg: {terminal_safe(outcome.url)}: {terminal_safe(outcome.error)}", err=True)
    if ctx.verbose or (not ctx.quiet and sys.stderr.isatty()):
        click.echo(describe(summary), err=True)


BACKGROUND_GROUPING = "agg group (in the background, after agg fetch)"


def _waiting_for_the_lock(ctx: Context, wait: bool) -> Callable[[LockHeld], bool]:
    """``--wait`` for :class:`RunLock`: on a terminal, first say which run it waits for (pid and command)."""
    def waits(held: LockHeld) -> bool:
        if wait and _shows_progress(ctx):
            holder = f" (the run that holds it: {terminal_safe(held.holder)})" if held.holder else ""
            click.echo(f"agg: waiting for another agg run to finish{holder}; Ctrl-C to give up", err=True)
        return wait
    return waits


def _group_in_background(ctx: Context, lock: RunLock, config: Config, store: Store, summary: RunSummary) -> None:
    """Start ``agg group`` on its own, handing it this run's lock, to place what the run left.

    It runs in a session of its own, so that closing the terminal or a
    Ctrl-C meant for the shell spares it; its output goes to the log next to
    the database. If it cannot be started, the grouping is done here.
    """
    import fcntl
    import subprocess

    import aggregator
    from aggregator.pipeline import finish_grouping

    # Handed over before the child starts: a Ctrl-C in between must not unlock the child's lock.
    fd = lock.hand_over()
    if fd < 3:  # 0-2 are the child's stdin, stdout and stderr, which would replace it
        fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    # -P and this process's own package first: the child runs this agg, whatever the working directory holds.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(aggregator.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-P", "-m", "aggregator", "--config", str(ctx.config_path), "--db", str(ctx.db_path),
               *(["-v"] * ctx.verbose), "group", "--lock-fd", str(fd)]
    log_path = ctx.db_path.with_name(ctx.db_path.name + ".group.log")
    try:
        with open(log_path, "wb") as log_file:  # the latest background run's log only
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
                                     pass_fds=(fd,), start_new_session=True)
    except OSError as exc:
        lock.take_back()
        logging.getLogger(__name__).warning("could not start the background grouping (%s); grouping here", exc)
        summary.grouping.add(finish_grouping(store, config.settings.dedup))
        summary.grouping_deferred = 0
        return
    finally:
        if fd != lock.fd:
            os.close(fd)
    lock.name_holder(child.pid, BACKGROUND_GROUPING)


@cli.command()
@click.option("--wait", is_flag=True, help="If another run holds the lock, wait for it instead of exiting (status 75).")
@click.option("--lock-fd", type=int, hidden=True, help="The lock descriptor 'agg fetch' hands over.")
@pass_context
def group(ctx: Context, wait: bool, lock_fd: int | None) -> None:
    """Group every report not yet in a story, and bring the search index up to date.

    'agg fetch' does this itself, except when grouping would take more than
    about 2 s: it then starts 'agg group' in the background. Run it
    with --wait to wait for that one to finish (and for scripts that read
    the stories right after a fetch). Holds the database's lock meanwhile.

    \b
    Examples:
      agg group --wait               # after 'agg fetch': every report in its story
      agg fetch && agg group --wait && agg export digest -o digest.json
    """
    import sqlite3

    from aggregator.lock import LockHeld, LockUnavailable, RunLock
    from aggregator.pipeline import finish_grouping

    config = ctx.config()
    store = ctx.store()
    try:
        lock = RunLock.adopt(ctx.db_path, lock_fd, purpose=BACKGROUND_GROUPING) if lock_fd is not None \
            else RunLock(ctx.db_path, wait=_waiting_for_the_lock(ctx, wait))
        with lock, _progress_bar(ctx, "group") as progress:
            started = utc_now()
            summary = finish_grouping(store, config.settings.dedup, now=started, progress=progress)
    except LockHeld as exc:
        fail(terminal_safe(exc), EXIT_LOCKED)
    except LockUnavailable as exc:
        fail(terminal_safe(exc))
    except StoreError as exc:  # the search index's own connection could not open the database
        fail(str(exc))
    except sqlite3.Error as exc:
        fail(describe_sqlite_error(exc, ctx.db_path))
    if ctx.verbose or lock_fd is not None or (not ctx.quiet and sys.stderr.isatty()):
        seconds = (utc_now() - started).total_seconds()
        click.echo(f"{'agg group: ' if lock_fd is not None else ''}{summary.placed:,} reports grouped: "
                   f"{summary.new_stories:,} new stories, {summary.joined:,} joined one, "
                   f"{summary.merges:,} merges, in {seconds:.1f}s", err=True)


# ---- running unattended: daemon, status ---------------------------------------------------------


@cli.command()
@click.option("--concurrency", type=click.IntRange(1, 1000), metavar="N",
              help="Requests in flight at once [default: the config's, 20].")
@pass_context
def daemon(ctx: Context, concurrency: int | None) -> None:
    """Run in the foreground, fetching each feed when it is due, until stopped.

    Holds the database's lock (a second 'agg fetch' or 'agg daemon' exits
    with status 75), logs one line per run on stderr, prunes old entries
    daily. SIGTERM or Ctrl-C stops it cleanly; SIGHUP, or saving
    feeds.yaml, reloads the config. See docs/deploy.md for systemd.

    \b
    Examples:
      agg daemon
      agg --config /etc/agg/feeds.yaml --db /var/lib/agg/agg.db daemon
      kill -HUP <pid>      # reload feeds.yaml now
    """
    from aggregator.daemon import Daemon
    from aggregator.lock import LockHeld, LockUnavailable, RunLock

    config = ctx.config()
    if not ctx.quiet:
        logging.getLogger("aggregator").setLevel(min(logging.INFO, logging.getLogger().level))
        # journald stamps each line itself; elsewhere the time is worth printing.
        stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
        for handler in logging.getLogger().handlers:
            handler.setFormatter(TerminalSafeFormatter(f"{stamp}%(levelname)s %(name)s: %(message)s"))
    def behind_background_grouping(held: LockHeld) -> bool:
        # A first `agg fetch` just before the service starts: its grouping ends; it is no second daemon.
        if BACKGROUND_GROUPING not in held.holder:
            return False
        logging.getLogger(__name__).warning("waiting for the grouping that agg fetch left in the background (%s)",
                                            terminal_safe(held.holder))
        return True

    store = ctx.store()
    try:
        with RunLock(ctx.db_path, wait=behind_background_grouping, purpose="agg daemon"):
            Daemon(config, store, concurrency=concurrency).serve()
    except LockHeld as exc:
        fail(terminal_safe(exc), EXIT_LOCKED)
    except LockUnavailable as exc:
        fail(terminal_safe(exc))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Each feed's last fetch, HTTP status, error and next check; how many have errors.

    A feed is in 'error' from the first failed fetch (it is retried sooner or
    later as it keeps failing), 'failing' after failure_threshold failures
    in a row (it is then tried daily) and 'disabled' after 410 Gone (it is
    no longer fetched). On a terminal, errors are in red (unless NO_COLOR is
    set). Also how many reports wait to be grouped into stories (see 'agg group').

    \b
    Examples:
      agg status
      agg status --json | jq '.feeds[] | select(.state != "ok") | .url'
    """
    from aggregator.stats import feeds_status

    now = utc_now()
    report = feeds_status(ctx.store(readonly=True), now)
    waiting = report["counts"]["reports_waiting_for_story"]
    if as_json:
        _echo_json(report)
        return
    rows = [
        (terminal_safe(f["title"] or f["url"]), f["state"], time_ago(f["last_fetch_at"], now) if f["last_fetch_at"]
         else "never", str(f["last_status"] or "-"), "-" if f["state"] == "disabled" else
         time_until(f["next_check_at"], now), terminal_safe(f["last_error"] or ""))
        for f in report["feeds"]
    ]
    if sys.stdout.isatty():
        from rich.table import Table
        from rich.text import Text

        table = Table(show_edge=False, pad_edge=False, header_style="bold")
        for name in ("Feed", "State", "Last fetch", "HTTP", "Next check"):
            table.add_column(name, overflow="fold", ratio=3 if name == "Feed" else None)
        table.add_column("Error", overflow="fold", ratio=2)
        for feed, state, *cells, error in rows:
            table.add_row(Text(feed), _state_text(state), *(Text(cell) for cell in cells), Text(error, style="red"))
        ctx.out.print(table)
    else:
        for row in rows:
            click.echo("\t".join(row))
    counts = report["counts"]
    failing = f" ({counts['failing']} failing: tried daily)" if counts["failing"] else ""
    line = (f"{counts['feeds']} feeds: {counts['ok']} ok, {counts['with_errors']} with errors{failing}, "
            f"{counts['disabled']} disabled; {counts['due']} due now")
    if waiting:
        line += f"; {waiting:,} {_reports(waiting)} waiting to be grouped into stories (see 'agg group')"
    if counts["with_errors"] and sys.stderr.isatty():
        ctx.err.print(line, style="red", soft_wrap=True)
    else:
        click.echo(line, err=True)
