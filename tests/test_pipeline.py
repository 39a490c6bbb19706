"""Whole runs through the command line against a local HTTP server and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.pipeline import describe, run, run_async
from aggregator.store import Store
from tests.conftest import PROJECT_ROOT, rss_document
from tests.server import Reply, SeenRequest

NOW = datetime.now(UTC)


def write_config(tmp_path: Path, feeds: list[dict], defaults: str = "") -> Path:
    """A feeds.yaml with ``extract: false`` by default and one block per feed."""
    lines = ["defaults:", "  extract: false", *(f"  {line}" for line in defaults.splitlines()), "feeds:"]
    for feed in feeds:
        lines.append(f"  - url: {feed['url']}")
        lines += [f"    {key}: {json.dumps(value)}" for key, value in feed.items() if key != "url"]
    path = tmp_path / "feeds.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def count(db: Path, table: str) -> int:
    return query(db, f"SELECT count(*) FROM {table}")[0][0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def items(prefix: str, titles: list[str], hours_ago: float = 1) -> list[dict]:
    published = format_datetime(NOW - timedelta(hours=hours_ago))
    return [{"guid": f"{prefix}-{n}", "title": title, "link": f"http://example.test/{prefix}/{n}",
             "pubDate": published} for n, title in enumerate(titles)]


class Conditional:
    """A feed that honours If-None-Match and If-Modified-Since, like a well-behaved server."""

    def __init__(self, body: bytes, etag: str = '"v1"', modified: str = "Sat, 28 Nov 2026 18:07:16 GMT"):
        self.body, self.etag, self.modified = body, etag, modified

    def __call__(self, request: SeenRequest) -> Reply:
        if request.headers.get("if-none-match") == self.etag or request.headers.get("if-modified-since") == self.modified:
            return Reply(304, headers={"ETag": self.etag})
        return Reply(body=self.body, headers={"ETag": self.etag, "Last-Modified": self.modified})


def test_second_fetch_is_conditional_and_stores_nothing_new(tmp_path, server, agg):
    etag_url = server.route("/etag.xml", Conditional(rss_document(items("e", ["Dam opens", "Bridge closes"]))))
    plain_url = server.route("/plain.xml", Reply(body=rss_document(items("p", ["Comet seen over city"]))))
    cfg = write_config(tmp_path, [{"url": etag_url}, {"url": plain_url}])
    db = tmp_path / "agg.db"

    first = agg("--config", cfg, "--db", db, "fetch")
    assert first.exit_code == 0, first.output
    assert count(db, "entries") == 3
    assert query(db, "SELECT etag, last_modified FROM feeds WHERE url = ?", etag_url) == [
        ('"v1"', "Sat, 28 Nov 2026 18:07:16 GMT")]

    second = agg("--config", cfg, "--db", db, "fetch")
    assert second.exit_code == 0, second.output
    conditional = server.hits("/etag.xml")[1].headers
    assert conditional["if-none-match"] == '"v1"'
    assert conditional["if-modified-since"] == "Sat, 28 Nov 2026 18:07:16 GMT"
    assert "if-none-match" not in server.hits("/etag.xml")[0].headers
    assert count(db, "entries") == 3
    log = query(db, "SELECT f.url, l.status, l.new_entries, l.updated_entries, l.error FROM fetch_log l "
                    "JOIN feeds f ON f.id = l.feed_id ORDER BY l.id")
    assert len(log) == 4
    assert sorted(log[:2]) == sorted([(etag_url, 200, 2, 0, None), (plain_url, 200, 1, 0, None)])
    assert sorted(log[2:]) == sorted([(etag_url, 304, 0, 0, None), (plain_url, 200, 0, 0, None)])


def test_a_run_cancelled_while_it_starts_its_feeds_leaves_none_of_them_going(tmp_path, server, caplog):
    # 40 feeds, 2 in flight: their tasks start 2 at a time, the loop let go between waves.
    urls = [server.route(f"/slow{n}.xml", Reply(body=rss_document([]), delay=1)) for n in range(40)]
    config = load_config(write_config(tmp_path, [{"url": url} for url in urls], defaults="concurrency: 2"))
    store = Store.open(tmp_path / "agg.db")
    reported = []

    async def cancel_while_starting() -> list[asyncio.Task]:
        this = asyncio.current_task()
        running = asyncio.create_task(run_async(config, store, progress=lambda *args: reported.append(args)))
        while len(asyncio.all_tasks() - {this, running}) < 4:  # the second wave has started
            await asyncio.sleep(0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await asyncio.sleep(0.1)  # time for a feed left going to fail on the closed session
        return [task for task in asyncio.all_tasks() - {this} if not task.done()]

    assert asyncio.run(cancel_while_starting()) == []
    store.close()
    assert reported == []  # no feed went on to an outcome after the run was cancelled
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_library_run_reports_unchanged_feeds(tmp_path, server):
    url = server.route("/feed.xml", Conditional(rss_document(items("a", ["Harbour reopens"]))))
    config = load_config(write_config(tmp_path, [{"url": url}]))
    store = Store.open(tmp_path / "agg.db")
    first = run(config, store)
    second = run(config, store)
    store.close()
    assert [(o.url, o.status, o.new_entries) for o in first.feeds] == [(url, "fetched", 1)]
    assert [(o.url, o.status, o.new_entries) for o in second.feeds] == [(url, "unchanged", 0)]
    assert describe(second).startswith("0 fetched, 1 unchanged, 0 failed; 0 new entries")


def test_a_run_where_every_feed_is_unchanged_never_loads_parsers_or_page_workers(tmp_path, server):
    """Start-up counts in every cron run: what only new entries need is imported when they come."""
    page = server.route("/harbour.html", Reply(body=b"<html><body><article><p>" + b"The harbour reopened today. " * 40
                                               + b"</p></article></body></html>", content_type="text/html"))
    url = server.route("/feed.xml", Conditional(rss_document([{"guid": "a", "title": "Harbour reopens", "link": page}])))
    cfg = write_config(tmp_path, [{"url": url, "extract": True}])
    db = tmp_path / "agg.db"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"]
    first = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    unchanged = subprocess.run(command, cwd=PROJECT_ROOT, env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                               capture_output=True, text=True, timeout=60)
    assert unchanged.returncode == 0, unchanged.stderr
    assert query(db, "SELECT status FROM fetch_log ORDER BY id") == [(200,), (304,)]
    assert query(db, "SELECT count(*) FROM entries WHERE extract_status = 'ok'") == [(1,)]
    # -X importtime's lines: "import time: self | cumulative | <indent>module".
    imported = {line.rsplit("|", 1)[1].strip() for line in unchanged.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert {"aiohttp", "aggregator.pipeline"} <= imported
    assert not imported & {"feedparser", "trafilatura", "pebble", "lxml.html"}


def test_broken_feeds_never_stop_the_others(tmp_path, server, agg):
    good = server.route("/good.xml", Reply(body=rss_document(items("g", ["Library wins award", "Rail strike ends"]))))
    broken = {
        server.route("/missing.xml", Reply(404, b"no", content_type="text/plain")): "HTTP 404",
        server.route("/error.xml", Reply(500, b"boom", content_type="text/plain")): "HTTP 500",
        server.route("/page.html", Reply(body=b"<!DOCTYPE html><html><head><title>Hi</title></head>"
                                          b"<body><p>Just a web page.</p></body></html>",
                                     content_type="text/html")): "",
        server.route("/slow.xml", Reply(body=rss_document(items("s", ["Too late"])), delay=3)): "timed out",
        f"http://127.0.0.1:{closed_port()}/feed.xml": "could not connect",
    }
    empty = server.route("/empty.xml", Reply(body=rss_document([])))  # a quiet feed: no failure
    cfg = write_config(tmp_path, [{"url": url} for url in [*broken, empty, good]], defaults="read_timeout: 0.5s")
    db = tmp_path / "agg.db"

    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    assert query(db, "SELECT count(*) FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.url = ?", good) == [(2,)]
    assert count(db, "entries") == 2
    for url, words in broken.items():
        (last_error, error_count, last_fetch_at), = query(
            db, "SELECT last_error, error_count, last_fetch_at FROM feeds WHERE url = ?", url)
        assert last_error and words in last_error, (url, last_error)
        assert error_count == 1 and last_fetch_at
        (logged,), = query(db, "SELECT l.error FROM fetch_log l JOIN feeds f ON f.id = l.feed_id WHERE f.url = ?", url)
        assert logged == last_error
        assert f"agg: {url}: {last_error}" in result.stderr
    assert good not in result.stderr and empty not in result.stderr
    for url in (good, empty):
        assert query(db, "SELECT last_error, error_count, state FROM feeds WHERE url = ?", url) == [(None, 0, "ok")]

    again = agg("--config", cfg, "--db", db, "fetch")
    assert again.exit_code == 0
    assert {row[0] for row in query(db, "SELECT error_count FROM feeds WHERE url NOT IN (?, ?)", good, empty)} == {2}


def test_not_a_feed_fails_and_a_feed_with_no_entries_does_not(tmp_path, server):
    page = server.route("/page.html", Reply(body=b"<html><body><p>Hello</p></body></html>", content_type="text/html"))
    empty = server.route("/empty.xml", Reply(body=rss_document([])))
    config = load_config(write_config(tmp_path, [{"url": page}, {"url": empty}]))
    store = Store.open(tmp_path / "agg.db")
    outcomes = {o.url: o for o in run(config, store).feeds}
    store.close()
    assert outcomes[page].status == "failed" and "html" in outcomes[page].error.lower()
    assert (outcomes[empty].status, outcomes[empty].error, outcomes[empty].new_entries) == ("fetched", None, 0)


def test_summary_line_counts_every_outcome(tmp_path, server, agg):
    good = server.route("/good.xml", Reply(body=rss_document(items("g", ["Ferry timetable changes"]))))
    bad = server.route("/bad.xml", Reply(404, b"", content_type="text/plain"))
    cfg = write_config(tmp_path, [{"url": good}, {"url": bad}])
    result = agg("-v", "--config", cfg, "--db", tmp_path / "agg.db", "fetch")
    assert result.exit_code == 0
    assert "1 fetched, 0 unchanged, 1 failed; 1 new entries" in result.stderr


def test_changed_entry_updates_and_keeps_first_seen(tmp_path, server):
    feed = {"body": rss_document([{"guid": "x1", "title": "Council votes on budget", "link": "http://example.test/x1"}])}
    url = server.route("/feed.xml", lambda request: Reply(body=feed["body"]))
    config = load_config(write_config(tmp_path, [{"url": url}]))
    db = tmp_path / "agg.db"
    store = Store.open(db)
    run(config, store, now=NOW - timedelta(hours=3))
    feed["body"] = rss_document([{"guid": "x1", "title": "Council passes budget", "link": "http://example.test/x1"}])
    summary = run(config, store, now=NOW)
    store.close()
    assert [(o.new_entries, o.updated_entries) for o in summary.feeds] == [(0, 1)]
    (title, first_seen, changed_at), = query(db, "SELECT title, first_seen, changed_at FROM entries")
    assert title == "Council passes budget"
    assert datetime.fromisoformat(first_seen) < datetime.fromisoformat(changed_at)
    assert query(db, "SELECT new_entries, updated_entries FROM fetch_log ORDER BY id") == [(1, 0), (0, 1)]


def test_disabled_feeds_are_not_fetched(tmp_path, server, agg):
    on = server.route("/on.xml", Reply(body=rss_document(items("on", ["Park opens"]))))
    off = server.route("/off.xml", Reply(body=rss_document(items("off", ["Never fetched"]))))
    cfg = write_config(tmp_path, [{"url": on}, {"url": off, "enabled": False}])
    assert agg("--config", cfg, "--db", tmp_path / "agg.db", "fetch").exit_code == 0
    assert [r.path for r in server.requests] == ["/on.xml"]


# -- agg list ------------------------------------------------------------------------------------


@pytest.fixture
def listed(tmp_path, server, agg):
    """A database with two outlets' unrelated entries, and a function running ``agg list``."""
    world = server.route("/world.xml", Reply(body=rss_document(
        items("w", ["Volcano erupts near Reykjavik", "Glacier retreat measured in Andes"], hours_ago=2)
        + items("wold", ["Ancient shipwreck found off Crete"], hours_ago=24 * 10),
        title="World Wire")))
    tech = server.route("/tech.xml", Reply(body=rss_document(
        items("t", ["Chipmaker unveils quantum processor"], hours_ago=1), title="Tech Daily")))
    cfg = write_config(tmp_path, [{"url": world, "tags": ["world"]}, {"url": tech, "tags": ["tech"]}])
    db = tmp_path / "agg.db"
    assert agg("--config", cfg, "--db", db, "fetch").exit_code == 0

    def agg_list(*args: str, status: int = 0):
        result = agg("--config", cfg, "--db", db, "list", *args)
        assert result.exit_code == status, result.output
        return result

    return agg_list


