"""What a database holds, in numbers: feeds by state, entries, stories, folding, extraction, size.

Read-only; :func:`collect` gathers everything ``agg stats`` prints, and
:func:`describe` lays it out as aligned ``label: value`` lines;
:func:`feeds_status` is each feed's health as ``agg status`` and the web
reader's feeds page show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aggregator.schedule import status_report
from aggregator.store import Store

# Extraction statuses that mean "the page was not tried (yet)", so they do not count for the success rate.
_NOT_TRIED = ("pending", "skipped")
_UNITS = ("B", "kB", "MB", "GB", "TB")


@dataclass
class Stats:
    feeds: int = 0
    feeds_by_state: dict[str, int] = field(default_factory=dict)   # ok, error, failing, disabled
    feeds_not_configured: int | None = None   # rows of feeds no longer in feeds.yaml (None: config unknown)
    entries: int = 0
    stories: int = 0
    grouped_entries: int = 0                  # entries that belong to a story
    stories_with_several_reports: int = 0
    largest_story: int = 0
    extraction: dict[str, int] = field(default_factory=dict)      # entries by extract_status
    fetches: int = 0
    last_fetch_at: str | None = None
    entries_not_indexed: int = 0
    database_bytes: int = 0

    @property
    def mean_reports_per_story(self) -> float | None:
        return self.grouped_entries / self.stories if self.stories else None

    @property
    def folded_share(self) -> float | None:
        """Share of grouped entries that joined an existing story instead of starting one."""
        if not self.grouped_entries:
            return None
        return (self.grouped_entries - self.stories) / self.grouped_entries

    @property
    def pages_tried(self) -> int:
        return sum(count for status, count in self.extraction.items() if status not in _NOT_TRIED)

    @property
    def extraction_success_rate(self) -> float | None:
        tried = self.pages_tried
        return self.extraction.get("ok", 0) / tried if tried else None

    def as_json(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for derived in ("mean_reports_per_story", "folded_share", "pages_tried", "extraction_success_rate"):
            data[derived] = getattr(self, derived)
        return data


def collect(store: Store, configured_urls: Iterable[str] | None = None) -> Stats:
    """The numbers of ``store``; with ``configured_urls``, also how many stored feeds left feeds.yaml."""
    db = store.db
    stats = Stats()
    stats.feeds_by_state = {state: count for state, count in db.execute(
        "SELECT state, count(*) FROM feeds GROUP BY state ORDER BY state")}
    stats.feeds = sum(stats.feeds_by_state.values())
    if configured_urls is not None:
        configured = set(configured_urls)
        stats.feeds_not_configured = sum(1 for (url,) in db.execute("SELECT url FROM feeds") if url not in configured)
    stats.entries, stats.grouped_entries = db.execute(
        "SELECT count(*), count(story_id) FROM entries").fetchone()
    stats.stories, stats.stories_with_several_reports, stats.largest_story = db.execute(
        "SELECT count(*), COALESCE(sum(n_reports > 1), 0), COALESCE(max(n_reports), 0) "
        "FROM stories WHERE merged_into IS NULL").fetchone()
    stats.extraction = {status: count for status, count in db.execute(
        "SELECT extract_status, count(*) FROM entries GROUP BY extract_status ORDER BY count(*) DESC")}
    stats.fetches, stats.last_fetch_at = db.execute("SELECT count(*), max(started_at) FROM fetch_log").fetchone()
    if db["search_index_state"].exists():
        stats.entries_not_indexed = store.entries_not_indexed()
    stats.database_bytes = database_size(store)
    return stats


def database_size(store: Store) -> int:
    """Bytes on disk: the database file and its write-ahead log (pages in use for an in-memory one)."""
    if store.path is None:
        page_count = store.db.execute("PRAGMA page_count").fetchone()[0]
        return page_count * store.db.execute("PRAGMA page_size").fetchone()[0]
    files = [store.path, Path(f"{store.path}-wal")]
    return sum(path.stat().st_size for path in files if path.exists())


def describe(stats: Stats) -> list[tuple[str, str]]:
    """(label, value) lines for a person."""
    states = ", ".join(f"{count} {state}" for state, count in stats.feeds_by_state.items()) or "none yet"
    feeds = f"{stats.feeds} ({states})"
    if stats.feeds_not_configured:
        feeds += f"; {stats.feeds_not_configured} no longer in feeds.yaml"
    lines = [
        ("Feeds", feeds),
        ("Entries", f"{stats.entries:,}" + (f" ({stats.entries_not_indexed:,} not in the search index yet)"
                                           if stats.entries_not_indexed else "")),
        ("Stories", f"{stats.stories:,} ({stats.stories_with_several_reports:,} with more than one report; "
                    f"largest {stats.largest_story})"),
    ]
    if stats.mean_reports_per_story is not None and stats.folded_share is not None:
        lines.append(("Reports folded", f"{stats.mean_reports_per_story:.2f} reports per story; "
                                        f"{stats.folded_share:.1%} of grouped entries joined an existing story"))
    if stats.extraction_success_rate is not None:
        others = ", ".join(f"{count} {status}" for status, count in stats.extraction.items() if status != "ok")
        lines.append(("Extraction", f"{stats.extraction_success_rate:.1%} of {stats.pages_tried:,} pages tried"
                                    + (f" ({others})" if others else "")))
    else:
        lines.append(("Extraction", "no pages tried yet"))
    lines.append(("Fetches", f"{stats.fetches:,}" + (f", last at {stats.last_fetch_at}" if stats.last_fetch_at else "")))
    lines.append(("Database", human_bytes(stats.database_bytes)))
    return lines


def human_bytes(count: int) -> str:
    """``1.2 MB``-style size (decimal units)."""
    size, unit = float(count), 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size, unit = size / 1000, unit + 1
    return f"{count} B" if unit == 0 else f"{size:.1f} {_UNITS[unit]}"


def feeds_status(store: Store, now: datetime) -> dict:
    """:func:`~aggregator.schedule.status_report` of every stored feed, its counts with how many reports
    wait for a story."""
    report = status_report(store.feeds(), now)
    report["counts"]["reports_waiting_for_story"] = store.count_ready_for_story()
    return report
