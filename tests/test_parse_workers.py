"""Feeds parsed in worker processes (pipeline.ParseWorkers): every entry stored, and a dead worker costs no feed."""

from __future__ import annotations

import asyncio
import os
import signal

from aggregator import pipeline
from aggregator.config import load_config
from aggregator.parse import parse_feed
from aggregator.pipeline import ParseWorkers, run
from aggregator.store import Store
from tests.conftest import rss_document
from tests.server import Reply
from tests.test_pipeline import count, items, query, write_config

FEEDS = 24


def atom_document(prefix: str, titles: list[str]) -> bytes:
    """An Atom feed: parsed by feedparser, where the RSS feeds take the fast path."""
    entries = "".join(
        f"<entry><id>urn:{prefix}:{n}</id><title>{title}</title><link href='http://example.test/{prefix}/{n}'/>"
        f"<updated>2026-11-28T10:00:00Z</updated></entry>" for n, title in enumerate(titles)
    )
    return (f'<feed xmlns="http://www.w3.org/2005/Atom"><title>{prefix}</title><id>urn:{prefix}</id>'
            f"<updated>2026-11-28T10:00:00Z</updated>{entries}</feed>").encode()


def test_a_run_of_many_feeds_parses_in_workers_and_stores_every_entry(tmp_path, server):
    assert FEEDS >= pipeline.PARSE_WORKERS_MIN_FEEDS, "the run must be big enough to use the workers"
    expected = set()
    urls = []
    for number in range(FEEDS):
        titles = [f"Feed {number} story {n}" for n in range(5)]
        if number % 3:
            body = rss_document(items(f"f{number}", titles))
            expected |= {(f"f{number}-{n}", title) for n, title in enumerate(titles)}
        else:
            body = atom_document(f"a{number}", titles)
            expected |= {(f"urn:a{number}:{n}", title) for n, title in enumerate(titles)}
        urls.append(server.route(f"/feed{number}.xml", Reply(body=body)))
    config = load_config(write_config(tmp_path, [{"url": url} for url in urls]))
    store = Store.open(tmp_path / "agg.db")
    summary = run(config, store)
    store.close()
    assert [o.status for o in summary.feeds] == ["fetched"] * FEEDS
    assert summary.new_entries == len(expected) == count(tmp_path / "agg.db", "entries")
    assert set(query(tmp_path / "agg.db", "SELECT guid, title FROM entries")) == expected


def test_a_worker_that_dies_leaves_the_feed_to_the_main_process(caplog):
    body = rss_document(items("w", ["Harbour reopens", "Bridge closes"]))
    url = "http://example.test/feed.xml"

    async def parse_twice_killing_the_worker_between():
        async with ParseWorkers(enabled=True, workers=1) as workers:
            first = await workers.parse(body, url, {})
            for pid in workers.pids:
                os.kill(pid, signal.SIGKILL)
            second = await workers.parse(body, url, {})
        return first, second

    first, second = asyncio.run(parse_twice_killing_the_worker_between())
    assert first == second == parse_feed(body, url, {})
    assert "parsing http://example.test/feed.xml in the main process" in caplog.text
