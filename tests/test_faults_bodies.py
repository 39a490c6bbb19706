"""Broken and hostile bodies, end to end: ``agg fetch`` (and ``agg feeds add``) against a local server.

A body that is not a feed is a failed fetch with a clear reason; a body that
is a damaged feed still gives what can be read; huge bodies and gzip bombs
are cut at ``max_body`` while streaming (the server sees the client hang up
long before the end), and XML entity attacks expand nothing and read nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import gzip
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.fetch import Fetcher
from aggregator.models import FetchResult
from tests.conftest import rss_document
from tests.faults import (
    BILLION_LAUGHS,
    GzipBomb,
    MiB,
    big_body_reply,
    bomb_reply,
    external_entity,
    parameter_entity,
    quadratic_blowup,
)
from tests.server import Reply, ScriptedServer
from tests.test_pipeline import query, write_config

ITEMS = [{"guid": f"b-{n}", "title": f"Caf\u00e9 story {n}", "link": f"http://example.test/b/{n}"} for n in range(6)]
FEED = rss_document(ITEMS)
GOOD = rss_document([{"guid": "good-1", "title": "Healthy"}])


def fetch_feed(tmp_path: Path, server: ScriptedServer, agg, reply: Reply, defaults: str = ""):
    """``agg fetch`` of the feed ``reply`` next to a healthy one; returns (result, db, feed url)."""
    url = server.route("/feed", reply)
    cfg = write_config(tmp_path, [{"url": url}, {"url": server.route("/good.xml", Reply(body=GOOD))}], defaults)
    db = tmp_path / "agg.db"
    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    assert query(db, "SELECT title FROM entries WHERE guid = 'good-1'") == [("Healthy",)]
    return result, db, url


def feed_row(db: Path, url: str) -> dict:
    [row] = query(db, "SELECT last_error, error_count, state FROM feeds WHERE url = ?", url)
    return dict(zip(("last_error", "error_count", "state"), row))


def titles(db: Path) -> list[str]:
    return [title for (title,) in query(db, "SELECT title FROM entries WHERE guid LIKE 'b-%' ORDER BY guid")]


# --- not a feed: a failed fetch with its reason ------------------------------------------

@pytest.mark.parametrize("reply, reason", [
    (Reply(body=b""), "empty document"),
    (Reply(body=b"   \n\t  "), "empty document"),
    (Reply(body=b"<!doctype html><html><head><title>Home</title></head><body>Hi</body></html>",
           content_type="text/html"), "not a feed: looks like an HTML page"),
    (Reply(body=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, content_type="image/png"), "not a feed"),
    (Reply(body=b'{"version": "https://jsonfeed.org/version/1.1", "items": [', content_type="application/json"),
     "invalid JSON"),
    (Reply(body=b"definitely not gzip", headers={"Content-Encoding": "gzip"}), "badly encoded"),
], ids=["empty", "blank", "html-page", "binary", "truncated-json", "invalid-gzip"])
def test_a_body_that_is_not_a_feed_fails_the_feed_with_a_reason(tmp_path, server, agg, reply, reason):
    result, db, url = fetch_feed(tmp_path, server, agg, reply)
    row = feed_row(db, url)
    assert reason in row["last_error"] and row["error_count"] == 1
    assert reason in result.stderr
    assert titles(db) == []


def test_html_page_with_a_feed_link_is_discovered_by_feeds_add(tmp_path, server, agg):
    feed_url = server.route("/news/rss.xml", Reply(body=FEED))
    page = (b'<!doctype html><html><head><title>Site</title>'
            b'<link rel="alternate" type="application/rss+xml" title="News" href="/news/rss.xml">'
            b"</head><body><p>Welcome</p></body></html>")
    page_url = server.route("/", Reply(body=page, content_type="text/html"))
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("defaults:\n  extract: false\nfeeds: []\n")

    result = agg("--config", cfg, "feeds", "add", page_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"added\t{feed_url}\t")
    assert "the page's feed links" in result.stderr
    assert feed_url in cfg.read_text() and page_url + "\n" not in cfg.read_text()


def test_html_page_without_a_feed_is_refused_by_feeds_add(tmp_path, server, agg):
    page_url = server.route("/", Reply(body=b"<html><head><title>x</title></head><body>no feed</body></html>",
                                       content_type="text/html"))
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds: []\n")
    result = agg("--config", cfg, "feeds", "add", page_url)
    assert result.exit_code == 1
    assert "no feed found" in result.stderr and cfg.read_text() == "feeds: []\n"


# --- damaged feeds: what can be read is kept ---------------------------------------------

CUT_AT = FEED.index(b"<item><guid>b-4</guid>") + 30
# Level 0 stores the bytes as they are, so the cut falls at the same place in the document.
GZIP_HEADERS = 10 + 5


@pytest.mark.parametrize("reply", [
    Reply(body=FEED[:CUT_AT]),
    Reply(body=gzip.compress(FEED, compresslevel=0)[: GZIP_HEADERS + CUT_AT], headers={"Content-Encoding": "gzip"}),
], ids=["xml", "gzip-stream"])
def test_truncated_xml_keeps_the_complete_entries(tmp_path, server, agg, reply):
    _, db, url = fetch_feed(tmp_path, server, agg, reply)
    assert titles(db)[:4] == [f"Caf\u00e9 story {n}" for n in range(4)]
    assert "b-5" not in {guid for (guid,) in query(db, "SELECT guid FROM entries")}
    assert feed_row(db, url)["last_error"] is None
    [(problem,)] = query(db, "SELECT problem FROM feeds WHERE url = ?", url)
    assert problem  # the damage is recorded, in the parser's words


def test_invalid_characters_are_dropped_not_fatal(tmp_path, server, agg):
    body = FEED.replace(b"Caf\xc3\xa9 story 1", b"Bad \x00\x0b\x1b[31m bytes \xff\xfe here")
    _, db, _ = fetch_feed(tmp_path, server, agg, Reply(body=body))
    stored = titles(db)
    assert len(stored) == 6
    assert not any(ch in "".join(stored) for ch in "\x00\x0b\x1b")
    assert "bytes" in stored[1] and "here" in stored[1]


@pytest.mark.parametrize("content_type, body", [
    ("application/rss+xml; charset=utf-8", FEED.replace(b' encoding="utf-8"', b"").decode().encode("latin-1")),
    ("application/rss+xml", FEED.replace(b' encoding="utf-8"', b"").decode().encode("cp1252")),
    ("text/xml", FEED.replace(b' encoding="utf-8"', b"").decode().encode("cp1252")),
    ("application/rss+xml; charset=iso-8859-1", FEED),
    ("application/rss+xml", FEED.replace(b'encoding="utf-8"', b'encoding="utf-16"').decode().encode("utf-16")),
    ("application/rss+xml; charset=utf-8", codecs.BOM_UTF16_BE + FEED.replace(b'encoding="utf-8"', b'encoding="utf-16"').decode().encode("utf-16-be")),
], ids=["latin1-declared-utf8", "cp1252-undeclared", "text-xml-undeclared", "utf8-declared-latin1",
        "utf16-le-bom", "utf16-be-bom-header-says-utf8"])
def test_wrong_or_missing_charset_still_reads_the_titles(tmp_path, server, agg, content_type, body):
    _, db, url = fetch_feed(tmp_path, server, agg, Reply(body=body, content_type=content_type))
    assert feed_row(db, url)["last_error"] is None
    stored = titles(db)
    assert len(stored) == 6 and all(title.endswith(f"story {n}") for n, title in enumerate(stored))
    if "latin1" not in content_type and "8859" not in content_type:
        assert stored[0] == "Caf\u00e9 story 0"


# --- huge bodies and gzip bombs: cut while streaming ------------------------------------------

def fetch_measured(url: str, settings: Settings) -> tuple[FetchResult, int]:
    """Fetch ``url``; also the peak of Python memory allocated meanwhile, in bytes."""

    async def go() -> FetchResult:
        async with Fetcher(settings) as fetcher:
            return await fetcher.fetch(url)

    tracemalloc.start()
    try:
        result = asyncio.run(go())
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class Counted:
    """A lazy body that counts what the server actually sent before the client hung up."""

    def __init__(self, reply: Reply):
        self.reply = reply
        self.sent = 0
        stream = reply.stream

        def counting() -> Iterator[bytes]:
            for chunk in stream():
                self.sent += len(chunk)
                yield chunk

        reply.stream = counting

    def __call__(self, _request) -> Reply:
        return self.reply


def test_the_gzip_bomb_is_a_valid_gzip_stream():
    bomb = GzipBomb(8 * MiB)
    wire = b"".join(bomb())
    assert len(wire) == bomb.wire_size < 10_000
    assert gzip.decompress(wire) == bytes(8 * MiB)


CAP = 2 * MiB
BIG = 50 * 10**6
BOMB = 16 * 2**30  # 16 MB on the wire: bigger than the kernel's socket buffers, which absorb a few MB


@pytest.mark.parametrize("make, wire_total", [
    (lambda: big_body_reply(BIG, declared=False), BIG),
    (lambda: bomb_reply(BOMB), GzipBomb(BOMB).wire_size),
], ids=["50MB-undeclared", "gzip-bomb-16GiB"])
def test_huge_bodies_are_cut_at_the_cap_while_streaming(server, make, wire_total):
    body = Counted(make())
    result, peak = fetch_measured(server.route("/huge", body), Settings(max_body=CAP))
    assert result.error_kind == "too-large" and result.body is None and "max_body" in result.error
    # The server was stopped long before the end: the client hung up at the cap...
    assert body.sent < wire_total / 2
    # ...and never held much more than the cap (Python allocations, decompressed included).
    assert peak < 4 * CAP, f"peak {peak / MiB:.1f} MiB"


def test_declared_50mb_body_is_refused_before_reading(server):
    body = Counted(big_body_reply(BIG, declared=True))
    result, peak = fetch_measured(server.route("/declared", body), Settings(max_body=CAP))
    assert result.error_kind == "too-large" and f"{BIG} bytes" in result.error
    assert body.sent < BIG / 4 and peak < 4 * CAP


@pytest.mark.parametrize("make", [lambda: big_body_reply(BIG, declared=False), lambda: bomb_reply(BOMB)],
                         ids=["50MB", "gzip-bomb"])
def test_agg_fetch_records_a_huge_body_as_too_large(tmp_path, server, agg, make):
    _, db, url = fetch_feed(tmp_path, server, agg, make(), defaults="max_body: 2MiB")
    row = feed_row(db, url)
    assert "over the" in row["last_error"] and "max_body" in row["last_error"]


# --- XML attacks: nothing expands, nothing is read ---------------------------------------

@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    return secret


ATTACKS: dict[str, Callable[[ScriptedServer, Path], bytes]] = {
    "billion-laughs": lambda server, secret: BILLION_LAUGHS,
    "quadratic-blowup": lambda server, secret: quadratic_blowup(size=200_000, uses=5_000),
    "external-file": lambda server, secret: external_entity(secret.as_uri()),
    "external-passwd": lambda server, secret: external_entity("file:///etc/passwd"),
    "external-http": lambda server, secret: external_entity(server.url("/evil.dtd")),
    "parameter-entity": lambda server, secret: parameter_entity(server.url("/evil.dtd")),
    "external-dtd": lambda server, secret: (
        f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "{server.url("/evil.dtd")}">'.encode()
        + rss_document([{"guid": "attack-1", "title": "T", "description": "d"}]).split(b"?>", 1)[1]),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_xml_entity_attacks_expand_nothing_and_read_nothing(tmp_path, server, agg, secret_file, attack):
    server.route("/evil.dtd", Reply(body=f'<!ENTITY leak SYSTEM "{secret_file.as_uri()}">'.encode(),
                                    content_type="application/xml-dtd"))
    document = attack(server, secret_file)
    tracemalloc.start()
    try:
        _, db, url = fetch_feed(tmp_path, server, agg, Reply(body=document))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    [(title, summary)] = query(db, "SELECT title, summary FROM entries WHERE guid = 'attack-1'")
    stored = "".join(str(value) for row in query(db, "SELECT * FROM entries") for value in row)
    assert "TOP-SECRET" not in stored and "root:" not in stored
    assert "lollol" not in stored
    # Stored text is about the size of the document, never the expansion (5,000 × 200 kB = 1 GB).
    assert len(title) + len(summary) <= 2 * len(document)
    assert server.hits("/evil.dtd") == []
    assert peak < 100 * MiB, f"peak {peak / MiB:.0f} MiB"
