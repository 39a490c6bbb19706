"""HTTP fetching: polite, bounded, and safe against hostile servers.

:class:`Fetcher` owns the one aiohttp session of a run. Every request, for a
feed or an article page, goes through it and so shares its limits: a global
cap on requests in flight, a per-host cap and minimum delay, connect/read/total
timeouts, a cap on the decompressed body (the stream is abandoned past it, so
a 50 MB body or a gzip bomb never sits in memory), at most 10 redirects, and
conditional GET. Destinations that come from feed content (article links, and
redirects of a feed on a public address) must resolve to public addresses
unless the config allows private networks.

Failures never raise: they come back as a :class:`FetchResult` whose
``error`` says what went wrong.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import aiohttp

from aggregator import __version__
from aggregator.config import HostPolicy, Settings
from aggregator.models import FetchResult

USER_AGENT = f"agg/{__version__} (news aggregator; +https://pypi.org/project/agg/)"
MAX_REDIRECTS = 10
CHUNK_SIZE = 64 * 1024
FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
_ALLOW_HINT = "set allow_private_networks: true in the config's defaults to allow it"


class _Refused(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _NonPublicAddress(OSError):
    """Raised by the connector's resolver for a guarded request to a name that resolves privately."""


# Set while a guarded request is being made, for the connector's resolver to see.
_GUARDED: ContextVar[bool] = ContextVar("agg_guarded_request", default=False)


class _GuardingResolver(aiohttp.abc.AbstractResolver):
    """The connector's resolver: during a guarded request, refuses names resolving to non-public addresses.

    The check before a guarded request resolves the name on its own; checking
    again the addresses actually connected to closes the gap a DNS answer that
    changes in between (DNS rebinding) would open. IP literals are never
    resolved, so the check before the request covers them alone.
    """

    def __init__(self) -> None:
        self._resolver = aiohttp.resolver.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        infos = await self._resolver.resolve(host, port, family)
        blocked = [info["host"] for info in infos if not is_public_address(info["host"])]
        if blocked and _GUARDED.get():
            raise _NonPublicAddress(f"{host} resolves to a non-public address ({blocked[0]})")
        return infos

    async def close(self) -> None:
        await self._resolver.close()


