"""The ``agg`` command line: a thin shell over the library API.

Data goes to stdout (a table on a terminal, plain lines when piped, JSON
lines with ``--json``); logs, progress and errors go to stderr. Everything
that came from a feed or a page is made safe for the terminal first.

Exit statuses: 0 success (a run where some feeds failed is still a
success: each failure is reported and stored); 1 agg could not run (bad
config, unusable database); 2 bad usage; 75 another run holds the lock.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from aggregator import __version__
from aggregator.config import Config, ConfigError, load_config, resolve_config_path
from aggregator.store import Store, StoreError, StoryListing, describe_sqlite_error, to_db_time, utc_now
from aggregator.times import parse_since as since_moment
from aggregator.times import time_ago, time_until

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from aggregator.lock import LockHeld, RunLock
    from aggregator.pipeline import RunSummary

DEFAULT_DB = Path("data/agg.db")
EXIT_CANNOT_RUN = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75
SQLITE_MAX_INTEGER = 2**63 - 1
CLI_EPILOG = """\b
Exit statuses:
  0   success (a fetch where some feeds failed is still a success: each failure is listed)
  1   agg could not run: bad config, unusable database, a feed that does not work
  2   bad usage: unknown command or option, bad value, unreadable search query
  75  another run (agg fetch or agg daemon) holds the database's lock; try again later

\b
Shell completion (add to your shell's startup file):
  bash:  eval "$(_AGG_COMPLETE=bash_source agg)"
  zsh:   eval "$(_AGG_COMPLETE=zsh_source agg)"
  fish:  _AGG_COMPLETE=fish_source agg | source
"""

# C0/C1 control characters and ANSI escape sequences that a feed could use to
# rewrite the user's terminal; tabs and newlines are folded to spaces too.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_safe(text: Any, keep_newlines: bool = False) -> str:
    """``text`` with escape sequences and control characters removed."""
    text = _ANSI.sub("", "" if text is None else str(text))
    if keep_newlines:
        return "\n".join(_CONTROL.sub(" ", line) for line in text.split("\n"))
    return _CONTROL.sub(" ", text)


class Context:
    """What every command needs: where the config and database are, and how to talk."""

    def __init__(self, config_path: str | None, db_path: str | None, verbose: int, quiet: bool):
        self.config_path = resolve_config_path(config_path)
        self.db_path = Path(db_path or os.environ.get("AGG_DB") or DEFAULT_DB)
        self.verbose = verbose
        self.quiet = quiet

    # rich is imported on first use: the commands that print only plain lines (fetch under cron,
    # JSON output) then never pay its 25 ms of imports.
    # markup=False: a "[" in a feed's text or a path must print as itself, never as a style.
    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        return Console(soft_wrap=True, highlight=False, markup=False)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, markup=False)

    def config(self) -> Config:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            lines = "\n".join(f"  {p}" for p in exc.problems)
            fail(f"the config {exc.path} has problems, so nothing was done:\n{lines}")

    def stories_store(self) -> Store:
        """The database, read-only, for commands that show stories: they say on stderr what is in none yet."""
        store = self.store(readonly=True)
        waiting = store.count_ready_for_story()
        if waiting and not self.quiet:
            click.echo(f"agg: {waiting:,} {_reports(waiting)} waiting to be grouped into stories, so left out here; "
                       "the run in progress or the next one groups them, 'agg group' now", err=True)
        return store

    def store(self, readonly: bool = False) -> Store:
        """The database, closed when the command ends (however it ends)."""
        try:
            store = Store.open(self.db_path, readonly=readonly)
        except StoreError as exc:
            fail(str(exc))
        click.get_current_context().call_on_close(store.close)
        return store


class PositiveInt(click.IntRange):
    """An id or count of 1 or more, capped at SQLite's largest integer (a larger one would crash the query)."""

    def __init__(self) -> None:
        super().__init__(min=1)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        return min(super().convert(value, param, ctx), SQLITE_MAX_INTEGER)


class TerminalSafeFormatter(logging.Formatter):
    """Log lines quote feed content (URLs, server errors), so they are made terminal-safe like all output."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record), keep_newlines=True)


def _reports(count: int) -> str:
    return "report is" if count == 1 else "reports are"


def fail(message: str, status: int = EXIT_CANNOT_RUN) -> None:
    click.echo(f"agg: error: {message}", err=True)
    sys.exit(status)


def parse_since(value: str | None) -> datetime | None:
    """``--since 24h`` (a duration back from now) or an ISO date/time."""
    try:
        return since_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=CLI_EPILOG)
@click.option("--config", "config_path", metavar="PATH", help="feeds.yaml to use [env AGG_CONFIG; default ./feeds.yaml]")
@click.option("--db", "db_path", metavar="PATH", help="SQLite database [env AGG_DB; default data/agg.db]")
@click.option("-v", "--verbose", count=True, help="Debug logs on stderr (-vv for library logs too).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.version_option(__version__, prog_name="agg")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, db_path: str | None, verbose: int, quiet: bool) -> None:
    """agg: fetch news feeds and fold duplicate reports of one story into one.

    \b
    Examples:
      agg fetch                 fetch every feed in ./feeds.yaml into data/agg.db
      agg list --since 24h      stories of the last day, with their outlets
      agg show 12               one story and every report of it
      agg search strike         full-text search, one result per story
      agg serve                 read the stories in a browser at http://127.0.0.1:8080/
      agg feeds add https://example.com/ --tag news
      agg --config my.yaml --db my.db fetch --due
    """
    level = logging.WARNING
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if verbose < 2:
        for noisy in ("trafilatura", "htmldate", "courlan", "charset_normalizer", "asyncio", "urllib3"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    ctx.obj = Context(config_path, db_path, verbose, quiet)


pass_context = click.make_pass_decorator(Context)


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
    first run over many feeds: 1 ms a report; or a few hundred reports to
    place among tens of thousands stored, whose features are rebuilt), the
    run hands it, with the search index, to an 'agg group' in the
    background, which holds the database's lock until it is done; its log
    is the database's path plus '.group.log'. Until then those reports are
    in no story.

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


def _echo_json(data: Any) -> None:
    """One JSON document on a line of stdout (terminal-safe: every control character escaped)."""
    from aggregator.jsontext import json_text

    click.echo(json_text(data))


def _outlets_line(outlets: list[str], most: int = 4) -> str:
    return _safe_outlets_line([terminal_safe(o) for o in outlets[:most]], len(outlets))


def _safe_outlets_line(shown: list[str], outlets: int) -> str:
    """The first outlets' names (terminal-safe already), and how many more there are."""
    return ", ".join(shown) + (f" +{outlets - len(shown)}" if outlets > len(shown) else "")


TERMINAL_PAGE = 40
"""Stories ``agg list`` shows on a terminal unless told otherwise (--limit, --no-limit)."""
OUTLETS_TEXT_KEPT = 20_000
"""Outlet texts piped ``agg list`` keeps made (one per tuple of feeds) before it starts over."""


@cli.command(name="list")
@click.option("--since", metavar="WHEN", help="Only stories active since then: 24h, 7d, or a date.")
@click.option("--feed", metavar="URL|TITLE", help="Only stories with a report from this feed.")
@click.option("--tag", help="Only stories with a report from a feed with this tag.")
@click.option("--min-outlets", type=PositiveInt(), default=1, show_default=True, help="Only stories carried by N outlets or more.")
@click.option("--limit", type=PositiveInt(), metavar="N",
              help=f"At most N stories [default: {TERMINAL_PAGE} on a terminal, every story when piped "
                   "or with --json].")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N",
              help=f"Skip the N newest stories: the next page is --offset {TERMINAL_PAGE}.")
