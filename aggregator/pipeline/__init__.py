"""One run of agg: fetch the feeds, parse them, extract their new articles, group stories, store.

This is the library API the command line is a thin shell over::

    from aggregator.config import load_config
    from aggregator.store import Store
    from aggregator.pipeline import run

    summary = run(load_config("feeds.yaml"), Store.open("data/agg.db"))

Every feed is handled on its own: one broken feed, page or entry never stops
the others, and each feed's results are stored in one transaction, so a run
killed half-way leaves a consistent database that the next run completes.

The package's parts: ``runner`` (the run itself: which feeds, each feed's
turn, its pages, its end), ``summary`` (what a run reports, and the clock of
its stages), ``parsing`` (feed parsing in worker processes) and ``grouping``
(story grouping during and after a run). Every name is importable from here;
a tunable is read, and so patched, in the part that defines it. Every part
logs as ``aggregator.pipeline``, so a log line names the run, not the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.lazy import lazy_attributes

# Each name's part, imported on first use: the grouping worker's process imports its own part and not the
# run's (aiohttp, feedparser: 0.2 s of its start, on the path of a later run's grouping).
_HOMES = {
    **dict.fromkeys(["BACKGROUND_GROUPING_MIN", "GROUPING_MIN_BATCH", "GROUPING_NICENESS",
                     "GROUPING_POLL_SECONDS", "STORED_REPORT_COST", "GroupingWorker", "finish_grouping",
                     "grouping_cost", "grouping_objects"], "grouping"),
    "ParseWorkers": "parsing",
    **dict.fromkeys(["PARSE_WORKERS_MIN_FEEDS", "RECORDS_PER_COMMIT", "STOP_POLL_SECONDS", "run", "run_async",
                     "select_feeds"], "runner"),
    **dict.fromkeys(["FeedOutcome", "PageProgressCallback", "ProgressCallback", "RunSummary", "StageClock",
                     "describe", "feed_problem"], "summary"),
    "StoreError": "aggregator.store",
}
_PARTS = ("grouping", "parsing", "runner", "summary")

if TYPE_CHECKING:  # the names __getattr__ gives, for type checkers
    from aggregator.pipeline.grouping import (  # noqa: F401
        BACKGROUND_GROUPING_MIN,
        GROUPING_MIN_BATCH,
        GROUPING_NICENESS,
        GROUPING_POLL_SECONDS,
        STORED_REPORT_COST,
        GroupingWorker,
        finish_grouping,
        grouping_cost,
        grouping_objects,
    )
    from aggregator.pipeline.parsing import ParseWorkers  # noqa: F401
    from aggregator.pipeline.runner import (  # noqa: F401
        PARSE_WORKERS_MIN_FEEDS,
        RECORDS_PER_COMMIT,
        STOP_POLL_SECONDS,
        run,
        run_async,
        select_feeds,
    )
    from aggregator.pipeline.summary import (  # noqa: F401
        FeedOutcome,
        PageProgressCallback,
        ProgressCallback,
        RunSummary,
        StageClock,
        describe,
        feed_problem,
    )
    from aggregator.store import StoreError  # noqa: F401


__getattr__ = lazy_attributes(__name__, _HOMES, _PARTS)

__all__ = [*_HOMES]
