"""A scripted HTTP server on 127.0.0.1 for tests: each path answers what the test says.

Usage::

    with ScriptedServer() as server:
        server.route("/feed.xml", Reply(body=rss_bytes, headers={"ETag": '"v1"'}))
        server.route("/slow", lambda request: Reply(body=b"x", delay=2))
        url = server.url("/feed.xml")
        ...
        server.requests  # every request seen: (method, path, headers)

A route is a :class:`Reply` or a function of the :class:`SeenRequest` that
returns one. Replies can be delayed, trickled a chunk at a time, cut off
mid-body (connection reset) or be raw bytes written straight to the socket.
Every loop is bounded by the reply's own size; the server stops with the test.
"""

from __future__ import annotations

import gzip
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class SeenRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = "application/rss+xml"
    delay: float = 0.0                 # before the status line
    chunk_size: int | None = None      # trickle the body in chunks of this size...
    chunk_delay: float = 0.0           # ...this far apart
    reset_after: int | None = None     # close the connection after this many body bytes
    gzip_body: bool = False            # send the body gzip-compressed
    raw: bytes | None = None           # write these bytes instead of an HTTP response
    # A body made chunk by chunk as it is sent (for bodies too big to build in memory);
    # sent without Content-Length unless ``headers`` has one, then the connection is closed.
    stream: Callable[[], Iterable[bytes]] | None = None


Route = Reply | Callable[[SeenRequest], Reply]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-reply is what many tests do on purpose; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = SeenRequest("GET", parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()})
                with server._lock:
                    server.requests.append(seen)
                route = server.routes.get(parts.path)
                if route is None:
                    reply = Reply(404, b"not found", content_type="text/plain")
                else:
                    reply = route(seen) if callable(route) else route
                server._send(self, reply)

            do_HEAD = do_GET

        self._httpd = _QuietServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)  # quick shutdown

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, reply: Route) -> str:
        self.routes[path] = reply
        return self.url(path)

    def hits(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        if reply.raw is not None:
            handler.wfile.write(reply.raw)
            handler.close_connection = True
            return
        if reply.stream is not None:
            ScriptedServer._send_stream(handler, reply)
            return
        body = gzip.compress(reply.body) if reply.gzip_body else reply.body
        handler.send_response(reply.status)
        if reply.content_type:
            handler.send_header("Content-Type", reply.content_type)
        if reply.gzip_body:
            handler.send_header("Content-Encoding", "gzip")
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if "Content-Length" not in reply.headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "HEAD" or reply.status == 304:
            return
        if reply.reset_after is not None:
            handler.wfile.write(body[: reply.reset_after])
            handler.wfile.flush()
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            handler.connection.close()
            handler.close_connection = True
            return
        size = reply.chunk_size or len(body) or 1
        for start in range(0, len(body), size):
            handler.wfile.write(body[start:start + size])
            handler.wfile.flush()
            if reply.chunk_delay:
                time.sleep(reply.chunk_delay)

    @staticmethod
    def _send_stream(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        """Send ``reply.stream`` chunk by chunk; stops when the client hangs up (it raises a ConnectionError)."""
        handler.send_response(reply.status)
        if reply.content_type:
            handler.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        if handler.command == "HEAD":
            return
        for chunk in reply.stream():
            handler.wfile.write(chunk)
            if reply.chunk_delay:
                handler.wfile.flush()
                time.sleep(reply.chunk_delay)
        handler.wfile.flush()
