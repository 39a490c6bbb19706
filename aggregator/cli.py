"""The ``agg`` command line: a thin shell over the library API.

Data goes to stdout (a table on a terminal, plain lines when piped, JSON
lines with ``--json``); logs, progress and errors go to stderr. Everything
that came from a feed or a page is made safe for the terminal first.

Exit statuses: 0 success (a run where some feeds failed is still a
success: each failure is reported and stored); 1 agg could not run (bad
config, unusable database); 2 bad usage; 75 another run holds the lock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aggregator import __version__
from aggregator.config import Config, ConfigError, load_config, parse_duration, resolve_config_path
from aggregator.store import Store, StoreError, from_db_time, utc_now

DEFAULT_DB = Path("data/agg.db")
EXIT_CANNOT_RUN = 1
EXIT_LOCKED = 75

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
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def config(self) -> Config:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            lines = "\n".join(f"  {p}" for p in exc.problems)
            fail(f"the config {exc.path} has problems, so nothing was done:\n{lines}")

    def store(self, readonly: bool = False) -> Store:
        try:
            return Store.open(self.db_path, readonly=readonly)
        except StoreError as exc:
            fail(str(exc))


def fail(message: str, status: int = EXIT_CANNOT_RUN) -> None:
    click.echo(f"agg: error: {message}", err=True)
    sys.exit(status)


def parse_since(value: str | None) -> datetime | None:
    """``--since 24h`` (a duration back from now) or an ISO date/time."""
    if not value:
        return None
    try:
        return utc_now() - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a duration (24h, 7d) nor a date (2026-11-28)") from None
    return moment if moment.tzinfo else moment.astimezone()


def time_ago(value: str | None, now: datetime | None = None) -> str:
    """``2 h ago``-style age of a stored time."""
    moment = from_db_time(value)
    if moment is None:
        return "?"
    seconds = max(0, int(((now or utc_now()) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
      agg --config my.yaml --db my.db fetch --due
    """
    level = logging.WARNING
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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
@pass_context
def fetch(ctx: Context, due: bool, concurrency: int | None, re_extract: bool) -> None:
    """Fetch the feeds, extract new articles, group stories, store everything.

    Ends with a summary line; each failed feed is listed with its reason.
    Exit status 0 when every feed was tried, even if some failed.

    \b
    Examples:
      agg fetch
      agg fetch --due --quiet        # from cron: silent unless something fails
      agg fetch --concurrency 50
    """
    from aggregator.pipeline import describe, run

    config = ctx.config()
    store = ctx.store()
    try:
        summary = run(config, store, due_only=due, concurrency=concurrency, re_extract=re_extract)
    except StoreError as exc:
        fail(str(exc))
    for outcome in summary.failures:
        click.echo(f"agg: {terminal_safe(outcome.url)}: {terminal_safe(outcome.error)}", err=True)
    if not ctx.quiet:
        click.echo(describe(summary), err=True)


def _outlets_line(outlets: list[str], most: int = 4) -> str:
    shown = ", ".join(terminal_safe(o) for o in outlets[:most])
    return shown + (f" +{len(outlets) - most}" if len(outlets) > most else "")


@cli.command(name="list")
@click.option("--since", metavar="WHEN", help="Only stories active since then: 24h, 7d, or a date.")
@click.option("--feed", metavar="URL|TITLE", help="Only stories with a report from this feed.")
@click.option("--tag", help="Only stories with a report from a feed with this tag.")
@click.option("--min-outlets", type=click.IntRange(1), default=1, show_default=True, help="Only stories carried by N outlets or more.")
@click.option("--limit", type=click.IntRange(1), metavar="N", help="At most N stories.")
@click.option("--all", "show_all", is_flag=True, help="Show every report under its story.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_context
def list_(ctx: Context, since: str | None, feed: str | None, tag: str | None, min_outlets: int,
          limit: int | None, show_all: bool, as_json: bool) -> None:
    """List stories, newest activity first, with their report and outlet counts.

    \b
    Examples:
      agg list
      agg list --since 24h --min-outlets 3
      agg list --all --tag business
      agg list --json | jq .title
    """
    store = ctx.store(readonly=True)
    stories = store.stories(since=parse_since(since), feed=feed, tag=tag, min_outlets=min_outlets, limit=limit)
    if show_all or as_json:
        for story in stories:
            story["reports"] = (store.story(story["id"]) or {}).get("reports", [])
    if as_json:
        for story in stories:
            click.echo(json.dumps(_story_json(story, show_all), ensure_ascii=False))
        return
    if sys.stdout.isatty():
        _print_story_table(ctx, stories, show_all)
        return
    for story in stories:
        click.echo(f"{story['id']}\t{story['n_reports']}\t{story['n_outlets']}\t{story['last_seen']}\t"
                   f"{terminal_safe(story['title'])}\t{_outlets_line(story['outlets'], 99)}")
        if show_all:
            for report in story["reports"]:
                click.echo(f"\t{report['id']}\t{terminal_safe(report['outlet'])}\t{terminal_safe(report['title'])}\t"
                           f"{terminal_safe(report['link'])}")


def _story_json(story: dict, with_reports: bool) -> dict:
    data = {key: story[key] for key in ("id", "title", "first_seen", "last_seen", "n_reports", "n_outlets")}
    data["outlets"] = story["outlets"]
    data["reports"] = [
        {k: r[k] for k in ("id", "outlet", "title", "link", "published", "rule", "score", "extract_status")}
        for r in story.get("reports", [])
    ]
    return data


def _print_story_table(ctx: Context, stories: list[dict], show_all: bool) -> None:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("ID", justify="right", style="dim")
    table.add_column("Story", overflow="fold", ratio=3)
    table.add_column("Reports", justify="right")
    table.add_column("Outlets", overflow="fold", ratio=2)
    table.add_column("First seen", no_wrap=True)
    for story in stories:
        title = Text(terminal_safe(story["title"]))
        if show_all:
            for report in story["reports"]:
                title.append(f"\n  · {terminal_safe(report['outlet'])}: {terminal_safe(report['title'])}", style="dim")
        table.add_row(str(story["id"]), title, str(story["n_reports"]),
                      Text(f"{story['n_outlets']}: {_outlets_line(story['outlets'])}"), time_ago(story["first_seen"]))
    ctx.out.print(table)
    ctx.err.print(f"{len(stories)} stories", style="dim")


@cli.command()
@click.argument("story_id", type=int)
@click.option("--entry", is_flag=True, help="ID is an entry's, not a story's: print the entry and its body.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def show(ctx: Context, story_id: int, entry: bool, as_json: bool) -> None:
    """Show a story with every report (outlet, title, time, URL, rule, score) and its original source.

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
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
            return
        _print_entry(row)
        return
    story = store.story(story_id)
    if story is None:
        fail(f"no story {story_id} (see 'agg list' for story ids)")
    if as_json:
        click.echo(json.dumps(story, ensure_ascii=False, default=str))
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


def main() -> None:
    cli(prog_name="agg")


if __name__ == "__main__":
    main()
