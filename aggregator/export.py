"""Export and import: OPML subscriptions, the JSON digest, JSON Feed 1.1 and Atom 1.0.

This module owns the formats agg exchanges with other readers. The
builders are pure: they take plain records (:class:`ExportStory`,
:class:`~aggregator.config.FeedConfig`) and return the document. The I/O
is kept to three small functions: :func:`load_stories` (reads the store),
:func:`import_opml` (merges subscriptions into feeds.yaml) and
:func:`write_atomic`.

Decisions, documented for users in ``docs/digest.md``:

* OPML export puts a feed in the folder of its *first* tag and lists all
  its tags in the OPML 2.0 ``category`` attribute, so a feed appears once
  and an import gives back every tag. Untagged feeds sit at the top level.
* OPML import turns the folders an outline sits in, and its ``category``
  entries, into tags. Only http(s) subscriptions are imported; a file with
  a DOCTYPE is refused, so entity expansion and external entities never
  happen.
* Item ids are ``urn:agg:story:<id>``: a story keeps its id across runs
  (a merged story lives on under the older id), so readers see an item
  once and then updates of it.
* Item HTML is built from escaped plain text and links agg makes itself
  (http(s) only), then passed through nh3 with a small allow-list, so
  nothing a feed sent can run in a reader.
"""

from __future__ import annotations

import html
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nh3
from lxml import etree

from aggregator import __version__
from aggregator.config import Config, FeedConfig, describe_duplicate, load_config, validate_feed_url
from aggregator.parse import safe_http_url
from aggregator.jsontext import json_bytes, json_text  # noqa: F401 -- the exports' JSON, as before
from aggregator.store import Store, to_db_time
from aggregator.urls import feed_identity

DIGEST_VERSION = 1
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_NS = "http://www.w3.org/2005/Atom"
DEFAULT_FEED_TITLE = "agg: one item per story"
DEFAULT_FEED_ID = "urn:agg:stories"
SUMMARY_SENTENCES = 2
SUMMARY_CHARS = 300

# Characters XML 1.0 cannot carry at all (lxml refuses them), and the C1 controls
# it discourages (a terminal shown the file would obey them): all dropped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
# The end of a sentence: punctuation (and closing quotes) before a space and
# a capital, a figure or an opening quote, or at the end. A single capital
# before the stop is an initial ("J. Smith", "U.S."), not a sentence end.
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?…][\"'”’)\]]*(?=\s+[\"“‘'(\[A-Z0-9]|\s*$)")

_ITEM_HTML = nh3.Cleaner(
    tags={"p", "ul", "li", "a", "small"},
    attributes={"a": {"href"}},
    url_schemes={"http", "https"},
    url_relative="deny",
)


# --------------------------------------------------------------------------
# Stories as the exports see them
# --------------------------------------------------------------------------


@dataclass
class ExportReport:
    """One outlet's report of a story."""

    id: int
    outlet: str
    feed_url: str
    title: str
    url: str | None
    published: str | None
    first_seen: str
    extract_status: str

    @property
    def time(self) -> str:
        """When it was published, else when agg first saw it (ISO 8601 UTC)."""
        return self.published or self.first_seen


@dataclass
class ExportStory:
    """One story with every report of it, oldest first."""

    id: int
    title: str
    first_seen: str
    last_seen: str
    reports: list[ExportReport] = field(default_factory=list)
    representative_id: int | None = None
    original_entry_id: int | None = None
    credited_outlet: str | None = None
    lead_text: str = ""

    @property
    def item_id(self) -> str:
        return f"urn:agg:story:{self.id}"

    @property
    def representative(self) -> ExportReport | None:
        return self._report(self.representative_id) or (self.reports[0] if self.reports else None)

    @property
    def original(self) -> ExportReport | None:
        return self._report(self.original_entry_id)

    @property
    def link(self) -> str | None:
        """The representative report's address, else the first web address any report has."""
        preferred = [self.representative] if self.representative else []
        return next(filter(None, (safe_http_url(r.url) for r in [*preferred, *self.reports])), None)

    @property
    def outlets(self) -> list[str]:
        """The outlets that carried it, one name per feed, in the order they reported it."""
        names: dict[str, str] = {}
        for report in self.reports:
            names.setdefault(report.feed_url, report.outlet)
        return list(names.values())

    @cached_property
    def summary(self) -> str:
        return lead_summary(self.lead_text)

    def _report(self, entry_id: int | None) -> ExportReport | None:
        return next((r for r in self.reports if r.id == entry_id), None) if entry_id is not None else None


