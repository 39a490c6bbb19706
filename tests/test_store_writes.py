"""The store's entry-writing path: what it writes must not change as it gets faster.

Stored content hashes must stay comparable with those of earlier versions (or
every entry would look changed once), tags and enclosures keep their JSON form,
and migration 4 (dropping an index nothing reads) keeps an existing database's data.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

import aggregator.store as store_module
from aggregator.config import FeedConfig
from aggregator.models import Enclosure, FetchResult, ParsedEntry, ParsedFeed
from aggregator.store import SCHEMA_VERSION, Store, entry_hash

T0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
FEED_URL = "http://example.test/feed.xml"


def per_field_digest(entry: ParsedEntry) -> str:
    """The content hash as agg computed it before migration 4: one update per NUL-terminated field."""
    digest = hashlib.sha256()
    for part in (entry.link or "", entry.title, entry.summary, entry.content, entry.author or ""):
        digest.update(part.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()


def fetched(url: str = FEED_URL) -> FetchResult:
    return FetchResult(url=url, final_url=url, status=200, body=b"<rss/>")


def news(count: int, prefix: str = "e", **fields) -> list[ParsedEntry]:
    return [ParsedEntry(guid=f"{prefix}-{n}", link=f"http://example.test/{prefix}/{n}", title=f"Headline {n}",
                        summary=f"<p>Summary {n}</p>", summary_text=f"Summary {n}", **fields)
            for n in range(count)]


def open_feed(path) -> tuple[Store, int]:
    store = Store.open(path)
    return store, store.sync_feeds([FeedConfig(url=FEED_URL, title="Feed", tags=[])], T0)[FEED_URL]["id"]


@pytest.mark.parametrize("entry", [
    ParsedEntry(guid="plain", link="http://example.test/a", title="Title", summary="<p>Summary</p>",
                content="<p>Body</p>", author="Desk"),
    ParsedEntry(guid="no-link-no-author", title="Only a title"),
    ParsedEntry(guid="unicode", link="http://example.test/é", title="Zürich 🚆 «rail»",
                summary="naïve\u00a0text", content="\u200bzero width", author="Ångström"),
    ParsedEntry(guid="lone-surrogate", title="broken \ud800 pair", summary="\udfff"),
    ParsedEntry(guid="nul-inside", title="a\0b", summary="", content="c"),
])
def test_entry_hash_is_the_digest_earlier_versions_stored(entry):
    assert entry_hash(entry) == per_field_digest(entry)


def test_tags_and_enclosures_are_stored_as_json_dumps_writes_them(tmp_path):
    store, feed_id = open_feed(tmp_path / "agg.db")
    enclosures = [Enclosure(url="http://example.test/a.mp3", type="audio/mpeg", length=1234),
                  Enclosure(url="http://example.test/b.jpg")]
    tags = ["world", 'say "hi"', "Zürich", "back\\slash"]
    entries = [
        ParsedEntry(guid="tagged", title="Tagged", tags=tags, enclosures=enclosures),
        ParsedEntry(guid="one-tag", title="One tag", tags=["politics"]),
        ParsedEntry(guid="bare", title="Nothing"),
    ]
    store.save_fetch(feed_id, fetched(), ParsedFeed(format="rss20", entries=entries), {}, extract=False, now=T0)
    rows = {row["guid"]: row for row in store.db.query("SELECT guid, tags, enclosures FROM entries")}
    assert rows["tagged"]["tags"] == json.dumps(tags)
    assert rows["tagged"]["enclosures"] == json.dumps(
        [{"url": "http://example.test/a.mp3", "type": "audio/mpeg", "length": 1234},
         {"url": "http://example.test/b.jpg", "type": None, "length": None}])
    assert rows["one-tag"]["tags"] == '["politics"]'
    assert (rows["bare"]["tags"], rows["bare"]["enclosures"]) == ("[]", "[]")
    store.close()


def test_a_large_fetch_with_repeated_guids_returns_each_new_id_once_in_order(tmp_path):
    store, feed_id = open_feed(tmp_path / "agg.db")
    entries = news(1200)
    repeated = entries + entries[:300]  # the same guids again later in the document: the first one wins
    saved = store.save_fetch(feed_id, fetched(), ParsedFeed(format="rss20", entries=repeated), {}, extract=True,
                             now=T0)
    stored_ids = [row[0] for row in store.db.execute("SELECT id FROM entries ORDER BY id")]
    assert saved.new_entry_ids == stored_ids and len(stored_ids) == 1200
    assert store.db.execute("SELECT count(DISTINCT guid) FROM entries").fetchone()[0] == 1200
    (log_new,) = store.db.execute("SELECT new_entries FROM fetch_log").fetchone()
    assert log_new == 1200
    store.close()


def test_migration_4_drops_the_unread_index_and_keeps_an_existing_database(tmp_path, monkeypatch):
    path = tmp_path / "agg.db"
    # A database as agg left it at schema 3, written through agg's own code of that schema.
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 3)
    old, feed_id = open_feed(path)
    first = news(30, published=T0 - timedelta(hours=1))
    old.save_fetch(feed_id, fetched(), ParsedFeed(format="rss20", entries=first), {"etag": '"v1"'}, extract=True,
                   now=T0)
    before = [tuple(row) for row in old.db.execute("SELECT * FROM entries ORDER BY id")]
    old.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries_published'").fetchone()
    monkeypatch.undo()

    store = Store.open(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
    indexes = {row[0] for row in store.db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries'")}
    assert "entries_published" not in indexes
    assert {"entries_first_seen", "entries_story_outlets", "entries_extract_status"} <= indexes
    assert "entries_story" not in indexes  # migration 6: entries_story_outlets serves its lookups
    assert [tuple(row) for row in store.db.execute("SELECT * FROM entries ORDER BY id")] == before
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # The next fetch sees the stored entries as unchanged, finds the edited one and adds the new one.
    edited = first[:]
    edited[5] = ParsedEntry(**{**vars(first[5]), "title": "Corrected headline"})
    later = T0 + timedelta(hours=1)
    saved = store.save_fetch(feed_id, fetched(), ParsedFeed(format="rss20", entries=[*edited, *news(1, "new")]),
                             {"etag": '"v2"'}, extract=True, now=later)
    assert saved.updated == 1
    assert saved.new_entry_ids == [before[-1][0] + 1]
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 31
    assert store.entry(before[5][0])["title"] == "Corrected headline"
    assert store.feed_by_url(FEED_URL)["etag"] == '"v2"'
    store.close()


def test_a_busy_run_checkpoints_the_wal_from_its_own_thread_and_restores_the_setting(tmp_path):
    path = tmp_path / "agg.db"
    store, feed_id = open_feed(path)
    conn = store.db.conn
    before = path.stat().st_size
    with store.checkpoints_in_background(interval=0.05):
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 4000  # commits checkpoint less often
        for batch in range(20):  # about 2 MB: under 4,000 pages, so only the thread checkpoints
            store.save_fetch(feed_id, fetched(), ParsedFeed(format="rss20", entries=news(50, f"b{batch}",
                             content="<p>" + "words " * 400 + "</p>")), {}, extract=False, now=T0)
        # Only a checkpoint writes to the database file itself: WAL mode commits go to the -wal file.
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > before + 1_000_000
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1000
    store.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM entries").fetchone()[0] == 1000
