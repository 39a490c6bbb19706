"""RSS 0.9x/1.0/2.0 and Atom through feedparser: the general path, and the entity defusing it needs."""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aggregator.models import ParsedEntry, ParsedFeed

from .normalise import (
    MAX_HTML_CHARS,
    MAX_TITLE_CHARS,
    _describe,
    _enclosures,
    _guid,
    _mappings,
    _plain_author,
    _unique_strings,
    fold_whitespace,
    html_to_text,
    safe_http_url,
)
from .sniff import _SNIFF_BYTES, _sniff_wide_codec, looks_like_html

# Measured with bench/parse.py (entries/s against feedparser's defaults, on
# synthetic 50-entry feeds, several runs): sanitizer off 1.3-1.7x; sanitizer
# and content-URI resolution off 2.9-4.4x. Both passes re-parse every HTML field in pure
# Python. agg sanitises what it outputs, and entry links and enclosures are
# still resolved (feedparser resolves links whatever this setting, and
# safe_http_url does again); only URLs inside summary/content HTML stay as
# the feed wrote them.
FEEDPARSER_OPTIONS: dict[str, bool] = {"sanitize_html": False, "resolve_relative_uris": False}
_DOCTYPE = "<!DOCTYPE"
_ELEMENT_START = re.compile(r"<[A-Za-z_]")
_DOCTYPE_NAME = re.compile(r"<!DOCTYPE\s+([\w:.-]+)")
_SUBSET_END = re.compile(r"\]\s*>")
_ENTITY_DECLARATION = re.compile(r"<!ENTITY\b")
# Feedparser's own notion of a harmless entity: a name for plain text or one character.
_SAFE_ENTITY = re.compile(r'<!ENTITY\s+(?P<name>\w+)\s+"(?P<value>&#\w+;|[^&%"<]*)"\s*>')
# How much text all the kept entities may add to a document, over every reference to them.
# Feedparser's fallback parser expands entities without limit, so one long entity referenced
# many times (the "quadratic blow-up") would otherwise take gigabytes and minutes.
MAX_ENTITY_EXPANSION = 100_000


def _parse_xml_feed(body: bytes, url: str, response_headers: dict[str, str]) -> ParsedFeed:
    # Feedparser resolves permalink guids against Content-Location too
    # ("12345" -> "https://host/path/12345"), so every such guid would change
    # when the feed moves, even from http to https. Links are resolved against
    # the URL here instead. Only documents using xml:base get the header: with
    # no base of its own, feedparser lets an item's xml:base leak into the
    # items after it.
    response_headers.pop("content-location", None)
    if url and b"xml:base" in body:
        response_headers["content-location"] = url
    import feedparser  # here, not at the top: 20 ms that a run where every feed is a 304 need not pay

    defused = defuse_entity_declarations(body)
    if defused is None:
        return ParsedFeed(problem="refused: the document type declares entities but never ends")
    try:
        # A BytesIO, never the bytes themselves: feedparser treats a bytes
        # argument as a possible file name and would read that local file.
        parsed = feedparser.parse(io.BytesIO(defused), response_headers=response_headers, **FEEDPARSER_OPTIONS)
    except Exception as exc:  # a third-party parser on hostile input: report, don't propagate
        return ParsedFeed(problem=f"feed parser failed: {_describe(exc)}")

    channel = parsed.get("feed", {})
    entries = [_entry_from_feedparser(item, url) for item in parsed.get("entries", [])]
    version = parsed.get("version") or ""
    problem = _bozo_problem(parsed)
    if not entries and not version:
        problem = _not_a_feed_reason(body, problem)
    return ParsedFeed(
        format=version,
        title=_detail_text(channel.get("title_detail"), channel.get("title")) or None,
        link=safe_http_url(channel.get("link"), url),
        ttl_seconds=_ttl_seconds(channel.get("ttl")),
        entries=entries,
        problem=problem,
    )


def _entry_from_feedparser(item: Mapping[str, Any], feed_url: str) -> ParsedEntry:
    summary = _detail_html(item.get("summary_detail"), item.get("summary"))
    content = _feedparser_content(item.get("content"))
    title = _detail_text(item.get("title_detail"), item.get("title"))
    link = safe_http_url(item.get("link"), feed_url)
    author_detail = item.get("author_detail") or {}
    summary_text = html_to_text(summary)
    updated = _utc_from_struct(dict.get(item, "updated_parsed"))
    return ParsedEntry(
        guid=_guid(item.get("id"), link, title, summary, content),
        link=link,
        title=title,
        summary=summary,
        content=content,
        summary_text=summary_text,
        # RSS without a description has its content as summary too (feedparser's rule): read it once.
        content_text=summary_text if content == summary else html_to_text(content),
        author=_plain_author(author_detail.get("name") or item.get("author")),
        # dict.get: FeedParserDict.get would answer a missing updated_parsed with
        # published_parsed (a deprecated fallback that also warns).
        # Atom's <updated> (RSS's dc:date) is the only date some feeds give: it then stands for publication.
        published=_utc_from_struct(dict.get(item, "published_parsed")) or updated,
        updated=updated,
        tags=_unique_strings(tag.get("term") for tag in _mappings(item.get("tags"))),
        enclosures=_enclosures(
            ((enclosure.get("href"), enclosure.get("type"), enclosure.get("length")) for enclosure in _mappings(item.get("enclosures"))),
            feed_url,
        ),
    )


