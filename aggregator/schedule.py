"""When each feed is next fetched: the pure scheduling decisions.

``after_fetch`` turns one fetch's outcome into the feed row's new columns
(validators, state, error count, redirect tracking, next check); ``is_due``
says whether a feed's time has come; ``status_report`` is what ``agg status``
makes of the feed rows. Nothing here does I/O or reads the
clock: ``now`` and the random source are passed in, so every decision can
be tested exactly.

How the next check is chosen, in order:

1. the base interval: the feed's own ``interval`` from feeds.yaml when set;
   otherwise the feed's rhythm (the average gap between its entries' dates)
   clamped to ``[min_interval, max_interval]``, or the default ``interval``
   until the rhythm is known;
2. the server's wishes lengthen it, never shorten it: ``Cache-Control:
   max-age``, ``Expires``, RSS ``<ttl>``, and ``Retry-After`` on 429 and 503
   (capped at ``max_interval`` so that a feed is looked at least that often);
3. errors replace the base with an exponential backoff (the base doubled per
   consecutive failure, capped at ``max_interval``); from the first failure
   the feed's state is ``error``, after ``failure_threshold`` failures in a
   row it is ``failing`` and tried daily; ``410 Gone`` disables it;
4. random jitter of ``±jitter`` of the delay spreads feeds out, without
   going under what the server asked for or over ``max_interval``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from aggregator.config import FeedConfig, Settings
from aggregator.models import FetchResult, ParsedFeed
from aggregator.store import from_db_time, to_db_time

FAILING_RETRY_SECONDS = 24 * 3600
# Statuses whose Retry-After means "come back later" (RFC 9110 §10.2.3).
RETRY_AFTER_STATUSES = (429, 503)
# The rhythm is taken from this many of the feed's most recent entry dates.
RHYTHM_SAMPLE = 20
_MAX_BACKOFF_DOUBLINGS = 30


def is_due(next_check_at: datetime | None, now: datetime) -> bool:
    return next_check_at is None or next_check_at <= now


def http_date(value: str | None) -> datetime | None:
    """An HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``) as an aware datetime, or None."""
    if not value:
        return None
    from email.utils import parsedate_to_datetime  # here: email.utils imports socket, which agg status need not

    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds from ``now``: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    moment = http_date(text)
    return max(0.0, (moment - now).total_seconds()) if moment else None


def max_age_seconds(cache_control: str | None) -> float | None:
    """``max-age`` of a Cache-Control header; None when absent or when caching is refused."""
    if not cache_control:
        return None
    directives = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return None
    age = directives.get("max-age", "")
    return float(age) if age.isdigit() else None


def expires_seconds(headers: dict[str, str], now: datetime) -> float | None:
    """How long ``Expires`` says the response stays fresh, measured against the server's own ``Date``."""
    expires = http_date(headers.get("expires"))
    if expires is None:
        return None
    reference = http_date(headers.get("date")) or now
    return max(0.0, (expires - reference).total_seconds())


def server_wait_seconds(result: FetchResult, ttl_seconds: int | None, now: datetime) -> float:
    """The least time the server asked us to wait before the next request (0 when it did not say)."""
    headers = result.headers
    asked = [ttl_seconds, max_age_seconds(headers.get("cache-control")), expires_seconds(headers, now)]
    if result.status in RETRY_AFTER_STATUSES:
        asked.append(retry_after_seconds(headers.get("retry-after"), now))
    return max((float(s) for s in asked if s is not None), default=0.0)


def rhythm_seconds(dates: Iterable[datetime | None], now: datetime) -> float | None:
    """The average gap between a feed's recent entries, from their dates; None when too few to tell.

    Future dates are ignored (a wrong clock or a scheduled post); at least
    three distinct dates are needed.
    """
    recent = sorted({d for d in dates if d is not None and d <= now}, reverse=True)[:RHYTHM_SAMPLE]
    if len(recent) < 3:
        return None
    return (recent[0] - recent[-1]).total_seconds() / (len(recent) - 1)


def base_interval(feed: FeedConfig, settings: Settings, rhythm: float | None) -> float:
    """The interval before the server's wishes and errors: the feed's own, else its rhythm, else the default."""
    if feed.interval:
        return feed.interval
    if rhythm is None:
        return settings.interval
    return min(max(rhythm, settings.min_interval), settings.max_interval)


def backoff_seconds(base: float, failures: int, settings: Settings) -> float:
    """Delay after ``failures`` consecutive failures: the base doubled each time, capped at max_interval."""
    if failures >= settings.failure_threshold:
        return max(FAILING_RETRY_SECONDS, settings.max_interval)
    return min(base * 2 ** min(failures - 1, _MAX_BACKOFF_DOUBLINGS), settings.max_interval)