def titles_in(output: str) -> set[str]:
    known = {"Volcano erupts near Reykjavik", "Glacier retreat measured in Andes",
             "Ancient shipwreck found off Crete", "Chipmaker unveils quantum processor"}
    return {title for title in known if title in output}


def test_list_shows_every_story_newest_first(listed):
    lines = listed().stdout.splitlines()
    assert titles_in("\n".join(lines)) == {"Volcano erupts near Reykjavik", "Glacier retreat measured in Andes",
                                           "Ancient shipwreck found off Crete", "Chipmaker unveils quantum processor"}
    assert len(lines) == 4


def test_list_json_is_one_object_a_line(listed):
    rows = [json.loads(line) for line in listed("--json").stdout.splitlines()]
    assert len(rows) == 4
    assert all({"id", "title", "n_reports", "n_outlets", "outlets", "reports"} <= row.keys() for row in rows)
    stamps = [row["last_seen"] for row in rows]
    assert stamps == sorted(stamps, reverse=True)
    tech = next(row for row in rows if row["title"] == "Chipmaker unveils quantum processor")
    assert tech["outlets"] == ["Tech Daily"] and tech["reports"][0]["link"] == "http://example.test/t/0"


def test_list_filters(listed):
    assert titles_in(listed("--tag", "tech").stdout) == {"Chipmaker unveils quantum processor"}
    assert titles_in(listed("--feed", "World Wire").stdout) == {
        "Volcano erupts near Reykjavik", "Glacier retreat measured in Andes", "Ancient shipwreck found off Crete"}
    assert len(listed("--limit", "2").stdout.splitlines()) == 2
    assert titles_in(listed("--since", "2d").stdout) == {
        "Volcano erupts near Reykjavik", "Glacier retreat measured in Andes", "Chipmaker unveils quantum processor"}
    assert listed("--tag", "nonexistent").stdout == ""


