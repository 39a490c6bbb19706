"""OPML: subscriptions exported with their tags as folders, and imported into feeds.yaml (a DOCTYPE refused)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from aggregator.config import Config, FeedConfig, describe_duplicate, load_config, validate_feed_url
from aggregator.urls import feed_identity

from .feeds import _NOT_XML


# --- export ---------------------------------------------------------------------


def build_opml(
    feeds: Sequence[FeedConfig],
    feed_rows: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    generated_at: datetime,
) -> bytes:
    """OPML 2.0 of the subscriptions, a folder per first tag.

    ``feed_rows`` are the store's rows by feed URL, when there is a
    database: they give ``htmlUrl`` (the site the feed names) and a title
    for feeds feeds.yaml does not title.
    """
    feed_rows = feed_rows or {}
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = "agg subscriptions"
    etree.SubElement(head, "dateCreated").text = format_datetime(generated_at, usegmt=True)
    etree.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = etree.SubElement(root, "body")
    folders: dict[str, etree._Element] = {}
    for feed in feeds:
        row = feed_rows.get(feed.url, {})
        title = feed.title or row.get("title") or feed.url
        attributes = {"type": "rss", "text": title, "title": title, "xmlUrl": feed.url}
        if row.get("site_url"):
            attributes["htmlUrl"] = row["site_url"]
        parent = body
        if feed.tags:
            attributes["category"] = ",".join(feed.tags)
            first = feed.tags[0]
            if first not in folders:
                folders[first] = etree.SubElement(body, "outline", text=_NOT_XML.sub("", first))
            parent = folders[first]
        etree.SubElement(parent, "outline", {k: _NOT_XML.sub("", v) for k, v in attributes.items()})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- import ---------------------------------------------------------------------


class OpmlError(ValueError):
    """The file is not an OPML document agg can read; the message says why."""


@dataclass
class OpmlFeed:
    """One subscription found in an OPML file."""

    url: str
    title: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ImportPlan:
    """What an import adds, and what it skips with the reason."""

    added: list[OpmlFeed] = field(default_factory=list)
    skipped: list[tuple[OpmlFeed, str]] = field(default_factory=list)


class _OpmlReader:
    """An lxml parser target collecting feed outlines with the folders around them.

    Being a target, it sees the document as it is parsed: a DOCTYPE is
    refused before any entity it declares could be used.
    """

    def __init__(self) -> None:
        self.path: list[str] = []
        self.root: str | None = None
        self.has_body = False
        self.folders: list[str | None] = []
        self.feeds: list[OpmlFeed] = []

    def doctype(self, *_: Any) -> None:
        raise OpmlError("it declares a DOCTYPE, which OPML never needs; refused so that no entity is expanded")

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        self.path.append(tag)
        if len(self.path) == 1:
            self.root = tag
        elif self.path[:2] == ["opml", "body"]:
            self.has_body = True
            if tag == "outline" and len(self.path) >= 3:
                self._outline({key.lower(): value.strip() for key, value in attrib.items()})

    def _outline(self, attributes: dict[str, str]) -> None:
        name = attributes.get("text") or attributes.get("title") or None
        url = attributes.get("xmlurl")
        if not url:
            self.folders.append(name)
            return
        categories = [c.strip().strip("/") for c in attributes.get("category", "").split(",")]
        tags = [t for t in self.folders if t] + [c for c in categories if c]
        # Readers (agg too) write the URL as the text of a feed without a title.
        title = name if name != url else None
        self.feeds.append(OpmlFeed(url=url, title=title, tags=list(dict.fromkeys(tags))))
        self.folders.append(None)  # outlines under a feed outline stay in the feed's folders

    def end(self, tag: str) -> None:
        if tag == "outline" and self.path[:2] == ["opml", "body"] and len(self.path) >= 3:
            self.folders.pop()
        self.path.pop()

    def data(self, _: str) -> None:
        pass

    def close(self) -> None:
        pass


def parse_opml(data: bytes) -> list[OpmlFeed]:
    """The subscriptions of an OPML 1.0/1.1/2.0 file, in file order, or :class:`OpmlError`.

    A feed is an outline with an ``xmlUrl`` (any ``type``); its title is
    ``text``, else ``title``; its tags are the folders it sits in (their
    ``text``, else ``title``) then its ``category`` entries. Attribute names
    are matched case-insensitively, as some readers write ``xmlurl``.
    """
    reader = _OpmlReader()
    # Entities may be resolved: without a DOCTYPE (refused by the reader as
    # soon as it starts) only XML's five and character references exist.
    # Leaving them unresolved would make lxml hand "&" over as "&#38;".
    parser = etree.XMLParser(target=reader, resolve_entities=True, no_network=True, load_dtd=False,
                             huge_tree=False)
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise OpmlError(f"not well-formed XML: {exc.msg}") from None
    if reader.root != "opml":
        raise OpmlError(f"the document is <{reader.root}>, not <opml>: not an OPML file")
    if not reader.has_body:
        raise OpmlError("it has no <body>, so no subscriptions")
    return reader.feeds


def import_url(url: str) -> str:
    """The subscription URL to store for an imported feed, or ValueError: http(s) only."""
    url = url.strip()
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return validate_feed_url(url)


def plan_import(candidates: Sequence[OpmlFeed], config: Config | None) -> ImportPlan:
    """Which candidates to add: valid URLs not subscribed already and not repeated earlier in the file,
    each compared by :func:`aggregator.urls.feed_identity`."""
    plan = ImportPlan()
    added: dict[str, str] = {}
    for feed in candidates:
        try:
            url = import_url(feed.url)
        except ValueError as exc:
            plan.skipped.append((feed, str(exc)))
            continue
        existing = config.feed(url) if config is not None else None
        if existing is not None:
            plan.skipped.append((feed, f"already in feeds.yaml ({describe_duplicate(url, existing)})"))
        elif (identity := feed_identity(url)) in added:
            plan.skipped.append((feed, f"listed earlier in the file, as {added[identity]}"))
        else:
            added[identity] = url
            plan.added.append(replace(feed, url=url))
    return plan


def import_opml(config_path: Path, data: bytes, *, dry_run: bool = False) -> ImportPlan:
    """Add the OPML file's subscriptions to feeds.yaml, keeping its feeds, comments and order.

    feeds.yaml is created (with a ``feeds:`` list) when missing, and edited
    as ``agg feeds add`` does (:func:`aggregator.feeds.append_feeds`). Nothing
    is written when the OPML is unreadable (:class:`OpmlError`), when
    feeds.yaml has problems (:class:`ConfigError`), with ``dry_run``, or
    when nothing is new.
    """
    # Here, not at the top: feeds brings the HTTP client, which the story exports and `agg list --json`
    # (json_text) never use, and its import was most of their time to the first line (bench/read_scale.py).
    from aggregator.feeds import append_feeds, feed_item

    candidates = parse_opml(data)
    config = load_config(config_path) if config_path.exists() else None
    plan = plan_import(candidates, config)
    if plan.added and not dry_run:
        append_feeds(config_path, [feed_item(feed.url, title=feed.title, tags=feed.tags) for feed in plan.added])
    return plan
