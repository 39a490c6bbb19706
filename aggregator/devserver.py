"""A small static HTTP server for demos, tests and benches, on loopback.

Owns: serving a folder (normally ``data/samples/``) over HTTP the way a real
news site would — feed Content-Types, strong ETags, Last-Modified,
conditional 304s and gzip — so that agg's whole pipeline can run offline.
Text files may hold the placeholder ``{{BASE_URL}}``; it is replaced by the
server's own base URL at serve time, so links inside feeds point back at the
live server whatever port it got.

Dates can be moved too (``newest_at``): every machine-readable date in the
text files served (ISO 8601 with a time zone, as Atom, JSON Feed and page
metadata write them; RFC 822, as RSS does) is shifted by one amount, so that
the newest is at that moment and the others keep their order and spacing.
The demo serves its samples so, dated up to the minute it starts, so that the
windows of ``agg list --since 24h`` and the exports hold them; dates written
out in prose ("Monday 2 March") are left as they are.

Use it as ``with SampleServer(root) as srv: ... srv.base_url ...`` or from the
command line: ``python -m aggregator.devserver ROOT [--write-config FILE]``
(see ``--help``). A config it wrote names the server's address on its first
line; serving again with that config takes the same port, so that the
config and a database fetched through it stay good (``make demo-serve``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import unquote

PLACEHOLDER = b"{{BASE_URL}}"
TEXT_SUFFIXES = frozenset(
    {".xml", ".rss", ".atom", ".json", ".jsonl", ".html", ".htm", ".yaml", ".yml", ".opml", ".txt"}
)
FEEDS_FOLDER = "feeds"
# Idle keep-alive connections are dropped after this, so no handler thread lingers long.
IDLE_CONNECTION_SECONDS = 15

_FIXED_CONTENT_TYPES = {
    ".atom": "application/atom+xml",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".opml": "text/x-opml",
    ".txt": "text/plain; charset=utf-8",
    ".jsonl": "application/jsonl",
    ".css": "text/css",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
}
# Dates as feeds and pages write them for machines: ISO 8601 with a time zone, and RFC 822.
_ISO_DATE = re.compile(rb"(?<![\d-])(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(:\d{2})?(Z|[+-]\d{2}:\d{2})")
_RFC822_DATE = re.compile(rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} "
                          rb"(?:[+-]\d{4}|GMT|UTC|UT)")
# The first line of a config written by write_config: where the server was listening.
SERVED_AT = "# served by python -m aggregator.devserver at "
_XML_ROOT = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_XML_PROLOGUE = re.compile(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", re.DOTALL)


def xml_root_name(head: bytes) -> str:
    """The local name of the root element of an XML document ("" if none is seen)."""
    match = _XML_ROOT.search(_XML_PROLOGUE.sub(b"", head))
    return match.group(1).decode("ascii").rsplit(":", 1)[-1].lower() if match else ""


def content_type_for(relative_path: str, body: bytes) -> str:
    """The Content-Type to send for a file, from its extension and, for XML, its root element."""
    suffix = Path(relative_path).suffix.lower()
    if suffix in (".xml", ".rss"):
        root = xml_root_name(body[:2048])
        if root == "feed":
            return "application/atom+xml"
        if root == "opml":
            return "text/x-opml"
        if root in ("rss", "rdf") or suffix == ".rss":
            return "application/rss+xml"
        return "application/xml"
    if suffix == ".json":
        in_feeds_folder = FEEDS_FOLDER in Path(relative_path).parts[:-1]
        return "application/feed+json" if in_feeds_folder else "application/json"
    return _FIXED_CONTENT_TYPES.get(suffix, "application/octet-stream")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (an explicit ``q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().lower().removeprefix("q=")
        try:
            return not params.strip() or float(quality) > 0
        except ValueError:
            return False
    return False


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of an If-None-Match header against our ETag, as RFC 9110 asks for GET."""
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


@dataclass(frozen=True)
class Representation:
    """One file as served from one server: bytes after placeholder substitution."""

    body: bytes
    content_type: str
    etag: str
    mtime: float

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)

    def gzipped(self) -> Representation:
        # mtime=0 keeps the compressed bytes, hence the ETag, stable across requests.
        return Representation(
            gzip.compress(self.body, mtime=0),
            self.content_type,
            self.etag[:-1] + '-gzip"',
            self.mtime,
        )

    def modified_since(self, if_modified_since: str) -> bool:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return True
        return int(self.mtime) > since


