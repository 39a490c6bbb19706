"""Per-feed scheduling and politeness: pure decisions with an injected clock, then the real pipeline.

No test sleeps to let time pass: ``now`` is passed in. The per-host limit
tests count concurrent requests on the server's side; the one spacing
check is a lower bound with a wide margin.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from aggregator import pipeline, schedule
from aggregator.config import FeedConfig, HostPolicy, Settings, load_config
from aggregator.fetch import Fetcher, HostLimiter
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.store import Store, from_db_time
from tests.server import Reply

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = 60
HOUR = 3600


def settings(**overrides) -> Settings:
    """Settings without jitter, so that every delay can be checked exactly."""
    return Settings(**{"jitter": 0.0, **overrides})


def feed_row(**overrides) -> dict:
    row = {"id": 1, "url": "http://feeds.example/rss", "fetch_url": None, "title": None, "state": "ok",
           "error_count": 0, "redirect_to": None, "redirect_count": 0, "ttl_seconds": None,
           "entry_gap_seconds": None, "etag": None, "last_modified": None}
    return {**row, **overrides}


def result(status: int = 200, headers: dict | None = None, redirect: str | None = None) -> FetchResult:
    ok = status < 400
    return FetchResult(url="http://feeds.example/rss", final_url="http://feeds.example/rss", status=status,
                       headers={k.lower(): v for k, v in (headers or {}).items()},
                       body=b"<rss/>" if ok and status != 304 else None,
                       error=None if ok else f"HTTP {status}", error_kind=None if ok else "http",
                       permanent_redirect=redirect)


def parsed(dates: list[datetime] | None = None, ttl: int | None = None) -> ParsedFeed:
    entries = [ParsedEntry(guid=str(i), published=d) for i, d in enumerate(dates or [])]
    return ParsedFeed(format="rss20", title="Feed", ttl_seconds=ttl, entries=entries)


def delay_after(columns: dict, now: datetime = NOW) -> float:
    return (from_db_time(columns["next_check_at"]) - now).total_seconds()


def decide(res: FetchResult, *, row: dict | None = None, feed: FeedConfig | None = None,
           doc: ParsedFeed | None = None, conf: Settings | None = None, now: datetime = NOW,
           rng: random.Random | None = None) -> dict:
    error = res.error
    doc = doc if doc is not None or error or res.not_modified else parsed()
    return schedule.after_fetch(row or feed_row(), feed or FeedConfig(url="http://feeds.example/rss"),
                                conf or settings(), res, doc, error, now, rng)


# -- the base interval -------------------------------------------------------------------------------


def test_a_plain_success_comes_back_after_the_default_interval():
    columns = decide(result(200))
    assert delay_after(columns) == 30 * MIN
    assert columns["state"] == "ok" and columns["error_count"] == 0


def test_is_due():
    assert schedule.is_due(None, NOW)
    assert schedule.is_due(NOW, NOW)
    assert not schedule.is_due(NOW + timedelta(seconds=1), NOW)


# -- what the server asks ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_honoured(status):
    columns = decide(result(status, {"Retry-After": "7200"}))
    assert delay_after(columns) == 2 * HOUR


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_as_an_http_date_is_honoured(status):
    later = format_datetime(NOW + timedelta(hours=3), usegmt=True)
    columns = decide(result(status, {"Retry-After": later}))
    assert delay_after(columns) == 3 * HOUR


def test_a_short_retry_after_never_shortens_the_backoff():
    columns = decide(result(503, {"Retry-After": "5"}))
    assert delay_after(columns) == 30 * MIN


def test_retry_after_counts_only_on_429_and_503():
    columns = decide(result(500, {"Retry-After": "7200"}))
    assert delay_after(columns) == 30 * MIN


@pytest.mark.parametrize("value", ["", "soon", "-5", "Thu, 99 Foo 2026"])
def test_unreadable_retry_after_is_ignored(value):
    assert schedule.retry_after_seconds(value, NOW) is None


def test_a_retry_after_date_in_the_past_means_now():
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert schedule.retry_after_seconds(past, NOW) == 0


def test_cache_control_max_age_lengthens_the_interval():
    assert delay_after(decide(result(200, {"Cache-Control": "public, max-age=7200"}))) == 2 * HOUR


def test_cache_control_max_age_never_shortens_it():
    assert delay_after(decide(result(200, {"Cache-Control": "max-age=60"}))) == 30 * MIN


def test_cache_control_that_refuses_caching_says_nothing_about_timing():
    assert delay_after(decide(result(200, {"Cache-Control": "no-cache, max-age=7200"}))) == 30 * MIN


def test_expires_is_measured_against_the_servers_date():
    server_clock = NOW - timedelta(minutes=10)  # the server's clock is 10 minutes slow
    headers = {"Date": format_datetime(server_clock, usegmt=True),
               "Expires": format_datetime(server_clock + timedelta(hours=2), usegmt=True)}
    assert delay_after(decide(result(200, headers))) == 2 * HOUR


def test_rss_ttl_lengthens_the_interval():
    assert delay_after(decide(result(200), doc=parsed(ttl=3 * HOUR))) == 3 * HOUR


def test_the_stored_ttl_still_counts_when_the_feed_is_unchanged():
    columns = decide(result(304), row=feed_row(ttl_seconds=3 * HOUR))
    assert delay_after(columns) == 3 * HOUR


def test_what_the_server_asks_is_capped_at_max_interval():
    # A static file served with a year's max-age must still be looked at daily.
    columns = decide(result(200, {"Cache-Control": "max-age=31536000"}))
    assert delay_after(columns) == 24 * HOUR


# -- errors ------------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_max_interval_and_resets_on_success():
    row, delays = feed_row(), []
    for _ in range(8):
        columns = decide(result(500), row=row)
        delays.append(delay_after(columns))
        row = {**row, **columns}
    assert delays[:6] == [30 * MIN, 1 * HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR]
    assert delays[6:] == [24 * HOUR, 24 * HOUR]
    assert row["error_count"] == 8 and row["state"] == "error"
    columns = decide(result(200), row=row)
    assert columns["error_count"] == 0
    assert delay_after(columns) == 30 * MIN


def test_after_failure_threshold_failures_a_feed_is_failing_and_tried_daily():
    conf = settings(failure_threshold=3, max_interval=6 * HOUR)
    row = feed_row(error_count=2)
    columns = decide(result(500), row=row, conf=conf)
    assert columns["state"] == "failing"
    assert delay_after(columns) == 24 * HOUR
    recovered = decide(result(200), row={**row, **columns}, conf=conf)
    assert recovered["state"] == "ok" and recovered["error_count"] == 0


def test_410_gone_disables_the_feed():
    columns = decide(result(410))
    assert columns["state"] == "disabled"
    assert columns["next_check_at"] is None
    assert columns["last_error"] == "HTTP 410"


# -- permanent redirects -----------------------------------------------------------------------------


def test_a_permanent_redirect_moves_the_feed_after_redirect_threshold_fetches():
    new = "http://feeds.example/new-rss"
    row = feed_row()
    for seen in (1, 2):
        columns = decide(result(200, redirect=new), row=row)
        assert "fetch_url" not in columns and columns["redirect_count"] == seen
        row = {**row, **columns}
    columns = decide(result(200, redirect=new), row=row)
    assert columns["fetch_url"] == new and columns["redirect_count"] == 0


def test_a_fetch_without_the_redirect_starts_the_count_again():
    new = "http://feeds.example/new-rss"
    row = {**feed_row(), **decide(result(200, redirect=new))}
    row = {**row, **decide(result(200), row=row)}
    assert row["redirect_count"] == 0 and row["redirect_to"] is None
    assert decide(result(200, redirect="http://feeds.example/other"), row=row)["redirect_count"] == 1


def test_a_failed_fetch_leaves_the_redirect_count_alone():
    row = feed_row(redirect_to="http://feeds.example/new-rss", redirect_count=2)
    columns = decide(result(500, redirect="http://feeds.example/new-rss"), row=row)
    assert "redirect_count" not in columns and "fetch_url" not in columns


# -- the feed's own rhythm ---------------------------------------------------------------------------


def hourly(count: int, gap: timedelta) -> list[datetime]:
    return [NOW - gap * i for i in range(count)]


def test_the_interval_follows_the_feeds_rhythm():
    columns = decide(result(200), doc=parsed(hourly(10, timedelta(hours=2))))
    assert columns["entry_gap_seconds"] == 2 * HOUR
    assert delay_after(columns) == 2 * HOUR


@pytest.mark.parametrize(("gap", "expected"), [(timedelta(minutes=2), 10 * MIN), (timedelta(days=7), 24 * HOUR)])
def test_the_rhythm_is_clamped_to_min_and_max_interval(gap, expected):
    assert delay_after(decide(result(200), doc=parsed(hourly(10, gap)))) == expected


def test_the_rhythm_is_remembered_when_the_feed_is_unchanged():
    columns = decide(result(304), row=feed_row(entry_gap_seconds=3 * HOUR))
    assert delay_after(columns) == 3 * HOUR


def test_a_feeds_own_interval_wins_over_its_rhythm():
    feed = FeedConfig(url="http://feeds.example/rss", interval=15 * MIN)
    assert delay_after(decide(result(200), feed=feed, doc=parsed(hourly(10, timedelta(hours=5))))) == 15 * MIN


def test_too_few_or_future_dates_give_no_rhythm():
    assert schedule.rhythm_seconds(hourly(2, timedelta(hours=1)), NOW) is None
    future = [NOW + timedelta(days=d) for d in range(1, 10)]
    assert schedule.rhythm_seconds([*future, None], NOW) is None
    assert schedule.rhythm_seconds([*future, *hourly(5, timedelta(hours=1))], NOW) == HOUR


# -- jitter ------------------------------------------------------------------------------------------


def test_jitter_spreads_feeds_within_its_fraction():
    conf = settings(jitter=0.1)
    rng = random.Random(5)
    delays = [delay_after(decide(result(200), conf=conf, rng=rng)) for _ in range(200)]
    assert all(27 * MIN <= d <= 33 * MIN for d in delays)
    assert max(delays) - min(delays) > 3 * MIN  # spread, not a constant


def test_jitter_never_goes_under_what_the_server_asked():
    conf = settings(jitter=0.5)
    rng = random.Random(7)
    delays = [delay_after(decide(result(429, {"Retry-After": "3600"}), conf=conf, rng=rng)) for _ in range(100)]
    assert min(delays) >= HOUR
    assert max(delays) <= 24 * HOUR


# -- through the real pipeline, with now= -------------------------------------------------------------


def rss(count: int = 3, ttl_minutes: int | None = None) -> bytes:
    items = "".join(
        f"<item><title>Story {i}</title><link>http://127.0.0.1/story/{i}</link><guid>story-{i}</guid>"
        f"<pubDate>{format_datetime(NOW - timedelta(hours=i), usegmt=True)}</pubDate></item>"
        for i in range(count)
    )
    ttl = f"<ttl>{ttl_minutes}</ttl>" if ttl_minutes else ""
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{ttl}{items}</channel></rss>'.encode()


@pytest.fixture
def make_config(tmp_path):
    def make(*urls: str, extra: str = "") -> object:
        path = tmp_path / "feeds.yaml"
        feeds = "".join(f"  - url: {url}\n    extract: false\n" for url in urls)
        path.write_text(f"defaults:\n  jitter: 0\n  allow_private_networks: true\n{extra}feeds:\n{feeds}")
        return load_config(path)
    return make


def test_three_301s_move_the_feed_and_the_move_is_reported(server, make_config, tmp_path, caplog):
    old = server.route("/old.xml", Reply(301, headers={"Location": "/new.xml"}))
    new = server.route("/new.xml", Reply(body=rss()))
    config = make_config(old)
    store = Store.open(tmp_path / "agg.db")
    outcomes = []
    for hour in range(3):
        summary = pipeline.run(config, store, now=NOW + timedelta(hours=hour))
        outcomes.append(summary.feeds[0])
    assert [o.moved_to for o in outcomes] == [None, None, new]
    assert "moved permanently" in caplog.text and new in caplog.text
    row = store.feed_by_url(old)
    assert row["fetch_url"] == new
    old_hits = len(server.hits("/old.xml"))
    summary = pipeline.run(config, store, now=NOW + timedelta(hours=3))
    assert summary.feeds[0].url == old and summary.feeds[0].status in ("fetched", "unchanged")
    assert len(server.hits("/old.xml")) == old_hits  # fetched straight from the new address
    assert len(store.feeds()) == 1  # the config's URL is still the feed's identity
    assert store.db.execute("SELECT count(*) FROM entries").fetchone()[0] == 3


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_through_the_pipeline_keeps_the_feed_off_until_then(server, make_config, tmp_path, status):
    url = server.route("/busy.xml", Reply(status, b"busy", headers={"Retry-After": "5400"}, content_type="text/plain"))
    config = make_config(url)
    store = Store.open(tmp_path / "agg.db")
    pipeline.run(config, store, due_only=True, now=NOW)
    row = store.feed_by_url(url)
    assert from_db_time(row["next_check_at"]) == NOW + timedelta(minutes=90)
    assert row["error_count"] == 1
    pipeline.run(config, store, due_only=True, now=NOW + timedelta(minutes=89))
    assert len(server.hits("/busy.xml")) == 1  # not due yet: the server was left alone
    pipeline.run(config, store, due_only=True, now=NOW + timedelta(minutes=90))
    assert len(server.hits("/busy.xml")) == 2


def test_ttl_and_backoff_through_the_pipeline(server, make_config, tmp_path):
    replies = iter([Reply(body=rss(ttl_minutes=120)), Reply(500), Reply(500), Reply(500), Reply(body=rss())])
    url = server.route("/feed.xml", lambda request: next(replies))
    config = make_config(url)
    store = Store.open(tmp_path / "agg.db")
    waits = []
    now = NOW
    for _ in range(5):
        pipeline.run(config, store, now=now)
        next_check = from_db_time(store.feed_by_url(url)["next_check_at"])
        waits.append((next_check - now).total_seconds() / HOUR)
        now = next_check
    # The feed's hourly rhythm sets a 1 h base, its <ttl> lengthens that to 2 h and still
    # holds while errors back off from the base (1 h, 2 h, 4 h); success without a ttl resets to 1 h.
    assert waits == [2, 2, 2, 4, 1]


def test_410_through_the_pipeline_disables_the_feed_for_good(server, make_config, tmp_path):
    url = server.route("/gone.xml", Reply(410, b"gone", content_type="text/plain"))
    config = make_config(url)
    store = Store.open(tmp_path / "agg.db")
    pipeline.run(config, store, now=NOW)
    assert store.feed_by_url(url)["state"] == "disabled"
    pipeline.run(config, store, now=NOW + timedelta(days=30))
    assert len(server.hits("/gone.xml")) == 1


# -- per-host politeness -----------------------------------------------------------------------------


class ConcurrencyProbe:
    """A route that counts how many requests the server is serving at once, and when each arrived."""

    def __init__(self, hold: float):
        self.hold = hold
        self.in_flight = 0
        self.peak = 0
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, request) -> Reply:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.arrivals.append(time.monotonic())
        time.sleep(self.hold)
        with self._lock:
            self.in_flight -= 1
        return Reply(body=b"ok", content_type="text/plain")


async def fetch_all(conf: Settings, urls: list[str]) -> list[FetchResult]:
    async with Fetcher(conf) as fetcher:
        return await asyncio.gather(*(fetcher.fetch(url) for url in urls))


def test_at_most_per_host_requests_are_in_flight_to_one_host(server):
    probe = ConcurrencyProbe(hold=0.3)
    server.route("/page", probe)
    conf = Settings(per_host=2, concurrency=20, allow_private_networks=True)
    results = asyncio.run(fetch_all(conf, [server.url(f"/page?n={i}") for i in range(6)]))
    assert all(r.ok for r in results)
    assert len(probe.arrivals) == 6
    assert probe.peak == 2


def test_a_host_block_in_the_config_overrides_per_host(server, tmp_path):
    probe = ConcurrencyProbe(hold=0.2)
    server.route("/page", probe)
    path = tmp_path / "feeds.yaml"
    path.write_text("defaults:\n  per_host: 4\nhosts:\n  127.0.0.1:\n    per_host: 1\nfeeds: []\n")
    conf = load_config(path).settings
    results = asyncio.run(fetch_all(conf, [server.url(f"/page?n={i}") for i in range(4)]))
    assert all(r.ok for r in results)
    assert probe.peak == 1


def test_requests_to_one_host_start_at_least_host_delay_apart(server):
    probe = ConcurrencyProbe(hold=0.0)
    server.route("/page", probe)
    conf = Settings(per_host=4, host_delay=0.4, allow_private_networks=True)
    asyncio.run(fetch_all(conf, [server.url(f"/page?n={i}") for i in range(4)]))
    gaps = [b - a for a, b in zip(probe.arrivals, probe.arrivals[1:])]
    assert len(gaps) == 3
    assert min(gaps) >= 0.25  # 0.4 s asked; a wide margin for a noisy machine, and only a lower bound


def test_host_limiter_spaces_starts_by_min_delay_on_an_injected_clock(monkeypatch):
    clock = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = HostLimiter(lambda host: HostPolicy(max_in_flight=1, min_delay=5.0), clock=lambda: clock[0])

    async def three_requests() -> list[float]:
        starts = []
        for _ in range(3):
            slot = await limiter("example.org")
            starts.append(clock[0])
            clock[0] += 1.0  # the request takes a second
            slot.release()
        return starts

    starts = asyncio.run(three_requests())
    assert starts == [100.0, 105.0, 110.0]
    assert slept == [4.0, 4.0]
