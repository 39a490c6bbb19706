"""``agg feeds list | add | remove | check``, through the command line, against a local server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.config import load_config
from tests import sample_db
from tests.server import Reply, SeenRequest


def rss(title: str, items: int = 3, *, link: str = "http://site.test/") -> bytes:
    entries = "".join(
        f"<item><title>Item {n}</title><link>{link}{n}</link><guid>{link}{n}</guid>"
        f"<pubDate>Mon, 0{n + 1} Jun 2026 10:00:00 +0000</pubDate></item>"
        for n in range(items))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title><link>{link}</link>'
            f"{entries}</channel></rss>").encode()


ATOM = (b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b"<title>Site comments</title><id>urn:x</id><updated>2026-06-01T00:00:00Z</updated>"
        b"<entry><title>c</title><id>urn:c</id><updated>2026-06-01T00:00:00Z</updated></entry></feed>")


def page(*links: str) -> bytes:
    return ("<!doctype html><html><head><title>Site</title>" + "".join(links)
            + "</head><body><p>Hello</p></body></html>").encode()


def with_etag(body: bytes, etag: str = '"v1"'):
    """A route that honours If-None-Match, as a good feed server does."""
    def reply(request: SeenRequest) -> Reply:
        if request.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag})
        return Reply(body=body, headers={"ETag": etag})
    return reply


CONFIG = """\
# my subscriptions
defaults:
  interval: 30m   # check twice an hour

feeds:
  # business news
  - url: http://ledger.test/feed.xml
    title: The Daily Ledger
    tags: [business]

  # local paper; flaky on Sundays
  - url: http://northgate.test/rss
    title: Northgate Post
    # interval: 10m

  # the wire
  - url: http://wire.test/atom   # fast
    tags: [wire]
# end of list
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def agg(config: Path, *args: str, db: Path | None = None):
    db = db or config.parent / "agg.db"
    return CliRunner().invoke(cli, ["--config", str(config), "--db", str(db), *args], catch_exceptions=False)


# -- add ---------------------------------------------------------------------


def test_add_discovers_the_feed_a_home_page_links_to_and_keeps_the_file_as_written(server, config):
    server.route("/feed.xml", Reply(body=rss("Example News")))
    home = server.route("/", Reply(body=page('<link rel="alternate" type="application/rss+xml" href="/feed.xml">'),
                                   content_type="text/html"))

    result = agg(config, "feeds", "add", home, "--tag", "news", "--tag", "two words")

    assert result.exit_code == 0, result.output
    feed_url = server.url("/feed.xml")
    assert result.stdout == f"added\t{feed_url}\tExample News\n"
    assert "found by the page's feed links: rss20, 3 entries" in result.stderr
    text = config.read_text(encoding="utf-8")
    new_item = f'  - url: "{feed_url}"\n    title: "Example News"\n    tags: [news, "two words"]\n'
    before_trailing_comment = CONFIG.replace("# end of list\n", new_item + "# end of list\n")
    assert text == before_trailing_comment
    added = load_config(config).feed(feed_url)
    assert added is not None and added.title == "Example News" and added.tags == ["news", "two words"]


def test_add_takes_a_feed_url_as_it_is_and_honours_title(server, config):
    url = server.route("/rss", Reply(body=rss("Own title")))
    result = agg(config, "feeds", "add", url, "--title", "My name for it")
    assert result.exit_code == 0, result.output
    assert "found by the URL itself" in result.stderr
    assert load_config(config).feed(url).title == "My name for it"


def test_add_falls_back_to_common_feed_paths(server, config):
    server.route("/rss.xml", Reply(body=rss("Common path")))
    home = server.route("/blog", Reply(body=page(), content_type="text/html"))
    result = agg(config, "feeds", "add", home)
    assert result.exit_code == 0, result.output
    assert "found by a common feed path" in result.stderr
    assert load_config(config).feed(server.url("/rss.xml")) is not None
    # /feed was tried first and is a 404; the feed found is the first common path that works.
    assert server.hits("/feed") and server.hits("/rss.xml")


def test_add_reports_the_other_feeds_a_page_offers_and_skips_broken_links(server, config):
    server.route("/main.xml", Reply(body=rss("Main")))
    server.route("/comments.atom", Reply(body=ATOM, content_type="application/atom+xml"))
    home = server.route("/", Reply(body=page(
        '<link rel="alternate" type="application/rss+xml" href="/missing.xml">',
        '<link rel="alternate" type="application/rss+xml" href="/main.xml">',
        '<link rel="alternate" type="application/atom+xml" href="/comments.atom">',
    ), content_type="text/html"))
    result = agg(config, "feeds", "add", home)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"added\t{server.url('/main.xml')}\tMain")
    assert f"the page also offers {server.url('/comments.atom')} (atom10, Site comments)" in result.stderr


def test_add_follows_a_permanent_redirect_to_the_new_address(server, config):
    server.route("/old", Reply(301, headers={"Location": "/new"}, content_type=None))
    new = server.route("/new", Reply(body=rss("Moved")))
    result = agg(config, "feeds", "add", server.url("/old"))
    assert result.exit_code == 0, result.output
    assert load_config(config).feed(new) is not None


