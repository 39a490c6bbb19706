"""``agg serve`` over HTTP: headers, filters and pages of links, 404s and errors, escaping, read-only, the CLI.

The reader runs under uvicorn on 127.0.0.1 (in a thread), most tests over the
small known database of tests/sample_db.py, the escaping tests over the pages
of the crafted hostile feed (tests/reader.py); the command itself is started
as a process.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.search import SearchQueryError, fts_query, search
from aggregator.store import Store
from aggregator.web.safety import CONTENT_SECURITY_POLICY, exposure_warning, is_loopback, safe_href
from tests.reader import ReaderInThread
from tests import sample_db
from tests.reader import HOSTILE_FEED_TITLE, HOSTILE_LINK_TITLE, HOSTILE_TEXT, HOSTILE_TITLE

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return sample_db.build(tmp_path / "agg.db")


@contextmanager
def reader_client(db: Path, **app_options) -> Iterator[httpx.Client]:
    with ReaderInThread(db, **app_options) as reader, httpx.Client(base_url=reader.base_url) as client:
        yield client


@pytest.fixture
def client(db: Path):
    with reader_client(db) as client:
        yield client


def story_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<h2><a href="/story/(\d+)" data-open>', html)]


def test_every_response_carries_the_security_headers(client):
    for path in ("/", "/story/1", "/search?q=strike", "/feeds", "/static/agg.css", "/no/such/page"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert re.fullmatch(r"app;dur=\d+\.\d\d", response.headers["server-timing"])
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_stories_page_lists_stories_with_their_outlets_and_original(client):
    html = client.get("/").text
    assert story_ids(html) == [1, 2, 3]
    strike = html[html.index('href="/story/1"'):html.index('href="/story/2"')]
    assert re.findall(r'data-outlet="([^"]+)"', strike) == ["The Daily Ledger", "Northgate Post", "Wire Service"]
    assert re.search(r'class="chip original" data-outlet="The Daily Ledger"', strike)
    assert "<strong>3</strong> outlets · 3 reports" in strike


def test_filters_map_to_agg_list(client):
    assert story_ids(client.get("/?min_outlets=2").text) == [1, 2]
    assert story_ids(client.get("/?since=24h").text) == [1]
    assert story_ids(client.get("/?tag=business").text) == [1, 2]
    assert story_ids(client.get("/?tag=local").text) == [1, 3]
    assert story_ids(client.get("/?feed=Wire+Service").text) == [1, 2]
    assert story_ids(client.get("/?feed=http://northgate.test/rss").text) == [1, 3]
    assert "No stories match these filters." in client.get("/?tag=nothing").text


def test_pages_of_links_keep_the_filters(db):
    with reader_client(db, page_size=1) as client:
        first = client.get("/").text
        assert story_ids(first) == [1]
        assert 'rel="next" href="/?page=2"' in first and 'rel="prev"' not in first
        second = client.get("/?page=2").text
        assert story_ids(second) == [2]
        assert 'rel="prev" href="/"' in second and 'rel="next" href="/?page=3"' in second
        last = client.get("/?page=3").text
        assert story_ids(last) == [3] and 'rel="next"' not in last
        filtered = client.get("/?tag=local").text
        assert story_ids(filtered) == [1] and 'href="/?tag=local&amp;page=2"' in filtered
        assert story_ids(client.get("/?tag=local&page=2").text) == [3]


def test_the_story_page_shows_every_report_rule_score_and_the_representative_text(client):
    html = client.get("/story/1").text
    assert re.findall(r'<span class="outlet">([^<]+)</span>', html) == ["The Daily Ledger", "Northgate Post",
                                                                     "Wire Service"]
    assert html.count('class="report is-original"') == 1
    assert "Original source: <strong>The Daily Ledger</strong>" in html
    assert '<span class="rule">seed</span>' in html and html.count('<span class="score">0.80</span>') == 2
    assert 'href="http://ledger.test/feed.xml/l1" rel="noopener noreferrer" data-open' in html
    assert "Dockers at the harbour walked out on Monday" in html  # the representative's text


def test_a_story_folded_into_another_redirects_to_it(db):
    store = Store.open(db)
    with store.transaction() as conn:
        conn.execute("UPDATE stories SET merged_into = 1 WHERE id = 3")
    store.close()
    with reader_client(db) as client:
        response = client.get("/story/3", follow_redirects=False)
        assert response.status_code == 301 and response.headers["location"] == "/story/1"


def test_search_one_result_per_story_with_highlights(client):
    html = client.get("/search?q=strike").text
    assert story_ids(html) == [1]
    assert "<mark>strike</mark>" in html.lower()
    assert "story of 3 reports from 3 outlets, 3 of them match" in html


def test_bad_search_syntax_is_explained_as_agg_search_does(client, db):
    response = client.get("/search", params={"q": '"unbalanced'})
    assert response.status_code == 400
    store = Store.open(db, readonly=True)
    with pytest.raises(SearchQueryError) as expected:
        search(store, '"unbalanced')
    store.close()
    assert str(expected.value) in unescape(response.text)
    assert fts_query('"unbalanced') == '"unbalanced'


def test_reports_not_in_a_story_or_the_index_yet_are_said_to_be_waiting(db):
    store = Store.open(db)
    feed = store.feeds()[0]
    store.save_fetch(feed["id"], FetchResult(url=feed["url"], final_url=feed["url"], status=200, body=b"x"),
                     ParsedFeed(format="rss20", entries=[ParsedEntry(guid="new", title="Strike spreads")]), {},
                     extract=False)
    store.close()
    with reader_client(db) as client:
        assert "1 report waits to be grouped into stories, so it is not listed yet." in client.get("/").text
        assert "1 newer entry is not searchable yet" in client.get("/search?q=strike").text


def test_the_feeds_page_is_agg_status_with_errors_highlighted(client):
    html = client.get("/feeds").text
    assert "3 feeds: 1 ok, <span class=\"bad\">1 failing</span>, 1 disabled" in html
    failing = re.search(r'<tr class="state-failing has-error".*?</tr>', html, re.S).group(0)
    assert "Northgate Post" in failing and "HTTP 503" in failing and "(12 in a row)" in failing
    assert re.search(r'<tr class="state-disabled has-error".*?HTTP 410 Gone', html, re.S)
    assert re.search(r'<tr class="state-ok"[^>]*>\s*<td class="feed-name"><a [^>]*>The Daily Ledger', html)


@pytest.mark.parametrize("path", ["/nope", "/story/999", "/story/abc", "/story/-1", "/story/99999999999999999999999",
                                  "/static/nope.css", "/static/../store.py", "/feeds/extra"])
def test_bad_paths_and_ids_get_a_404_page(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in response.text and "Traceback" not in response.text


@pytest.mark.parametrize("query, message", [
    ("min_outlets=abc", "min outlets must be a whole number"),
    ("min_outlets=0", "min outlets must be a whole number"),
    ("page=0", "page must be a whole number"),
    ("page=99999999999999999999999", "page must be a whole number"),
    ("page=%C2%B2", "page must be a whole number"),
    ("since=banana", "is neither a duration"),
])
def test_bad_filters_get_a_page_that_says_what_is_wrong(client, query, message):
    response = client.get("/?" + query)
    assert response.status_code == 400 and message in response.text


def test_an_error_inside_a_page_is_a_500_page_without_a_traceback(client, monkeypatch):
    def broken(self, story_id):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Store, "story", broken)
    response = client.get("/story/1")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_a_missing_database_is_a_503_page_that_says_so(tmp_path):
    with reader_client(tmp_path / "none.db") as client:
        response = client.get("/")
    assert response.status_code == 503 and "run 'agg fetch' first" in unescape(response.text)


def test_it_reads_while_a_writer_holds_the_database_and_never_writes(db):
    writer = Store.open(db)
    before = db.stat().st_mtime_ns
    with reader_client(db) as client:
        with writer.transaction() as conn:
            conn.execute("UPDATE stories SET title = 'Changed meanwhile' WHERE id = 1")
            assert "Port workers strike over pay" in client.get("/").text  # the last committed state
        assert "Changed meanwhile" in client.get("/").text
    assert db.stat().st_mtime_ns == before  # the reader wrote nothing (the writer's change is in the WAL)
    writer.close()


# -- what comes from feeds ------------------------------------------------------


def test_feed_content_is_escaped_and_only_http_links_are_links(running_reader):
    with httpx.Client(base_url=running_reader.base_url) as http:
        pages = {path: http.get(path).text for path in ("/", "/feeds", "/search?q=payload")}
        story_paths = sorted(set(re.findall(r'href="(/story/\d+)"', pages["/search?q=payload"])))
        assert len(story_paths) == 2
        pages.update({path: http.get(path).text for path in story_paths})
    everything = "\n".join(pages.values())
    assert everything.count("<script") == len(pages)  # each page's own script tag, nothing else
    assert not re.search(r"<(img|svg)\b", everything)
    assert not re.search(r"""href=["']?\s*(javascript|data):""", everything, re.I)
    for payload in (HOSTILE_TITLE, HOSTILE_FEED_TITLE, HOSTILE_TEXT, HOSTILE_LINK_TITLE):
        escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
        assert escaped in everything, payload
    assert '<span class="unlinked" title="Not an http(s) link, so not followed">javascript:alert(12)</span>' in everything


