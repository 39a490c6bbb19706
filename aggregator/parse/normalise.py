"""What every reader of a feed gives its entries: a stable guid, safe links, plain text from HTML, and the bounds.

Shared by the feedparser path, the fast RSS reader and the JSON Feed reader,
so that an entry reads the same whichever of them read it.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml import etree

from aggregator.models import Enclosure

MAX_TITLE_CHARS = 1_000
MAX_AUTHOR_CHARS = 300
MAX_HTML_CHARS = 1_000_000
_INVISIBLE_ELEMENTS = frozenset({"script", "style", "template", "noscript", "head"})
# Elements after which a reader sees a break, so their words must not run together.
_BREAKING_ELEMENTS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table td th tr ul".split()
)
# C1 controls included: 0x9B alone starts an escape sequence on some terminals.
# A regular expression, not str.translate with a table: a third of the time on long text.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_THREAD_STATE = threading.local()
_LOOKS_LIKE_MARKUP = re.compile(r"<[A-Za-z/!]|&#?\w+;")
# An absolute http(s) URL that urllib reads and writes back unchanged: a plain host, no empty
# query, fragment or ";" parameters, nothing it strips or refuses. Joined to a base of the
# same kind it comes back as it is (an absolute URL's own host wins).
_URL_CHARS = r"A-Za-z0-9._~%!$&'()*+,=:@/-"  # "-" last: it stays a character in every class built on this
_PLAIN_HTTP_URL = re.compile(
    rf"https?://[A-Za-z0-9.-]+(?::([0-9]{{1,5}}))?(?:/[{_URL_CHARS}]*)?(?:\?[;?{_URL_CHARS}]+)?(?:#[;?{_URL_CHARS}]+)?\Z"
)


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