def story_from_row(row: Mapping[str, Any]) -> ExportStory:
    """An :class:`ExportStory` from a row of :meth:`Store.iter_stories` with its reports and lead text."""
    return ExportStory(
        id=row["id"],
        title=row["title"] or "",
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        reports=[
            ExportReport(
                id=r["id"], outlet=r["outlet"] or r["feed_url"], feed_url=r["feed_url"], title=r["title"] or "",
                url=r["link"], published=r["published"], first_seen=r["first_seen"],
                extract_status=r["extract_status"],
            )
            for r in row["reports"]
        ],
        representative_id=row["representative_id"],
        original_entry_id=row["original_entry_id"],
        credited_outlet=row["credited_outlet"],
        lead_text=row["lead_text"] or "",
    )


def load_stories(store: Store, *, since: datetime | None = None, min_outlets: int = 1) -> list[ExportStory]:
    """The stories active since ``since`` carried by at least ``min_outlets`` outlets, newest first."""
    rows = store.iter_stories(since=since, min_outlets=min_outlets, reports=True, lead_text=True)
    return [story_from_row(row) for row in rows]


def lead_summary(text: str, sentences: int = SUMMARY_SENTENCES, max_chars: int = SUMMARY_CHARS) -> str:
    """The first ``sentences`` sentences of ``text``, cut at a word to at most ``max_chars`` characters."""
    # Only the start can make the summary: flattening and searching whole articles was most of the
    # time of an export (bench/read_scale.py). A start longer than max_chars once flattened gives the
    # same summary as the whole text: whatever the search finds past max_chars is cut off anyway.
    flat = " ".join(text[:2 * max_chars].split())
    if len(flat) <= max_chars + 1 and len(text) > 2 * max_chars:
        flat = " ".join(text.split())
    ends = [match.end() for match in islice(_SENTENCE_END.finditer(flat), sentences)]
    if len(ends) >= sentences:
        flat = flat[:ends[sentences - 1]]
    if len(flat) <= max_chars:
        return flat
    cut = flat[:max_chars - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:-–—") + "…"


# --------------------------------------------------------------------------
# Digest (JSON)
# --------------------------------------------------------------------------


def build_digest(
    stories: Sequence[ExportStory],
    *,
    since: datetime | None,
    until: datetime,
    min_outlets: int,
    generated_at: datetime,
) -> dict[str, Any]:
    """The digest document (schema: ``docs/digest.schema.json``, version :data:`DIGEST_VERSION`)."""
    return {
        "version": DIGEST_VERSION,
        "generator": f"agg {__version__}",
        "generated_at": to_db_time(generated_at),
        "window": {"since": to_db_time(since), "until": to_db_time(until)},
        "min_outlets": min_outlets,
        "story_count": len(stories),
        "report_count": sum(len(story.reports) for story in stories),
        "stories": [_digest_story(story) for story in stories],
    }


def _digest_story(story: ExportStory) -> dict[str, Any]:
    original = story.original
    representative = story.representative
    return {
        "id": story.id,
        "title": story.title,
        "first_seen": story.first_seen,
        "last_seen": story.last_seen,
        "report_count": len(story.reports),
        "outlet_count": len(story.outlets),
        "outlets": story.outlets,
        "summary": story.summary,
        "url": story.link,
        "representative_report_id": representative.id if representative else None,
        "original_source": {
            "report_id": original.id,
            "outlet": original.outlet,
            "url": original.url,
            "time": original.time,
            "credited_outlet": story.credited_outlet,
        } if original else None,
        "reports": [
            {
                "id": report.id,
                "outlet": report.outlet,
                "feed_url": report.feed_url,
                "title": report.title,
                "url": report.url,
                "published": report.published,
                "first_seen": report.first_seen,
                "extraction_status": report.extract_status,
            }
            for report in story.reports
        ],
    }


# --------------------------------------------------------------------------
# JSON Feed 1.1 and Atom 1.0: one item per story
# --------------------------------------------------------------------------


def story_html(story: ExportStory) -> str:
    """The item body: the lead, who carried it, and a link to every report. Safe to show anywhere."""
    parts = []
    if story.summary:
        parts.append(f"<p>{_escape(story.summary)}</p>")
    line = f"{_count(len(story.reports), 'report')} from {_count(len(story.outlets), 'outlet')}"
    if story.original:
        line += f"; first reported by {_escape(story.original.outlet)}"
    if story.credited_outlet:
        line += f"; the reports credit {_escape(story.credited_outlet)}"
    parts.append(f"<p>{line}.</p>")
    items = "".join(
        f"<li>{_link(report.url, report.outlet)}: {_escape(report.title)} "
        f"<small>{_escape(_display_time(report.time))}</small></li>"
        for report in story.reports
    )
    if items:
        parts.append(f"<ul>{items}</ul>")
    return _ITEM_HTML.clean("".join(parts))


def _escape(text: str) -> str:
    return html.escape(_NOT_XML.sub("", text), quote=True)


def _link(url: str | None, text: str) -> str:
    href = safe_http_url(url)
    if href is None:
        return _escape(text)
    return f'<a href="{_escape(href)}">{_escape(text)}</a>'


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _display_time(value: str) -> str:
    return value[:16].replace("T", " ") + " UTC"


def build_json_feed(
    stories: Sequence[ExportStory],
    *,
    title: str = DEFAULT_FEED_TITLE,
    feed_url: str | None = None,
) -> dict[str, Any]:
    """A JSON Feed 1.1 document with one item per story."""
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": title,
        "description": "News stories folded by agg: one item per story, linking every outlet that carried it.",
        "authors": [{"name": "agg"}],
    }
    if feed_url:
        document["feed_url"] = feed_url
    document["items"] = [_json_feed_item(story) for story in stories]
    return document


