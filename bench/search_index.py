"""How much full-text indexing costs, and why it is kept off the insert path.

Stores the same synthetic entries three ways into a fresh on-disk database:

- ``batched``: agg's way — inserts without FTS work, then one
  ``Store.refresh_search_index()`` at the end of the run;
- ``insert trigger``: what sqlite-utils' ``enable_fts(create_triggers=True)``
  does — an AFTER INSERT trigger indexes each row as it is inserted;
- ``no index``: the floor.

Then times a search. Run: ``python bench/search_index.py [ENTRIES]``.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.search import search
from aggregator.store import Store

VOCABULARY = 30_000
ENTRIES_PER_FETCH = 50
INSERT_TRIGGER = """
CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
END
"""


def synthetic_feeds(count: int, rng: random.Random) -> list[ParsedFeed]:
    """Entries of words drawn with a Zipf-like skew from a large vocabulary, as in real text."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["harbour", "strike"] + ["".join(rng.choices(letters, k=rng.randint(3, 10)))
                                          for _ in range(VOCABULARY)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]

    def words(n: int) -> str:
        return " ".join(rng.choices(vocabulary, weights, k=n))

    feeds = []
    for start in range(0, count, ENTRIES_PER_FETCH):
        entries = []
        for number in range(start, min(count, start + ENTRIES_PER_FETCH)):
            entries.append(ParsedEntry(guid=f"g{number}", link=f"http://bench.test/{number}",
                                       title=words(8), summary_text=words(300)))
        feeds.append(ParsedFeed(format="rss20", entries=entries))
    return feeds


def timed_run(mode: str, feeds: list[ParsedFeed], folder: Path) -> tuple[float, float, float]:
    """(seconds storing, seconds indexing, seconds for one search)."""
    store = Store.open(folder / f"{mode.replace(' ', '-')}.db")
    if mode == "insert trigger":
        store.db.execute(INSERT_TRIGGER)
    if mode == "no index":
        store.db.execute("DROP TRIGGER entries_fts_update")
        store.db.execute("DROP TRIGGER entries_fts_delete")
    feed_id = store.sync_feeds([SimpleNamespace(url="http://bench.test/feed", title="Bench", tags=[])])[
        "http://bench.test/feed"]["id"]
    result = FetchResult(url="http://bench.test/feed", final_url="http://bench.test/feed", status=200, body=b"")
    started = time.perf_counter()
    for parsed in feeds:
        store.save_fetch(feed_id, result, parsed, {}, extract=False)
    stored = time.perf_counter() - started
    indexing = searching = 0.0
    if mode == "batched":
        started = time.perf_counter()
        store.refresh_search_index()
        indexing = time.perf_counter() - started
    if mode != "no index":
        started = time.perf_counter()
        search(store, "harbour strike", limit=20)
        searching = time.perf_counter() - started
    store.close()
    return stored, indexing, searching


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    feeds = synthetic_feeds(count, random.Random(9))
    print(f"{count} entries of 300 words ({VOCABULARY} distinct, Zipf-like), stored {ENTRIES_PER_FETCH} per feed fetch (one transaction each)\n")
    print(f"{'mode':<16} {'store s':>8} {'entries/s':>10} {'index s':>8} {'total s':>8} {'search ms':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("no index", "batched", "insert trigger"):
            stored, indexing, searching = timed_run(mode, feeds, Path(folder))
            print(f"{mode:<16} {stored:>8.2f} {count / stored:>10.0f} {indexing:>8.2f} "
                  f"{stored + indexing:>8.2f} {searching * 1000:>10.1f}")


if __name__ == "__main__":
    main()
