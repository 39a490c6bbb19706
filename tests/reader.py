"""The web reader for tests: a database fetched with ``agg fetch``, and the reader serving it on 127.0.0.1.

:func:`build_reader_db` fetches the bundled samples (served by
:class:`aggregator.devserver.SampleServer`) together with two crafted feeds
from a :class:`tests.server.ScriptedServer`: one whose titles and bodies carry
``<script>``, ``onerror=`` and ``javascript:`` payloads, and one that answers
HTTP 500, so the feeds page has a failing feed. The parser drops ``javascript:``
links, so one more hostile report is stored through the Store API as a parser
that kept them would store it, then grouped with ``agg group``.

:class:`ReaderInThread` serves a database with uvicorn in a thread, on a port
of its own; the server stops with the ``with`` block.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.devserver import SampleServer
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.store import Store
from aggregator.web.app import create_app
from tests.server import Reply, ScriptedServer

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
HOSTILE_FEED_TITLE = '<script>alert("feed")</script>Hostile <img src=x onerror=alert(1)> Times'
HOSTILE_TITLE = "<img src=x onerror=alert(2)>Payload <script>alert(3)</script> story"
HOSTILE_TEXT = "Body <script>alert(6)</script> text"
HOSTILE_LINK_TITLE = "Linked payload <svg onload=alert(11)> report"
HOSTILE_LINKS = ("javascript:alert(12)", " JaVaScRiPt:alert(13)", "data:text/html,<script>alert(14)</script>")
BROKEN_FEED_TITLE = "Broken Gazette"
START_TIMEOUT_SECONDS = 10.0
CHROMIUM = Path(os.environ.get("AGG_CHROMIUM", "/usr/bin/chromium"))
# No network beyond 127.0.0.1, no updates, no first-run pages: a quiet, offline browser.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Entities are decoded once by the XML parser, so the stored titles and texts hold the payloads as written.
HOSTILE_RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
<title>&lt;script&gt;alert("feed")&lt;/script&gt;Hostile &lt;img src=x onerror=alert(1)&gt; Times</title>
<link>http://hostile.test/</link><description>payloads</description>
<item><guid>h1</guid>
<title>&lt;img src=x onerror=alert(2)&gt;Payload &lt;script&gt;alert(3)&lt;/script&gt; story</title>
<link>javascript:alert(4)</link><pubDate>Tue, 03 Mar 2026 09:00:00 GMT</pubDate>
<description>&lt;p onclick="alert(5)"&gt;Body &amp;lt;script&amp;gt;alert(6)&amp;lt;/script&amp;gt; text&lt;/p&gt;&lt;script&gt;alert(7)&lt;/script&gt;&lt;a href="javascript:alert(8)"&gt;click&lt;/a&gt;</description>
</item>
</channel></rss>""".encode()


@dataclass
class ReaderDb:
    path: Path
    config_path: Path       # the samples' feeds and the crafted ones
    samples_base_url: str   # where the samples were served: the gold stories' feed URLs start with it
    hostile_feed_url: str


def build_reader_db(folder: Path) -> ReaderDb:
    """Fetch the samples and the crafted feeds into ``folder/agg.db`` with the real command line."""
    db_path, config_path = folder / "agg.db", folder / "feeds.yaml"
    with SampleServer(SAMPLES) as samples, ScriptedServer() as crafted:
        crafted.route("/hostile.xml", Reply(body=HOSTILE_RSS))
        crafted.route("/broken.xml", Reply(status=500, body=b"server on fire", content_type="text/plain"))
        samples_config = samples.substitute((SAMPLES / "feeds.yaml").read_text(encoding="utf-8"))
        config_path.write_text(
            samples_config.replace("defaults:\n", "defaults:\n  failure_threshold: 1\n", 1)
            + f"  - url: {crafted.url('/hostile.xml')}\n    extract: false\n"
            + f"  - url: {crafted.url('/broken.xml')}\n    title: {BROKEN_FEED_TITLE}\n",
            encoding="utf-8")
        result = run_agg("--config", config_path, "--db", db_path, "fetch")
        base_url = samples.base_url
    store = Store.open(db_path)
    try:
        feed = store.feed_by_url(crafted.url("/hostile.xml"))
        assert feed is not None and feed["title"] == HOSTILE_FEED_TITLE, feed
        entries = [ParsedEntry(guid=f"link-{n}", link=link, title=HOSTILE_LINK_TITLE, summary_text=HOSTILE_TEXT)
                   for n, link in enumerate(HOSTILE_LINKS)]
        store.save_fetch(feed["id"], FetchResult(url=feed["url"], final_url=feed["url"], status=200, body=b"x"),
                         ParsedFeed(format="rss20", entries=entries), {}, extract=False)
    finally:
        store.close()
    run_agg("--config", config_path, "--db", db_path, "group")
    assert "broken.xml" in result.output, result.output
    return ReaderDb(db_path, config_path, base_url, crafted.url("/hostile.xml"))


def run_agg(*args: object):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


class ReaderInThread:
    """The reader over ``db_path`` on 127.0.0.1 and a free port, served by uvicorn from a thread.

    ``with ReaderInThread(db) as reader: httpx.get(reader.url("/"))``; the server stops with the block.
    """

    def __init__(self, db_path: Path, **app_options: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(create_app(db_path, **app_options), log_level="warning", access_log=False,
                                server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="agg-reader", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> ReaderInThread:
        self._thread.start()
        started = threading.Event()
        for _ in range(int(START_TIMEOUT_SECONDS / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            started.wait(0.02)
        if not self._server.started:
            self.__exit__()
            raise RuntimeError(f"the reader did not start within {START_TIMEOUT_SECONDS:.0f} s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT_SECONDS)
        self._socket.close()
