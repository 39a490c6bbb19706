"""Subscriptions: adding, removing, discovering and checking feeds.

- :func:`check_feed` fetches one URL and says what it is: HTTP status,
  format, entry count, newest entry, and whether conditional GET works.
- :func:`discover_feeds` turns a URL that may be a site's home page into
  the feeds it offers: the URL itself if it is a feed, else the page's
  ``<link rel="alternate">`` feeds, else the first of the common feed paths
  (``/feed``, ``/rss.xml``, …) that answers with a feed.
- :func:`add_subscription`, :func:`append_feeds` (also used by OPML import)
  and :func:`remove_subscription` edit feeds.yaml. A block-style feeds list is edited line by line, so every other line
  (comments, blank lines, order, quoting) stays exactly as written; each
  edit is validated with :func:`aggregator.config.load_config` before it
  atomically replaces the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from aggregator.config import (
    Config,
    ConfigError,
    FeedConfig,
    Settings,
    describe_duplicate,
    load_config,
    load_yaml_document,
    save_yaml_document,
    validate_feed_url,
)
from aggregator.fetch import Fetcher
from aggregator.parse import COMMON_FEED_PATHS, discover_feed_links, looks_like_html, parse_feed
from aggregator.store import Store

log = logging.getLogger(__name__)

# At most this many of the feeds a page advertises are tried.
MAX_ADVERTISED = 10
_T = TypeVar("_T")


class FeedsError(Exception):
    """A subscription could not be found, added or removed; the message says why."""


@dataclass
class FeedCheck:
    """What one URL answered, read as a feed."""

    url: str
    final_url: str
    status: int | None = None
    error: str | None = None
    moved_to: str | None = None          # where a permanent redirect points
    content_type: str = ""
    bytes: int = 0
    seconds: float = 0.0
    format: str = ""                     # rss20, atom10, json1.1, … ("" when not a feed)
    title: str | None = None
    site_url: str | None = None
    entries: int = 0
    newest: datetime | None = None
    problem: str | None = None           # ill-formed but readable, or no entries
    is_html: bool = False
    advertised: list[str] = field(default_factory=list)   # feeds an HTML page links to
    etag: str | None = None
    last_modified: str | None = None
    conditional_get: str | None = None   # works | ignored | not offered | failed: … (None: not tried)

    @property
    def usable(self) -> bool:
        return self.error is None and bool(self.format)


@dataclass
class Discovery:
    """The working feeds found from a URL, best first, and how they were found."""

    feeds: list[FeedCheck]
    found_by: str        # "the URL itself" | "the page's feed links" | "a common feed path"


def check_feed(url: str, settings: Settings | None = None) -> FeedCheck:
    """Fetch ``url`` (twice, to try conditional GET) and report what it is."""
    return _with_fetcher(settings, lambda fetcher: inspect(fetcher, url, conditional=True))


def discover_feeds(url: str, settings: Settings | None = None) -> Discovery:
    """The feeds ``url`` is or offers; :class:`FeedsError` saying what was tried when there are none."""
    return _with_fetcher(settings, lambda fetcher: discover(fetcher, url))


def _with_fetcher(settings: Settings | None, work: Callable[[Fetcher], Awaitable[_T]]) -> _T:
    async def run() -> _T:
        async with Fetcher(settings or Settings()) as fetcher:
            return await work(fetcher)
    return asyncio.run(run())


async def inspect(
    fetcher: Fetcher, url: str, *, conditional: bool = False, untrusted: bool = False, guard: bool = False
) -> FeedCheck:
    """Fetch ``url`` and read it as a feed; with ``conditional``, fetch again with its validators."""
    result = await fetcher.fetch(url, untrusted=untrusted, guard=guard)
    check = FeedCheck(url=url, final_url=result.final_url, status=result.status, error=result.error,
                      moved_to=result.permanent_redirect, content_type=result.content_type,
                      bytes=len(result.body or b""), seconds=result.elapsed,
                      etag=result.etag, last_modified=result.last_modified)
    if result.body is None or result.error:
        return check
    if looks_like_html(result.body):
        check.is_html = True
        check.advertised = discover_feed_links(result.body, result.final_url)
        check.problem = "this is a web page, not a feed"
        return check
    parsed = parse_feed(result.body, result.final_url, result.headers)
    check.format, check.title, check.site_url = parsed.format, parsed.title, parsed.link
    check.entries, check.problem = len(parsed.entries), parsed.problem
    dates = [date for date in (e.published for e in parsed.entries) if date is not None]
    check.newest = max(dates, default=None)
    if conditional and check.usable:
        check.conditional_get = await _conditional_get(fetcher, url, result.etag, result.last_modified,
                                                       untrusted=untrusted, guard=guard)
    return check


async def _conditional_get(fetcher: Fetcher, url: str, etag: str | None, last_modified: str | None, *,
                           untrusted: bool, guard: bool) -> str:
    if not etag and not last_modified:
        return "not offered"
    again = await fetcher.fetch(url, etag=etag, last_modified=last_modified, untrusted=untrusted, guard=guard)
    if again.not_modified:
        return "works"
    if again.error:
        return f"failed: {again.error}"
    return "ignored"


async def discover(fetcher: Fetcher, url: str) -> Discovery:
    first = await inspect(fetcher, url)
    if first.usable:
        return Discovery([first], "the URL itself")
    if not first.is_html:
        raise FeedsError(f"{url}: {first.error or first.problem or 'not a feed'}")
    # The links come from the page's content, so they are fetched as untrusted.
    guard = await fetcher.guard_for(url)
    advertised = first.advertised[:MAX_ADVERTISED]
    checks = await asyncio.gather(*(inspect(fetcher, link, untrusted=True, guard=guard) for link in advertised))
    working = [check for check in checks if check.usable]
    for check in checks:
        if not check.usable:
            log.debug("advertised feed %s does not work: %s", check.url, check.error or check.problem)
    if working:
        return Discovery(working, "the page's feed links")
    for path in COMMON_FEED_PATHS:
        check = await inspect(fetcher, urljoin(first.final_url, path), untrusted=True, guard=guard)
        log.debug("common path %s: %s", check.url, check.format or check.error or check.problem)
        if check.usable:
            return Discovery([check], "a common feed path")
    tried = f"{len(advertised)} feed link(s) on the page that did not work and " if advertised else ""
    raise FeedsError(f"no feed found at {url}: {tried}none of {', '.join(COMMON_FEED_PATHS)} answered with a feed")


# -- feeds.yaml ---------------------------------------------------------------


def find_subscription(config: Config, url_or_title: str) -> FeedConfig | None:
    """The configured feed with this URL (as typed, relative paths from here) or, failing that, title."""
    wanted = _resolved(url_or_title, Path.cwd())
    by_url = next((feed for feed in config.feeds if feed.url == wanted), None)
    if by_url is not None:
        return by_url
    titled = [feed for feed in config.feeds if feed.title and feed.title.casefold() == url_or_title.casefold()]
    if len(titled) > 1:
        urls = ", ".join(feed.url for feed in titled)
        raise FeedsError(f"{len(titled)} feeds are titled {url_or_title!r} ({urls}): name one by its URL")
    return titled[0] if titled else None


def add_subscription(path: Path, url: str, *, title: str | None = None, tags: list[str] | None = None) -> Config:
    """Append a feed to feeds.yaml (creating the file if needed); returns the new config.

    Refuses a feed already subscribed; see :func:`append_feeds` for where it goes.
    """
    config = load_config(path) if path.exists() else None
    existing = config.feed(validate_feed_url(url, path.parent)) if config is not None else None
    if existing is not None:
        raise FeedsError(already_subscribed(url, existing, path))
    return append_feeds(path, [feed_item(url, title=title, tags=tags)])


def already_subscribed(url: str, existing: FeedConfig, path: Path) -> str:
    """Why ``url`` is not added: the subscription to the same feed that ``path`` has."""
    return f"{url} is already in {path} ({describe_duplicate(url, existing)})"


def feed_item(url: str, *, title: str | None = None, tags: Sequence[str] | None = None) -> dict[str, Any]:
    """A feeds.yaml item for :func:`append_feeds`: its url, and its title and tags when it has them."""
    return {"url": url, **({"title": title} if title else {}), **({"tags": list(tags)} if tags else {})}


def append_feeds(path: Path, items: Sequence[dict[str, Any]]) -> Config:
    """Append feed items (see :func:`feed_item`) to feeds.yaml, creating it if needed; returns the new config.

    Callers check for feeds already subscribed. The new items take the
    indentation of the items before them and go right after the last one,
    before any trailing comments; the edited file is validated before it
    replaces the old one (:class:`FeedsError` when it would be invalid).
    """
    text, document = _read(path)
    spans = _item_spans(text, document)
    if spans:
        lines = text.splitlines(keepends=True)
        last_dash = lines[_first_line_starting_with_dash(lines, spans[-1])]
        insert_at = spans[-1][1]
        new_lines = [line for item in items for line in _render_item(item, last_dash)]
        if insert_at and not lines[insert_at - 1].endswith("\n"):
            new_lines[0] = "\n" + new_lines[0]
        return _replace_checked(path, lambda tmp: tmp.write_text(
            "".join(lines[:insert_at] + new_lines + lines[insert_at:]), encoding="utf-8"))
    # No block-style list to extend (no file, no feeds, an empty or flow-style list): let ruamel write it.
    if document is None:
        document = CommentedMap()
        document.yaml_set_start_comment("agg subscriptions (agg feeds add / agg feeds remove edit this file)")
    feeds = document.get("feeds")
    if not isinstance(feeds, CommentedSeq):
        feeds = document["feeds"] = CommentedSeq()
    for item in items:
        entry = CommentedMap(item)
        if item.get("tags"):
            entry["tags"] = CommentedSeq(item["tags"])
            entry["tags"].fa.set_flow_style()
        feeds.append(entry)
    return _replace_checked(path, lambda tmp: _save_like(path, tmp, document))


def remove_subscription(path: Path, url_or_title: str) -> FeedConfig:
    """Take a feed out of feeds.yaml, with its own comment lines; returns it as it was configured."""
    config = load_config(path)
    feed = find_subscription(config, url_or_title)
    if feed is None:
        raise FeedsError(f"no feed {url_or_title!r} in {path} (see 'agg feeds list')")
    text, document = _read(path)
    index = _index_of(document["feeds"], feed.url, path.parent)
    spans = _item_spans(text, document)
    if spans:
        lines = text.splitlines(keepends=True)
        start, end = spans[index]
        # The blank lines after an item separate it from the next one: they go with it, unless it is
        # the last item and nothing blank precedes it (then they separate the list from what follows).
        if index + 1 < len(spans) or (start > 0 and not lines[start - 1].strip()):
            while end < len(lines) and not lines[end].strip():
                end += 1
        _replace_checked(path, lambda tmp: tmp.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8"))
    else:
        del document["feeds"][index]
        _replace_checked(path, lambda tmp: _save_like(path, tmp, document))
    return feed


def _resolved(url: str, base: Path) -> str | None:
    try:
        return validate_feed_url(url, base)
    except ValueError:
        return None


def _index_of(feeds: CommentedSeq, url: str, base: Path) -> int:
    for index, item in enumerate(feeds):
        written = item.get("url") if isinstance(item, dict) else item
        if isinstance(written, str) and _resolved(written, base) == url:
            return index
    raise FeedsError(f"{url} is configured but could not be found in the file's feeds list")


def _read(path: Path) -> tuple[str, Any]:
    if not path.exists():
        return "", None
    return path.read_text(encoding="utf-8"), load_yaml_document(path)


def _save_like(original: Path, target: Path, document: Any) -> None:
    """Dump ``document`` to ``target`` in the indentation of ``original``."""
    if original.exists():
        shutil.copyfile(original, target)
    save_yaml_document(target, document)


def _replace_checked(path: Path, write: Callable[[Path], object]) -> Config:
    """Write the new file beside ``path``, validate it, then move it into place; returns its config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.agg-edit")
    try:
        write(tmp)
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            problems = "; ".join(problem.replace(str(tmp), str(path)) for problem in exc.problems)
            raise FeedsError(f"the edit would make {path} invalid, so it was left as it was: {problems}") from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Config(path=path, settings=config.settings, feeds=config.feeds)


