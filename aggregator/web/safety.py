"""What keeps feed content inert in the web reader, and the reader private.

Everything from a feed reaches a page through Jinja2's autoescaping; on top
of that, links from feeds are followed only when they are http(s), and every
response carries a Content-Security-Policy that runs no script but our own
file (no inline script, no inline handler, no plugin, no framing).
"""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Following a link to an outlet must not tell it the reader's own addresses.
    "Referrer-Policy": "no-referrer",
}
LINK_SCHEMES = frozenset({"http", "https"})


def safe_href(url: str | None) -> str | None:
    """``url`` when a page may link to it (an absolute http or https URL), else None.

    ``javascript:``, ``data:``, ``file:`` and relative links from a feed are
    dropped. urlsplit removes tabs, newlines and leading blanks as browsers
    do, so ``java\\tscript:`` is seen for what a browser would make of it.
    """
    if not url:
        return None
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not parts.netloc:
        return None
    return text


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the reader to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning to print before listening on ``host``: None when it is this machine only."""
    if is_loopback(host):
        return None
    return (f"WARNING: listening on {host}:{port}, not on this machine only. agg serve has no "
            "authentication: anyone who can reach this port can read everything in the database. "
            "Keep the default --host 127.0.0.1 and reach it through an SSH tunnel or an authenticating "
            "reverse proxy unless that is what you want.")


class SecurityHeaders:
    """ASGI middleware: the security headers on every response, and its time in the app (``Server-Timing``).

    It wraps the whole application, error pages included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers.append("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.2f}")
            await send(message)

        await self.app(scope, receive, send_with_headers)