def _bozo_problem(parsed: Mapping[str, Any]) -> str | None:
    """Feedparser's reason for calling the document ill-formed, unless it is only about headers.

    A feed served as ``text/html`` or without a content type parses as well
    as any other, so that complaint would only hide the problems that matter.
    """
    from feedparser import NonXMLContentType

    reason = parsed.get("bozo_exception")
    if not parsed.get("bozo") or reason is None or isinstance(reason, NonXMLContentType):
        return None
    return _describe(reason)


def _feedparser_content(contents: Any) -> str:
    """The entry's richest content: the first HTML part, else the first part at all."""
    parts = [part for part in _mappings(contents) if isinstance(part.get("value"), str)]
    if not parts:
        return ""
    richest = next((part for part in parts if "html" in str(part.get("type", ""))), parts[0])
    return _detail_html(richest, richest.get("value"))


def _detail_html(detail: Mapping[str, Any] | None, value: Any) -> str:
    """A feedparser text construct as HTML: plain text gets escaped, HTML kept as given."""
    if not isinstance(value, str):
        return ""
    is_plain = detail is not None and str(detail.get("type", "")).startswith("text/plain")
    return (html.escape(value, quote=False) if is_plain else value)[:MAX_HTML_CHARS]


def _detail_text(detail: Mapping[str, Any] | None, value: Any) -> str:
    """A feedparser text construct as plain text, capped for use as a title."""
    if not isinstance(value, str):
        return ""
    is_markup = detail is not None and "html" in str(detail.get("type", ""))
    text = html_to_text(value) if is_markup else fold_whitespace(value)
    return text[:MAX_TITLE_CHARS]


def _ttl_seconds(ttl: Any) -> int | None:
    try:
        minutes = int(str(ttl).strip())
    except ValueError:
        return None
    return minutes * 60 if minutes > 0 else None


def _utc_from_struct(value: Any) -> datetime | None:
    """Feedparser's ``*_parsed`` fields are already UTC ``struct_time`` values."""
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime(*value[:6], tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _not_a_feed_reason(body: bytes, parser_problem: str | None) -> str:
    if looks_like_html(body):
        return "not a feed: looks like an HTML page"
    reason = "not a feed: no RSS, Atom or JSON Feed document found"
    return f"{reason} ({parser_problem})" if parser_problem else reason


def defuse_entity_declarations(body: bytes) -> bytes | None:
    """The document with its DTD keeping only harmless entity declarations.

    Entities defined through other entities ("billion laughs") or through
    external resources (``SYSTEM "file:///etc/passwd"``) are dropped before
    any XML parser sees them, so safety does not depend on the expat version
    or on feedparser's line-based DOCTYPE stripping (which misses a DOCTYPE
    that shares a line with the XML declaration). Returns None when a DTD
    declaring entities is never closed.
    """
    codec = _sniff_wide_codec(body[:_SNIFF_BYTES]) or "latin-1"  # latin-1 round-trips any bytes
    text = body.decode(codec, errors="replace")
    doctype_at = text.find(_DOCTYPE)
    if doctype_at < 0 or not _ENTITY_DECLARATION.search(text, doctype_at):
        return body
    if _ELEMENT_START.search(text, 0, doctype_at):
        return body  # the text appears inside content, not in a document type declaration
    declaration_end = text.find(">", doctype_at)
    subset_start = text.find("[", doctype_at)
    if subset_start < 0 or (0 <= declaration_end < subset_start):
        return body  # no internal subset: nothing is declared in the document itself
    subset_end = _SUBSET_END.search(text, subset_start)
    if subset_end is None:
        return None
    subset = text[subset_start + 1 : subset_end.start()]
    name_match = _DOCTYPE_NAME.match(text, doctype_at)
    name = name_match.group(1) if name_match else "feed"
    safe = "\n".join(_affordable_entities(subset, text))
    # On lines of their own, where feedparser's line-anchored DOCTYPE handling finds them.
    replacement = f"\n{_DOCTYPE} {name} [\n{safe}\n]>" if safe else f"\n{_DOCTYPE} {name}>"
    return (text[:doctype_at] + replacement + text[subset_end.end() :]).encode(codec, errors="replace")


def _affordable_entities(subset: str, text: str) -> Iterator[str]:
    """The harmless declarations of ``subset`` whose expansion in ``text`` fits :data:`MAX_ENTITY_EXPANSION`."""
    budget = MAX_ENTITY_EXPANSION
    for match in _SAFE_ENTITY.finditer(subset):
        value = match.group("value")
        cost = (1 if value.startswith("&#") else len(value)) * text.count(f"&{match.group('name')};")
        if cost <= budget:
            budget -= cost
            yield match.group(0)
