"""Article extraction: an article page's HTML in, the article's text and metadata out.

This module owns:

- decoding page bytes to text (:func:`decode_html`: BOM, then the charset the
  server declared, then the page's own ``<meta>`` declaration, then sniffing);
- running trafilatura with the project's single set of extraction settings
  (:data:`SETTINGS`, chosen by ``bench/extract_quality.py``) and reading the
  page metadata it does not give reliably (canonical URL, language):
  :func:`extract_article`;
- the pure choice between the page's text and the feed's own text
  (:func:`choose_text`);
- running extraction in worker processes so that this CPU-bound work overlaps
  with async fetching, with a per-page time limit that kills a worker stuck
  on a pathological page (:class:`ExtractorPool`).

Nothing here does network I/O.
"""

from __future__ import annotations

import asyncio
import codecs
import multiprocessing
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pebble
    from lxml.html import HtmlElement
    from trafilatura.settings import Document

from aggregator.models import Article
from aggregator.parse import bom_codec, safe_http_url

__all__ = [
    "DEFAULT_TIME_LIMIT",
    "MIN_ARTICLE_CHARS",
    "SETTINGS",
    "ExtractionOutcome",
    "ExtractionSettings",
    "ExtractorPool",
    "available_cores",
    "choose_text",
    "decode_html",
    "extract_article",
]

# --- settings -----------------------------------------------------------------

# Elements a reader never sees: the HTML ``hidden`` attribute, inline
# ``display:none`` / ``visibility:hidden``, and ``aria-hidden`` (decorative
# icons, duplicated "screen-only" teasers). Pages ship such nodes for menus,
# modals and alternate layouts; keeping them mixes boilerplate into the text.
_HIDDEN_NODES_XPATH = (
    "//*[@hidden"
    " or contains(translate(@style, ' ', ''), 'display:none')"
    " or contains(translate(@style, ' ', ''), 'visibility:hidden')"
    " or @aria-hidden='true']"
)

# Small blocks whose class or id names them as promotion or page furniture:
# newsletter sign-ups, subscription and cookie prompts, share bars. Such
# blocks often sit inside or right after the article on short pages, where
# trafilatura's own cleaning keeps them. The length bound keeps any large
# container (one that could hold the article itself) out of reach.
_PROMO_WORDS = ("newsletter", "signup", "sign-up", "subscribe", "cookie", "consent", "promo", "paywall", "share")
_LOWER = "translate({attr}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
_PROMO_NODES_XPATH = (
    "//*[("
    + " or ".join(f"contains({_LOWER.format(attr=attr)}, '{word}')" for attr in ("@class", "@id") for word in _PROMO_WORDS)
    + ") and string-length(normalize-space(.)) < 400]"
)


@dataclass(frozen=True)
class ExtractionSettings:
    """How trafilatura is run. :data:`SETTINGS` is the one the project uses;
    other instances exist so the bench can compare variants side by side.

    ``retry_below_chars``: when the first pass yields less text than this, a
    second pass runs in trafilatura's balanced mode (neither precision nor
    recall) and the longer of the two texts is kept — a safety net for pages
    where the first mode's heuristics pick a small wrong block. 0 disables it.
    """

    favor_precision: bool = False
    favor_recall: bool = False
    fast: bool = False
    prune_hidden: bool = False
    prune_promos: bool = False
    retry_below_chars: int = 0
    include_tables: bool = True

    def retry_settings(self) -> ExtractionSettings | None:
        """The balanced-mode settings for the second pass, or None when there is none to run."""
        if not self.retry_below_chars:
            return None
        balanced = replace(self, favor_precision=False, favor_recall=False, fast=False, retry_below_chars=0)
        return None if balanced == replace(self, retry_below_chars=0) else balanced

    def trafilatura_kwargs(self) -> dict[str, object]:
        from trafilatura.settings import set_date_params

        date_params = set_date_params(extensive=not self.fast)
        # Keep the time of day and the offset when the page gives them.
        date_params["outputformat"] = "%Y-%m-%dT%H:%M:%S%z"
        return {
            "favor_precision": self.favor_precision,
            "favor_recall": self.favor_recall,
            "fast": self.fast,
            "include_comments": False,
            "include_tables": self.include_tables,
            "with_metadata": True,
            "date_extraction_params": date_params,
            "prune_xpath": [xpath for xpath, on in ((_HIDDEN_NODES_XPATH, self.prune_hidden),
                                                    (_PROMO_NODES_XPATH, self.prune_promos)) if on] or None,
        }


