"""The plain records passed between pipeline stages.

Each stage takes and returns these dataclasses, never database rows or
library objects, so that stages stay independent and easy to test:

- :class:`FetchResult`  — what :mod:`aggregator.fetch` got from a server;
- :class:`ParsedFeed` / :class:`ParsedEntry` — what :mod:`aggregator.parse` read from it;
- :class:`Article` — what :mod:`aggregator.extract` found on an entry's page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class FetchResult:
    """The outcome of one HTTP (or file) request.

    ``error`` is set, in words a person can act on, whenever ``body`` could
    not be had; ``error_kind`` is a short machine-readable tag for it
    (``timeout``, ``too-large``, ``http``, ``connection``, ``dns``,
    ``refused-address``, ``bad-scheme``, ``too-many-redirects``, ``decode``).
    """

    url: str
    final_url: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    error: str | None = None
    error_kind: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    # Where the server said, with 301/308, that the resource now lives.
    permanent_redirect: str | None = None
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def ok(self) -> bool:
        return self.error is None and self.body is not None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The charset the Content-Type header declares, if any."""
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"')
        return None


@dataclass
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None


@dataclass
class ParsedEntry:
    """One entry of a feed, normalised.

    ``title`` is plain text; ``summary`` and ``content`` keep the feed's
    HTML (untrusted: never output without sanitising); ``summary_text`` and
    ``content_text`` are the same as plain text. ``published`` is the
    entry's publication time, or its update time when that is all it gives.
    """

    guid: str
    link: str | None = None
    title: str = ""
    summary: str = ""
    content: str = ""
    summary_text: str = ""
    content_text: str = ""
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    tags: list[str] = field(default_factory=list)
    enclosures: list[Enclosure] = field(default_factory=list)


@dataclass
class ParsedFeed:
    """A whole feed document, normalised.

    ``format`` names what was read (``rss20``, ``atom10``, ``json1.1``, …).
    ``problem`` is set when the document was ill-formed but still yielded
    something (feedparser's "bozo" reason), or when it yielded no entries.
    """

    format: str = ""
    title: str | None = None
    link: str | None = None
    ttl_seconds: int | None = None
    entries: list[ParsedEntry] = field(default_factory=list)
    problem: str | None = None


@dataclass
class Article:
    """What extraction found on an article page. ``text`` is "" when nothing was found."""

    text: str = ""
    title: str | None = None
    author: str | None = None
    published: datetime | None = None
    language: str | None = None
    canonical_url: str | None = None
    site_name: str | None = None