def is_public_address(address: str) -> bool:
    """True for a globally routable IP: not loopback, private, link-local (cloud metadata), reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the host itself when it is an IP literal)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class HostLimiter:
    """At most ``max_in_flight`` requests at once per host, ``min_delay`` apart."""

    def __init__(self, policy_for: Callable[[str], HostPolicy], clock: Callable[[], float] = time.monotonic):
        self._policy_for = policy_for
        self._clock = clock
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_start: dict[str, float] = {}

    def _semaphore(self, host: str) -> asyncio.Semaphore:
        if host not in self._semaphores:
            self._semaphores[host] = asyncio.Semaphore(self._policy_for(host).max_in_flight)
            self._locks[host] = asyncio.Lock()
        return self._semaphores[host]

    async def __call__(self, host: str) -> _HostSlot:
        semaphore = self._semaphore(host)
        await semaphore.acquire()
        delay = self._policy_for(host).min_delay
        if delay > 0:
            async with self._locks[host]:
                wait = self._last_start.get(host, -delay) + delay - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_start[host] = self._clock()
        return _HostSlot(semaphore)


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore

    def release(self) -> None:
        self.semaphore.release()


class Fetcher:
    """One run's HTTP client. Use as ``async with Fetcher(settings) as fetcher:``."""

    def __init__(self, settings: Settings, concurrency: int | None = None):
        self.settings = settings
        self.concurrency = concurrency or settings.concurrency
        self._global = asyncio.Semaphore(self.concurrency)
        self._hosts = HostLimiter(settings.host_policy)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        timeout = aiohttp.ClientTimeout(
            total=self.settings.request_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        # No DNS cache: a cached answer would skip the resolver's check on guarded requests.
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0, use_dns_cache=False,
                                         resolver=_GuardingResolver())
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()

    async def is_public(self, url: str) -> bool:
        """Whether ``url``'s host resolves only to public addresses (a feed "on a public address")."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        try:
            addresses = await resolve_addresses(parts.hostname, parts.port or 80)
        except OSError:
            return True  # unresolvable now: treat as public, so its redirects stay guarded
        return bool(addresses) and all(is_public_address(a) for a in addresses)

    async def guard_for(self, feed_url: str) -> bool:
        """Whether destinations taken from this feed's content must be public addresses."""
        return not self.settings.allow_private_networks and await self.is_public(feed_url)

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = FEED_ACCEPT,
        untrusted: bool = False,
        guard: bool = False,
    ) -> FetchResult:
        """GET ``url``; never raises.

        ``untrusted``: the URL itself came from feed content (an article
        link), so only http(s) is allowed and, with ``guard``, only public
        addresses. ``guard``: refuse redirects (and untrusted URLs) that lead
        to non-public addresses.
        """
        started = time.monotonic()
        result = FetchResult(url=url, final_url=url)
        try:
            scheme = urlsplit(url).scheme.lower()
            if scheme == "file" and not untrusted:
                result = await asyncio.to_thread(self._read_file, url, last_modified)
            elif scheme in ("http", "https"):
                guarded = _GUARDED.set(guard)
                try:
                    result = await self._get(url, etag, last_modified, accept, untrusted and guard, guard)
                finally:
                    _GUARDED.reset(guarded)
            else:
                raise _Refused("bad-scheme", f"refused to fetch {url!r}: only http and https links are followed")
        except _Refused as exc:
            result.error, result.error_kind = str(exc), exc.kind
        result.elapsed = time.monotonic() - started
        return result

    async def _get(
        self, url: str, etag: str | None, last_modified: str | None, accept: str, check_first: bool, guard: bool
    ) -> FetchResult:
        assert self._session is not None, "use Fetcher as an async context manager"
        result = FetchResult(url=url, final_url=url)
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = url
        permanent_so_far = True
        for hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            host = (parts.hostname or "").lower()
            if parts.scheme.lower() not in ("http", "https") or not host:
                raise _Refused("bad-scheme", f"refused redirect to {current!r}: only http and https are followed")
            if check_first or hop > 0 and guard:
                await self._check_public(host, parts.port or (443 if parts.scheme == "https" else 80), current)
            # The host's slot first, then a global one: a request queued behind its
            # host's cap must not hold a global slot that a request to another host could use.
            slot = await self._hosts(host)
            try:
                async with self._global:
                    outcome = await self._request(current, headers, result)
            finally:
                slot.release()
            if outcome is None:
                result.final_url = current
                return result
            status, location = outcome
            if not location:
                result.error, result.error_kind = f"HTTP {status} redirect without a Location header", "http"
                return result
            nxt = urljoin(current, location)
            if permanent_so_far and status in (301, 308):
                result.permanent_redirect = nxt
            else:
                permanent_so_far = False
            current = nxt
        raise _Refused("too-many-redirects", f"more than {MAX_REDIRECTS} redirects (last: {current})")

    async def _check_public(self, host: str, port: int, url: str) -> None:
        try:
            addresses = await resolve_addresses(host, port)
        except OSError as exc:
            raise _Refused("dns", f"could not resolve {host}: {exc}") from None
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise _Refused(
                "refused-address",
                f"refused {url}: {host} resolves to a non-public address ({blocked[0]}); {_ALLOW_HINT}",
            )

    async def _request(self, url: str, headers: dict[str, str], result: FetchResult) -> tuple[int, str] | None:
        """One hop. Fills ``result`` and returns None, or returns (status, Location) to follow."""
        assert self._session is not None
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as response:
                status = response.status
                if status in (301, 302, 303, 307, 308):
                    return status, response.headers.get("Location", "")
                result.status = status
                result.headers = {k.lower(): v for k, v in response.headers.items()}
                result.etag = response.headers.get("ETag")
                result.last_modified = response.headers.get("Last-Modified")
                if status == 304:
                    return None
                if status >= 400:
                    result.error = f"HTTP {status} {response.reason or ''}".strip()
                    result.error_kind = "http"
                    return None
                result.body = await self._read_capped(response, result)
        except _Refused:
            raise
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, _NonPublicAddress):
                raise _Refused("refused-address", f"refused {url}: {exc.os_error}; {_ALLOW_HINT}") from None
            result.error, result.error_kind = f"DNS lookup failed for {urlsplit(url).hostname}: {exc.os_error}", "dns"
        except aiohttp.ClientConnectorError as exc:
            result.error, result.error_kind = f"could not connect to {urlsplit(url).netloc}: {exc.os_error}", "connection"
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            result.error, result.error_kind = self._timeout_message(), "timeout"
        except aiohttp.ClientPayloadError as exc:
            result.error, result.error_kind = f"the response body was cut short or badly encoded: {exc}", "decode"
        except aiohttp.ClientError as exc:
            result.error, result.error_kind = f"{type(exc).__name__}: {exc}", "connection"
        if result.error:
            result.body = None
        return None

    def _timeout_message(self) -> str:
        s = self.settings
        return (
            f"timed out (connect {s.connect_timeout:g}s, read {s.read_timeout:g}s, "
            f"whole request {s.request_timeout:g}s)"
        )

    async def _read_capped(self, response: aiohttp.ClientResponse, result: FetchResult) -> bytes | None:
        cap = self.settings.max_body
        declared = response.content_length
        if declared is not None and declared > cap and not response.headers.get("Content-Encoding"):
            raise _Refused("too-large", f"body of {declared} bytes is over the {cap}-byte cap (max_body)")
        chunks: list[bytes] = []
        size = 0
        # aiohttp decompresses as it streams, so the cap counts decompressed bytes.
        async for chunk in response.content.iter_chunked(CHUNK_SIZE):
            size += len(chunk)
            if size > cap:
                response.close()
                raise _Refused("too-large", f"body is over the {cap}-byte cap (max_body); stopped reading")
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_file(self, url: str, last_modified: str | None) -> FetchResult:
        result = FetchResult(url=url, final_url=url)
        path = Path(url2pathname(urlsplit(url).path))
        try:
            stat = path.stat()
            mtime = formatdate(stat.st_mtime, usegmt=True)
            result.last_modified = mtime
            if last_modified == mtime:
                result.status = 304
                return result
            if stat.st_size > self.settings.max_body:
                raise _Refused("too-large", f"{path} is over the {self.settings.max_body}-byte cap (max_body)")
            with path.open("rb") as handle:
                result.body = handle.read(self.settings.max_body + 1)
            result.status = 200
        except _Refused as exc:
            result.error, result.error_kind = str(exc), exc.kind
        except OSError as exc:
            result.error, result.error_kind = f"could not read {path}: {exc.strerror or exc}", "file"
        return result
