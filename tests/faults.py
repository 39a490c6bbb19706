"""Fault injection for the tests: hostile servers and broken bodies, built on :mod:`tests.server`.

Everything stays on 127.0.0.1 and every loop is bounded:

- :func:`padding` and :class:`GzipBomb` are *lazy* bodies for ``Reply(stream=...)``:
  a 50 MB body or a gzip stream expanding to gigabytes is made chunk by chunk
  as it is sent, so neither the server nor the test holds it in memory, and
  the server stops as soon as the client hangs up;
- :func:`redirect_chain` / :func:`redirect_loop` script redirects;
- :func:`unanswered_port` is a listening socket whose accept queue is full,
  the loopback way to make a connection attempt time out;
- the XML attack documents (:data:`BILLION_LAUGHS`, :func:`quadratic_blowup`,
  :func:`external_entity`) and hostile feed content;
- :func:`run_agg` runs ``python -m aggregator`` as a real process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import PROJECT_ROOT, rss_document
from tests.server import Reply, ScriptedServer

MiB = 2**20
CHUNK = 64 * 1024


# --- lazy bodies ---------------------------------------------------------------


def padding(total: int, chunk: int = CHUNK, byte: bytes = b" ") -> Callable[[], Iterator[bytes]]:
    """A body of ``total`` copies of ``byte``, made ``chunk`` bytes at a time."""

    def generate() -> Iterator[bytes]:
        block = byte * chunk
        sent = 0
        while sent < total:
            piece = block[: min(chunk, total - sent)]
            sent += len(piece)
            yield piece

    return generate


class GzipBomb:
    """A valid gzip stream of ``expanded`` zero bytes, made lazily: ~1 kB on the wire per MiB expanded.

    Call it for the chunks. After a full flush the compressor's output for
    the same input block is the same bytes, so one block is compressed once
    and repeated; only the trailer's CRC needs every byte, and it is
    computed only if a client reads that far.
    """

    def __init__(self, expanded: int, block: int = MiB):
        assert expanded % block == 0 and expanded // block >= 2
        self.expanded, self.block = expanded, block
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros_block = bytes(block)
        self._first = compressor.compress(zeros_block) + compressor.flush(zlib.Z_FULL_FLUSH)
        self._repeated = compressor.compress(zeros_block) + compressor.flush(zlib.Z_FULL_FLUSH)
        self.wire_size = len(self._first) + len(self._repeated) * (self.blocks - 1) + 10

    @property
    def blocks(self) -> int:
        return self.expanded // self.block

    def __call__(self) -> Iterator[bytes]:
        yield self._first
        for _ in range(self.blocks - 1):
            yield self._repeated
        crc, zeros_block = 0, bytes(self.block)
        for _ in range(self.blocks):
            crc = zlib.crc32(zeros_block, crc)
        # The final empty stored block, then CRC-32 and size mod 2**32 (RFC 1952).
        yield b"\x03\x00" + crc.to_bytes(4, "little") + (self.expanded % 2**32).to_bytes(4, "little")


def big_body_reply(total: int, *, declared: bool) -> Reply:
    """An RSS-looking body of ``total`` bytes, sent lazily; ``declared``: with its Content-Length."""
    head = b'<?xml version="1.0"?><rss version="2.0"><channel><title>big</title><description>'
    pad = padding(total - len(head))

    def generate() -> Iterator[bytes]:
        yield head
        yield from pad()

    headers = {"Content-Length": str(total)} if declared else {}
    return Reply(stream=generate, headers=headers)


def bomb_reply(expanded: int) -> Reply:
    return Reply(stream=GzipBomb(expanded), headers={"Content-Encoding": "gzip"})


# --- scripted network faults --------------------------------------------------------


def redirect_chain(server: ScriptedServer, hops: int, prefix: str = "/hop") -> str:
    """``hops`` temporary redirects ending at a valid feed; returns the first URL."""
    for number in range(hops):
        server.route(f"{prefix}{number}", Reply(302, headers={"Location": f"{prefix}{number + 1}"}))
    server.route(f"{prefix}{hops}", Reply(body=rss_document([{"guid": "end", "title": "End of the chain"}])))
    return server.url(f"{prefix}0")


def redirect_loop(server: ScriptedServer) -> str:
    """Two URLs that redirect to each other."""
    server.route("/ping", Reply(302, headers={"Location": "/pong"}))
    server.route("/pong", Reply(301, headers={"Location": "/ping"}))
    return server.url("/ping")


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full, so a new connection attempt hangs until its timeout.

    Loopback never drops packets, so this is how a connect timeout is made
    without a network: listen(0) and fill the accept queue with connections
    nobody accepts; the kernel then ignores further SYNs.
    """
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


# --- XML attacks ---------------------------------------------------------------------

_ATTACK_ITEMS = "<item><guid>attack-1</guid><title>T &{name};</title><description>&{name};</description></item>"


def _attack_feed(doctype: str, name: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n{doctype}\n]>\n<rss version="2.0"><channel><title>attack</title>'
        f"<link>http://example.test/</link><description>x</description>{_ATTACK_ITEMS.format(name=name)}"
        "</channel></rss>"
    ).encode()


BILLION_LAUGHS = _attack_feed(
    '<!ENTITY lol "lol">\n'
    + "\n".join(f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)),
    "lol9",
)


def quadratic_blowup(size: int = 100_000, uses: int = 2_000) -> bytes:
    """One big entity referenced many times: no nesting, so it slips past naive depth limits."""
    doctype = f'<!ENTITY big "{"A" * size}">'
    feed = _attack_feed(doctype, "big")
    return feed.replace(b"&big;</description>", b"&big;" * uses + b"</description>")


def external_entity(target: str = "file:///etc/passwd") -> bytes:
    return _attack_feed(f'<!ENTITY xxe SYSTEM "{target}">', "xxe")


def parameter_entity(target: str) -> bytes:
    """An external parameter entity: a parser that fetches it would reach ``target``."""
    return _attack_feed(f'<!ENTITY % remote SYSTEM "{target}">\n%remote;', "undefined")


# --- hostile content ---------------------------------------------------------------

ANSI_TITLE = "\x1b[2J\x1b[31mRED ALERT\x1b]0;pwned\x07 \x1b[1A\rOverwritten\x07\x08\x9b1m"


def hostile_items() -> list[dict]:
    """Entries whose title, link and summary try script injection and terminal escapes."""
    return [
        {"guid": "xss-1", "title": "<script>alert(1)</script>Plain words",
         "link": "http://example.test/xss-1",
         "description": '<p onclick="alert(2)">Body <img src=x onerror="alert(3)"> <a href="javascript:alert(4)">click</a></p>'
                        "<script>alert(5)</script>"},
        {"guid": "js-link", "title": "A javascript link", "link": "javascript:alert(6)",
         "description": "<p>Nothing to see</p>"},
        {"guid": "ansi-1", "title": ANSI_TITLE, "link": "http://example.test/ansi-1",
         "description": "\x1b[31mred\x1b[0m body"},
        {"guid": "huge-title", "title": "Long " * 250_000, "link": "http://example.test/huge",
         "description": "A megabyte title"},
    ]


# --- running agg as a process ------------------------------------------------------------


def agg_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "aggregator", *map(str, args)]


def run_agg(*args: str | Path, timeout: float = 60, **options) -> subprocess.CompletedProcess:
    """``agg ARGS`` in a subprocess from the project folder; output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **options.pop("env", {})}
    return subprocess.run(agg_command(*args), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env, **options)
