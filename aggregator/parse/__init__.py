"""Parse stage: turns the bytes of a fetched feed into a :class:`ParsedFeed`.

This package owns reading feed documents and normalising every entry into
:class:`ParsedEntry`: a stable guid, an absolute http(s) link, a plain-text
title, HTML summary/content with plain-text twins, UTC dates, tags and
enclosures. Its files are its parts:

- :mod:`~aggregator.parse.feedparser_path`: RSS 0.9x/1.0/2.0 and Atom through
  feedparser, and the defusing of entity declarations before it;
- :mod:`~aggregator.parse.common_rss`: plain, well-formed UTF-8 RSS 2.0 read
  with lxml, giving what feedparser gives, several times faster;
- :mod:`~aggregator.parse.json_feed`: JSON Feed 1.0/1.1, which feedparser 6
  cannot read;
- :mod:`~aggregator.parse.normalise`: what every reader gives an entry (guid,
  safe links, plain text from HTML, bounds);
- :mod:`~aggregator.parse.sniff`: what a document is before it is parsed
  (encoding, HTML where a feed was expected: :func:`looks_like_html`), and
  feed autodiscovery in HTML pages (:func:`discover_feed_links`).

Nothing here raises on bad input: whatever the bytes, the caller gets a
:class:`ParsedFeed`, with ``problem`` saying in words what was wrong.
Summary and content HTML is kept as the feed gave it and is untrusted; the
stages that output it sanitise it. Within the package, imports are relative,
so that ``bench/parse.py`` can load an earlier commit's copy beside this one.
"""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.models import ParsedFeed

from .common_rss import read_common_rss
from .feedparser_path import MAX_ENTITY_EXPANSION, _parse_xml_feed, defuse_entity_declarations
from .json_feed import JSON_CONTENT_TYPES, parse_json_feed
from .normalise import MAX_AUTHOR_CHARS, MAX_HTML_CHARS, MAX_TITLE_CHARS, fold_whitespace, html_to_text, safe_http_url
from .sniff import COMMON_FEED_PATHS, _leading_char, bom_codec, discover_feed_links, looks_like_html

__all__ = [
    "COMMON_FEED_PATHS", "MAX_AUTHOR_CHARS", "MAX_ENTITY_EXPANSION", "MAX_HTML_CHARS",
    "MAX_TITLE_CHARS", "bom_codec", "defuse_entity_declarations", "discover_feed_links", "fold_whitespace",
    "html_to_text", "looks_like_html", "parse_feed", "parse_json_feed", "read_common_rss", "safe_http_url",
]


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