def _iso_dates(body: bytes, shift: timedelta) -> bytes:
    def moved(match: re.Match[bytes]) -> bytes:
        minutes, seconds, zone = (part.decode("ascii") if part else "" for part in match.groups())
        moment = datetime.fromisoformat(minutes + (seconds or ":00") + zone.replace("Z", "+00:00")) + shift
        return (moment.strftime("%Y-%m-%dT%H:%M") + (moment.strftime(":%S") if seconds else "") + zone).encode()
    return _ISO_DATE.sub(moved, body)


def _rfc822_dates(body: bytes, shift: timedelta) -> bytes:
    def moved(match: re.Match[bytes]) -> bytes:
        text = match.group().decode("ascii")
        moment = parsedate_to_datetime(text) + shift
        return format_datetime(moment, usegmt=not text[-5:].lstrip().startswith(("+", "-"))).encode("ascii")
    return _RFC822_DATE.sub(moved, body)


def shift_dates(body: bytes, shift: timedelta) -> bytes:
    """``body`` with every machine-readable date moved by ``shift``, each written as it was."""
    return _rfc822_dates(_iso_dates(body, shift), shift) if shift else body


def dates_in(body: bytes) -> list[datetime]:
    """The machine-readable dates of ``body`` (those :func:`shift_dates` moves)."""
    iso = [datetime.fromisoformat(b"".join(part or b":00" for part in m.groups()[:2]).decode()
                                  + m.group(3).decode().replace("Z", "+00:00")) for m in _ISO_DATE.finditer(body)]
    return iso + [parsedate_to_datetime(m.group().decode("ascii")) for m in _RFC822_DATE.finditer(body)]


def newest_date(root: Path) -> datetime | None:
    """The newest machine-readable date in the text files under ``root``."""
    dates = [date for path in root.rglob("*") if path.suffix.lower() in TEXT_SUFFIXES and path.is_file()
             for date in dates_in(path.read_bytes())]
    return max(dates, default=None)


def load_representation(path: Path, relative_path: str, base_url: str,
                        date_shift: timedelta = timedelta(0)) -> Representation:
    body = path.read_bytes()
    if path.suffix.lower() in TEXT_SUFFIXES:
        body = shift_dates(body.replace(PLACEHOLDER, base_url.encode("utf-8")), date_shift)
    digest = hashlib.sha256(body).hexdigest()[:32]
    return Representation(body, content_type_for(relative_path, body), f'"{digest}"', path.stat().st_mtime)


def resolve_under(root: Path, request_path: str) -> tuple[Path, str] | None:
    """The regular file a request path names inside ``root`` and its path relative to it.

    None for anything that is missing, a directory, or would leave ``root``
    (``..`` segments, encoded or not, and symlinks pointing outside).
    """
    # Split by hand: urlsplit would read "//x/y" as a host name.
    path_only = request_path.split("?", 1)[0].split("#", 1)[0]
    relative = unquote(path_only).lstrip("/")
    if "\x00" in relative:
        return None
    try:
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, RuntimeError):  # a name too long, a symlink loop
        return None
    return candidate, candidate.relative_to(root).as_posix()