# -- line spans of a block-style feeds list -------------------------------------


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _item_spans(text: str, document: Any) -> list[tuple[int, int]]:
    """Each feed item's lines ``[start, end)``: its own comment lines above it, its lines, its inline comments.

    Comment lines at the items' indentation (or less) belong to what follows
    them; deeper-indented comments belong to the item above. Empty when the
    feeds list is missing, empty or in flow style.
    """
    feeds = document.get("feeds") if isinstance(document, CommentedMap) else None
    if not isinstance(feeds, CommentedSeq) or not feeds or feeds.fa.flow_style():
        return []
    lines = text.splitlines(keepends=True)
    dashes = []
    for index in range(len(feeds)):
        line = feeds.lc.item(index)[0]
        while not lines[line].lstrip().startswith("-"):  # a mapping that starts below a lone dash
            line -= 1
        dashes.append(line)
    column = _indent(lines[dashes[0]])
    spans = []
    for number, dash in enumerate(dashes):
        start = dash
        while start > 0 and _is_comment(lines[start - 1]) and _indent(lines[start - 1]) == column:
            start -= 1
        limit = dashes[number + 1] if number + 1 < len(dashes) else _block_end(lines, dash, column)
        end = limit
        while end > dash + 1 and (not lines[end - 1].strip()
                                  or _is_comment(lines[end - 1]) and _indent(lines[end - 1]) <= column):
            end -= 1
        spans.append((start, end))
    return spans