@pytest.mark.parametrize("url, expected", [
    ("https://example.com/a?b=1", "https://example.com/a?b=1"),
    ("  http://example.com/  ", "http://example.com/"),
    ("javascript:alert(1)", None),
    (" JaVaScRiPt:alert(1)", None),
    ("java\tscript:alert(1)", None),
    ("\x01javascript:alert(1)", None),
    ("data:text/html,<script>alert(1)</script>", None),
    ("vbscript:msgbox", None),
    ("file:///etc/passwd", None),
    ("//evil.example/", None),
    ("/relative", None),
    ("http://[::1", None),
    ("", None),
    (None, None),
])
def test_safe_href_keeps_only_absolute_http_links(url, expected):
    assert safe_href(url) == expected


def test_loopback_addresses_and_the_warning_for_others():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.1.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.4", "example.com"))
    assert exposure_warning("127.0.0.1", 8080) is None
    assert "no authentication" in exposure_warning("0.0.0.0", 8080)


# -- the command --------------------------------------------------------------------


def test_agg_serve_warns_loudly_when_listening_beyond_this_machine(db, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    result = CliRunner().invoke(cli, ["serve", "--db", str(db), "--host", "0.0.0.0", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "WARNING: listening on 0.0.0.0:8123" in result.stderr and "no authentication" in result.stderr
    assert calls[0]["host"] == "0.0.0.0" and calls[0]["port"] == 8123
    quiet = CliRunner().invoke(cli, ["--db", str(db), "serve"])
    assert "WARNING" not in quiet.stderr and calls[1]["host"] == "127.0.0.1" and calls[1]["port"] == 8080
    assert f"serving {db} read-only at http://127.0.0.1:8080/" in quiet.stderr


def test_agg_serve_without_a_database_says_what_to_do(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "run 'agg fetch' first" in result.stderr


def test_agg_serve_serves_the_pages_on_127_0_0_1(db):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "aggregator", "--db", str(db), "serve", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        response = None
        for _ in range(100):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None and response.status_code == 200, process.poll()
        assert story_ids(response.text) == [1, 2, 3]
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "server" not in response.headers
        assert httpx.get(f"http://127.0.0.1:{port}/static/keys.js").headers["content-type"].startswith(
            "text/javascript")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert f"read-only at http://127.0.0.1:{port}/" in stderr and "Traceback" not in stderr


def test_the_package_data_ships_every_template_and_static_file():
    patterns = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "aggregator.web"]
    web = PROJECT / "aggregator" / "web"
    shipped = {path for pattern in patterns for path in web.glob(pattern)}
    files = {path for folder in ("templates", "static") for path in (web / folder).rglob("*") if path.is_file()}
    assert files and files <= shipped, sorted(map(str, files - shipped))