class _SampleRequestHandler(BaseHTTPRequestHandler):
    server: _SampleHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for each.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet: demos and tests want agg's output, not an access log."""

    def _respond(self, send_body: bool) -> None:
        found = resolve_under(self.server.root, self.path)
        if found is None:
            self._send_plain(HTTPStatus.NOT_FOUND, b"not found\n", send_body)
            return
        representation = load_representation(*found, self.server.base_url, self.server.date_shift)
        if accepts_gzip(self.headers.get("Accept-Encoding", "")):
            representation = representation.gzipped()
            encoding: str | None = "gzip"
        else:
            encoding = None
        if self._not_modified(representation):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._send_validators(representation)
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", representation.content_type)
        self.send_header("Content-Length", str(len(representation.body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self._send_validators(representation)
        self.end_headers()
        if send_body:
            self.wfile.write(representation.body)

    def _not_modified(self, representation: Representation) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            # When both are sent, If-None-Match alone decides (RFC 9110 §13.2.2).
            return etag_matches(if_none_match, representation.etag)
        if_modified_since = self.headers.get("If-Modified-Since")
        return if_modified_since is not None and not representation.modified_since(if_modified_since)

    def _send_validators(self, representation: Representation) -> None:
        self.send_header("ETag", representation.etag)
        self.send_header("Last-Modified", representation.last_modified)
        self.send_header("Vary", "Accept-Encoding")

    def _send_plain(self, status: HTTPStatus, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class _SampleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, date_shift: timedelta) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _SampleRequestHandler)
        self.root = root
        self.date_shift = date_shift
        bound_host, bound_port = self.socket.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown_host}:{bound_port}"

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # A client hanging up mid-response (a bench's timeout, say) is not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SampleServer:
    """Serves ``root`` on ``host:port`` (port 0 picks a free one) from a background thread.

    ``base_url`` (e.g. ``http://127.0.0.1:54321``) is known once started.
    With ``newest_at``, the files' dates are served moved so that the newest
    is at that moment, to the minute (:func:`shift_dates`); ``date_shift``
    says by how much, once started.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, *,
                 newest_at: datetime | None = None) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.newest_at = newest_at
        self.date_shift = timedelta(0)
        self._server: _SampleHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sample server is not running")
        return self._server.base_url

    def start(self) -> None:
        if not self.root.is_dir():
            raise NotADirectoryError(f"cannot serve {self.root}: not a folder")
        newest = newest_date(self.root) if self.newest_at is not None else None
        if newest is not None and self.newest_at is not None:
            self.date_shift = self.newest_at.replace(second=0, microsecond=0) - newest
        self._server = _SampleHTTPServer(self.root, self.host, self.port, self.date_shift)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"sample-server {self.base_url}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def substitute(self, text: str) -> str:
        """``text`` with every ``{{BASE_URL}}`` replaced by this server's base URL."""
        return text.replace(PLACEHOLDER.decode(), self.base_url)

    def __enter__(self) -> SampleServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def write_config(server: SampleServer, template: Path, destination: Path) -> None:
    """Write ``template`` with the server's URL filled in to ``destination``, under a line saying where
    it was served from (:func:`served_port` reads it).

    Written whole, then renamed, so that a reader waiting for the file never sees half of it.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    served = (f"{SERVED_AT}{server.base_url}: its feeds answer while it runs.\n"
              f"# Serve them again (same port) with: python -m aggregator.devserver {server.root} "
              f"--write-config {destination}\n")
    partial.write_text(served + server.substitute(template.read_text(encoding="utf-8")), encoding="utf-8")
    partial.replace(destination)


def served_port(config: Path) -> int | None:
    """The port of the server that wrote ``config`` (:func:`write_config`), or None for any other file."""
    try:
        with config.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.match(re.escape(SERVED_AT) + r"http://[^\s/]+:(\d+)", first)
    return int(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aggregator.devserver",
        description="Serve a folder of sample feeds and pages on loopback, filling in {{BASE_URL}}.",
    )
    parser.add_argument("root", type=Path, help="folder to serve, e.g. data/samples")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="0 picks a free port [default: the port FILE names, else 0]")
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="once listening, write ROOT/feeds.yaml with the live URL filled in to FILE; "
             "a FILE written so before names the port to serve on again",
    )
    parser.add_argument("--keep-dates", action="store_true",
                        help="serve the dates as written [default: moved so that the newest is now]")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    port = args.port
    if port is None:
        port = (served_port(args.write_config) if args.write_config else None) or 0

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = SampleServer(args.root, args.host, port, newest_at=None if args.keep_dates else datetime.now(UTC))
    try:
        server.start()
    except OSError as error:
        remembered = f" (the port {args.write_config} was written for)" if port and args.port is None else ""
        print(f"cannot listen on {args.host}:{port}{remembered}: {error.strerror or error}", file=sys.stderr)
        return 1
    try:
        if args.write_config is not None:
            write_config(server, server.root / "feeds.yaml", args.write_config)
        print(f"serving {args.root} at {server.base_url}", file=sys.stderr, flush=True)
        stop_requested.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
