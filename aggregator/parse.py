"""Parse stage: turns the bytes of a fetched feed into a :class:`ParsedFeed`.

This module owns reading feed documents — RSS 0.9x/1.0/2.0 and Atom through
feedparser (plain RSS 2.0 through a faster lxml reader that gives the same
result), JSON Feed 1.0/1.1 through a small reader of its own — and
normalising every entry into :class:`ParsedEntry`: a stable guid, an absolute
http(s) link, a plain-text title, HTML summary/content with plain-text twins,
UTC dates, tags and enclosures. It also owns feed autodiscovery in HTML pages
(:func:`discover_feed_links`) and recognising HTML served where a feed was
expected (:func:`looks_like_html`).

Nothing here raises on bad input: whatever the bytes, the caller gets a
:class:`ParsedFeed`, with ``problem`` saying in words what was wrong.
Summary and content HTML is kept as the feed gave it and is untrusted; the
stages that output it sanitise it.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml import etree

from aggregator.models import Enclosure, ParsedEntry, ParsedFeed

COMMON_FEED_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml", "/feed.json", "/rss")

MAX_TITLE_CHARS = 1_000
MAX_AUTHOR_CHARS = 300
MAX_HTML_CHARS = 1_000_000

# Measured with bench/parse.py (entries/s against feedparser's defaults, on
# synthetic 50-entry feeds, several runs): sanitizer off 1.3-1.7x; sanitizer
# and content-URI resolution off 2.9-4.4x. Both passes re-parse every HTML field in pure
# Python. agg sanitises what it outputs, and entry links and enclosures are
# still resolved (feedparser resolves links whatever this setting, and
# safe_http_url does again); only URLs inside summary/content HTML stay as
# the feed wrote them.
FEEDPARSER_OPTIONS: dict[str, bool] = {"sanitize_html": False, "resolve_relative_uris": False}

JSON_FEED_FORMATS = {
    "https://jsonfeed.org/version/1": "json1",
    "https://jsonfeed.org/version/1.1": "json1.1",
}
JSON_FEED_VERSION_PREFIX = "https://jsonfeed.org/version/"
JSON_CONTENT_TYPES = frozenset({"application/feed+json", "application/json"})
FEED_LINK_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/feed+json", "application/json"}
)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# How an unmarked "<" looks in encodings that are not ASCII-compatible.
_WIDE_LESS_THAN = (
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"),
    (b"\x00<", "utf-16-be"),
)
_SNIFF_BYTES = 4096

_INVISIBLE_ELEMENTS = frozenset({"script", "style", "template", "noscript", "head"})
# Elements after which a reader sees a break, so their words must not run together.
_BREAKING_ELEMENTS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table td th tr ul".split()
)
# C1 controls included: 0x9B alone starts an escape sequence on some terminals.
# A regular expression, not str.translate with a table: a third of the time on long text.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_C1_CONTROL = re.compile("[\x80-\x9f]")
_THREAD_STATE = threading.local()
_LOOKS_LIKE_MARKUP = re.compile(r"<[A-Za-z/!]|&#?\w+;")

# An absolute http(s) URL that urllib reads and writes back unchanged: a plain host, no empty
# query, fragment or ";" parameters, nothing it strips or refuses. Joined to a base of the
# same kind it comes back as it is (an absolute URL's own host wins).
_URL_CHARS = r"A-Za-z0-9._~%!$&'()*+,=:@/-"  # "-" last: it stays a character in every class built on this
_PLAIN_HTTP_URL = re.compile(
    rf"https?://[A-Za-z0-9.-]+(?::([0-9]{{1,5}}))?(?:/[{_URL_CHARS}]*)?(?:\?[;?{_URL_CHARS}]+)?(?:#[;?{_URL_CHARS}]+)?\Z"
)

_FEED_ROOT = re.compile(r"<(?:rss|feed|rdf:rdf|channel)[\s>/]")
_HTML_MARKERS = re.compile(r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]")

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


# --- entry point -----------------------------------------------------------


def parse_feed(body: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Read a feed document fetched from ``url`` with the response ``headers``.

    JSON Feed is recognised by content type or by a body that opens with
    ``{``. Plain, well-formed UTF-8 RSS 2.0 is read by :func:`read_common_rss`
    (the same result, several times faster); everything else goes through
    feedparser. Never raises.
    """
    response_headers = {str(name).lower(): str(value) for name, value in (headers or {}).items()}
    first_char = _leading_char(body)
    if not first_char:
        return ParsedFeed(problem="empty document")
    media_type = response_headers.get("content-type", "").split(";")[0].strip().lower()
    if first_char != "<" and (first_char == "{" or media_type in JSON_CONTENT_TYPES):
        return parse_json_feed(body, url)
    return read_common_rss(body, url, response_headers) or _parse_xml_feed(body, url, response_headers)


