"""``agg feeds`` and ``agg import``: the subscriptions in feeds.yaml."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from aggregator.cli.app import (
    EXIT_CANNOT_RUN,
    Context,
    _echo_json,
    _optional_config,
    _state_text,
    _typed_url,
    cli,
    fail,
    pass_context,
    terminal_safe,
)
from aggregator.config import ConfigError
from aggregator.store import to_db_time
from aggregator.times import time_ago


@contextmanager
def _editing_config(ctx: Context, problems: str) -> Iterator[None]:
    """An edit of feeds.yaml, whose failures are said one way: ``problems`` opens the message of a config with
    problems (``{path}`` is its path)."""
    from aggregator.feeds import FeedsError

    try:
        yield
    except FeedsError as exc:
        fail(terminal_safe(exc))
    except ConfigError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"{problems.format(path=exc.path)}, so nothing was done:\n{lines}")
    except OSError as exc:
        fail(f"cannot write {ctx.config_path}: {exc.strerror or exc}")


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

    with _editing_config(ctx, "cannot add feeds to {path}"):
        try:
            plan = import_opml(ctx.config_path, file.read(), dry_run=dry_run)
        except OpmlError as exc:
            fail(f"{file.name} cannot be imported: {terminal_safe(exc)}; {ctx.config_path} was not changed")
    verb = "would add" if dry_run else "added"
    for feed in plan.added:
        tags = f"\t[{', '.join(terminal_safe(t) for t in feed.tags)}]" if feed.tags else ""
        click.echo(f"{verb}\t{terminal_safe(feed.url)}\t{terminal_safe(feed.title or '')}{tags}")
    for feed, reason in plan.skipped:
        click.echo(f"agg: skipped {terminal_safe(feed.url)}: {terminal_safe(reason)}", err=True)
    if not ctx.quiet:
        target = "" if dry_run else f" to {ctx.config_path}"
        click.echo(f"{verb} {len(plan.added)} feeds{target}, skipped {len(plan.skipped)}", err=True)


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

    with _editing_config(ctx, "the config {path} has problems"):
        removed = feeds.remove_subscription(ctx.config_path, url)
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
