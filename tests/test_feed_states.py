"""What a feed's fetch leaves in its state, through ``agg fetch``, ``agg status`` and ``agg feeds``.

A failed fetch shows from the first failure; an empty feed is no failure;
every document received whole gives its validators, and a 304 answers for
the document they came from; JSON Feeds declaring an http:// version are
read; an entry's only date (Atom ``<updated>``, RSS ``dc:date``) is its
publication time. Feeds are served by a local server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from pathlib import Path

from tests.conftest import rss_document
from tests.server import Reply, SeenRequest
from tests.terminal import run_on_terminal
from tests.test_pipeline import write_config

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
EMPTY_RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title><link>http://q.test/</link></channel></rss>'
HTML_PAGE = b"<!doctype html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>"


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.xml"


def feed_row(db: Path, url: str) -> dict:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM feeds WHERE url = ?", [url]).fetchone())


def broken_feeds(server, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config of one working feed and four broken ones, by what breaks them."""
    urls = {
        "working": server.route("/ok.xml", Reply(body=rss_document([{"guid": "1", "title": "One"}]))),
        "refused": closed_port_url(),
        "404": server.url("/gone.xml"),
        "html": server.route("/home", Reply(body=HTML_PAGE, content_type="text/html")),
        "missing file": (tmp_path / "no-such-feed.xml").as_uri(),
    }
    return write_config(tmp_path, [{"url": url} for url in urls.values()]), urls


def test_a_feed_shows_its_error_from_the_first_failure(server, tmp_path, agg):
    config, urls = broken_feeds(server, tmp_path)
    db = tmp_path / "agg.db"
    assert agg("--config", config, "--db", db, "fetch").exit_code == 0

    status = agg("--config", config, "--db", db, "status")
    states = {line.split("\t")[0]: line.split("\t")[1] for line in status.stdout.splitlines()}
    assert states == {"Test feed" if kind == "working" else url: "ok" if kind == "working" else "error"
                      for kind, url in urls.items()}
    errors = {line.split("\t")[0]: line.split("\t")[5] for line in status.stdout.splitlines()}
    assert "could not connect" in errors[urls["refused"]]
    assert errors[urls["404"]] == "HTTP 404 Not Found"
    assert "not a feed" in errors[urls["html"]]
    assert "could not read" in errors[urls["missing file"]]
    assert "5 feeds: 1 ok, 4 with errors, 0 disabled" in status.stderr

    counts = json.loads(agg("--config", config, "--db", db, "status", "--json").stdout)["counts"]
    assert (counts["ok"], counts["error"], counts["failing"], counts["with_errors"]) == (1, 4, 0, 4)
    listed = [json.loads(line) for line in agg("--config", config, "--db", db, "feeds", "list", "--json").stdout.splitlines()]
    assert [row["state"] for row in listed] == ["ok", "error", "error", "error", "error"]


def test_feeds_list_on_a_terminal_fills_the_problem_column_in_red_unless_no_color(server, tmp_path, agg):
    config, urls = broken_feeds(server, tmp_path)
    db = tmp_path / "agg.db"
    assert agg("--config", config, "--db", db, "fetch").exit_code == 0
    base = ["--config", str(config), "--db", str(db)]

    status, _, screen = run_on_terminal([*base, "feeds", "list"], stdout_too=True, env={"COLUMNS": "200"})
    assert status == 0, screen
    plain = ANSI_COLOUR.sub("", screen)
    assert "Problem" in plain and "HTTP 404 Not Found" in plain and "not a feed: looks like an HTML page" in plain
    assert f"5 feeds in {config}, 4 with errors" in plain
    assert "\x1b[31m" in screen  # red: the error states and their problems

    status, _, screen = run_on_terminal([*base, "status"], stdout_too=True, env={"COLUMNS": "200"})
    assert status == 0 and "\x1b[31m" in screen
    assert "4 with errors" in ANSI_COLOUR.sub("", screen)

    for command in (["feeds", "list"], ["status"]):
        status, _, screen = run_on_terminal([*base, *command], stdout_too=True, env={"NO_COLOR": "1"})
        assert status == 0 and "HTTP 404" in screen
        assert not ANSI_COLOUR.findall(screen.replace("\x1b[1m", "").replace("\x1b[2m", "").replace("\x1b[0m", "")), \
            "colour despite NO_COLOR"


