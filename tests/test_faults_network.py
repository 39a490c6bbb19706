"""Network faults, end to end: ``agg fetch`` against a hostile local server and a real SQLite file.

Each fault is served next to a healthy feed: the run must succeed (exit 0),
store the healthy feed's entries, and record the fault on the faulty feed's
row and in the fetch log, in words. Timeouts are set small in the config:
connect 0.5 s, read 1 s, whole request 1.5 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.fetch import MAX_REDIRECTS, Fetcher
from aggregator.models import FetchResult
from tests.conftest import rss_document
from tests.faults import closed_port, redirect_chain, redirect_loop, unanswered_port
from tests.server import Reply, ScriptedServer
from tests.test_pipeline import count, query, write_config

TIMEOUTS = "connect_timeout: 500ms\nread_timeout: 1s\nrequest_timeout: 1500ms"
SETTINGS = Settings(connect_timeout=0.5, read_timeout=1, request_timeout=1.5)
GOOD = rss_document([{"guid": "good-1", "title": "Healthy one"}, {"guid": "good-2", "title": "Healthy two"}])


@dataclass
class Fault:
    """Where the faulty feed is, and what its recorded error must say."""

    url: str
    says: str


FaultMaker = Callable[[ScriptedServer, ExitStack], Fault]


def status(code: int) -> FaultMaker:
    def make(server: ScriptedServer, _: ExitStack) -> Fault:
        return Fault(server.route(f"/status-{code}", Reply(code, body=b"<html>nope</html>", content_type="text/html")),
                     f"HTTP {code}")
    return make


def refused(server: ScriptedServer, _: ExitStack) -> Fault:
    return Fault(f"http://127.0.0.1:{closed_port()}/feed.xml", "could not connect")


def dns_failure(server: ScriptedServer, _: ExitStack) -> Fault:
    # .invalid is reserved (RFC 6761): it never resolves, and resolvers answer locally.
    return Fault("http://no-such-host.invalid/feed.xml", "DNS lookup failed for no-such-host.invalid")


def connect_timeout(server: ScriptedServer, stack: ExitStack) -> Fault:
    port = stack.enter_context(unanswered_port())
    return Fault(f"http://127.0.0.1:{port}/feed.xml", "timed out")


def read_timeout(server: ScriptedServer, _: ExitStack) -> Fault:
    return Fault(server.route("/silent.xml", Reply(body=GOOD, delay=3)), "timed out")


def trickle(server: ScriptedServer, _: ExitStack) -> Fault:
    # A byte a second: every read succeeds within read_timeout, only the total limit cuts it.
    return Fault(server.route("/trickle.xml", Reply(body=GOOD, chunk_size=1, chunk_delay=1.0)), "timed out")


def reset_mid_body(server: ScriptedServer, _: ExitStack) -> Fault:
    return Fault(server.route("/reset.xml", Reply(body=GOOD, reset_after=len(GOOD) // 2)), "cut short")


def loop(server: ScriptedServer, _: ExitStack) -> Fault:
    return Fault(redirect_loop(server), f"more than {MAX_REDIRECTS} redirects")


def long_chain(server: ScriptedServer, _: ExitStack) -> Fault:
    return Fault(redirect_chain(server, MAX_REDIRECTS + 1), f"more than {MAX_REDIRECTS} redirects")


def redirect_to(target: str) -> FaultMaker:
    def make(server: ScriptedServer, _: ExitStack) -> Fault:
        return Fault(server.route("/moved.xml", Reply(302, headers={"Location": target})), "only http and https")
    return make


FAULTS: dict[str, FaultMaker] = {
    "connection-refused": refused,
    "dns-failure": dns_failure,
    "connect-timeout": connect_timeout,
    "read-timeout": read_timeout,
    "trickle-1-byte-per-s": trickle,
    "reset-mid-body": reset_mid_body,
    **{f"http-{code}": status(code) for code in (403, 404, 500, 502, 503)},
    "redirect-loop": loop,
    "redirect-chain-11": long_chain,
    "redirect-to-file": redirect_to("file:///etc/passwd"),
    "redirect-to-ftp": redirect_to("ftp://127.0.0.1/feed.xml"),
    "redirect-to-data": redirect_to("data:application/rss+xml,<rss/>"),
}


@pytest.mark.parametrize("make_fault", FAULTS.values(), ids=FAULTS.keys())
def test_agg_fetch_survives_network_fault(tmp_path: Path, server: ScriptedServer, agg, make_fault: FaultMaker):
    good_url = server.route("/good.xml", Reply(body=GOOD))
    with ExitStack() as stack:
        fault = make_fault(server, stack)
        cfg = write_config(tmp_path, [{"url": fault.url}, {"url": good_url}], defaults=TIMEOUTS)
        db = tmp_path / "agg.db"
        result = agg("--config", cfg, "--db", db, "fetch")

    assert result.exit_code == 0, result.output
    assert f"agg: {fault.url}: " in result.stderr and fault.says in result.stderr
    # The healthy feed is stored whatever happened to its neighbour.
    assert query(db, "SELECT count(*) FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.url = ?",
                 good_url) == [(2,)]
    assert count(db, "entries") == 2
    [(last_error, error_count, body_bytes)] = query(
        db, "SELECT f.last_error, f.error_count, l.bytes FROM feeds f JOIN fetch_log l ON l.feed_id = f.id "
            "WHERE f.url = ?", fault.url)
    assert fault.says in last_error and error_count == 1 and body_bytes == 0
    assert "/etc/passwd" not in result.stdout


# --- at the Fetcher, the faults test_fetch.py does not cover -------------------------------


def fetch(url: str, settings: Settings = SETTINGS) -> FetchResult:
    async def go() -> FetchResult:
        async with Fetcher(settings) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(go())


# Without the connect timeout the kernel would retry the SYN for about two minutes.
@pytest.mark.timeout(30)
def test_connect_timeout_is_reported_as_a_timeout():
    with unanswered_port() as port:
        result = fetch(f"http://127.0.0.1:{port}/feed.xml")
    assert result.error_kind == "timeout" and result.body is None and result.status is None


# The whole body would take len(GOOD), about 300 s, to arrive.
@pytest.mark.timeout(30)
def test_trickle_is_cut_by_the_whole_request_limit_not_the_read_timeout(server):
    url = server.route("/trickle.xml", Reply(body=GOOD, chunk_size=1, chunk_delay=1.0))
    result = fetch(url, Settings(connect_timeout=1, read_timeout=5, request_timeout=1.5))
    assert result.error_kind == "timeout" and "whole request 1.5s" in result.error and result.body is None


@pytest.mark.parametrize("code", [403, 502, 503])
def test_error_status_keeps_no_body(server, code):
    url = server.route("/x.xml", Reply(code, body=GOOD))  # a feed-looking body must not be used
    result = fetch(url)
    assert result.status == code and result.error_kind == "http" and result.body is None and not result.ok


@pytest.mark.parametrize("target", ["javascript:alert(1)", "gopher://127.0.0.1:70/", "mailto:a@example.test"])
def test_redirects_to_other_schemes_are_never_followed(server, target):
    url = server.route("/r.xml", Reply(302, headers={"Location": target}))
    result = fetch(url)
    assert result.error_kind == "bad-scheme" and result.body is None
    assert [r.path for r in server.requests] == ["/r.xml"]