# --- RSS and Atom through feedparser ----------------------------------------


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


# --- the common case: plain RSS 2.0 read with lxml -------------------------------
#
# feedparser spends about 17 ms of CPU on a 50-entry, 50 KB feed, almost all of it in
# its own per-element bookkeeping (bench/parse.py); lxml reads the same bytes in 0.2 ms.
# read_common_rss reads only documents whose every element it knows what feedparser
# does with, and gives each value the same treatment feedparser's element handler
# would (same text rules, same date parser, same author rule, called from feedparser
# itself; the usual RFC 822 date and plain links are read without it, and
# tests/test_parse_shortcuts.py checks those against feedparser), then hands
# feedparser-shaped entries to the code that normalises feedparser's results.
# Anything else is left to feedparser: tests/test_parse_fastpath.py checks the two
# agree field for field on every feeds-dev document the gate admits.

_CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
_DC_NS = "http://purl.org/dc/elements/1.1/"
_ATOM_NS = "http://www.w3.org/2005/Atom"
_MEDIA_NS = "http://search.yahoo.com/mrss/"
_SY_NS = "http://purl.org/rss/1.0/modules/syndication/"
_WFW_NS = "http://wellformedweb.org/CommentAPI/"
_SLASH_NS = "http://purl.org/rss/1.0/modules/slash/"

_CONTENT_ENCODED = f"{{{_CONTENT_NS}}}encoded"
_DC_CREATOR = f"{{{_DC_NS}}}creator"
_DC_DATE = f"{{{_DC_NS}}}date"