# Chosen by bench/extract_quality.py on the 130 extraction-dev pages: mean F1
# 0.949 (P 0.976, R 0.940) against 0.935 for trafilatura's balanced defaults,
# 0.939 for favor_recall alone and 0.945 with hidden nodes pruned; no empty
# output, no exception. Pruning hidden nodes is what lifts precision; the
# recall mode is also cheaper, as trafilatura skips its fallback extractors
# when the recall pass already found plenty of text; the balanced retry
# rescues pages where the recall pass picked a small wrong block. Pruning
# promotion blocks leaves the dev pages' F1 unchanged (0.949) and keeps
# newsletter prompts out of short pages, such as one-paragraph summaries.
SETTINGS = ExtractionSettings(favor_recall=True, prune_hidden=True, prune_promos=True, retry_below_chars=500)

# Below this many characters (whitespace collapsed) page text is not taken as
# an article body: one news paragraph is typically 300–600 characters, and what
# pages give under 200 (about 30–35 words, two short sentences) is a teaser, a
# paywall or consent stub, or a caption — not worth preferring over the feed.
MIN_ARTICLE_CHARS = 200

# --- decoding -----------------------------------------------------------------

# Where to look for a <meta> charset declaration. The HTML standard prescans
# 1024 bytes, but real pages often put inline scripts and styles first.
_CHARSET_SCAN_BYTES = 4096
# How much of a page charset detection reads: enough to see non-ASCII text,
# bounded so a huge page does not make sniffing the slow step.
_SNIFF_BYTES = 65536

