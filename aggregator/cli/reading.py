"""``agg list``, ``agg show``, ``agg search`` and ``agg stats``: reading the stories."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli.app import (
    EXIT_USAGE,
    Context,
    PositiveInt,
    _echo_json,
    _outlets_line,
    _safe_outlets_line,
    cli,
    fail,
    parse_since,
    pass_context,
    terminal_safe,
)
from aggregator.config import ConfigError, load_config
from aggregator.store import Store, StoreError, StoryListing, feed_ids
from aggregator.times import time_ago

if TYPE_CHECKING:
    from rich.text import Text

TERMINAL_PAGE = 40
"""Stories ``agg list`` shows on a terminal unless told otherwise (--limit, --no-limit)."""
OUTLETS_TEXT_KEPT = 20_000
"""Outlet texts piped ``agg list`` keeps made (one per distinct list of feeds) before it starts over."""


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
    """The outlets column of piped ``agg list`` for each story's ``outlet_feeds``, made once per distinct value."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = {feed_id: terminal_safe(name) for feed_id, name in names.items()}

    def __missing__(self, outlet_feeds: str) -> str:
        ids = feed_ids(outlet_feeds)
        text = self[outlet_feeds] = _safe_outlets_line([self.names.get(f, "?") for f in ids[:99]], len(ids))
        return text


def _print_story_lines(store: Store, listing: StoryListing) -> None:
    """The piped form of ``agg list`` without --all (see its help), a batch of stories at a time.

    The lines of a batch are made in one expression and written together (issue 17: 126,000
    stories); a printable title (most) has no control character, so nothing to make safe.
    """
    outlets = _OutletsText(store.outlet_names())
    write = sys.stdout.write
    with closing(store.iter_story_rows(listing)) as batches:
        for rows in batches:
            write("".join([f"{story_id}\t{reports}\t{n_outlets}\t{last_seen}\t"
                           f"{title if title.isprintable() else terminal_safe(title)}\t{outlets[outlet_feeds]}\n"
                           for story_id, reports, n_outlets, last_seen, title, outlet_feeds in rows]))
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