def test_add_refuses_a_feed_already_subscribed_before_and_after_discovery(server, config):
    url = server.route("/feed.xml", Reply(body=rss("Once")))
    home = server.route("/", Reply(body=page('<link rel="alternate" type="application/rss+xml" href="/feed.xml">'),
                                   content_type="text/html"))
    assert agg(config, "feeds", "add", url).exit_code == 0
    written = config.read_text(encoding="utf-8")

    again = agg(config, "feeds", "add", url)
    assert again.exit_code == 1
    assert "already in" in again.stderr
    via_home = agg(config, "feeds", "add", home)
    assert via_home.exit_code == 1
    assert "already in" in via_home.stderr
    assert config.read_text(encoding="utf-8") == written


def test_add_names_the_line_of_the_subscription_it_repeats_however_it_is_spelled(server, config):
    url = server.route("/feed.xml", Reply(body=rss("Once")))
    assert agg(config, "feeds", "add", url).exit_code == 0
    written = config.read_text(encoding="utf-8")
    line = written.splitlines().index(f'  - url: "{url}"') + 1

    again = agg(config, "feeds", "add", url)
    assert again.exit_code == 1
    assert again.stderr == f"agg: error: {url} is already in {config} (line {line})\n"
    respelled = url.replace("http://127.0.0.1", "HTTP://127.0.0.1") + "?utm_source=newsletter&fbclid=abc#top"
    other = agg(config, "feeds", "add", respelled)
    assert other.exit_code == 1
    assert other.stderr == f"agg: error: {respelled} is already in {config} (line {line}, as {url})\n"
    assert config.read_text(encoding="utf-8") == written
    assert server.hits("/feed.xml") and all("utm_source" not in hit.query for hit in server.hits("/feed.xml"))


def test_add_without_a_feed_changes_nothing_and_says_what_was_tried(server, config):
    home = server.route("/", Reply(body=page(), content_type="text/html"))
    result = agg(config, "feeds", "add", home)
    assert result.exit_code == 1
    assert "no feed found" in result.stderr and "/rss.xml" in result.stderr
    assert config.read_text(encoding="utf-8") == CONFIG


def test_add_an_unreachable_url_fails_with_the_reason(server, config):
    result = agg(config, "feeds", "add", server.url("/gone"))
    assert result.exit_code == 1
    assert "HTTP 404" in result.stderr
    assert config.read_text(encoding="utf-8") == CONFIG


def test_add_creates_a_missing_config(server, tmp_path):
    url = server.route("/rss", Reply(body=rss("First")))
    config = tmp_path / "new" / "feeds.yaml"
    result = agg(config, "feeds", "add", url, "--tag", "x")
    assert result.exit_code == 0, result.output
    feeds = load_config(config).feeds
    assert [(f.url, f.title, f.tags) for f in feeds] == [(url, "First", ["x"])]


def test_add_to_a_flow_style_list(server, tmp_path):
    config = tmp_path / "feeds.yaml"
    config.write_text("# flow\nfeeds: [http://a.test/feed]\n", encoding="utf-8")
    url = server.route("/rss", Reply(body=rss("Second")))
    assert agg(config, "feeds", "add", url).exit_code == 0
    assert [f.url for f in load_config(config).feeds] == ["http://a.test/feed", url]
    assert config.read_text(encoding="utf-8").startswith("# flow\n")


def test_add_makes_feed_text_safe_for_the_terminal(server, config):
    url = server.route("/rss", Reply(body=rss("Evil \x1b[2J title")))
    result = agg(config, "feeds", "add", url)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout


# -- remove ------------------------------------------------------------------


def without_lines(text: str, first: int, last: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:first - 1] + lines[last:])


@pytest.mark.parametrize(("target", "first", "last"), [
    # (what to remove, first and last line (1-based) of CONFIG that go with it: its comment, its lines, one blank)
    ("http://ledger.test/feed.xml", 6, 10),
    ("Northgate Post", 11, 15),
    ("http://wire.test/atom", 16, 18),
])
def test_remove_takes_out_only_the_feed_and_its_own_comments(config, target, first, last):
    result = agg(config, "feeds", "remove", target)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed\thttp://")
    assert config.read_text(encoding="utf-8") == without_lines(CONFIG, first, last)
    assert len(load_config(config).feeds) == 2


def test_remove_every_feed_one_by_one(config):
    for url in ("http://northgate.test/rss", "http://wire.test/atom", "http://ledger.test/feed.xml"):
        assert agg(config, "feeds", "remove", url).exit_code == 0
    text = config.read_text(encoding="utf-8")
    assert load_config(config).feeds == []
    assert text.startswith("# my subscriptions\ndefaults:\n  interval: 30m   # check twice an hour\n")
    assert "# end of list" in text


