"""The ``agg`` group and what its commands share: the context (config, database, consoles), terminal-safe
text, JSON output, progress bars, the exit statuses and ``main``.

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from aggregator import __version__
from aggregator.config import Config, ConfigError, load_config, resolve_config_path
from aggregator.store import Store, StoreError
from aggregator.times import parse_since as since_moment

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


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




def _echo_json(data: Any) -> None:
    """One JSON document on a line of stdout (terminal-safe: every control character escaped)."""
    from aggregator.jsontext import json_text

    click.echo(json_text(data))


def _outlets_line(outlets: list[str], most: int = 4) -> str:
    return _safe_outlets_line([terminal_safe(o) for o in outlets[:most]], len(outlets))


def _safe_outlets_line(shown: list[str], outlets: int) -> str:
    """The first outlets' names (terminal-safe already), and how many more there are."""
    return ", ".join(shown) + (f" +{outlets - len(shown)}" if outlets > len(shown) else "")


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


_STATE_STYLES = {"ok": "green", "error": "red", "failing": "bold red", "disabled": "dim red"}


def _state_text(state: str) -> Text:
    """A feed's state in its colour on a terminal (rich leaves colours out under NO_COLOR)."""
    from rich.text import Text

    return Text(state, style=_STATE_STYLES.get(state, "yellow"))


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