# The item elements the fast path reads, with the attributes each may carry; None: any.
# The singular ones may appear at most once (feedparser's rules for repeats differ by field).
_NO_ATTRIBUTES: frozenset[str] = frozenset()
_RSS_ITEM_ELEMENTS: dict[str, frozenset[str] | None] = {
    "title": _NO_ATTRIBUTES, "link": _NO_ATTRIBUTES, "guid": frozenset({"isPermaLink"}), "description": _NO_ATTRIBUTES,
    "pubDate": _NO_ATTRIBUTES, "author": _NO_ATTRIBUTES, _CONTENT_ENCODED: _NO_ATTRIBUTES, _DC_CREATOR: _NO_ATTRIBUTES,
    _DC_DATE: _NO_ATTRIBUTES, "category": frozenset({"domain"}), "enclosure": frozenset({"url", "type", "length"}),
    # Kept by feedparser under keys agg never reads.
    "comments": _NO_ATTRIBUTES, f"{{{_WFW_NS}}}commentRss": _NO_ATTRIBUTES, f"{{{_SLASH_NS}}}comments": _NO_ATTRIBUTES,
    f"{{{_MEDIA_NS}}}content": None, f"{{{_MEDIA_NS}}}thumbnail": None,
}
_RSS_REPEATABLE = frozenset({"category", "enclosure", f"{{{_MEDIA_NS}}}content", f"{{{_MEDIA_NS}}}thumbnail"})
_RSS_AUTHOR_ELEMENTS = frozenset({"author", _DC_CREATOR})
# Channel elements that cannot touch the feed's title, link or ttl in feedparser, nor any entry.
_RSS_CHANNEL_ELEMENTS = frozenset(
    "title link ttl description language copyright managingEditor webMaster pubDate lastBuildDate category "
    "generator docs cloud rating image textInput skipHours skipDays".split()
)
_RSS_CHANNEL_SINGULAR = ("title", "link", "ttl")
_ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
# Extension namespaces whose channel-level leaf elements feedparser files under feed keys agg
# never reads, except the ones it reads as the channel's title or as an image link.
_INERT_CHANNEL_NAMESPACES = frozenset({f"{{{_DC_NS}}}", f"{{{_ITUNES_NS}}}", f"{{{_MEDIA_NS}}}", f"{{{_SY_NS}}}"})
_CHANNEL_TITLE_OR_LINK = frozenset({f"{{{_DC_NS}}}title", f"{{{_MEDIA_NS}}}title", f"{{{_ITUNES_NS}}}link"})
# Channel elements with children, and the leaf children each may have.
_RSS_CHANNEL_GROUPS = {
    "image": frozenset({"url", "title", "link", "width", "height", "description"}),
    "textInput": frozenset({"title", "description", "name", "link"}),
    "skipHours": frozenset({"hour"}),
    "skipDays": frozenset({"day"}),
}
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
# feedparser's fix for "a=1&b;=2" in links (an entity-looking run turned back into plain text).
_LINK_ENTITY_RUN = re.compile(r"&([A-Za-z0-9_]+);")
# The form nearly every RSS date takes ("Sat, 28 Nov 2026 17:55:00 +0000"). feedparser tries
# the W3C parser before the RFC 822 one, and both split and lower-case the text: 8% of the
# fast path's time. tests/test_parse_shortcuts.py checks both read these dates the same.
_MONTHS = {name: number for number, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_USUAL_RFC822_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) (" + "|".join(_MONTHS) + r") ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:([+-])([0-9]{2})([0-9]{2})|GMT)\Z"
)


class _NotCommon(Exception):
    """The document holds something the fast path does not read: feedparser must."""


def read_common_rss(body: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed | None:
    """The feed, when ``body`` is plain RSS 2.0 that reads the same without feedparser; else None.

    Admitted: UTF-8 bytes (declared so, or undeclared) that the response does
    not say are something else, well-formed without any recovery, with no
    document type declaration and no ``xml:base``, under ``<rss version="2.0">``
    with one ``<channel>``, whose items hold only the elements in
    :data:`_RSS_ITEM_ELEMENTS` as plain text (no child elements, no comments).
    ``headers`` are the response headers with lower-case names.
    """
    if not _plain_utf8_xml(body, headers):
        return None
    try:
        root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True, recover=False))
    except (etree.LxmlError, ValueError):
        return None
    if root.tag != "rss" or dict(root.attrib) != {"version": "2.0"} or root.getroottree().docinfo.doctype:
        return None
    try:
        return _read_rss_channel(root, url)
    except _NotCommon:
        return None