_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9._:+-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9._:+-]+)""", re.IGNORECASE)

# Labels that browsers (WHATWG Encoding standard) read as a wider encoding:
# pages labelled latin-1 routinely contain windows-1252 quotes and dashes,
# and gb2312 pages contain GBK characters.
_WIDER_ENCODING = {
    "iso-8859-1": "windows-1252",
    "iso8859-1": "windows-1252",
    "latin1": "windows-1252",
    "latin-1": "windows-1252",
    "l1": "windows-1252",
    "cp819": "windows-1252",
    "ascii": "windows-1252",
    "us-ascii": "windows-1252",
    "iso-8859-9": "windows-1254",
    "latin5": "windows-1254",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
}


def _codec_for(label: str | None, *, in_document: bool) -> str | None:
    """The Python codec for a charset label, or None when the label is unusable.

    A UTF-16/32 label found inside the document itself cannot be true (the
    bytes were readable as ASCII to find it), so, as browsers do, it means UTF-8.
    """
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if in_document and name.startswith(("utf-16", "utf-32", "ucs-2", "ucs2")):
        return "utf-8"
    name = _WIDER_ENCODING.get(name, name)
    try:
        codec = codecs.lookup(name)
        "".encode(codec.name)  # rejects bytes-to-bytes codecs such as "hex"
    except (LookupError, ValueError):  # ValueError: a label with a NUL in it
        return None
    return codec.name


def decode_html(data: bytes, declared_charset: str | None = None) -> str:
    """Decode page bytes the way a browser would, never failing.

    Order: byte-order mark; bytes that are valid UTF-8 beyond ASCII are UTF-8;
    the charset the server declared (``declared_charset``, from the HTTP
    header); the page's ``<meta charset>`` / ``http-equiv`` or XML declaration
    in its first few KB; charset detection
    (charset_normalizer, which trafilatura already depends on); else UTF-8 with
    replacement characters. NUL characters are dropped, as browsers do.
    """
    if marked := bom_codec(data):
        codec, length = marked
        return data[length:].decode(codec, errors="replace").replace("\x00", "")

    if _is_utf8_beyond_ascii(data):
        return data.decode("utf-8").replace("\x00", "")
    head = data[:_CHARSET_SCAN_BYTES]
    declared_in_document = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    codec = _codec_for(declared_charset, in_document=False) or (
        _codec_for(declared_in_document.group(1).decode("ascii"), in_document=True) if declared_in_document else None
    )
    if codec is None:
        codec = _sniff_codec(data)
    return data.decode(codec, errors="replace").replace("\x00", "")


def _is_utf8_beyond_ascii(data: bytes) -> bool:
    """Whether the bytes hold non-ASCII text that is valid UTF-8.

    Such bytes are UTF-8 whatever the page or server claims: text in a legacy
    encoding almost never forms valid multi-byte UTF-8 sequences throughout,
    while pages re-saved or re-served as UTF-8 under a stale latin-1 / gb2312
    label are common.
    """
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _sniff_codec(data: bytes) -> str:
    if data.isascii():
        return "utf-8"
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return "utf-8"
    best = from_bytes(data[:_SNIFF_BYTES]).best()
    return _codec_for(best.encoding if best else None, in_document=False) or "utf-8"


# --- extraction ---------------------------------------------------------------

_LANGUAGE_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[-_].*)?$")


def extract_article(
    html: str | bytes,
    url: str | None = None,
    *,
    declared_charset: str | None = None,
    settings: ExtractionSettings = SETTINGS,
) -> Article:
    """The article text and metadata of one page; an empty :class:`Article` when
    nothing could be found. Never raises, whatever the input.

    ``url`` is where the page was fetched from (resolves a relative canonical
    link); ``declared_charset`` is the charset of the HTTP Content-Type header.
    ``published`` is timezone-aware UTC (a date without a time is midnight
    UTC); ``language`` is the page's declared primary language subtag, lower
    case (``"en"``); ``canonical_url`` is an absolute http(s) URL or None.
    """
    # Imported here, in the extraction workers: it takes 0.15 s to import, which a
    # run with nothing to extract (every feed a 304) would otherwise pay in the main process.
    import trafilatura

    try:
        text = decode_html(html, declared_charset) if isinstance(html, bytes) else html.replace("\x00", "")
        tree = trafilatura.load_html(text)
        if tree is None:
            return Article()
        document, body = _run_trafilatura(tree, url, settings)
        retry = settings.retry_settings()
        if retry is not None and len(body) < settings.retry_below_chars:
            second, second_body = _run_trafilatura(tree, url, retry)
            if len(second_body) > len(body):
                document, body = second, second_body
        return Article(
            text=body,
            title=_clean(document.title) if document is not None else None,
            author=_clean(document.author) if document is not None else None,
            published=_declared_publication_time(tree) or (_parse_date(document.date) if document is not None else None),
            language=_page_language(tree),
            canonical_url=_canonical_url(tree, url),
            site_name=_clean(document.sitename) if document is not None else None,
        )
    except Exception:  # noqa: BLE001 — contract: a bad page yields an empty Article, never an exception
        return Article()


def _run_trafilatura(tree: HtmlElement, url: str | None, settings: ExtractionSettings) -> tuple[Document | None, str]:
    import trafilatura

    # bare_extraction works on a copy of the tree, so the tree can be reused.
    document = trafilatura.bare_extraction(tree, url=url, **settings.trafilatura_kwargs())
    return document, ((document.text or "").strip() if document is not None else "")


def _clean(value: str | None) -> str | None:
    value = " ".join(value.split()) if value else ""
    return value or None


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 9999 shifted past the end of time
        return None


_PUBLISHED_META_XPATH = (
    "//meta[@property='article:published_time' or @name='article:published_time'"
    " or @itemprop='datePublished' or @name='datePublished']/@content"
    " | //*[@itemprop='datePublished']/@datetime"
)
_JSON_LD_PUBLISHED = re.compile(r'"datePublished"\s*:\s*"([^"]{10,40})"')


def _declared_publication_time(tree: HtmlElement) -> datetime | None:
    """The publication instant the page states in machine-readable form
    (Open Graph article meta, schema.org microdata or JSON-LD), only when it
    includes a time of day.

    trafilatura's date finder prefers a date in the URL, which has no time;
    the page's own timestamp is more precise when it has one.
    """
    candidates = list(tree.xpath(_PUBLISHED_META_XPATH))
    for script in tree.xpath("//script[@type='application/ld+json']/text()"):
        candidates.extend(_JSON_LD_PUBLISHED.findall(script))
    for candidate in candidates:
        candidate = candidate.strip()
        if "T" in candidate or " " in candidate:
            parsed = _parse_date(candidate)
            if parsed is not None:
                return parsed
    return None


def _page_language(tree: HtmlElement) -> str | None:
    candidates = [
        *tree.xpath("/html/@lang"),
        *tree.xpath("/html/@xml:lang", namespaces={"xml": "http://www.w3.org/XML/1998/namespace"}),
        *tree.xpath("//meta[translate(@http-equiv, 'CONTENT-LANGUAGE', 'content-language')='content-language']/@content"),
        *tree.xpath("//meta[@property='og:locale']/@content"),
    ]
    for candidate in candidates:
        match = _LANGUAGE_TAG.match(candidate.split(",")[0].strip())
        if match:
            return match.group(1).lower()
    return None


def _canonical_url(tree: HtmlElement, url: str | None) -> str | None:
    base = url
    for href in tree.xpath("//base/@href"):
        base = safe_http_url(href, url) or url
        break
    candidates = [
        *tree.xpath("//link[contains(concat(' ', translate(@rel, 'CANONIL', 'canonil'), ' '), ' canonical ')]/@href"),
        *tree.xpath("//meta[@property='og:url' or @name='og:url']/@content"),
    ]
    for candidate in candidates:
        absolute = safe_http_url(candidate, base)
        if absolute:
            return absolute
    return None


# --- choosing between page and feed text --------------------------------------

TextSource = Literal["page", "feed-content", "feed-summary"]


def choose_text(
    page_text: str, feed_content_text: str, feed_summary_text: str, page_status: str
) -> tuple[str, TextSource, str]:
    """Pick the text to keep for an entry: ``(text, text_source, extract_status)``.

    ``page_status`` is ``"ok"`` when the page was fetched and extracted, else
    the caller's reason it was not (``"http-error"``, ``"not-html"``,
    ``"too-large"``, ``"timeout"``, ``"error"``, ``"skipped"``, …); that reason
    is passed through as ``extract_status``. For a page that was extracted,
    ``extract_status`` is ``"empty"`` (no text), ``"too-short"`` (fewer than
    :data:`MIN_ARTICLE_CHARS` characters) or ``"ok"``: it always describes the
    page, while ``text_source`` says where the kept text came from.

    Rule: the page text wins when it is long enough (``"ok"``) and at least
    as long as the feed's own full content. Otherwise the longest of the page
    text, the feed content and the feed summary is kept, ties going to the
    page, then the feed content: in practice the feed content (the publisher's
    complete text, free of extraction mistakes) when the feed has it, else the
    summary, and a too-short page text only when the feed has nothing longer.
    Lengths are compared with whitespace collapsed. When all three are empty
    the result is ``("", "page", extract_status)``.
    """
    page_ok = page_status == "ok"
    page = page_text.strip() if page_ok else ""
    candidates: list[tuple[TextSource, str]] = [
        ("page", page),
        ("feed-content", feed_content_text.strip()),
        ("feed-summary", feed_summary_text.strip()),
    ]
    lengths = {source: _visible_length(text) for source, text in candidates}

    if not page_ok:
        status = page_status
    elif lengths["page"] == 0:
        status = "empty"
    elif lengths["page"] < MIN_ARTICLE_CHARS:
        status = "too-short"
    else:
        status = "ok"

    if status == "ok" and lengths["page"] >= lengths["feed-content"]:
        return page, "page", status
    source, text = max(candidates, key=lambda candidate: lengths[candidate[0]])
    return text, source, status


def _visible_length(text: str) -> int:
    return len(" ".join(text.split()))


# --- running extraction in worker processes ------------------------------------

DEFAULT_TIME_LIMIT = 20.0
# A worker is replaced after this many pages, so that memory held by lxml and
# trafilatura's caches in a long-running process stays bounded.
_WORKER_MAX_TASKS = 500

ExtractionStatus = Literal["ok", "timeout", "error"]


@dataclass
class ExtractionOutcome:
    """The result of extracting one page in the pool.

    ``status`` is ``"ok"`` when the extractor returned (``article.text`` may
    still be empty), ``"timeout"`` when the page took longer than the pool's
    time limit (the worker was killed), ``"error"`` when the worker raised or
    died; ``error`` then says what happened.
    """

    status: ExtractionStatus
    article: Article = field(default_factory=Article)
    error: str | None = None


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        return max(1, process_cpu_count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without affinity masks (macOS)
        return max(1, os.cpu_count() or 1)


class ExtractorPool:
    """Worker processes that run :func:`extract_article` for async callers.

    Each page gets ``time_limit`` seconds of a worker's time (counted from when
    a worker starts it, not while it waits in the queue); past that the worker
    is killed and replaced and the page's outcome is ``"timeout"``. A worker
    that dies (segfault, ``os._exit``) is replaced too and the page's outcome
    is ``"error"``. Other pages are unaffected either way.

    Built on pebble's ProcessPool, which kills and replaces single workers —
    the standard library's pool can only be torn down whole. Workers come from
    a fork server that has already imported this module, so starting or
    replacing one is quick and never forks a process that runs the event loop's
    threads.

    ``extractor`` must be a module-level function with the signature of
    :func:`extract_article`; tests inject pathological ones.

    Use as a context manager (``with`` or ``async with``)::

        async with ExtractorPool() as pool:
            outcome = await pool.extract(body, url, declared_charset)
    """

    def __init__(
        self,
        workers: int | None = None,
        time_limit: float = DEFAULT_TIME_LIMIT,
        *,
        extractor: Callable[..., Article] = extract_article,
    ) -> None:
        self.workers = workers or available_cores()
        self.time_limit = time_limit
        self._extractor = extractor
        # Started on the first page: a run with nothing to extract (every feed
        # unchanged, or extract: false) then never pays for the workers.
        self._pool: pebble.ProcessPool | None = None

    def _started_pool(self) -> pebble.ProcessPool:
        if self._pool is None:
            import pebble  # here, like trafilatura: 13 ms that a run with no page to extract need not pay

            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__, "trafilatura"])  # imported once, not per worker
            self._pool = pebble.ProcessPool(max_workers=self.workers, max_tasks=_WORKER_MAX_TASKS, context=context)
        return self._pool

    async def extract(self, html: bytes, url: str | None, declared_charset: str | None = None) -> ExtractionOutcome:
        future = self._started_pool().schedule(
            self._extractor,
            args=(html, url),
            kwargs={"declared_charset": declared_charset},
            timeout=self.time_limit,
        )
        from pebble import ProcessExpired  # already imported by _started_pool

        try:
            article = await asyncio.wrap_future(future)
        except TimeoutError:
            return ExtractionOutcome("timeout", error=f"extraction took longer than {self.time_limit:g} s")
        except ProcessExpired as died:
            return ExtractionOutcome("error", error=f"extraction worker died (exit code {died.exitcode})")
        except Exception as failed:  # noqa: BLE001 — any failure of one page is that page's outcome
            return ExtractionOutcome("error", error=f"{type(failed).__name__}: {failed}")
        return ExtractionOutcome("ok", article=article)

    def close(self) -> None:
        """Let queued pages finish, then stop the workers (a later page starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> ExtractorPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ExtractorPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)
