"""When each feed is next fetched: the pure scheduling decisions.

``after_fetch`` turns one fetch's outcome into the feed row's new columns
(validators, status, error count, next check); ``is_due`` says whether a
feed's time has come.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from aggregator.config import FeedConfig, Settings
from aggregator.models import FetchResult, ParsedFeed
from aggregator.store import to_db_time


def is_due(next_check_at: datetime | None, now: datetime) -> bool:
    return next_check_at is None or next_check_at <= now


def after_fetch(
    row: dict,
    feed: FeedConfig,
    settings: Settings,
    result: FetchResult,
    parsed: ParsedFeed | None,
    error: str | None,
    now: datetime,
    rng: random.Random | None = None,
) -> dict:
    """The feed row's columns after this fetch."""
    rng = rng or random.Random()
    interval = feed.interval or settings.interval
    columns: dict = {"last_fetch_at": to_db_time(now), "last_status": result.status, "last_error": error}
    if error:
        failures = (row.get("error_count") or 0) + 1
        columns["error_count"] = failures
        delay = min(interval * 2 ** min(failures - 1, 20), settings.max_interval)
    else:
        columns["error_count"] = 0
        columns["state"] = "ok"
        delay = interval
        if result.etag is not None or not result.not_modified:
            columns["etag"] = result.etag
        if result.last_modified is not None or not result.not_modified:
            columns["last_modified"] = result.last_modified
        if parsed is not None:
            columns.update(title=row.get("title") or parsed.title, site_url=parsed.link, format=parsed.format,
                           problem=parsed.problem, ttl_seconds=parsed.ttl_seconds)
    delay *= 1 + rng.uniform(-settings.jitter, settings.jitter)
    columns["next_check_at"] = to_db_time(now + timedelta(seconds=delay))
    return columns
