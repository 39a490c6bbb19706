"""JSON Feed 1.1 and Atom 1.0: one item per story, its HTML built from escaped text and cleaned by nh3."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import nh3
from lxml import etree

from aggregator import __version__
from aggregator.parse import safe_http_url
from aggregator.store import to_db_time

from .stories import ExportStory

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_NS = "http://www.w3.org/2005/Atom"
DEFAULT_FEED_TITLE = "agg: one item per story"
DEFAULT_FEED_ID = "urn:agg:stories"
# Characters XML 1.0 cannot carry at all (lxml refuses them), and the C1 controls
# it discourages (a terminal shown the file would obey them): all dropped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_ITEM_HTML = nh3.Cleaner(
    tags={"p", "ul", "li", "a", "small"},
    attributes={"a": {"href"}},
    url_schemes={"http", "https"},
    url_relative="deny",
)


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