def _plain_utf8_xml(body: bytes, headers: Mapping[str, str]) -> bool:
    """UTF-8 by every account: the bytes, the XML declaration and the response's charset.

    With a ``text/*`` type and no charset, feedparser assumes US-ASCII (RFC 3023)
    and reports an override for any other byte, so only ASCII bodies pass then.
    """
    if b"<!DOCTYPE" in body or b"xml:base" in body:
        return False
    declared = _XML_ENCODING.match(body)
    if declared and declared.group(1).decode("ascii").lower() not in _UTF8_NAMES:
        return False
    content_type = headers.get("content-type", "")
    charset = next((value.strip().strip('"').lower() for name, _, value in
                    (param.partition("=") for param in content_type.split(";")[1:]) if name.strip().lower() == "charset"), None)
    if charset is not None and charset not in _UTF8_NAMES:
        return False
    if charset is None and content_type.strip().lower().startswith("text/") and not body.isascii():
        return False
    if body.isascii():  # ASCII is UTF-8, and this test is much quicker than decoding
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_rss_channel(root: etree._Element, url: str) -> ParsedFeed:
    children = _child_elements(root)
    if len(children) != 1 or children[0].tag != "channel" or children[0].attrib:
        raise _NotCommon
    channel = children[0]
    items = []
    fields: dict[str, str] = {}
    for element in _child_elements(channel):
        if element.tag == "item":
            items.append(_read_rss_item(element))
        elif element.tag == f"{{{_ATOM_NS}}}link":
            _require_inert_atom_link(element)
        elif _is_inert_extension(element):
            pass
        elif element.tag in _RSS_CHANNEL_ELEMENTS:
            _require_plain_group(element, _RSS_CHANNEL_GROUPS.get(element.tag, frozenset()))
            if element.tag in _RSS_CHANNEL_SINGULAR:
                if element.tag in fields or element.attrib:  # a type="html" would change how feedparser reads it
                    raise _NotCommon
                fields[element.tag] = element.text or ""
        else:
            raise _NotCommon
    title, title_type = _feedparser_text_construct(fields.get("title"))
    link = _LINK_ENTITY_RUN.sub(r"&\1", _feedparser_uri_value(fields["link"])) if "link" in fields else None
    entries = [_entry_from_feedparser(item, url) for item in items]
    return ParsedFeed(
        format="rss20",
        title=_detail_text({"type": title_type}, title) or None,
        link=safe_http_url(link, url),
        ttl_seconds=_ttl_seconds(_feedparser_value(fields["ttl"]) if "ttl" in fields else None),
        entries=entries,
    )


def _read_rss_item(item: etree._Element) -> dict[str, Any]:
    """One item as the dictionary feedparser would have built for it (the keys agg reads)."""
    if item.attrib:
        raise _NotCommon
    seen: set[str] = set()
    entry: dict[str, Any] = {}
    tags: list[dict[str, Any]] = []
    enclosures: list[dict[str, Any]] = []
    for element in _child_elements(item):
        tag = element.tag
        if tag not in _RSS_ITEM_ELEMENTS or len(element):
            raise _NotCommon
        allowed = _RSS_ITEM_ELEMENTS[tag]
        if allowed is not None and not allowed.issuperset(element.keys()):
            raise _NotCommon
        if tag in seen and tag not in _RSS_REPEATABLE:
            raise _NotCommon
        if tag in _RSS_AUTHOR_ELEMENTS and not _RSS_AUTHOR_ELEMENTS.isdisjoint(seen):
            raise _NotCommon
        seen.add(tag)
        text = element.text or ""
        if tag == "title":
            value, kind = _feedparser_text_construct(text)
            entry["title"], entry["title_detail"] = value, {"type": kind, "value": value}
        elif tag == "link":
            entry["link"] = _LINK_ENTITY_RUN.sub(r"&\1", _feedparser_uri_value(text).replace("&amp;", "&"))
        elif tag == "guid":
            is_permalink = element.get("isPermaLink", "true") == "true"
            entry["id"] = _feedparser_value(_feedparser_uri(text.strip()) if is_permalink else text.strip())
            if is_permalink:
                entry.setdefault("guid_link", entry["id"])
        elif tag == "description":
            entry["summary"] = _feedparser_value(text.strip())
            entry["summary_detail"] = {"type": "text/html", "value": entry["summary"]}
        elif tag == _CONTENT_ENCODED:
            entry["content"] = [{"type": "text/html", "value": _feedparser_value(text.strip())}]
        elif tag == "pubDate":
            entry["published_parsed"] = _feedparser_date(text)
        elif tag == _DC_DATE:
            entry["updated_parsed"] = _feedparser_date(text)
        elif tag in _RSS_AUTHOR_ELEMENTS:
            entry["author"] = _feedparser_value(text.strip())
            if name := _feedparser_author_name(entry["author"]):
                entry["author_detail"] = {"name": name}
        elif tag == "category":
            term = _feedparser_value(text.strip())
            if term:
                tags.append({"term": term})
        elif tag == "enclosure":
            enclosures.append({"href": element.get("url"), "type": (element.get("type") or "").lower() or None,
                               "length": element.get("length")})
    # A permalink guid stands in for a missing <link>, as feedparser has it.
    guid_link = entry.pop("guid_link", None)
    if "link" not in entry and guid_link is not None:
        entry["link"] = guid_link
    if "summary" not in entry and "content" in entry:
        entry["summary"] = entry["content"][0]["value"]
    entry["tags"], entry["enclosures"] = tags, enclosures
    return entry