@click.option("--no-limit", is_flag=True, help="Every story, on a terminal too.")
@click.option("--all", "show_all", is_flag=True, help="Show every report under its story.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_context
def list_(ctx: Context, since: str | None, feed: str | None, tag: str | None, min_outlets: int,
          limit: int | None, offset: int, no_limit: bool, show_all: bool, as_json: bool) -> None:
    """List stories, newest activity first, with their report and outlet counts.

    On a terminal, a table of the 40 stories most recently active (the line
    under it says how many there are and how to see more); piped or with
    --json, every story, each printed as soon as it is read. --limit,
    --offset and --no-limit choose the stories in every form; --all adds
    each story's reports (with --json, every object has its reports).

    \b
    Piped, one story a line, its fields separated by tabs:
      story id, reports, outlets, last seen (ISO 8601 UTC: its newest report, the
      time the list is sorted by and --since filters on), title, outlets' names
    and with --all, after each story a line per report, starting with a tab:
      entry id (for 'agg show --entry'), outlet, title, link

    \b
    Examples:
      agg list
      agg list --offset 40           # the next page
      agg list --since 24h --min-outlets 3
      agg list --all --tag business
      agg list --json | jq .title
      agg list | cut -f1,5 | head
    """
    if limit and no_limit:
        raise click.UsageError("--limit and --no-limit contradict each other: pass one")
    on_terminal = sys.stdout.isatty() and not as_json
    if on_terminal and not limit and not no_limit:
        limit = TERMINAL_PAGE
    store = ctx.stories_store()
    if feed and not store.has_feed(feed):
        fail(f"no feed {terminal_safe(feed)!r} in {ctx.db_path}: give a feed's URL or title "
             "as 'agg feeds list' shows them", EXIT_USAGE)
    filters = {"since": parse_since(since), "feed": feed, "tag": tag, "min_outlets": min_outlets}
    if not (on_terminal or as_json or show_all):
        with _until_the_reader_stops():
            _print_story_lines(store, StoryListing(**filters, limit=limit, offset=offset))
        return
    stories = store.iter_stories(**filters, limit=limit, offset=offset, reports=show_all or as_json)
    if on_terminal:
        shown = _print_story_table(ctx, list(stories), show_all)
        _say_what_is_left(ctx, shown, offset, store.count_stories(**filters))
        return
    with _until_the_reader_stops(), closing(stories):
        if as_json:
            from aggregator.jsontext import json_text

            for story in stories:
                sys.stdout.write(json_text(_story_json(story)) + "\n")
        else:
            _print_story_reports(stories)
        sys.stdout.flush()


def _story_json(story: dict) -> dict:
    data = {key: story[key] for key in ("id", "title", "first_seen", "last_seen", "n_reports", "n_outlets")}
    data["outlets"] = story["outlets"]
    data["reports"] = [
        {k: r[k] for k in ("id", "outlet", "title", "link", "published", "rule", "score", "extract_status")}
        for r in story["reports"]
    ]
    return data


class _OutletsText(dict):
    """The outlets column of piped ``agg list`` for each tuple of feed ids, made once per tuple."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = {feed_id: terminal_safe(name) for feed_id, name in names.items()}

    def __missing__(self, feed_ids: tuple[int, ...]) -> str:
        text = self[feed_ids] = _safe_outlets_line([self.names.get(f, "?") for f in feed_ids[:99]], len(feed_ids))
        return text


def _print_story_lines(store: Store, listing: StoryListing) -> None:
    """The piped form of ``agg list`` without --all (see its help), a batch of stories at a time.

    The lines of a batch are made in one expression and written together (issue 17: 126,000
    stories); a printable title (most) has no control character, so nothing to make safe.
    """
    outlets = _OutletsText(store.outlet_names())
    write = sys.stdout.write
    with closing(store.iter_story_rows(listing, outlets.__getitem__)) as batches:
        for rows, outlets_of in batches:
            write("".join([f"{story_id}\t{reports}\t{n_outlets}\t{last_seen}\t"
                           f"{title if title.isprintable() else terminal_safe(title)}\t{outlets_of.get(story_id, '')}\n"
                           for story_id, reports, n_outlets, last_seen, title in rows]))
            if len(outlets) > OUTLETS_TEXT_KEPT:
                outlets.clear()
    sys.stdout.flush()


def _print_story_reports(stories: Iterator[dict]) -> None:
    """The piped form of ``agg list --all`` (see its help), written as the stories come."""
    write = sys.stdout.write
    for story in stories:
        write(f"{story['id']}\t{story['n_reports']}\t{story['n_outlets']}\t{story['last_seen']}\t"
              f"{terminal_safe(story['title'])}\t{_outlets_line(story['outlets'], 99)}\n")
        for report in story["reports"]:
            write(f"\t{report['id']}\t{terminal_safe(report['outlet'])}\t{terminal_safe(report['title'])}\t"
                  f"{terminal_safe(report['link'])}\n")


@contextmanager
def _until_the_reader_stops() -> Iterator[None]:
    """Output streamed to a pipe whose reader may stop early (``agg list | head``): that ends the command quietly."""
    try:
        yield
    except BrokenPipeError:
        # stdout pointed at nothing, so that the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _print_story_table(ctx: Context, stories: list[dict], show_all: bool) -> int:
    """The terminal form of ``agg list``; returns how many stories it showed.

    With ``show_all`` each report is a row of its own, one line under its story: its entry
    id, its title indented (cut short with an ellipsis rather than wrapped), its outlet and
    when it was published; the story's row then gives its counts instead of every outlet.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("ID", justify="right", style="dim", no_wrap=True)
    table.add_column("Story", overflow="fold", ratio=3)
    if not show_all:
        table.add_column("Reports", justify="right")
    table.add_column("Outlets", overflow="fold", ratio=2 if not show_all else 1)
    table.add_column("Last seen", no_wrap=True)
    for story in stories:
        title, seen = Text(terminal_safe(story["title"])), time_ago(story["last_seen"])
        if not show_all:
            table.add_row(str(story["id"]), title, str(story["n_reports"]),
                          Text(f"{story['n_outlets']}: {_outlets_line(story['outlets'])}"), seen)
            continue
        title.stylize("bold")
        reports, outlets = story["n_reports"], story["n_outlets"]
        table.add_row(str(story["id"]), title,
                      Text(f"{reports} report{'s' * (reports != 1)}, {outlets} outlet{'s' * (outlets != 1)}"), seen)
        for number, report in enumerate(story["reports"], start=1):
            table.add_row(
                str(report["id"]),
                Text("  · " + terminal_safe(report["title"]), style="dim", no_wrap=True, overflow="ellipsis"),
                Text(terminal_safe(report["outlet"]), style="dim", no_wrap=True, overflow="ellipsis"),
                Text(time_ago(report["published"] or report["first_seen"]), style="dim"),
                end_section=number == len(story["reports"]))
    ctx.out.print(table)
    return len(stories)


def _say_what_is_left(ctx: Context, shown: int, offset: int, total: int) -> None:
    """The line under the terminal's table: how many stories it shows of how many, and how to see the rest."""
    noun = "story" if total == 1 else "stories"
    if offset + shown >= total and not offset:
        line = f"{total:,} {noun}"
    elif shown:
        line = f"{offset + 1:,}-{offset + shown:,} of {total:,} {noun}"
    else:
        line = f"none past the first {offset:,} of {total:,} {noun}"
    if offset + shown < total:
        line += (f": the next {TERMINAL_PAGE} with --offset {offset + shown}, more at once with --limit N, "
                 "all with --no-limit")
    ctx.err.print(line, style="dim")


@cli.command()
@click.argument("story_id", type=PositiveInt())
@click.option("--entry", is_flag=True, help="ID is an entry's, not a story's: print the entry and its body.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def show(ctx: Context, story_id: int, entry: bool, as_json: bool) -> None:
    """Show a story with every report (outlet, title, time, URL, rule, score), its original source
    and the body of its representative report; with --entry, one entry and its extracted body.

    \b
    Examples:
      agg show 12            story 12 and all its reports
      agg show --entry 345   entry 345 with its extracted body
    """
    store = ctx.store(readonly=True)
    if entry:
        row = store.entry(story_id)
        if row is None:
            fail(f"no entry {story_id} (see 'agg list --all' for entry ids)")
        if as_json:
            _echo_json(row)
            return
        _print_entry(row)
        return
    story = store.story(story_id)
    if story is None:
        fail(f"no story {story_id} (see 'agg list' for story ids)")
    if as_json:
        _echo_json(story)
        return
    click.echo(f"Story {story['id']}: {terminal_safe(story['title'])}")
    click.echo(f"{story['n_reports']} reports from {story['n_outlets']} outlets, "
               f"first seen {story['first_seen']}, last {story['last_seen']}")
    original = next((r for r in story["reports"] if r["id"] == story.get("original_entry_id")), None)
    if original:
        credit = f"; the texts credit {terminal_safe(story['credited_outlet'])}" if story.get("credited_outlet") else ""
        click.echo(f"Original source: {terminal_safe(original['outlet'])} (earliest report){credit}")
    for report in story["reports"]:
        mark = "*" if original and report["id"] == original["id"] else " "
        score = f"{report['score']:.2f}" if report["score"] is not None else "-"
        click.echo(f"{mark} [{report['id']}] {report['published'] or report['first_seen']}  "
                   f"{terminal_safe(report['outlet'])}: {terminal_safe(report['title'])}")
        click.echo(f"      {terminal_safe(report['link'])}  rule={report['rule'] or '-'} score={score}")
    representative = story.get("representative_id")
    if representative and (row := store.entry(representative)) is not None:
        click.echo("")
        click.echo(f"Body of report {row['id']} ({terminal_safe(row['title'])}), "
                   f"from {row['text_source'] or '?'}, extraction {row['extract_status']}:")
        click.echo(terminal_safe(row["text"], keep_newlines=True))


def _print_entry(row: dict) -> None:
    click.echo(f"Entry {row['id']} (story {row['story_id']}): {terminal_safe(row['title'])}")
    click.echo(f"Link: {terminal_safe(row['link'])}")
    if row.get("canonical_url"):
        click.echo(f"Canonical: {terminal_safe(row['canonical_url'])}")
    click.echo(f"Published: {row['published'] or '?'}  Author: {terminal_safe(row['author'] or '?')}")
    click.echo(f"Body: from {row['text_source'] or '?'}, extraction {row['extract_status']}"
               + (f" ({terminal_safe(row['extract_error'])})" if row.get("extract_error") else ""))
    click.echo("")
    click.echo(terminal_safe(row["text"], keep_newlines=True))


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


# --- export and import (aggregator/export.py) --------------------------------

_output_option = click.option(
    "-o", "--output", default="-", show_default=True, metavar="FILE",
    help="Where to write; '-' is stdout. A file is replaced atomically (temporary file, then rename).")


def _story_window_options(default_since: str):
    def decorate(command):
        command = click.option("--min-outlets", type=PositiveInt(), default=1, show_default=True,
                               help="Only stories carried by N outlets or more.")(command)
        return click.option("--since", metavar="WHEN", default=default_since, show_default=True,
                            help="Only stories active since then: 24h, 7d, or a date.")(command)
    return decorate


def _feed_options(command):
    command = click.option("--title", metavar="TEXT", help="The feed's title [default: 'agg: one item per story'].")(command)
    return click.option("--feed-url", metavar="URL",
                        help="Where the file will be served, written into it as its own address.")(command)


def _write_export(output: str, data: bytes) -> None:
    from aggregator.export import write_atomic

    try:
        write_atomic(output, data)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")


@cli.group(name="export")
def export_group() -> None:
    """Write the subscriptions (OPML) or the stories (digest, JSON Feed, Atom).

    Story exports hold one item per story, linking every report of it.

    \b
    Examples:
      agg export opml -o subscriptions.opml
      agg export digest --since 24h --min-outlets 2 -o digest.json
      agg export atom --since 7d -o /var/www/agg.atom
    """


@export_group.command(name="opml")
@_output_option
@pass_context
def export_opml(ctx: Context, output: str) -> None:
    """OPML 2.0 of the feeds in feeds.yaml, a folder per feed's first tag.

    All of a feed's tags go into its category attribute, so 'agg import opml'
    gives them back. The site address (htmlUrl) comes from the database when
    there is one.

    \b
    Examples:
      agg export opml > subscriptions.opml
      agg export opml -o subscriptions.opml
    """
    from aggregator.export import build_opml

    config = ctx.config()
    rows = {row["url"]: row for row in ctx.store(readonly=True).feeds()} if ctx.db_path.exists() else {}
    _write_export(output, build_opml(config.feeds, rows, generated_at=utc_now()))


@export_group.command(name="digest")
@_story_window_options("24h")
@_output_option
@pass_context
def export_digest(ctx: Context, since: str, min_outlets: int, output: str) -> None:
    """A JSON digest of the stories: summary, original source and every report.

    The format is versioned and described in docs/digest.md
    (JSON Schema: docs/digest.schema.json).

    \b
    Examples:
      agg export digest
      agg export digest --since 7d --min-outlets 3 -o week.json
      agg export digest | jq '.stories[].title'
    """
    from aggregator.export import build_digest, json_bytes, load_stories

    window_start = parse_since(since)
    now = utc_now()
    stories = load_stories(ctx.stories_store(), since=window_start, min_outlets=min_outlets)
    document = build_digest(stories, since=window_start, until=now, min_outlets=min_outlets, generated_at=now)
    _write_export(output, json_bytes(document))


def _write_story_feed(ctx: Context, fmt: str, since: str, min_outlets: int, feed_url: str | None,
                      title: str | None, output: str) -> None:
    """The stories of the window as a feed for readers: ``fmt`` is "jsonfeed" or "atom"."""
    from aggregator.export import DEFAULT_FEED_TITLE, build_atom, build_json_feed, json_bytes, load_stories

    stories = load_stories(ctx.stories_store(), since=parse_since(since), min_outlets=min_outlets)
    title = title or DEFAULT_FEED_TITLE
    if fmt == "atom":
        data = build_atom(stories, generated_at=utc_now(), title=title, feed_url=feed_url)
    else:
        data = json_bytes(build_json_feed(stories, title=title, feed_url=feed_url))
    _write_export(output, data)


@export_group.command(name="jsonfeed")
@_story_window_options("7d")
@_feed_options
@_output_option
@pass_context
def export_jsonfeed(ctx: Context, since: str, min_outlets: int, feed_url: str | None, title: str | None,
                    output: str) -> None:
    """A JSON Feed 1.1 with one item per story, for any feed reader.

    \b
    Examples:
      agg export jsonfeed -o /var/www/agg.json --feed-url https://example.org/agg.json
      agg export jsonfeed --since 24h --min-outlets 2
    """
    _write_story_feed(ctx, "jsonfeed", since, min_outlets, feed_url, title, output)


@export_group.command(name="atom")
@_story_window_options("7d")
@_feed_options
@_output_option
@pass_context
def export_atom(ctx: Context, since: str, min_outlets: int, feed_url: str | None, title: str | None,
                output: str) -> None:
    """An Atom 1.0 feed with one entry per story, for any feed reader.

    \b
    Examples:
      agg export atom -o /var/www/agg.atom --feed-url https://example.org/agg.atom
      agg export atom --since 24h --min-outlets 2
    """
    _write_story_feed(ctx, "atom", since, min_outlets, feed_url, title, output)


@cli.group(name="import")
def import_group() -> None:
    """Add subscriptions from another feed reader to feeds.yaml.

    \b
    Examples:
      agg import opml subscriptions.opml --dry-run
      agg --config my.yaml import opml subscriptions.opml
    """


@import_group.command(name="opml")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Print what would be added; change nothing.")
@pass_context
def import_opml_command(ctx: Context, file: Any, dry_run: bool) -> None:
    """Add the feeds of an OPML file (OPML 1.0 or 2.0) to feeds.yaml.

    Folders become tags. Existing feeds, comments and order are kept; feeds
    already there, repeated or not http(s) are skipped and listed on stderr.
    feeds.yaml is created if missing. A malformed file changes nothing.

    \b
    Examples:
      agg import opml subscriptions.opml --dry-run
      agg import opml subscriptions.opml
      agg --config my.yaml import opml - < export.opml
    """
    from aggregator.export import OpmlError, import_opml
    from aggregator.feeds import FeedsError

    try:
        plan = import_opml(ctx.config_path, file.read(), dry_run=dry_run)
    except OpmlError as exc:
        fail(f"{file.name} cannot be imported: {terminal_safe(exc)}; {ctx.config_path} was not changed")
    except FeedsError as exc:
        fail(terminal_safe(exc))
    except ConfigError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"cannot add feeds to {exc.path}, so nothing was done:\n{lines}")
    except OSError as exc:
        fail(f"cannot write {ctx.config_path}: {exc.strerror or exc}")
    verb = "would add" if dry_run else "added"
    for feed in plan.added:
        tags = f"\t[{', '.join(terminal_safe(t) for t in feed.tags)}]" if feed.tags else ""
        click.echo(f"{verb}\t{terminal_safe(feed.url)}\t{terminal_safe(feed.title or '')}{tags}")
    for feed, reason in plan.skipped:
        click.echo(f"agg: skipped {terminal_safe(feed.url)}: {terminal_safe(reason)}", err=True)
    if not ctx.quiet:
        target = "" if dry_run else f" to {ctx.config_path}"
        click.echo(f"{verb} {len(plan.added)} feeds{target}, skipped {len(plan.skipped)}", err=True)


# ---------------------------------------------------------------------------
# Subscriptions, search, stats (issue 9)
# ---------------------------------------------------------------------------


@contextmanager
def _progress_bar(ctx: Context, stage: Literal["fetch", "group"]) -> Iterator[Any]:
    """The progress bar of ``agg fetch`` or ``agg group`` on a terminal; None (no bar) when piped,
    with --quiet or with -v."""
    if not _shows_progress(ctx):
        yield None
        return
    from aggregator.progress import FetchProgress, GroupingProgress

    with (FetchProgress if stage == "fetch" else GroupingProgress)(ctx.err) as progress:
        yield progress


def _shows_progress(ctx: Context) -> bool:
    return not (ctx.quiet or ctx.verbose) and sys.stderr.isatty()


def _optional_config(ctx: Context) -> Config | None:
    """The config when the file exists (it must then be valid), else None."""
    return ctx.config() if ctx.config_path.exists() else None


def _typed_url(url: str) -> str:
    """A URL or local path typed on the command line, as a feed URL."""
    from aggregator.config import validate_feed_url

    try:
        return validate_feed_url(url, Path.cwd())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None


@cli.group(name="feeds")
def feeds_group() -> None:
    """Manage the subscriptions in feeds.yaml: list, add, remove, check.

    add and remove edit feeds.yaml in place: comments, blank lines and the
    order of the other feeds stay as they are.

    \b
    Examples:
      agg feeds list
      agg feeds add https://example.com/ --tag news
      agg feeds check https://example.com/feed.xml
      agg feeds remove https://example.com/feed.xml
    """


@feeds_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_context
def feeds_list(ctx: Context, as_json: bool) -> None:
    """List the subscriptions, with their state in the database when there is one.

    States: ok; error (the last fetch failed: the Problem column says why);
    failing (failed many times in a row: still tried, less often); disabled
    (the server said it is gone, or feeds.yaml says enabled: false); never
    fetched. On a terminal, errors are in red (unless NO_COLOR is set).

    \b
    Examples:
      agg feeds list
      agg feeds list | grep failing
      agg feeds list --json | jq -r 'select(.entries == 0) | .url'
    """
    from aggregator.feeds import subscriptions

    config = ctx.config()
    rows = subscriptions(config, ctx.store(readonly=True) if ctx.db_path.exists() else None)
    if as_json:
        for row in rows:
            _echo_json(row)
    elif sys.stdout.isatty():
        _print_feeds_table(ctx, rows)
    else:
        for row in rows:
            click.echo("\t".join(terminal_safe(value) for value in (
                row["url"], row["state"], row["entries"] if row["entries"] is not None else "",
                row["last_fetch_at"] or "", row["title"] or "", ",".join(row["tags"]))))


_STATE_STYLES = {"ok": "green", "error": "red", "failing": "bold red", "disabled": "dim red"}


def _state_text(state: str) -> Text:
    """A feed's state in its colour on a terminal (rich leaves colours out under NO_COLOR)."""
    from rich.text import Text

    return Text(state, style=_STATE_STYLES.get(state, "yellow"))


def _print_feeds_table(ctx: Context, rows: list[dict]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("Feed", overflow="fold", ratio=3, min_width=24)
    table.add_column("State", no_wrap=True)
    table.add_column("Entries", justify="right")
    table.add_column("Newest", no_wrap=True)
    table.add_column("Fetched", no_wrap=True)
    table.add_column("Problem", overflow="fold", ratio=2)
    for row in rows:
        feed = Text.assemble((terminal_safe(row["title"] or row["url"]), "bold"))
        if row["tags"]:
            feed.append(" " + " ".join(f"#{terminal_safe(tag)}" for tag in row["tags"]), style="cyan")
        if row["title"]:
            feed.append("\n" + terminal_safe(row["url"]), style="dim")
        problem = row["last_error"] if row["state"] != "ok" else None
        if row["moved_to"]:
            problem = f"moved to {row['moved_to']}: update feeds.yaml"
        table.add_row(feed, _state_text(row["state"]),
                      "" if row["entries"] is None else str(row["entries"]),
                      time_ago(row["newest_entry"]) if row["newest_entry"] else "",
                      time_ago(row["last_fetch_at"]) if row["last_fetch_at"] else "",
                      Text(terminal_safe(problem or ""), style="red" if row["last_error"] else "yellow"))
    ctx.out.print(table)
    with_errors = sum(row["state"] in ("error", "failing") for row in rows)
    ctx.err.print(f"{len(rows)} feeds in {ctx.config_path}" + (f", {with_errors} with errors" if with_errors else ""),
                  style="red" if with_errors else "dim")


@feeds_group.command(name="add")
@click.argument("url")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the feed (repeat for several tags).")
@click.option("--title", help="The outlet's name [default: the feed's own title].")
@pass_context
def feeds_add(ctx: Context, url: str, tags: tuple[str, ...], title: str | None) -> None:
    """Subscribe to a feed, or to the feed of a site's home page.

    URL may be a feed, or a web page: then agg looks for the feeds the page
    links to (<link rel="alternate">, RSS, Atom or JSON Feed), else tries
    common paths (/feed, /rss.xml, /atom.xml, ...). The feed is fetched to
    check it works before it is added at the end of feeds.yaml (created if
    missing). A feed already subscribed is refused. Prints the feed added
    on stdout.

    \b
    Examples:
      agg feeds add https://example.com/
      agg feeds add https://example.com/rss.xml --tag business --tag uk
      agg feeds add ./local-feed.xml --title "Local test feed"
    """
    from aggregator import feeds

    config = _optional_config(ctx)
    target = _typed_url(url)
    if config is not None and (existing := config.feed(target)):
        fail(feeds.already_subscribed(url, existing, ctx.config_path))
    try:
        found = feeds.discover_feeds(target, config.settings if config else None)
        chosen = found.feeds[0]
        feed_url = chosen.moved_to or chosen.url
        feeds.add_subscription(ctx.config_path, feed_url, title=title or chosen.title, tags=list(tags))
    except feeds.FeedsError as exc:
        fail(terminal_safe(exc))
    except OSError as exc:
        fail(f"cannot write {ctx.config_path}: {exc.strerror or exc}")
    added_title = title or chosen.title or ""
    click.echo(f"added\t{terminal_safe(feed_url)}\t{terminal_safe(added_title)}")
    if not ctx.quiet:
        newest = f", newest {time_ago(to_db_time(chosen.newest))}" if chosen.newest else ""
        click.echo(f"agg: found by {found.found_by}: {chosen.format}, {chosen.entries} entries{newest}; "
                   f"added to {ctx.config_path}", err=True)
        for other in found.feeds[1:]:
            click.echo(f"agg: the page also offers {terminal_safe(other.url)} ({other.format}, "
                       f"{terminal_safe(other.title or 'untitled')}): 'agg feeds add' it too if you want it",
                       err=True)


@feeds_group.command(name="remove")
@click.argument("url")
@pass_context
def feeds_remove(ctx: Context, url: str) -> None:
    """Unsubscribe: take a feed out of feeds.yaml (by URL, or by its exact title).

    The feed's own comment lines go with it; everything else in the file
    stays. Entries already stored stay in the database. Prints the feed
    removed on stdout.

    \b
    Examples:
      agg feeds remove https://example.com/rss.xml
      agg feeds remove "The Daily Ledger"
    """
    from aggregator import feeds

    try:
        removed = feeds.remove_subscription(ctx.config_path, url)
    except feeds.FeedsError as exc:
        fail(terminal_safe(exc))
    except ConfigError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"the config {exc.path} has problems, so nothing was done:\n{lines}")
    except OSError as exc:
        fail(f"cannot write {ctx.config_path}: {exc.strerror or exc}")
    click.echo(f"removed\t{terminal_safe(removed.url)}\t{terminal_safe(removed.title or '')}")
    if not ctx.quiet:
        click.echo(f"agg: removed from {ctx.config_path}; its stored entries stay in {ctx.db_path}", err=True)


@feeds_group.command(name="check")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def feeds_check(ctx: Context, url: str, as_json: bool) -> None:
    """Fetch a feed and report what it is: status, format, entries, newest entry, conditional GET.

    Conditional GET is tried by fetching again with the ETag and
    Last-Modified the server gave: "works" means it answered 304 Not
    Modified, so agg's frequent checks of it cost almost nothing. Exit
    status 1 when the URL is not a working feed (for a web page, the feeds
    it links to are listed).

    \b
    Examples:
      agg feeds check https://example.com/feed.xml
      agg feeds check https://example.com/ --json | jq .advertised
    """
    from aggregator import feeds

    config = _optional_config(ctx)
    check = feeds.check_feed(_typed_url(url), config.settings if config else None)
    if as_json:
        data = dict(vars(check), usable=check.usable, newest=to_db_time(check.newest))
        _echo_json(data)
    else:
        for label, value in _check_lines(check):
            click.echo(f"{label + ':':<17} {terminal_safe(value)}")
    if not check.usable:
        sys.exit(EXIT_CANNOT_RUN)


def _check_lines(check: Any) -> list[tuple[str, str]]:
    from aggregator.stats import human_bytes

    answer = f"HTTP {check.status}" if check.status else "no answer"
    if check.error:
        answer += f": {check.error}"
    elif check.status:
        answer += f", {check.content_type or 'no content type'}, {human_bytes(check.bytes)} in {check.seconds:.2f} s"
    lines = [("URL", check.url), ("Answer", answer)]
    if check.final_url != check.url:
        lines.append(("Final URL", check.final_url))
    if check.moved_to:
        lines.append(("Moved", f"permanently to {check.moved_to}: subscribe to that URL"))
    if check.format:
        lines.append(("Format", check.format + (f", titled {check.title!r}" if check.title else "")))
        newest = (f", newest {check.newest:%Y-%m-%d %H:%M} UTC ({time_ago(to_db_time(check.newest))})"
                  if check.newest else ", none dated")
        lines.append(("Entries", f"{check.entries}{newest if check.entries else ''}"))
    if check.is_html:
        lines.append(("Feeds it links to", ", ".join(check.advertised) or "none (try 'agg feeds add' on it)"))
    if check.problem:
        lines.append(("Problem", check.problem))
    if check.conditional_get:
        validators = " and ".join(name for name, value in (("ETag", check.etag),
                                                           ("Last-Modified", check.last_modified)) if value)
        meaning = {"works": f"works ({validators} → 304 Not Modified)",
                   "ignored": f"ignored (the server sends {validators} but answers 200 with the whole feed)",
                   "not offered": "not offered (no ETag or Last-Modified)"}
        lines.append(("Conditional GET", meaning.get(check.conditional_get, check.conditional_get)))
    lines.append(("Verdict", "works" if check.usable else "does not work as a feed"))
    return lines


@cli.command(name="search")
@click.argument("query", nargs=-1, required=True)
@click.option("--since", metavar="WHEN", help="Only reports published since then: 24h, 7d, or a date.")
@click.option("--limit", type=PositiveInt(), default=20, show_default=True, metavar="N", help="At most N stories.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_context
def search_command(ctx: Context, query: tuple[str, ...], since: str | None, limit: int, as_json: bool) -> None:
    """Full-text search over titles and article texts: one result per story, best first.

    Words are matched whole, in any order, with their other forms (strike
    finds strikes). FTS5 syntax works too: "a phrase", AND, OR, NOT (in
    capitals), prefix*, title:word. Each story appears once, as its
    best-ranked matching report (bm25), with the match highlighted.

    \b
    Examples:
      agg search port strike
      agg search '"interest rates" NOT mortgage' --since 7d
      agg search 'title:merger' --json | jq .story_id
    """
    from aggregator.search import SearchQueryError, marked_html, search, with_markers

    store = ctx.store(readonly=True)
    try:
        hits = search(store, " ".join(query), since=parse_since(since), limit=limit)
    except SearchQueryError as exc:
        fail(terminal_safe(exc), EXIT_USAGE)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        for hit in hits:
            data = dict(vars(hit), title=with_markers(hit.title), snippet=with_markers(hit.snippet),
                        snippet_html=marked_html(hit.snippet))
            _echo_json(data)
    elif sys.stdout.isatty():
        _print_hits(ctx, hits)
    else:
        for hit in hits:
            click.echo("\t".join(terminal_safe(value) for value in (
                hit.story_id or "", hit.entry_id, hit.published, hit.outlet,
                with_markers(hit.title), with_markers(hit.snippet))))
    waiting = store.entries_not_indexed()
    if waiting and not ctx.quiet:
        click.echo(f"agg: {waiting} entries are not searchable yet: the index is brought up to date "
                   "at the end of each 'agg fetch'", err=True)


def _styled(marked: str, style: str = "") -> Text:
    from rich.text import Text

    from aggregator.search import split_matches

    text = Text(style=style)
    for part, is_match in split_matches(marked):
        text.append(terminal_safe(part), style="bold yellow" if is_match else None)
    return text


def _print_hits(ctx: Context, hits: list[Any]) -> None:
    from rich.text import Text

    for hit in hits:
        line = Text.assemble((f"{hit.story_id or '-':>5}  ", "dim"), _styled(hit.title, "bold"))
        ctx.out.print(line)
        about = f"{terminal_safe(hit.outlet)} · {time_ago(hit.published)}"
        if hit.story_reports > 1:
            about += f" · story of {hit.story_reports} reports from {hit.story_outlets} outlets"
        if hit.matching_reports > 1:
            about += f", {hit.matching_reports} of them match"
        ctx.out.print(Text("       " + about, style="dim"))
        ctx.out.print(Text("       ").append_text(_styled(hit.snippet)))
        ctx.out.print()
    ctx.err.print(f"{len(hits)} {'story' if len(hits) == 1 else 'stories'}"
                  + (" (see 'agg show ID')" if hits else ""), style="dim")


@cli.command(name="stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def stats_command(ctx: Context, as_json: bool) -> None:
    """Numbers about the database: feeds by state, entries, stories, folding, extraction, size.

    "Reports folded" is how many reports a story gathers on average, and
    the share of grouped entries that joined an existing story rather than
    starting one. The extraction rate counts the article pages tried.

    \b
    Examples:
      agg stats
      agg stats --json | jq .extraction_success_rate
    """
    from aggregator.stats import collect, describe

    store = ctx.store(readonly=True)
    try:
        configured = [feed.url for feed in load_config(ctx.config_path).feeds]
    except ConfigError:
        configured = None  # the numbers come from the database; the config only adds a detail
    stats = collect(store, configured)
    if as_json:
        _echo_json(stats.as_json())
        return
    from rich.text import Text

    lines = describe(stats)
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        ctx.out.print(Text.assemble((f"{label + ':':<{width}} ", "bold"), value))
    ctx.err.print(f"{ctx.db_path}", style="dim")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but this machine warns: there is no authentication.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--db", "db_path", metavar="PATH", help="The database to read (the same as 'agg --db PATH serve').")
@pass_context
def serve(ctx: Context, host: str, port: int, db_path: str | None) -> None:
    """Read the stories in a browser: a local web reader over the database, read-only.

    Pages: the stories (with the filters of 'agg list'), each story with every
    report and its original source, full-text search, and the feeds' health
    ('agg status'). Keys: j/k next/previous, o open, / search. It only reads,
    so it keeps working while 'agg fetch' or 'agg daemon' writes. There is no
    authentication: it listens on 127.0.0.1 unless told otherwise.

    \b
    Examples:
      agg serve                              http://127.0.0.1:8080/
      agg serve --db data/demo/agg.db --port 8000
      agg serve --host 0.0.0.0               every address: anyone who can reach it reads everything
    """
    from aggregator.web.safety import exposure_warning
    from aggregator.web.app import serve as serve_reader

    if db_path:
        ctx.db_path = Path(db_path)
    ctx.store(readonly=True)  # a missing or unusable database is reported now, not on the first page
    warning = exposure_warning(host, port)
    if warning:
        click.secho(f"agg: {warning}", err=True, fg="red", bold=True)
    shown_host = f"[{host}]" if ":" in host else host
    if not ctx.quiet:
        click.echo(f"agg: serving {ctx.db_path} read-only at http://{shown_host}:{port}/ (Ctrl-C stops)", err=True)
    serve_reader(ctx.db_path, host, port, verbose=bool(ctx.verbose))


@cli.command(name="eval-dedup")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "uci"]), default="jsonl", show_default=True,
              help="jsonl: id, title, text, url, source, published, gold story; uci: the UCI headlines CSV.")
