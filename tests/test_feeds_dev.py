"""Every real-world document of ``$AGG_SHARED_DATA/feeds-dev``, served over HTTP and fetched in one ``agg fetch``.

Each document must either be stored with the entries feedparser finds in it
(for JSON Feed, its ``items``) or be recorded on its feed as a clear error;
nothing may raise. The totals are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import feedparser
import pytest

from tests.server import Reply

# Served with Content-Encoding: gzip, as the folder's README says.
GZIPPED = {"compressed.xml", "invalid-characters-gzipped.xml"}
CONTENT_TYPES = {".json": "application/json", ".html": "text/html"}
XML_CONTENT_TYPE = "application/xml"
JSON_FEED_VERSIONS = {"https://jsonfeed.org/version/1", "https://jsonfeed.org/version/1.1"}


def is_feed_document(relative: Path) -> bool:
    """Feeds and would-be feeds; not the README, OPML subscription lists, or rss-parser's expected readings."""
    return (relative.name != "README.md" and relative.suffix != ".opml"
            and relative.parts[:2] != ("rss-parser", "expected-output"))


@dataclass
class Document:
    relative: str
    raw: bytes       # as stored (gzip for the two compressed ones)
    body: bytes      # as a client sees it after Content-Encoding
    expected: int    # feedparser's entry count, or a valid JSON Feed's items
    distinct: int    # of those, how many have different identities (id, else link, else their text)


def expected_entries(body: bytes, relative: str) -> tuple[int, int]:
    """How many entries feedparser (for JSON Feed: the ``items`` list) finds, and how many distinct ones.

    agg keeps one entry per feed and identity, so an id listed twice in one
    document is stored once.
    """
    if relative.endswith(".json"):
        try:
            document = json.loads(body)
        except ValueError:
            return 0, 0
        if not (isinstance(document, dict) and isinstance(document.get("items"), list)
                and document.get("version") in JSON_FEED_VERSIONS):
            return 0, 0
        items = document["items"]
        return len(items), len({json.dumps(item.get("id") if isinstance(item, dict) else item) for item in items})
    entries = feedparser.parse(io.BytesIO(body)).entries
    identities = {e.get("id") or e.get("link") or (e.get("title"), e.get("summary"), str(e.get("content")))
                  for e in entries}
    return len(entries), len(identities)


def load_documents(root: Path) -> list[Document]:
    documents = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if not is_feed_document(relative):
            continue
        raw = path.read_bytes()
        body = gzip.decompress(raw) if relative.name in GZIPPED else raw
        documents.append(Document(relative.as_posix(), raw, body, *expected_entries(body, relative.as_posix())))
    return documents


def reply_for(document: Document) -> Reply:
    suffix = Path(document.relative).suffix
    headers = {"Content-Encoding": "gzip"} if Path(document.relative).name in GZIPPED else {}
    return Reply(body=document.raw, headers=headers, content_type=CONTENT_TYPES.get(suffix, XML_CONTENT_TYPE))


def test_every_feeds_dev_document_is_ingested_or_a_clear_error(shared_data, server, agg, tmp_path):
    root = shared_data / "feeds-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    documents = load_documents(root)
    urls = {}
    for document in documents:
        urls[document.relative] = server.route("/" + document.relative, reply_for(document))
    config = tmp_path / "feeds.yaml"
    config.write_text("defaults:\n  extract: false\n  per_host: 8\nfeeds:\n"
                      + "".join(f"  - url: {json.dumps(url)}\n" for url in urls.values()), encoding="utf-8")
    db = tmp_path / "agg.db"

    result = agg("--config", config, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    assert len(server.requests) == len(documents)

    with sqlite3.connect(db) as conn:
        rows = {url: (stored, error) for url, stored, error in conn.execute(
            "SELECT f.url, count(e.id), f.last_error FROM feeds f LEFT JOIN entries e ON e.feed_id = f.id "
            "GROUP BY f.id")}
        logged = {url for (url,) in conn.execute("SELECT url FROM fetch_log")}
    assert set(rows) == set(urls.values()) and logged == set(urls.values())

    ingested, errors, mismatches = [], [], []
    for document in documents:
        stored, error = rows[urls[document.relative]]
        assert error is None or not error.startswith("internal error"), (document.relative, error)
        if error:
            errors.append((document, error))
            if document.expected:
                mismatches.append(f"{document.relative}: feedparser finds {document.expected}, agg failed: {error}")
        else:
            ingested.append(document)
            if stored != document.distinct:  # a valid feed with no entries is ingested as such
                mismatches.append(f"{document.relative}: feedparser finds {document.expected} "
                                  f"({document.distinct} distinct), agg stored {stored}")

    expected_total = sum(d.expected for d in documents)
    distinct_total = sum(d.distinct for d in documents)
    stored_total = sum(rows[urls[d.relative]][0] for d in documents)
    print(f"\nfeeds-dev: {len(ingested)} of {len(documents)} documents ingested, {len(errors)} recorded as errors; "
          f"{stored_total} entries stored of {expected_total} expected "
          f"({distinct_total} once repeated ids within a document count once)")
    for document in documents:
        if document.distinct != document.expected:
            print(f"  repeats {document.relative}: {document.expected} entries, {document.distinct} distinct")
    for document, error in errors:
        print(f"  error  {document.relative} (expected {document.expected}): {error}")
    for line in mismatches:
        print(f"  differs {line}")
    assert mismatches == []
    for document, error in errors:
        assert error and len(error) > 10, (document.relative, error)