def _child_elements(parent: etree._Element) -> list[etree._Element]:
    """The element children, refusing processing instructions (feedparser would keep their text)."""
    children = []
    for child in parent:
        if isinstance(child, etree._ProcessingInstruction):
            raise _NotCommon
        if isinstance(child.tag, str):
            children.append(child)
    return children


def _require_plain_group(element: etree._Element, allowed_children: frozenset[str]) -> None:
    """``element`` holds only leaf children named in ``allowed_children``, without attributes besides the RSS ones."""
    for child in element:
        if not isinstance(child.tag, str) or child.tag not in allowed_children or len(child) or child.attrib:
            raise _NotCommon


def _is_inert_extension(element: etree._Element) -> bool:
    namespace = element.tag.partition("}")[0] + "}"
    return namespace in _INERT_CHANNEL_NAMESPACES and element.tag not in _CHANNEL_TITLE_OR_LINK and not len(element)


def _require_inert_atom_link(element: etree._Element) -> None:
    """An Atom link in RSS is read as the channel's link unless its rel says otherwise (e.g. "self")."""
    if len(element) or element.get("rel", "alternate").lower() == "alternate":
        raise _NotCommon


def _feedparser_value(stripped: str) -> str:
    """What feedparser does to every element's text after trimming it.

    It undoes one common mis-encoding (UTF-8 bytes read as Latin-1) and maps
    the C1 control range to the Windows-1252 characters people meant.
    """
    if stripped.isascii():  # both repairs only touch other characters
        return stripped
    from feedparser.html import _cp1252  # feedparser's own table, so the two paths cannot drift

    try:
        stripped = stripped.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    # The table maps C1 controls only, and a translate by a dict goes character by character in Python's
    # speed: a third of a cold fetch's parsing, on real text, was that pass over texts without a C1 control.
    return stripped.translate(_cp1252) if _C1_CONTROL.search(stripped) else stripped


def _feedparser_uri(stripped: str) -> str:
    if ":///" not in stripped:  # feedparser's one repair here is of extra slashes after "scheme://"
        return stripped
    from feedparser.urls import _urljoin

    return _urljoin("", stripped)


def _feedparser_uri_value(text: str) -> str:
    """A link element's text as feedparser has it before its link-specific repairs."""
    return _feedparser_value(_feedparser_uri(text.strip()))


def _feedparser_text_construct(text: str | None) -> tuple[str, str]:
    """An RSS text element's value and the content type feedparser guesses for it."""
    stripped = (text or "").strip()
    return _feedparser_value(stripped), "text/html" if _feedparser_looks_like_html(stripped) else "text/plain"


def _feedparser_looks_like_html(stripped: str) -> bool:
    if "<" not in stripped and "&" not in stripped:  # feedparser wants an end tag or an entity first
        return False
    from feedparser.mixin import _FeedParserMixin

    return bool(_FeedParserMixin.looks_like_html(stripped))


