"""The Fetcher against a real HTTP server on 127.0.0.1: headers, validators, decoding, redirects, limits, failures."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import zlib

import brotli
import pytest

from aggregator import __version__
from aggregator.config import HostPolicy, Settings
from aggregator.fetch import MAX_REDIRECTS, Fetcher
from aggregator.models import FetchResult
from tests.conftest import rss_document
from tests.server import Reply, SeenRequest

FEED = rss_document([{"guid": "1", "title": "One"}, {"guid": "2", "title": "Two"}])


def fetch(url: str, settings: Settings | None = None, **options) -> FetchResult:
    async def go() -> FetchResult:
        async with Fetcher(settings or Settings()) as fetcher:
            return await fetcher.fetch(url, **options)

    return asyncio.run(go())


def fetch_many(urls: list[str], settings: Settings) -> list[FetchResult]:
    async def go() -> list[FetchResult]:
        async with Fetcher(settings) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(url) for url in urls))

    return asyncio.run(go())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_user_agent_names_agg_and_its_version(server):
    url = server.route("/feed.xml", Reply(body=FEED))
    result = fetch(url)
    assert result.ok and result.status == 200 and result.body == FEED
    agent = server.hits("/feed.xml")[0].headers["user-agent"]
    assert agent.startswith(f"agg/{__version__}")
    assert "rss+xml" in server.hits("/feed.xml")[0].headers["accept"]


def test_validators_are_returned_then_sent_and_304_has_no_body(server):
    etag, modified = '"v1"', "Sat, 28 Nov 2026 18:07:16 GMT"

    def conditional(request: SeenRequest) -> Reply:
        if request.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag})
        return Reply(body=FEED, headers={"ETag": etag, "Last-Modified": modified})

    url = server.route("/feed.xml", conditional)
    first = fetch(url)
    assert (first.etag, first.last_modified, first.status) == (etag, modified, 200)
    assert "if-none-match" not in server.hits("/feed.xml")[0].headers

    second = fetch(url, etag=first.etag, last_modified=first.last_modified)
    seen = server.hits("/feed.xml")[1].headers
    assert seen["if-none-match"] == etag and seen["if-modified-since"] == modified
    assert second.not_modified and second.body is None and second.error is None and not second.ok


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("br", brotli.compress),
])
def test_compressed_bodies_are_decoded(server, encoding, compress):
    url = server.route("/feed.xml", Reply(body=compress(FEED), headers={"Content-Encoding": encoding}))
    result = fetch(url)
    assert result.error is None and result.body == FEED
    assert encoding in server.hits("/feed.xml")[0].headers["accept-encoding"]


def test_temporary_redirect_chain_is_followed(server):
    server.route("/a", Reply(302, headers={"Location": "/b"}))
    server.route("/b", Reply(307, headers={"Location": server.url("/c")}))
    server.route("/c", Reply(body=FEED))
    result = fetch(server.url("/a"))
    assert result.ok and result.body == FEED
    assert result.final_url == server.url("/c") and result.permanent_redirect is None
    assert [r.path for r in server.requests] == ["/a", "/b", "/c"]


def test_permanent_redirect_is_recorded(server):
    server.route("/old", Reply(301, headers={"Location": "/new"}))
    server.route("/new", Reply(body=FEED))
    result = fetch(server.url("/old"))
    assert result.ok and result.permanent_redirect == server.url("/new")


def test_permanent_redirect_then_temporary_keeps_the_permanent_target(server):
    server.route("/old", Reply(308, headers={"Location": "/moved"}))
    server.route("/moved", Reply(302, headers={"Location": "/today"}))
    server.route("/today", Reply(body=FEED))
    result = fetch(server.url("/old"))
    assert result.ok and result.permanent_redirect == server.url("/moved")
    assert result.final_url == server.url("/today")


def redirect_chain(server, hops: int) -> str:
    for number in range(hops):
        server.route(f"/r{number}", Reply(302, headers={"Location": f"/r{number + 1}"}))
    server.route(f"/r{hops}", Reply(body=FEED))
    return server.url("/r0")


def test_ten_redirects_are_followed(server):
    result = fetch(redirect_chain(server, MAX_REDIRECTS))
    assert MAX_REDIRECTS == 10
    assert result.ok and result.final_url == server.url(f"/r{MAX_REDIRECTS}")


def test_more_than_ten_redirects_is_an_error(server):
    result = fetch(redirect_chain(server, MAX_REDIRECTS + 1))
    assert result.error_kind == "too-many-redirects" and "more than 10 redirects" in result.error
    assert result.body is None and len(server.requests) == MAX_REDIRECTS + 1


def test_redirect_loop_is_an_error(server):
    server.route("/loop", Reply(302, headers={"Location": "/loop"}))
    assert fetch(server.url("/loop")).error_kind == "too-many-redirects"


def test_redirect_to_a_local_file_is_refused(server, tmp_path):
    secret = tmp_path / "secret.xml"
    secret.write_bytes(FEED)
    server.route("/sneaky", Reply(302, headers={"Location": secret.as_uri()}))
    result = fetch(server.url("/sneaky"))
    assert result.error_kind == "bad-scheme" and result.body is None


def test_redirect_without_location_is_an_error(server):
    server.route("/nowhere", Reply(302))
    result = fetch(server.url("/nowhere"))
    assert result.error and "Location" in result.error and result.body is None


def test_body_over_the_cap_is_refused(server):
    url = server.route("/big.xml", Reply(body=b"<rss>" + b"x" * 50_000 + b"</rss>"))
    result = fetch(url, Settings(max_body=10_000))
    assert result.error_kind == "too-large" and result.body is None


def test_cap_counts_decompressed_bytes(server):
    bomb = gzip.compress(b" " * 2_000_000)  # a few kB on the wire
    url = server.route("/bomb.xml", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    result = fetch(url, Settings(max_body=100_000))
    assert len(bomb) < 100_000
    assert result.error_kind == "too-large" and result.body is None


def test_cap_applies_without_a_content_length(server):
    body = b"<rss>" + b"y" * 300_000 + b"</rss>"
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n" + body
    url = server.route("/unsized.xml", Reply(raw=raw))
    result = fetch(url, Settings(max_body=100_000))
    assert result.error_kind == "too-large" and result.body is None


@pytest.mark.parametrize("status, reason", [(404, "Not Found"), (500, "Internal Server Error"), (410, "Gone")])
def test_error_statuses_are_recorded_with_the_reason(server, status, reason):
    url = server.route("/feed.xml", Reply(status, body=b"oops", content_type="text/plain"))
    result = fetch(url)
    assert result.status == status and result.error == f"HTTP {status} {reason}"
    assert result.error_kind == "http" and result.body is None and not result.ok


def test_refused_connection_is_an_error_not_an_exception():
    result = fetch(f"http://127.0.0.1:{closed_port()}/feed.xml")
    assert result.error_kind == "connection" and "could not connect" in result.error
    assert result.status is None and result.body is None


def test_unresolvable_host_is_a_dns_error():
    result = fetch("http://no-such-host.invalid/feed.xml")
    assert result.error_kind in ("dns", "connection") and result.body is None


def test_slow_server_is_a_timeout(server):
    url = server.route("/slow.xml", Reply(body=FEED, delay=3))
    result = fetch(url, Settings(read_timeout=0.3))
    assert result.error_kind == "timeout" and "timed out" in result.error and result.body is None


def test_trickling_body_is_a_timeout(server):
    url = server.route("/trickle.xml", Reply(body=FEED, chunk_size=10, chunk_delay=0.5))
    result = fetch(url, Settings(read_timeout=5, request_timeout=0.6))
    assert result.error_kind == "timeout" and result.body is None


def test_connection_cut_mid_body_is_an_error(server):
    url = server.route("/cut.xml", Reply(body=FEED, reset_after=20))
    result = fetch(url)
    assert result.error is not None and result.body is None


def test_garbage_response_is_an_error(server):
    url = server.route("/garbage", Reply(raw=b"this is not HTTP at all\r\n\r\n"))
    result = fetch(url)
    assert result.error is not None and result.body is None


def test_non_http_schemes_are_refused():
    assert fetch("ftp://example.com/feed").error_kind == "bad-scheme"
    assert fetch("gopher://example.com/feed").error_kind == "bad-scheme"


def test_untrusted_links_cannot_read_files(tmp_path):
    local = tmp_path / "feed.xml"
    local.write_bytes(FEED)
    assert fetch(local.as_uri(), untrusted=True).error_kind == "bad-scheme"
    trusted = fetch(local.as_uri())
    assert trusted.ok and trusted.body == FEED and trusted.last_modified
    # A file's modification time is its validator.
    assert fetch(local.as_uri(), last_modified=trusted.last_modified).not_modified


def test_guarded_fetch_refuses_private_addresses(server):
    url = server.route("/feed.xml", Reply(body=FEED))
    result = fetch(url, untrusted=True, guard=True)
    assert result.error_kind == "refused-address" and server.requests == []
    assert fetch(url, Settings(allow_private_networks=True), untrusted=True, guard=False).ok


class InFlight:
    """Counts requests the server is handling at once; each waits until ``release`` or a deadline."""

    def __init__(self, hold: float):
        self.hold = hold
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, request: SeenRequest) -> Reply:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)
        with self._lock:
            self.now -= 1
        return Reply(body=FEED)


@pytest.mark.parametrize("per_host", [1, 2])
def test_per_host_cap_is_respected(server, per_host):
    counter = InFlight(hold=0.15)
    urls = [server.route(f"/f{n}.xml", counter) for n in range(6)]
    results = fetch_many(urls, Settings(per_host=per_host, concurrency=20))
    assert all(r.ok for r in results)
    assert 1 <= counter.most <= per_host


def test_host_policy_overrides_the_default_cap(server):
    counter = InFlight(hold=0.15)
    urls = [server.route(f"/h{n}.xml", counter) for n in range(4)]
    settings = Settings(per_host=4, hosts={"127.0.0.1": HostPolicy(max_in_flight=1)})
    assert all(r.ok for r in fetch_many(urls, settings))
    assert counter.most == 1


def test_global_cap_is_respected(server):
    counter = InFlight(hold=0.15)
    urls = [server.route(f"/g{n}.xml", counter) for n in range(6)]
    assert all(r.ok for r in fetch_many(urls, Settings(per_host=10, concurrency=2)))
    assert 1 <= counter.most <= 2


def test_bad_compressed_body_is_an_error(server):
    url = server.route("/feed.xml", Reply(body=b"definitely not gzip", headers={"Content-Encoding": "gzip"}))
    result = fetch(url)
    assert result.error is not None and result.body is None


def test_tls_to_a_plain_http_server_is_an_error(server):
    server.route("/feed.xml", Reply(body=FEED))
    result = fetch(f"https://127.0.0.1:{server.port}/feed.xml")
    assert result.error_kind == "connection" and result.body is None
