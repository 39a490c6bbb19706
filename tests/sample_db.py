"""A small, fully known agg database for command-line tests that must not depend on fetching.

Three outlets, six entries, three stories (one carried by all three
outlets), feeds in each state and pages in several extraction states. The
stories are written directly, so these tests do not depend on the grouping
engine; tests that exercise the whole pipeline use ``agg fetch`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.store import Store, to_db_time, utc_now, write_outlet_feeds


@dataclass
class Outlet:
    url: str
    title: str
    tags: list[str]


OUTLETS = [
    Outlet("http://ledger.test/feed.xml", "The Daily Ledger", ["business"]),
    Outlet("http://northgate.test/rss", "Northgate Post", ["news", "local"]),
    Outlet("http://wire.test/atom", "Wire Service", ["wire"]),
]

# (outlet index, guid, title, text, hours ago, extract status, story key)
ENTRIES = [
    (0, "l1", "Port workers strike over pay",
     "Dockers at the harbour walked out on Monday in a dispute over pay and shift patterns.", 5, "ok", "strike"),
    (1, "n1", "Harbour dockers begin strike",
     "The strike by harbour workers halted container traffic, union leaders said.", 4, "ok", "strike"),
    (2, "w1", "Dock strike halts port traffic",
     "A strike at the port stopped ships from unloading; talks resume on Friday.", 3, "too-short", "strike"),
    (0, "l2", "Central bank raises interest rates",
     "The central bank raised its main interest rate by a quarter point to curb inflation.", 30, "ok", "rates"),
    (2, "w2", "Rates up a quarter point",
     "Borrowing costs rose as the central bank moved against inflation again.", 29, "pending", "rates"),
    (1, "n2", "Library reopens after flood repairs",
     "The town library reopened its doors after months of repairs following the flood.", 50, "skipped", "library"),
]
STORY_TITLES = {"strike": "Port workers strike over pay", "rates": "Central bank raises interest rates",
                "library": "Library reopens after flood repairs"}


def build(path: Path, now: datetime | None = None) -> Path:
    """Create the sample database at ``path`` (its search index refreshed) and return the path."""
    now = now or utc_now()
    store = Store.open(path)
    rows = store.sync_feeds(OUTLETS, now)
    entry_ids: dict[str, int] = {}
    for index, outlet in enumerate(OUTLETS):
        mine = [e for e in ENTRIES if e[0] == index]
        parsed = ParsedFeed(format="rss20", title=outlet.title, entries=[
            ParsedEntry(guid=guid, link=f"{outlet.url}/{guid}", title=title, summary=text, summary_text=text,
                        published=now - timedelta(hours=hours))
            for _, guid, title, text, hours, _, _ in mine])
        result = FetchResult(url=outlet.url, final_url=outlet.url, status=200, body=b"<rss/>")
        saved = store.save_fetch(rows[outlet.url]["id"], result, parsed, {"last_fetch_at": to_db_time(now)},
                                 extract=True, now=now - timedelta(hours=1))
        for (_, guid, *_), entry_id in zip(mine, saved.new_entry_ids):
            entry_ids[guid] = entry_id
    for _, guid, _, text, _, status, _ in ENTRIES:
        if status != "pending":
            store.save_extraction(entry_ids[guid], text=text, text_source="page", status=status, now=now)
    _write_stories(store, entry_ids, now)
    store.update_feed(rows[OUTLETS[1].url]["id"], state="failing", error_count=12, last_error="HTTP 503")
    store.update_feed(rows[OUTLETS[2].url]["id"], state="disabled", last_error="HTTP 410 Gone")
    store.refresh_search_index()
    store.close()
    return path


def _write_stories(store: Store, entry_ids: dict[str, int], now: datetime) -> None:
    with store.transaction() as conn:
        for story_id, (key, title) in enumerate(STORY_TITLES.items(), start=1):
            members = [e for e in ENTRIES if e[6] == key]
            times = [to_db_time(now - timedelta(hours=e[4])) for e in members]
            first = entry_ids[members[0][1]]
            conn.execute(
                "INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
                "original_entry_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (story_id, title, min(times), max(times), len(members), len({e[0] for e in members}), first, first))
            for number, member in enumerate(members):
                entry_id = entry_ids[member[1]]
                conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (story_id, entry_id))
                conn.execute(
                    "INSERT INTO story_members (entry_id, story_id, rule, score, evidence, joined_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry_id, story_id, "seed" if number == 0 else "similar", None if number == 0 else 0.8,
                     json.dumps({}), to_db_time(now)))
        if "outlet_feeds" in {row[1] for row in conn.execute("PRAGMA table_info(stories)")}:  # from migration 8 on
            write_outlet_feeds(conn)  # as the grouping writes them with a story


def write_config(path: Path) -> Path:
    """A feeds.yaml listing the sample outlets, with comments to keep."""
    lines = ["# sample subscriptions\n", "defaults:\n", "  interval: 30m\n", "feeds:\n"]
    for outlet in OUTLETS:
        lines += [f"  # {outlet.title}\n", f"  - url: {outlet.url}\n", f"    title: {outlet.title}\n",
                  f"    tags: [{', '.join(outlet.tags)}]\n"]
    path.write_text("".join(lines), encoding="utf-8")
    return path