def _feedparser_date(text: str) -> time.struct_time | None:
    """A date element's value as feedparser reads it, the usual RFC 822 form without its chain of parsers."""
    stripped = text.strip()
    if usual := _USUAL_RFC822_DATE.match(stripped):
        day, month, year, hour, minute, second, sign, offset_hours, offset_minutes = usual.groups()
        try:
            stamp = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
            offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
            return (stamp + offset if sign == "-" else stamp - offset).utctimetuple()
        except (ValueError, OverflowError):
            pass  # no such moment: whatever feedparser's other parsers make of it
    from feedparser.datetimes import _parse_date

    return _parse_date(_feedparser_value(stripped))


class _EntryContext:
    """The one thing feedparser's author rule asks of its parser: the dictionary being built."""

    def __init__(self, entry: dict[str, Any]):
        self.entry = entry

    def _get_context(self) -> dict[str, Any]:
        return self.entry


@lru_cache(maxsize=1024)  # a feed names the same few authors on every item
def _feedparser_author_name(author: str) -> str | None:
    """The name in an author element's text by feedparser's own rule ("desk@example.com (News desk)": "News desk")."""
    from feedparser.mixin import _FeedParserMixin

    entry: dict[str, Any] = {"authors": [{}], "author": author}
    _FeedParserMixin._sync_author_detail(_EntryContext(entry))
    return entry.get("author_detail", {}).get("name")


# --- JSON Feed ---------------------------------------------------------------


def parse_json_feed(body: bytes | str, url: str) -> ParsedFeed:
    """Read a JSON Feed 1.0 or 1.1 document; wrong field types are ignored, never raised."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return ParsedFeed(problem=f"invalid JSON: {_describe(exc)}")
    if not isinstance(document, dict):
        return ParsedFeed(problem="not a JSON Feed: the document is not a JSON object")
    version = document.get("version")
    # Feeds in the wild declare http://jsonfeed.org/version/1 as often as the spec's https URL.
    declared = re.sub(r"^http://", "https://", version.strip(), flags=re.IGNORECASE) if isinstance(version, str) else ""
    feed_format = JSON_FEED_FORMATS.get(declared.rstrip("/"))
    if feed_format is None:
        known = declared.startswith(JSON_FEED_VERSION_PREFIX)
        label = "unsupported JSON Feed version" if known else "not a JSON Feed: unknown version"
        return ParsedFeed(problem=f"{label} {_short_repr(version)}")

    home_page = safe_http_url(document.get("home_page_url"), url)
    base = home_page or safe_http_url(document.get("feed_url"), url) or url
    feed_author = _json_author(document)
    items = document.get("items")
    entries = [_entry_from_json(item, base, feed_author) for item in items if isinstance(item, dict)] if isinstance(items, list) else []
    return ParsedFeed(
        format=feed_format,
        title=_json_title(document.get("title")) or None,
        link=home_page,
        entries=entries,
        problem=None if isinstance(items, list) else "JSON Feed without an items list",
    )


def _entry_from_json(item: dict[str, Any], base: str, feed_author: str | None) -> ParsedEntry:
    content_html = _string(item.get("content_html"))
    content_text = _string(item.get("content_text"))
    summary_text = fold_whitespace(_string(item.get("summary")))
    content = (content_html or html.escape(content_text, quote=False))[:MAX_HTML_CHARS]
    summary = html.escape(summary_text, quote=False)[:MAX_HTML_CHARS]
    title = _json_title(item.get("title"))
    link = safe_http_url(item.get("url"), base) or safe_http_url(item.get("external_url"), base)
    item_id = item.get("id")
    guid = str(item_id) if isinstance(item_id, (str, int, float)) and not isinstance(item_id, bool) else None
    updated = _utc_from_iso(item.get("date_modified"))
    return ParsedEntry(
        guid=_guid(guid, link, title, summary, content),
        link=link,
        title=title,
        summary=summary,
        content=content,
        summary_text=summary_text[:MAX_HTML_CHARS],
        content_text=fold_whitespace(content_text)[:MAX_HTML_CHARS] if content_text else html_to_text(content),
        author=_json_author(item) or feed_author,
        published=_utc_from_iso(item.get("date_published")) or updated,
        updated=updated,
        tags=_unique_strings(_list(item.get("tags"))),
        enclosures=_enclosures(
            (
                (attachment.get("url"), attachment.get("mime_type"), attachment.get("size_in_bytes"))
                for attachment in _mappings(item.get("attachments"))
            ),
            base,
        ),
    )


def _json_title(value: Any) -> str:
    """JSON Feed titles are plain text, but some feeds put HTML in them anyway."""
    text = _string(value)
    return (html_to_text(text) if _LOOKS_LIKE_MARKUP.search(text) else fold_whitespace(text))[:MAX_TITLE_CHARS]


def _json_author(holder: dict[str, Any]) -> str | None:
    """The first author name: JSON Feed 1.1 ``authors`` list, else 1.0 ``author`` object."""
    candidates = [*_list(holder.get("authors")), holder.get("author")]
    names = (candidate.get("name") for candidate in candidates if isinstance(candidate, dict))
    return next((author for author in map(_plain_author, names) if author), None)


def _utc_from_iso(value: Any) -> datetime | None:
    """An RFC 3339 date as aware UTC; a date without offset is taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


