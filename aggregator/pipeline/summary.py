"""What a run reports: each feed's :class:`FeedOutcome`, the :class:`RunSummary`, and progress as it goes.

Also the :class:`StageClock` that measures ``RunSummary.stage_seconds``,
:func:`feed_problem` (when a parsed document counts as a failed fetch) and
:func:`describe` (the run's closing line).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aggregator import dedup
from aggregator.models import ParsedFeed


@dataclass
class FeedOutcome:
    """How one feed's fetch went: ``fetched``, ``unchanged`` or ``failed``."""

    url: str
    status: str
    new_entries: int = 0
    updated_entries: int = 0
    error: str | None = None
    moved_to: str | None = None


@dataclass
class RunSummary:
    feeds: list[FeedOutcome] = field(default_factory=list)
    pages_extracted: int = 0
    pages_failed: int = 0
    grouping: dedup.GroupingSummary = field(default_factory=dedup.GroupingSummary)
    seconds: float = 0.0
    # Set when the run was asked to stop: the feeds not listed were left for the next run.
    stopped: bool = False
    # Seconds each stage (fetch, parse, extract, group, store, index) was busy: see StageClock.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Reports left without a story for finish_grouping, with the search index (run's defer_grouping_over).
    grouping_deferred: int = 0

    def count(self, status: str) -> int:
        return sum(1 for feed in self.feeds if feed.status == status)

    @property
    def failures(self) -> list[FeedOutcome]:
        return [feed for feed in self.feeds if feed.status == "failed"]

    @property
    def new_entries(self) -> int:
        return sum(feed.new_entries for feed in self.feeds)


ProgressCallback = Callable[[FeedOutcome, int, int], None]
# ``(pages done, pages queued so far)``: called as article pages are queued and as each is done.
PageProgressCallback = Callable[[int, int], None]


class StageClock:
    """How long each stage of a run was busy, for ``RunSummary.stage_seconds``.

    A stage is busy while at least one of its operations is in progress, so
    fifty requests in flight together count once, and a stage waiting on a
    worker pool counts while the pool works for it. Stages that overlap each
    count in full: a run whose total is close to its busiest stage overlaps well.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._active: Counter[str] = Counter()
        self._since: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Busy time measured elsewhere (in a worker process)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self._active[stage]:
            self._since[stage] = time.perf_counter()
        self._active[stage] += 1
        try:
            yield
        finally:
            self._active[stage] -= 1
            if not self._active[stage]:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - self._since[stage]


def feed_problem(parsed: ParsedFeed | None) -> str | None:
    """Why a parsed document counts as a failed fetch: it yielded no entries because it is not a feed
    or is broken. A valid feed with no entries (a new blog, a quiet channel) is no failure."""
    if parsed is None or parsed.entries:
        return None
    return parsed.problem


def describe(summary: RunSummary) -> str:
    """The closing summary of a run, in one line."""
    return (
        f"{summary.count('fetched')} fetched, {summary.count('unchanged')} unchanged, "
        f"{summary.count('failed')} failed; {summary.new_entries} new entries, "
        f"{summary.pages_extracted} pages extracted ({summary.pages_failed} not), "
        f"in {summary.seconds:.1f}s" + ("; stopped early" if summary.stopped else "")
        + (f"; {summary.grouping_deferred:,} reports left to group in the background"
           if summary.grouping_deferred else "")
    )
