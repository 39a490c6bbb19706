"""The SQLite store on real files: schema and migrations, upserts, the fetch log, transactions, errors."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.config import FeedConfig
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.store import SCHEMA_VERSION, Store, StoreError

T0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)


def entry(guid: str, title: str, **fields) -> ParsedEntry:
    return ParsedEntry(guid=guid, title=title, link=f"http://example.test/{guid}", **fields)


def feed_of(*entries: ParsedEntry) -> ParsedFeed:
    return ParsedFeed(format="rss20", title="Feed", entries=list(entries))


def result(url: str = "http://example.test/feed.xml", body: bytes = b"<rss/>") -> FetchResult:
    return FetchResult(url=url, final_url=url, status=200, body=body, elapsed=0.25)


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    yield store
    store.close()


def add_feed(store: Store, url: str = "http://example.test/feed.xml", title: str | None = "Feed",
             tags: list[str] | None = None) -> dict:
    return store.sync_feeds([FeedConfig(url=url, title=title, tags=tags or [])], T0)[url]


def test_open_creates_folder_schema_and_wal(tmp_path):
    path = tmp_path / "deep" / "folder" / "agg.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"feeds", "entries", "fetch_log", "stories", "story_members"} <= tables


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path):
    path = tmp_path / "agg.db"
    first = Store.open(path)
    add_feed(first)
    first.close()
    again = Store.open(path)
    assert [f["url"] for f in again.feeds()] == ["http://example.test/feed.xml"]
    again.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "agg.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this agg"):
        Store.open(path)


def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path):
    path = tmp_path / "agg.db"
    path.write_bytes(b"this is a text file, not SQLite " * 100)
    with pytest.raises(StoreError, match="not a usable agg database"):
        Store.open(path)


def test_a_folder_is_not_a_database_path(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(tmp_path)


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path):
    (tmp_path / "data").write_text("x")
    with pytest.raises(StoreError, match=f"{tmp_path / 'data'} is a file, not a folder"):
        Store.open(tmp_path / "data" / "agg.db")


def test_readonly_open_of_a_missing_database_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="run 'agg fetch' first"):
        Store.open(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_sync_feeds_keeps_one_row_per_url_and_updates_tags(store):
    add_feed(store, tags=["a"])
    rows = store.sync_feeds([FeedConfig(url="http://example.test/feed.xml", title=None, tags=["b"])], T0)
    assert len(store.feeds()) == 1
    row = rows["http://example.test/feed.xml"]
    assert row["tags"] == '["b"]' and row["title"] == "Feed"


def test_save_fetch_stores_entries_feed_columns_and_log(store):
    feed = add_feed(store)
    saved = store.save_fetch(feed["id"], result(), feed_of(entry("a", "Alpha"), entry("b", "Beta")),
                             {"etag": '"x"', "last_status": 200}, extract=True, now=T0)
    assert len(saved.new_entry_ids) == 2 and saved.updated == 0
    rows = {r["guid"]: r for r in store.db.query("SELECT * FROM entries")}
    assert rows["a"]["title"] == "Alpha" and rows["a"]["first_seen"] == "2026-11-28T18:00:00+00:00"
    assert rows["a"]["extract_status"] == "pending"
    assert store.feed_by_url(feed["url"])["etag"] == '"x"'
    (log,) = store.db.query("SELECT * FROM fetch_log")
    assert (log["status"], log["bytes"], log["new_entries"], log["updated_entries"], log["duration_ms"]) == (
        200, 6, 2, 0, 250)


def test_same_entries_again_store_nothing_new(store):
    feed = add_feed(store)
    parsed = feed_of(entry("a", "Alpha"), entry("b", "Beta"))
    store.save_fetch(feed["id"], result(), parsed, {}, extract=False, now=T0)
    saved = store.save_fetch(feed["id"], result(), parsed, {}, extract=False, now=T0 + timedelta(hours=1))
    assert saved.new_entry_ids == [] and saved.updated == 0
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 2
    assert [r["new_entries"] for r in store.db.query("SELECT new_entries FROM fetch_log ORDER BY id")] == [2, 0]


def test_changed_entry_is_updated_and_keeps_first_seen(store):
    feed = add_feed(store)
    store.save_fetch(feed["id"], result(), feed_of(entry("a", "Old headline")), {}, extract=False, now=T0)
    later = T0 + timedelta(hours=2)
    saved = store.save_fetch(feed["id"], result(), feed_of(entry("a", "New headline")), {}, extract=False, now=later)
    assert saved.new_entry_ids == [] and saved.updated == 1
    (row,) = store.db.query("SELECT * FROM entries")
    assert row["title"] == "New headline"
    assert row["first_seen"] == "2026-11-28T18:00:00+00:00"
    assert row["changed_at"] == "2026-11-28T20:00:00+00:00"
    assert store.db.execute("SELECT updated_entries FROM fetch_log ORDER BY id DESC").fetchone()[0] == 1


def test_same_guid_in_two_feeds_is_two_entries(store):
    one = add_feed(store, "http://one.test/feed")
    two = add_feed(store, "http://two.test/feed")
    for feed in (one, two):
        store.save_fetch(feed["id"], result(feed["url"]), feed_of(entry("shared", "Same id")), {}, extract=False)
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 2


def test_duplicate_guids_within_one_document_keep_the_first(store):
    feed = add_feed(store)
    saved = store.save_fetch(feed["id"], result(), feed_of(entry("a", "First"), entry("a", "Second")), {},
                             extract=False)
    assert len(saved.new_entry_ids) == 1
    assert store.db.execute("SELECT title FROM entries").fetchone()[0] == "First"


def test_failed_fetch_is_logged_without_entries(store):
    feed = add_feed(store)
    failed = FetchResult(url=feed["url"], final_url=feed["url"], status=404, error="HTTP 404 Not Found")
    store.save_fetch(feed["id"], failed, None, {"last_error": failed.error, "error_count": 1}, extract=True)
    (log,) = store.db.query("SELECT * FROM fetch_log")
    assert (log["status"], log["error"], log["new_entries"]) == (404, "HTTP 404 Not Found", 0)
    assert store.feed_by_url(feed["url"])["error_count"] == 1


def test_a_failing_transaction_leaves_nothing_behind(store):
    feed = add_feed(store)
    with pytest.raises(sqlite3.Error):
        # An unknown feed column fails after the entries were written: all of it must roll back.
        store.save_fetch(feed["id"], result(), feed_of(entry("a", "Alpha")), {"no_such_column": 1}, extract=False)
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM fetch_log").fetchone()[0] == 0
    # and the connection is usable afterwards
    store.save_fetch(feed["id"], result(), feed_of(entry("a", "Alpha")), {}, extract=False)
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 1


def test_entries_newest_first_with_filters(store):
    world = add_feed(store, "http://world.test/feed", "World Wire", ["world"])
    tech = add_feed(store, "http://tech.test/feed", "Tech Daily", ["tech"])
    store.save_fetch(world["id"], result(world["url"]), feed_of(
        entry("w-old", "World old", published=T0 - timedelta(days=3)),
        entry("w-new", "World new", published=T0 - timedelta(hours=1))), {}, extract=False, now=T0)
    store.save_fetch(tech["id"], result(tech["url"]), feed_of(
        entry("t-mid", "Tech mid", published=T0 - timedelta(hours=5))), {}, extract=False, now=T0)

    assert [e["title"] for e in store.entries()] == ["World new", "Tech mid", "World old"]
    assert [e["title"] for e in store.entries(since=T0 - timedelta(days=1))] == ["World new", "Tech mid"]
    assert [e["title"] for e in store.entries(feed="Tech Daily")] == ["Tech mid"]
    assert [e["title"] for e in store.entries(feed="http://world.test/feed")] == ["World new", "World old"]
    assert [e["title"] for e in store.entries(tag="world", limit=1)] == ["World new"]
    assert store.entries(tag="nothing") == []
    assert store.entries()[0]["outlet"] == "World Wire"