def _json_feed_item(story: ExportStory) -> dict[str, Any]:
    item: dict[str, Any] = {"id": story.item_id, "title": story.title, "content_html": story_html(story)}
    if story.link:
        item["url"] = story.link
    if story.summary:
        item["summary"] = story.summary
    item["date_published"] = story.first_seen
    item["date_modified"] = story.last_seen
    if story.outlets:
        item["authors"] = [{"name": outlet} for outlet in story.outlets]
    item["_agg"] = {"story_id": story.id, "report_count": len(story.reports), "outlet_count": len(story.outlets)}
    return item


def build_atom(
    stories: Sequence[ExportStory],
    *,
    generated_at: datetime,
    title: str = DEFAULT_FEED_TITLE,
    feed_url: str | None = None,
    feed_id: str = DEFAULT_FEED_ID,
) -> bytes:
    """An Atom 1.0 (RFC 4287) feed with one entry per story.

    The feed's ``updated`` is the latest story activity (``generated_at``
    when there is none), so an unchanged export is byte-for-byte the same.
    """
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _atom(feed, "id", feed_id)
    _atom(feed, "title", title)
    _atom(feed, "updated", max((s.last_seen for s in stories), default=to_db_time(generated_at)))
    _atom(_atom(feed, "author"), "name", "agg")
    _atom(feed, "generator", "agg", version=__version__)
    if feed_url:
        _atom(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    for story in stories:
        entry = _atom(feed, "entry")
        _atom(entry, "id", story.item_id)
        _atom(entry, "title", story.title, type="text")
        _atom(entry, "updated", story.last_seen)
        _atom(entry, "published", story.first_seen)
        for outlet in story.outlets:
            _atom(_atom(entry, "author"), "name", outlet)
        if story.link:
            _atom(entry, "link", rel="alternate", type="text/html", href=story.link)
        if story.summary:
            _atom(entry, "summary", story.summary, type="text")
        _atom(entry, "content", story_html(story), type="html")
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _atom(parent: etree._Element, name: str, text: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{name}", {k: _NOT_XML.sub("", v) for k, v in attributes.items()})
    if text is not None:
        element.text = _NOT_XML.sub("", text)
    return element


# --------------------------------------------------------------------------
# OPML export
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# OPML import
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def write_atomic(target: str | Path, data: bytes | str) -> None:
    """Write ``data`` to stdout when ``target`` is ``-``, else replace the file in one step.

    The bytes go to a temporary file beside the target, are flushed to
    disk, then renamed over it: a reader sees the old file or the new one,
    never half of one. A replaced file keeps its permissions.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if str(target) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        return
    path = Path(target)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what a plain ``open`` would give (mkstemp's are 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