# --- shared normalisation ----------------------------------------------------


def _guid(own_id: Any, link: str | None, title: str, summary: str, content: str) -> str:
    """The feed's own id; else the link; else a hash of what the entry says."""
    if isinstance(own_id, str) and own_id.strip():
        return own_id.strip()
    if link:
        return link
    digest = hashlib.sha256("\n".join((title, summary, content)).encode("utf-8", errors="replace"))
    return f"sha256:{digest.hexdigest()}"


def _enclosures(candidates: Iterable[tuple[Any, Any, Any]], base: str) -> list[Enclosure]:
    enclosures: list[Enclosure] = []
    seen: set[str] = set()
    for href, media_type, length in candidates:
        url = safe_http_url(href, base)
        if url is None or url in seen:
            continue
        seen.add(url)
        enclosures.append(Enclosure(url=url, type=_string(media_type).strip() or None, length=_byte_count(length)))
    return enclosures


def _byte_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _plain_author(value: Any) -> str | None:
    return fold_whitespace(_string(value))[:MAX_AUTHOR_CHARS] or None


def _unique_strings(values: Iterable[Any]) -> list[str]:
    unique: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and (folded := fold_whitespace(value)):
            unique[folded] = None
    return list(unique)


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    """The mappings in a list field, ignoring anything else a feed put there."""
    # dict first: the test of a dict against the Mapping ABC alone is several times slower.
    return [element for element in _list(value) if isinstance(element, (dict, Mapping))]


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def safe_http_url(value: Any, base: str | None = None) -> str | None:
    """``value`` made absolute against ``base``, or None unless it is an http(s) URL with a host and a valid port.

    The one test of "a web address agg may fetch or link to", for feed, page and export code alike.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    stripped = value.strip()
    if (plain := _PLAIN_HTTP_URL.match(stripped)) and (not base or _PLAIN_HTTP_URL.match(base)):
        port = plain.group(1)
        if port is None or int(port) <= 65535:
            return stripped  # what urljoin and urlsplit would give back, in a third of the time
    try:
        absolute = urljoin(base, stripped) if base else stripped
        parts = urlsplit(absolute)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:  # e.g. "http://[broken" or port 99999
        return None
    return absolute if parts.scheme in ("http", "https") and parts.hostname else None


def fold_whitespace(text: str) -> str:
    """Runs of whitespace as one space, control characters dropped, ends trimmed."""
    if not text.isprintable():  # a quicker test than the search: controls are never printable
        # Controls go before splitting: str.split would take some of them (0x1C-0x1F, 0x85) for spaces.
        text = _CONTROL_CHARS.sub("", text)
    return " ".join(text.split())


def html_to_text(markup: str) -> str:
    """The words of an HTML fragment: entities decoded, tags and scripts gone, whitespace folded."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        return fold_whitespace(markup)
    try:
        root = etree.fromstring(markup.encode("utf-8", errors="replace"), _html_fragment_parser())
    except (etree.LxmlError, ValueError):
        return fold_whitespace(html.unescape(markup)) if "<" not in markup else ""
    if root is None:
        return ""
    words: list[str] = []
    _collect_words(root, words)
    return fold_whitespace("".join(words))