def _block_end(lines: list[str], dash: int, column: int) -> int:
    """The first line after the item at ``dash`` that is outside the list, or the end of the file."""
    for number in range(dash + 1, len(lines)):
        line = lines[number]
        if line.strip() and not _is_comment(line) and _indent(line) <= column:
            return number
    return len(lines)


def _first_line_starting_with_dash(lines: list[str], span: tuple[int, int]) -> int:
    return next(number for number in range(*span) if lines[number].lstrip().startswith("-"))


def _render_item(item: dict[str, Any], dash_line: str) -> list[str]:
    """The YAML lines of a new feed item, indented like the item on ``dash_line``."""
    dash_column = _indent(dash_line)
    after_dash = dash_line[dash_column + 1:]
    key_column = dash_column + 1 + (_indent(after_dash) if after_dash.strip() else 1)
    rendered = []
    for key, value in item.items():
        if isinstance(value, list):
            text = "[" + ", ".join(_scalar(word) for word in value) + "]"
        else:
            text = json.dumps(value, ensure_ascii=False)  # a JSON string is a valid double-quoted YAML scalar
        rendered.append(f"{key}: {text}\n")
    return [" " * dash_column + "- " + rendered[0]] + [" " * key_column + line for line in rendered[1:]]


def _scalar(word: str) -> str:
    return word if re.fullmatch(r"[A-Za-z0-9][\w.-]*", word) else json.dumps(word, ensure_ascii=False)


# -- status -------------------------------------------------------------------


def subscriptions(config: Config, store: Store | None) -> list[dict[str, Any]]:
    """Each configured feed with its stored health (state, entries, last fetch…) when there is a database."""
    health: dict[str, dict] = {}
    if store is not None and "feed_health" in store.db.view_names():
        health = {row["url"]: row for row in store.db.query("SELECT * FROM feed_health")}
    rows = []
    for feed in config.feeds:
        row = {"url": feed.url, "title": feed.title, "tags": feed.tags, "enabled": feed.enabled,
               "line": feed.line}
        stored = health.get(feed.url)
        row["state"] = ("disabled in feeds.yaml" if not feed.enabled
                        else stored["state"] if stored else "never fetched")
        for key in ("entries", "newest_entry", "last_fetch_at", "last_status", "last_error", "error_count",
                    "format", "moved_to", "next_check_at"):
            row[key] = stored[key] if stored else None
        if stored and not feed.title:
            row["title"] = stored["title"]
        rows.append(row)
    return rows