def test_the_state_goes_back_to_ok_once_the_feed_works_again(server, tmp_path, agg):
    answers = iter([Reply(503), Reply(body=rss_document([{"guid": "1", "title": "Back"}]))])
    url = server.route("/flaky.xml", lambda request: next(answers))
    config, db = write_config(tmp_path, [{"url": url}]), tmp_path / "agg.db"
    agg("--config", config, "--db", db, "fetch")
    assert (feed_row(db, url)["state"], feed_row(db, url)["error_count"]) == ("error", 1)
    agg("--config", config, "--db", db, "fetch")
    assert (feed_row(db, url)["state"], feed_row(db, url)["error_count"], feed_row(db, url)["last_error"]) == ("ok", 0, None)


def test_an_empty_feed_is_a_normal_state_not_an_error(server, tmp_path, agg):
    url = server.route("/quiet.xml", Reply(body=EMPTY_RSS))
    config, db = write_config(tmp_path, [{"url": url}]), tmp_path / "agg.db"
    for _ in range(2):
        result = agg("--config", config, "--db", db, "fetch")
        assert result.exit_code == 0 and result.stderr == "", result.stderr
    row = feed_row(db, url)
    assert (row["state"], row["error_count"], row["last_error"], row["format"]) == ("ok", 0, None, "rss20")
    status = agg("--config", config, "--db", db, "status")
    assert status.stdout.split("\t")[1] == "ok" and "1 ok, 0 with errors" in status.stderr


def validating(body: bytes, etag: str, content_type: str = "application/rss+xml"):
    """A route that sends ``etag`` and Last-Modified and answers 304 to a request that sends the ETag back."""
    def reply(request: SeenRequest) -> Reply:
        if request.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag})
        return Reply(body=body, content_type=content_type,
                     headers={"ETag": etag, "Last-Modified": "Mon, 01 Jun 2026 10:00:00 GMT"})
    return reply


def test_validators_are_kept_for_an_empty_feed_and_a_non_feed_whose_304_repeats_its_error(server, tmp_path, agg):
    empty = server.route("/quiet.xml", validating(EMPTY_RSS, '"quiet"'))
    html = server.route("/home", validating(HTML_PAGE, '"home"', "text/html"))
    config, db = write_config(tmp_path, [{"url": empty}, {"url": html}]), tmp_path / "agg.db"
    agg("--config", config, "--db", db, "fetch")
    for url, etag in ((empty, '"quiet"'), (html, '"home"')):
        row = feed_row(db, url)
        assert (row["etag"], row["last_modified"]) == (etag, "Mon, 01 Jun 2026 10:00:00 GMT")

    second = agg("--config", config, "--db", db, "fetch")
    assert [r.headers.get("if-none-match") for r in server.hits("/quiet.xml")] == [None, '"quiet"']
    assert [r.headers.get("if-none-match") for r in server.hits("/home")] == [None, '"home"']
    assert (feed_row(db, empty)["last_status"], feed_row(db, empty)["state"]) == (304, "ok")
    # The page has not changed, so it is still no feed: the 304 counts as its second failure.
    page = feed_row(db, html)
    assert (page["last_status"], page["state"], page["error_count"]) == (304, "error", 2)
    assert page["last_error"] == "not a feed: looks like an HTML page"
    assert "not a feed" in second.stderr


def test_a_304_without_validators_keeps_the_stored_ones(server, tmp_path, agg):
    answers = iter([Reply(body=rss_document([{"guid": "1", "title": "One"}]),
                          headers={"ETag": '"v1"', "Last-Modified": "Mon, 01 Jun 2026 10:00:00 GMT"}),
                    Reply(304), Reply(304)])
    url = server.route("/feed.xml", lambda request: next(answers))
    config, db = write_config(tmp_path, [{"url": url}]), tmp_path / "agg.db"
    for _ in range(3):
        assert agg("--config", config, "--db", db, "fetch").exit_code == 0
    row = feed_row(db, url)
    assert (row["etag"], row["last_modified"], row["state"]) == ('"v1"', "Mon, 01 Jun 2026 10:00:00 GMT", "ok")
    sent = [(r.headers.get("if-none-match"), r.headers.get("if-modified-since")) for r in server.hits("/feed.xml")]
    assert sent == [(None, None), *[('"v1"', "Mon, 01 Jun 2026 10:00:00 GMT")] * 2]