def jittered(delay: float, floor: float, settings: Settings, rng: random.Random) -> float:
    """``delay`` moved randomly by up to ``±jitter``, kept within [floor, max_interval]."""
    moved = delay * (1 + rng.uniform(-settings.jitter, settings.jitter))
    return max(min(moved, max(settings.max_interval, delay)), floor)


def redirect_columns(row: dict, result: FetchResult, settings: Settings) -> dict:
    """Track a permanent redirect across fetches; move ``fetch_url`` once it has been seen enough times.

    Only successful fetches count: a redirect to a URL that does not serve
    the feed is not followed for good.
    """
    target = result.permanent_redirect
    current = row.get("fetch_url") or row["url"]
    if not target or target == current:
        return {"redirect_to": None, "redirect_count": 0}
    count = (row.get("redirect_count") or 0) + 1 if row.get("redirect_to") == target else 1
    if count >= settings.redirect_threshold:
        return {"fetch_url": target, "redirect_to": None, "redirect_count": 0}
    return {"redirect_to": target, "redirect_count": count}


def validator_columns(result: FetchResult, error: str | None) -> dict:
    """The ETag and Last-Modified to send next time, and ``document_error``: what made that document a
    failed fetch (None for a working feed).

    Every document received whole gives its validators, feed or not, so that
    the next request is conditional whatever it held; a 304 for it repeats
    its ``document_error``, and replaces only the validators it carries.
    """
    if result.ok:
        return {"etag": result.etag, "last_modified": result.last_modified, "document_error": error}
    if result.not_modified:
        return {name: value for name, value in (("etag", result.etag), ("last_modified", result.last_modified))
                if value is not None}
    return {}


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
    """The feed row's columns after this fetch (``fetch_url`` among them when the feed has moved)."""
    rng = rng or random.Random()
    columns: dict = {"last_fetch_at": to_db_time(now), "last_status": result.status, "last_error": error}
    rhythm = row.get("entry_gap_seconds")
    ttl = row.get("ttl_seconds")
    if parsed is not None and not error:
        rhythm = rhythm_seconds((e.published for e in parsed.entries), now) or rhythm
        ttl = parsed.ttl_seconds
        columns.update(title=row.get("title") or parsed.title, site_url=parsed.link, format=parsed.format,
                       problem=parsed.problem, ttl_seconds=ttl, entry_gap_seconds=rhythm)
    columns.update(validator_columns(result, error))
    base = base_interval(feed, settings, rhythm)
    server_wait = min(server_wait_seconds(result, ttl, now), settings.max_interval)

    if result.status == 410:
        columns.update(state="disabled", error_count=(row.get("error_count") or 0) + 1, next_check_at=None)
        return columns
    if error:
        failures = (row.get("error_count") or 0) + 1
        columns["error_count"] = failures
        columns["state"] = "failing" if failures >= settings.failure_threshold else "error"
        delay = max(backoff_seconds(base, failures, settings), server_wait)
    else:
        columns.update(error_count=0, state="ok")
        columns.update(redirect_columns(row, result, settings))
        delay = max(base, server_wait)
    columns["next_check_at"] = to_db_time(now + timedelta(seconds=jittered(delay, server_wait, settings, rng)))
    return columns


def next_wake(rows: Iterable[dict]) -> datetime | None:
    """The earliest next check among the feeds still being fetched (None when there is none)."""
    times = [from_db_time(r["next_check_at"]) for r in rows if r["state"] != "disabled" and r["next_check_at"]]
    return min(times, default=None)


# A feed's states, as stored: ok; error (its last fetch failed); failing (failure_threshold
# failures in a row: tried daily); disabled (410 Gone).
STATES = ("ok", "error", "failing", "disabled")


def status_report(rows: list[dict], now: datetime) -> dict:
    """What ``agg status`` shows: each feed's last fetch, state, error and next check, and the counts."""
    feeds = []
    for row in rows:
        feeds.append({
            "url": row["url"],
            "fetch_url": row["fetch_url"],
            "title": row["title"],
            "state": row["state"],
            "last_fetch_at": row["last_fetch_at"],
            "last_status": row["last_status"],
            "last_error": row["last_error"],
            "error_count": row["error_count"],
            "next_check_at": row["next_check_at"],
            "due": row["state"] != "disabled" and is_due(from_db_time(row["next_check_at"]), now),
        })
    counts = {state: sum(1 for f in feeds if f["state"] == state) for state in STATES}
    counts["feeds"] = len(feeds)
    counts["with_errors"] = counts["error"] + counts["failing"]
    counts["due"] = sum(1 for f in feeds if f["due"])
    return {"now": to_db_time(now), "counts": counts, "feeds": feeds}