@click.option("--orders", type=click.IntRange(0, 1000), default=0, metavar="N",
              help="Also group the file in N shuffled orders of arrival (the same N orders every time) and "
                   "print the mean and lowest figures.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def eval_dedup(ctx: Context, file: Path, fmt: str, orders: int, as_json: bool) -> None:
    """Group a labelled FILE with the pipeline's story grouping and score it against its gold stories.

    Prints pairwise and B-cubed precision/recall/F1, gold and predicted story
    counts, and seconds. Thresholds come from the config's dedup: block when
    the config exists. Reports without a time are placed as fetched with the
    dated report before them in the file. Lines without an id or a text are
    counted in a warning on stderr.

    A labelled file often lists each story's reports together, an order no
    run of feeds brings them in, and grouping is incremental: --orders N
    also groups it in N shuffled orders of arrival (reports with times still
    come in time order; the shuffle decides among those of one time and
    the undated) and prints the mean and the lowest of each figure.

    \b
    Examples:
      agg eval-dedup tests/fixtures/dedup/stories.jsonl
      agg eval-dedup ../shared/data/stories-dev/allsides.jsonl --orders 8
      agg eval-dedup --format uci ../shared/data/headlines/uci-news-aggregator.head6366.csv --json
    """
    from aggregator.evaluate import evaluate_file, format_result

    config = _optional_config(ctx)
    try:
        result = evaluate_file(file, fmt=fmt, settings=config.settings.dedup if config else None, orders=orders)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except (ValueError, KeyError) as exc:
        fail(f"cannot read {file} as {fmt}: {terminal_safe(exc)}")
    for warning in result.warnings:
        click.echo(f"warning: {terminal_safe(str(file))}: {warning}", err=True)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(format_result(result))


@contextmanager
def _start_up() -> Iterator[None]:
    """A command's imports and config reading without the cyclic garbage collector, their objects then frozen.

    They are ~100k objects that live until the command ends, and the collector
    walked them over and over as they were made: 55-80 ms before the first
    request of an all-304 ``agg fetch`` of 1,000 feeds (bench/fetch_scale.py).
    Frozen, they are not walked again until the command ends either.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():  # else the process manages freezing itself: leave it be
            gc.freeze()
            click.get_current_context().call_on_close(gc.unfreeze)  # a caller in this process collects as before
        if collecting:
            gc.enable()


def main() -> None:
    # Tearing down the interpreter walks every object of every module once more (~80 ms after
    # `agg fetch`); frozen, they are left to the OS, which frees the whole process at once. By
    # then the database, the lock, the logs and stdout are all closed or flushed.
    atexit.register(gc.freeze)
    cli(prog_name="agg")


if __name__ == "__main__":
    main()
