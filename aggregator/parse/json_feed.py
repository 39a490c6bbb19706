"""JSON Feed 1.0 and 1.1, which feedparser 6 cannot read: a small reader of its own."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any

from aggregator.models import ParsedEntry, ParsedFeed

from .normalise import (
    _LOOKS_LIKE_MARKUP,
    MAX_HTML_CHARS,
    MAX_TITLE_CHARS,
    _describe,
    _enclosures,
    _guid,
    _list,
    _mappings,
    _plain_author,
    _short_repr,
    _string,
    _unique_strings,
    fold_whitespace,
    html_to_text,
    safe_http_url,
)

JSON_FEED_FORMATS = {
    "https://jsonfeed.org/version/1": "json1",
    "https://jsonfeed.org/version/1.1": "json1.1",
}
JSON_FEED_VERSION_PREFIX = "https://jsonfeed.org/version/"
JSON_CONTENT_TYPES = frozenset({"application/feed+json", "application/json"})


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