def test_list_rejects_a_bad_since(listed):
    assert "neither a duration" in listed("--since", "yesterday-ish", status=2).stderr


def test_list_without_a_database_says_so(tmp_path, agg):
    cfg = write_config(tmp_path, [])
    result = agg("--config", cfg, "--db", tmp_path / "none.db", "list")
    assert result.exit_code == 1 and "run 'agg fetch' first" in result.stderr


# -- the process ---------------------------------------------------------------------------------


def test_python_dash_m_aggregator_help():
    done = subprocess.run([sys.executable, "-m", "aggregator", "--help"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 0
    assert "Usage:" in done.stdout and "fetch" in done.stdout and "list" in done.stdout


@pytest.mark.parametrize("make_db, reason", [
    (lambda tmp: tmp, "is a folder"),
    (lambda tmp: (tmp / "blocker").write_text("x") and tmp / "blocker" / "agg.db", "is a file, not a folder"),
])
def test_unusable_database_exits_1_with_the_reason(tmp_path, server, agg, make_db, reason):
    url = server.route("/feed.xml", Reply(body=rss_document(items("a", ["Not fetched"]))))
    cfg = write_config(tmp_path, [{"url": url}])
    result = agg("--config", cfg, "--db", make_db(tmp_path), "fetch")
    assert result.exit_code == 1
    assert result.stderr.startswith("agg: error: ") and reason in result.stderr
    assert server.requests == []


def test_fetch_in_a_real_process(tmp_path, server):
    url = server.route("/feed.xml", Reply(body=rss_document(items("a", ["Bridge repairs finish", "Zoo welcomes panda"]))))
    cfg = write_config(tmp_path, [{"url": url}])
    db = tmp_path / "agg.db"
    done = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), "fetch"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert count(db, "entries") == 2


# -- article pages -------------------------------------------------------------------------------

ARTICLE = ("<!DOCTYPE html><html lang='en'><head><title>Lighthouse keeper retires</title></head><body>"
           "<nav><a href='/'>Home</a> <a href='/world'>World</a></nav><article><h1>Lighthouse keeper retires</h1>"
           + "".join(f"<p>Paragraph {n}: after forty years at the rocky point, the last keeper of the northern "
                     f"lighthouse handed over the keys to the coastal trust on a windy Tuesday morning.</p>"
                     for n in range(8))
           + "</article><footer>Subscribe to our newsletter</footer></body></html>").encode()


def test_new_entries_get_their_pages_extracted_once(tmp_path, server, agg):
    server.route("/story.html", Reply(body=ARTICLE, content_type="text/html; charset=utf-8"))
    server.route("/report.pdf", Reply(body=b"%PDF-1.4 not html", content_type="application/pdf"))
    feed = server.route("/feed.xml", Reply(body=rss_document([
        {"guid": "ok", "title": "Lighthouse keeper retires", "link": server.url("/story.html"),
         "description": "The keeper retires."},
        {"guid": "gone", "title": "Missing page", "link": server.url("/gone.html"), "description": "Short."},
        {"guid": "pdf", "title": "A report", "link": server.url("/report.pdf"), "description": "A PDF."},
    ])))
    cfg = write_config(tmp_path, [{"url": feed, "extract": True}])
    db = tmp_path / "agg.db"
    assert agg("--config", cfg, "--db", db, "fetch").exit_code == 0

    pages = {guid: (status, source, text, error) for guid, status, source, text, error in query(
        db, "SELECT guid, extract_status, text_source, text, extract_error FROM entries")}
    status, source, text, error = pages["ok"]
    assert source == "page" and "handed over the keys" in text and "newsletter" not in text
    assert "html" in server.hits("/story.html")[0].headers["accept"]
    for guid, words in (("gone", "404"), ("pdf", "application/pdf")):
        status, source, text, error = pages[guid]
        assert status not in ("pending", "ok") and words in error, pages[guid]
        assert source == "feed-summary" and text  # the feed's own text is kept

    assert agg("--config", cfg, "--db", db, "fetch").exit_code == 0
    assert len(server.hits("/story.html")) == 1 and len(server.hits("/gone.html")) == 1
