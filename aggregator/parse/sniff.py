"""What a fetched document is before it is parsed (its encoding, HTML where a feed was expected), and the feeds an
HTML page advertises (autodiscovery)."""

from __future__ import annotations

import codecs
import re

from lxml import etree

from .normalise import safe_http_url

COMMON_FEED_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml", "/feed.json", "/rss")
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
_FEED_ROOT = re.compile(r"<(?:rss|feed|rdf:rdf|channel)[\s>/]")
_HTML_MARKERS = re.compile(r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]")


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