def _html_fragment_parser() -> etree.HTMLParser:
    """This thread's parser for HTML fragments: lxml parsers must not be shared across threads."""
    parser = getattr(_THREAD_STATE, "html_parser", None)
    if parser is None:
        parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True, remove_pis=True, encoding="utf-8")
        _THREAD_STATE.html_parser = parser
    return parser


def _collect_words(element: etree._Element, words: list[str]) -> None:
    """Append the text a reader sees in ``element``, a space after each breaking element.

    One walk of the tree in document order; it took half the time of stripping
    the invisible elements, marking the breaking ones and then reading
    ``itertext()`` (lxml builds a tag matcher on every ``iter(*tags)`` call).
    Recursion is bounded: libxml2's HTML parser nests at most 256 deep.
    """
    if element.text is not None:
        words.append(element.text)
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag not in _INVISIBLE_ELEMENTS:  # a comment's text is no reader's
            _collect_words(child, words)
            if tag in _BREAKING_ELEMENTS:
                words.append(" ")
        if child.tail is not None:
            words.append(child.tail)


# --- sniffing and autodiscovery ------------------------------------------------


def bom_codec(data: bytes) -> tuple[str, int] | None:
    """The codec a byte-order mark at the start of ``data`` names, and the mark's length in bytes."""
    return next(((codec, len(bom)) for bom, codec in _BOMS if data.startswith(bom)), None)


def _sniff_wide_codec(head: bytes) -> str | None:
    """The UTF-16/32 codec a document starts in (by BOM or by its first "<"), if any."""
    if marked := bom_codec(head):
        return None if marked[0] == "utf-8" else marked[0]
    return next((codec for pattern, codec in _WIDE_LESS_THAN if head.startswith(pattern)), None)


def _head_text(body: bytes) -> str:
    """The start of a document as text, enough to sniff what it is."""
    head = body[:_SNIFF_BYTES].removeprefix(codecs.BOM_UTF8)
    codec = _sniff_wide_codec(head) or "latin-1"
    return head.decode(codec, errors="ignore").lstrip("\ufeff")


def _leading_char(body: bytes) -> str:
    """The first character of a document that is not whitespace or a byte-order mark."""
    return _head_text(body).lstrip()[:1]


def looks_like_html(body: bytes) -> bool:
    """Whether a document is an HTML page rather than a feed."""
    head = _head_text(body).lower()
    return bool(_HTML_MARKERS.search(head)) and not _FEED_ROOT.search(head)


def discover_feed_links(html: bytes | str, base_url: str) -> list[str]:
    """Feeds an HTML page advertises with ``<link rel="alternate">``, absolute, in page order."""
    if not html or (isinstance(html, bytes) and not html.strip()):
        return []
    import lxml.html  # here: only feed discovery reads whole pages

    try:
        document = lxml.html.document_fromstring(html)
    except (etree.LxmlError, ValueError):
        return []
    page_base = next((safe_http_url(href, base_url) for href in document.xpath("//base/@href")), None)
    base = page_base or base_url
    found: list[str] = []
    for link in document.iter("link"):
        rel_tokens = str(link.get("rel", "")).lower().split()
        media_type = str(link.get("type", "")).split(";")[0].strip().lower()
        if "alternate" in rel_tokens and media_type in FEED_LINK_TYPES:
            url = safe_http_url(link.get("href"), base)
            if url and url not in found:
                found.append(url)
    return found
