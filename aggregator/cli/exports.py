"""``agg export``: subscriptions as OPML, stories as a JSON digest, a JSON Feed or Atom."""

from __future__ import annotations

import click

from aggregator.cli.app import (
    Context,
    PositiveInt,
    cli,
    fail,
    parse_since,
    pass_context,
)
from aggregator.store import utc_now

# --- export and import (aggregator/export) ------------------------------------

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
    from aggregator.export import (
        DEFAULT_FEED_TITLE,
        build_atom,
        build_json_feed,
        json_bytes,
        load_stories,
    )

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