def test_remove_from_a_flow_style_list(tmp_path):
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: [http://a.test/feed, http://b.test/feed]\n", encoding="utf-8")
    assert agg(config, "feeds", "remove", "http://a.test/feed").exit_code == 0
    assert [f.url for f in load_config(config).feeds] == ["http://b.test/feed"]


def test_remove_an_unknown_feed_fails_and_changes_nothing(config):
    result = agg(config, "feeds", "remove", "http://nowhere.test/feed")
    assert result.exit_code == 1
    assert "no feed" in result.stderr and "agg feeds list" in result.stderr
    assert config.read_text(encoding="utf-8") == CONFIG


def test_add_then_remove_gives_back_the_original_file(server, config):
    url = server.route("/rss", Reply(body=rss("Round trip")))
    assert agg(config, "feeds", "add", url, "--tag", "t").exit_code == 0
    assert agg(config, "feeds", "remove", url).exit_code == 0
    assert config.read_text(encoding="utf-8") == CONFIG


# -- check -------------------------------------------------------------------


def check_lines(output: str) -> dict[str, str]:
    return {label.strip(): value.strip() for label, _, value in
            (line.partition(":") for line in output.splitlines())}


def test_check_reports_format_entries_newest_and_working_conditional_get(server, config):
    url = server.route("/feed.xml", with_etag(rss("Checked", items=4)))
    result = agg(config, "feeds", "check", url)
    assert result.exit_code == 0, result.output
    lines = check_lines(result.stdout)
    assert lines["Answer"].startswith("HTTP 200, application/rss+xml")
    assert lines["Format"] == "rss20, titled 'Checked'"
    assert lines["Entries"].startswith("4, newest 2026-06-04 10:00 UTC")
    assert lines["Conditional GET"] == "works (ETag → 304 Not Modified)"
    assert lines["Verdict"] == "works"
    second = server.hits("/feed.xml")[1]
    assert second.headers["if-none-match"] == '"v1"'


def test_check_says_when_the_server_ignores_validators_or_sends_none(server, config):
    ignoring = server.route("/ignoring", Reply(body=rss("x"), headers={"ETag": '"v1"'}))
    bare = server.route("/bare", Reply(body=rss("x")))
    assert check_lines(agg(config, "feeds", "check", ignoring).stdout)["Conditional GET"].startswith("ignored")
    assert check_lines(agg(config, "feeds", "check", bare).stdout)["Conditional GET"].startswith("not offered")


def test_check_of_a_web_page_fails_and_lists_its_feeds(server, config):
    home = server.route("/", Reply(body=page('<link rel="alternate" type="application/atom+xml" href="/a.atom">'),
                                   content_type="text/html"))
    result = agg(config, "feeds", "check", home)
    assert result.exit_code == 1
    lines = check_lines(result.stdout)
    assert lines["Feeds it links to"] == server.url("/a.atom")
    assert lines["Verdict"] == "does not work as a feed"


def test_check_json_and_a_failing_url(server, config):
    url = server.route("/feed.json", Reply(body=json.dumps({
        "version": "https://jsonfeed.org/version/1.1", "title": "J",
        "items": [{"id": "1", "content_text": "x", "date_published": "2026-06-01T00:00:00Z"}]}).encode(),
        content_type="application/feed+json"))
    data = json.loads(agg(config, "feeds", "check", url, "--json").stdout)
    assert (data["format"], data["entries"], data["usable"]) == ("json1.1", 1, True)
    assert data["newest"] == "2026-06-01T00:00:00+00:00"

    failing = agg(config, "feeds", "check", server.url("/nothing"))
    assert failing.exit_code == 1
    assert "HTTP 404" in check_lines(failing.stdout)["Answer"]


# -- list --------------------------------------------------------------------


def test_list_without_a_database_shows_feeds_never_fetched(config):
    result = agg(config, "feeds", "list")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[1], r[4], r[5]) for r in rows] == [
        ("http://ledger.test/feed.xml", "never fetched", "The Daily Ledger", "business"),
        ("http://northgate.test/rss", "never fetched", "Northgate Post", ""),
        ("http://wire.test/atom", "never fetched", "", "wire"),
    ]


def test_list_json_shows_the_state_stored_in_the_database(tmp_path):
    config = sample_db.write_config(tmp_path / "feeds.yaml")
    db = sample_db.build(tmp_path / "agg.db")
    result = agg(config, "feeds", "list", "--json", db=db)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_url = {row["url"]: row for row in rows}
    assert [row["url"] for row in rows] == [o.url for o in sample_db.OUTLETS]
    assert by_url["http://ledger.test/feed.xml"]["state"] == "ok"
    assert by_url["http://northgate.test/rss"]["state"] == "failing"
    assert by_url["http://northgate.test/rss"]["last_error"] == "HTTP 503"
    assert by_url["http://wire.test/atom"]["state"] == "disabled"
    assert all(row["entries"] == 2 for row in rows)


# -- verbose ----------------------------------------------------------------


def test_verbose_prints_debug_logs_on_stderr_and_data_on_stdout(server, config):
    server.route("/atom.xml", Reply(body=ATOM, content_type="application/atom+xml"))
    home = server.route("/", Reply(body=page(), content_type="text/html"))
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "-v", "--config", str(config), "--db", str(config.parent / "a.db"),
         "feeds", "add", home], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "DEBUG aggregator.feeds: common path" in result.stderr
    assert result.stdout == f"added\t{server.url('/atom.xml')}\tSite comments\n"
