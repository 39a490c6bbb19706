"""What a run writes besides entries, and what ``agg fetch`` does before and after it, kept cheap without change.

``Store.sync_feeds`` writes only rows that are missing or differ;
``Store.save_fetch_records`` writes several entry-less fetches (304s,
failures) in one transaction, the same rows ``save_fetch`` writes for each;
``agg fetch`` pauses the garbage collector during its start-up and leaves it as
it found it.
"""

from __future__ import annotations

import gc
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.config import FeedConfig
from aggregator.models import FetchResult
from aggregator.store import FetchRecord, Store

T0 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
FEEDS = [FeedConfig(url=f"http://example.test/{n}.xml", title=f"Outlet {n}", tags=["news"]) for n in range(3)]


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    yield store
    store.close()


def rows_of(store: Store, table: str) -> list[tuple]:
    return store.db.conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_sync_feeds_writes_nothing_when_the_config_has_not_changed(store):
    first = store.sync_feeds(FEEDS, T0)
    changes = store.db.conn.total_changes
    again = store.sync_feeds(FEEDS, T0 + timedelta(hours=1))
    assert store.db.conn.total_changes == changes
    assert again == first


def test_sync_feeds_writes_new_feeds_and_changed_titles_and_tags_only(store):
    store.sync_feeds(FEEDS, T0)
    changes = store.db.conn.total_changes
    edited = [
        FeedConfig(url=FEEDS[0].url, title="Renamed", tags=["news"]),
        FeedConfig(url=FEEDS[1].url, title=FEEDS[1].title, tags=["news", "world"]),
        FeedConfig(url=FEEDS[2].url, title=None, tags=["news"]),  # no title in the config: the stored one stays
        FeedConfig(url="http://example.test/new.xml"),
    ]
    rows = store.sync_feeds(edited, T0 + timedelta(hours=1))
    assert store.db.conn.total_changes == changes + 3
    assert rows[FEEDS[0].url]["title"] == "Renamed"
    assert rows[FEEDS[1].url]["tags"] == '["news", "world"]'
    assert rows[FEEDS[2].url]["title"] == "Outlet 2"
    assert rows["http://example.test/new.xml"]["created_at"] == "2026-11-28T19:00:00+00:00"


def unchanged(url: str, elapsed: float) -> FetchResult:
    return FetchResult(url=url, final_url=url, status=304, etag='"v1"', elapsed=elapsed)


def failed(url: str) -> FetchResult:
    return FetchResult(url=url, final_url=url, status=503, error="HTTP 503 Service Unavailable", error_kind="http")


def test_fetch_records_write_the_rows_save_fetch_writes(tmp_path):
    """One transaction for many feeds, and to the byte the feed rows and log lines of one save_fetch each."""
    def fetches(rows: dict[str, dict]) -> list[tuple]:
        first, second, third = (rows[feed.url]["id"] for feed in FEEDS)
        return [
            (first, unchanged(FEEDS[0].url, 0.125), {"etag": '"v1"', "last_status": 304}, None),
            (second, failed(FEEDS[1].url), {"error_count": 1, "last_status": 503}, None),
            (third, replace(unchanged(FEEDS[2].url, 0.5), body=b"<html>not a feed</html>"), {"last_status": 200},
             "not a feed: looks like an HTML page"),
        ]

    one_by_one, batched = Store.open(tmp_path / "one.db"), Store.open(tmp_path / "batch.db")
    for feed_id, result, columns, error in fetches(one_by_one.sync_feeds(FEEDS, T0)):
        one_by_one.save_fetch(feed_id, result, None, columns, extract=False, now=T0, error=error)
    records = [FetchRecord.of(*fetch) for fetch in fetches(batched.sync_feeds(FEEDS, T0))]
    commits = []
    batched.db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    batched.save_fetch_records(records, now=T0)
    assert commits == ["COMMIT"]
    for table in ("feeds", "fetch_log"):
        assert rows_of(batched, table) == rows_of(one_by_one, table)
    assert [row[-1] for row in rows_of(batched, "fetch_log")] == [
        None, "HTTP 503 Service Unavailable", "not a feed: looks like an HTML page"]


def test_fetch_records_are_all_or_nothing(store):
    rows = store.sync_feeds(FEEDS, T0)
    records = [FetchRecord.of(rows[FEEDS[0].url]["id"], unchanged(FEEDS[0].url, 0.1), {"last_status": 304}),
               FetchRecord.of(rows[FEEDS[1].url]["id"], unchanged(FEEDS[1].url, 0.1), {"no_such_column": 1})]
    with pytest.raises(sqlite3.OperationalError):
        store.save_fetch_records(records, now=T0)
    assert rows_of(store, "fetch_log") == []
    assert store.sync_feeds(FEEDS, T0)[FEEDS[0].url]["last_status"] is None


def test_fetch_leaves_the_garbage_collector_as_it_found_it(tmp_path, agg):
    feed = tmp_path / "feed.xml"
    feed.write_text("<rss version='2.0'><channel><title>T</title><item><title>One</title>"
                    "<guid>1</guid></item></channel></rss>")
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"defaults:\n  extract: false\nfeeds:\n  - url: {feed.as_uri()}\n")
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    result = agg("--config", cfg, "--db", tmp_path / "agg.db", "fetch")
    assert result.exit_code == 0, result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize("per_commit", [1, 100], ids=["written-during-the-run", "written-at-its-end"])
def test_a_database_that_refuses_fetch_records_stops_the_run_with_the_reason(tmp_path, server, monkeypatch, per_commit):
    """Like any other write on a full or broken disk: never a feed's "internal error" with the records lost."""
    from aggregator import pipeline
    from aggregator.config import load_config
    from tests.server import Reply
    from tests.test_pipeline import write_config

    urls = [server.route(f"/gone{n}.xml", Reply(404)) for n in range(3)]
    config = load_config(write_config(tmp_path, [{"url": url} for url in urls]))
    monkeypatch.setattr(pipeline.runner, "RECORDS_PER_COMMIT", per_commit)

    def disk_full(self, records, *, now=None):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "save_fetch_records", disk_full)
    store = Store.open(tmp_path / "agg.db")
    with pytest.raises((pipeline.StoreError, sqlite3.OperationalError), match="full"):
        pipeline.run(config, store)
    store.close()
