"""Benchmark of the store: entries written per second through agg's Store, side by side with sqlite-utils.

Usage: python bench/store.py [--entries N] [--per-feed K] [--one-by-one M] [--quick]

Writes N synthetic entries (default 100,000; titles, HTML summaries and
content of news size) into a fresh database file in a temporary folder, three ways:

- ``Store.save_fetch`` with K entries per call (a feed's fetch: one
  transaction with its entries, its feed row and a fetch_log line), as a run does;
- ``Store.save_fetch`` with one entry per call (one transaction per entry):
  only the first M entries are written and the rate is reported from them;
- sqlite-utils ``upsert_all`` of the same rows into a plain table with the
  same columns (no FTS, no extra indexes): the batched-insert yardstick.

Then ``Store.refresh_search_index`` (the FTS batch agg runs after each run)
is timed over everything stored. Each figure is one pass on a noisy
2-core machine: read ratios, not digits.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlite_utils  # noqa: E402

from aggregator.models import FetchResult, ParsedEntry, ParsedFeed  # noqa: E402
from aggregator.store import Store, feed_text_of  # noqa: E402

WORDS = ("market council election storm river vaccine budget court energy school minister report league "
         "climate housing transport police museum festival harbour bridge data study union wages rail").split()


def make_entries(count: int, seed: int = 1) -> list[ParsedEntry]:
    """Entries dated at random over one day, as news from many feeds is: each feed's
    dates interleave with the others' (so a feed's entries land all over an index on dates)."""
    rng = random.Random(seed)
    newest = datetime(2026, 11, 28, 18, tzinfo=UTC)
    entries = []
    for number in range(count):
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize()
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 160)))
        entries.append(ParsedEntry(
            guid=f"entry-{number}", link=f"https://example.com/news/{number}", title=title,
            summary=f"<p>{text[:300]}</p>", content=f"<p>{text}</p>", summary_text=text[:300], content_text=text,
            author="News desk", published=newest - timedelta(seconds=rng.randrange(86_400)), tags=[rng.choice(WORDS)],
        ))
    return entries


def fetch_result(url: str) -> FetchResult:
    return FetchResult(url=url, final_url=url, status=200, body=b"x" * 40_000)


def time_store(path: Path, entries: list[ParsedEntry], per_call: int) -> tuple[float, Store]:
    """Seconds to save ``entries`` through Store.save_fetch, ``per_call`` entries per feed fetch."""
    store = Store.open(path)
    feeds = [type("Feed", (), {"url": f"https://example.com/feed/{n}.xml", "title": None, "tags": []})()
             for n in range((len(entries) + per_call - 1) // per_call)]
    rows = store.sync_feeds(feeds)
    started = time.perf_counter()
    for number, feed in enumerate(feeds):
        batch = entries[number * per_call:(number + 1) * per_call]
        store.save_fetch(rows[feed.url]["id"], fetch_result(feed.url), ParsedFeed(format="rss20", entries=batch),
                         {"last_status": 200}, extract=True)
    return time.perf_counter() - started, store


def time_upsert_all(path: Path, entries: list[ParsedEntry], batch_size: int) -> float:
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    started = time.perf_counter()
    records = []
    for entry in entries:
        text, source = feed_text_of(entry)
        records.append({
            "guid": entry.guid, "feed_id": 1, "link": entry.link, "title": entry.title, "summary": entry.summary,
            "content": entry.content, "author": entry.author, "published": entry.published.isoformat(),
            "tags": entry.tags, "text": text, "text_source": source,
        })
    db["entries"].upsert_all(records, pk="guid", batch_size=batch_size)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries written (100000)")
    parser.add_argument("--per-feed", type=int, default=50, help="entries per save_fetch call (50)")
    parser.add_argument("--one-by-one", type=int, default=5_000, help="entries written one per call (5000)")
    parser.add_argument("--quick", action="store_true", help="10,000 entries, 1,000 one by one")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.one_by_one = 10_000, 1_000
    entries = make_entries(args.entries)
    rows = []
    with tempfile.TemporaryDirectory(prefix="agg-bench-store-") as tmp:
        work = Path(tmp)
        batched, store = time_store(work / "batched.db", entries, args.per_feed)
        rows.append((f"Store.save_fetch, {args.per_feed} entries a call", len(entries), batched))
        started = time.perf_counter()
        indexed = store.refresh_search_index()
        index_seconds = time.perf_counter() - started
        store.close()
        single_count = min(args.one_by_one, len(entries))
        single, single_store = time_store(work / "single.db", entries[:single_count], 1)
        single_store.close()
        rows.append(("Store.save_fetch, 1 entry a call (one transaction each)", single_count, single))
        upserted = time_upsert_all(work / "plain.db", entries, args.per_feed)
        rows.append((f"sqlite-utils upsert_all, batch_size={args.per_feed}, plain table", len(entries), upserted))

    print(f"{args.entries} entries of news size (about {sum(len(e.content) + len(e.summary) for e in entries[:1000]) // 1000} "
          "bytes of HTML each), WAL, synchronous=NORMAL\n")
    print("| writer | entries | seconds | entries/s |")
    print("|---|---|---|---|")
    for name, count, seconds in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {count / seconds:,.0f} |")
    print(f"| Store.refresh_search_index (FTS5, once after the run) | {indexed} | {index_seconds:.2f} | "
          f"{indexed / index_seconds:,.0f} |")
    rate = args.entries / batched
    print(f"\nsummary: Store.save_fetch stores {rate:,.0f} entries/s in feed-sized batches, "
          f"{rate / (single_count / single):.1f}x one by one, {rate / (len(entries) / upserted):.2f}x sqlite-utils "
          f"upsert_all; FTS indexed afterwards at {indexed / index_seconds:,.0f} entries/s")


if __name__ == "__main__":
    main()