def test_a_json_feed_declaring_the_http_version_url_is_read(server, tmp_path, agg):
    document = {"version": "http://jsonfeed.org/version/1", "title": "Old style",
                "items": [{"id": "1", "url": "http://site.test/1", "content_text": "Hello",
                           "date_published": "2026-06-01T10:00:00Z"}]}
    url = server.route("/feed.json", Reply(body=json.dumps(document).encode(), content_type="application/json"))
    config = write_config(tmp_path, [{"url": url}])
    check = json.loads(agg("--config", config, "feeds", "check", url, "--json").stdout)
    assert (check["format"], check["entries"], check["usable"], check["problem"]) == ("json1", 1, True, None)
    assert agg("--config", config, "--db", tmp_path / "agg.db", "fetch").stderr == ""
    assert feed_row(tmp_path / "agg.db", url)["state"] == "ok"


ATOM_UPDATED_ONLY = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom</title><id>urn:a</id><updated>2026-06-02T09:00:00Z</updated>
<entry><title>Only updated</title><id>urn:a:1</id><link href="http://a.test/1"/><updated>2026-06-01T08:30:00Z</updated></entry>
<entry><title>Both</title><id>urn:a:2</id><link href="http://a.test/2"/>
<published>2026-06-01T07:00:00Z</published><updated>2026-06-02T09:00:00Z</updated></entry>
</feed>"""
RSS_DC_DATE_ONLY = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>RSS</title><link>http://r.test/</link>
<item><title>Dublin Core</title><link>http://r.test/1</link><guid>http://r.test/1</guid><dc:date>2026-06-01T06:15:00Z</dc:date></item>
</channel></rss>"""


def test_an_entry_whose_only_date_is_its_update_time_is_dated_by_it(server, tmp_path, agg):
    atom = server.route("/atom.xml", Reply(body=ATOM_UPDATED_ONLY, content_type="application/atom+xml"))
    rss = server.route("/rss.xml", Reply(body=RSS_DC_DATE_ONLY))
    db = tmp_path / "agg.db"
    assert agg("--config", write_config(tmp_path, [{"url": atom}, {"url": rss}]), "--db", db, "fetch").exit_code == 0
    with sqlite3.connect(db) as conn:
        dated = dict(conn.execute("SELECT title, published FROM entries"))
    assert dated == {"Only updated": "2026-06-01T08:30:00+00:00", "Both": "2026-06-01T07:00:00+00:00",
                     "Dublin Core": "2026-06-01T06:15:00+00:00"}


def test_a_database_of_the_previous_schema_shows_its_failing_feeds_as_errors(tmp_path, agg):
    from aggregator.store import MIGRATIONS, Store, _split_sql

    db = tmp_path / "agg.db"
    with sqlite3.connect(db) as conn:
        for migration in MIGRATIONS[:4]:
            for statement in _split_sql(migration):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.executemany("INSERT INTO feeds (url, state, error_count, last_error, created_at) VALUES (?, ?, ?, ?, ?)",
                         [("http://a.test/", "ok", 0, None, "2026-06-01T00:00:00+00:00"),
                          ("http://b.test/", "ok", 3, "HTTP 404 Not Found", "2026-06-01T00:00:00+00:00"),
                          ("http://c.test/", "failing", 12, "HTTP 503", "2026-06-01T00:00:00+00:00")])
    Store.open(db).close()
    assert [feed_row(db, url)["state"] for url in ("http://a.test/", "http://b.test/", "http://c.test/")] == [
        "ok", "error", "failing"]
    assert feed_row(db, "http://b.test/")["document_error"] is None
    assert "3 feeds: 1 ok, 2 with errors (1 failing: tried daily)" in agg("--db", db, "status").stderr
