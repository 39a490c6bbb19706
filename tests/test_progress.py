"""The ``agg fetch`` progress bar: on a terminal only, never with --quiet, never on stdout."""

from __future__ import annotations

import io
import re
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from aggregator.cli import cli
from aggregator.pipeline import FeedOutcome
from aggregator.progress import FetchProgress
from tests.conftest import rss_document
from tests.server import Reply
from tests.terminal import run_on_terminal
from tests.test_cli_feeds import rss


def test_the_bar_counts_feeds_done_and_failures():
    screen = io.StringIO()
    with FetchProgress(Console(file=screen, force_terminal=True, color_system=None, width=100)) as progress:
        progress(FeedOutcome("http://a.test/", "fetched", new_entries=3), 1, 3)
        progress(FeedOutcome("http://b.test/", "failed", error="HTTP 500"), 2, 3)
        progress(FeedOutcome("http://c.test/", "unchanged"), 3, 3)
    text = screen.getvalue()  # the bar redraws a few times a second: the last drawing is the final state
    assert "3/3 feeds" in text and "1 failed" in text
    assert "extracting articles, grouping stories" in text


def write_config(server, tmp_path: Path) -> Path:
    server.route("/a.xml", Reply(body=rss("A", link="http://a.test/")))
    server.route("/b.xml", Reply(body=rss("B", link="http://b.test/")))
    lines = ["defaults:\n  extract: false\nfeeds:\n"]
    lines += [f"  - url: {server.url(path)}\n" for path in ("/a.xml", "/b.xml", "/missing.xml")]
    config = tmp_path / "feeds.yaml"
    config.write_text("".join(lines), encoding="utf-8")
    return config


def test_no_bar_without_a_terminal(server, tmp_path):
    config = write_config(server, tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "--db", str(tmp_path / "agg.db"), "fetch"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "━" not in result.stderr and "failed[" not in result.stderr
    assert "missing.xml: HTTP 404" in result.stderr


def test_bar_on_a_terminal_and_not_with_quiet(server, tmp_path):
    config = write_config(server, tmp_path)
    base = ["--config", str(config), "--db", str(tmp_path / "agg.db")]

    status, stdout, screen = run_on_terminal([*base, "fetch"])
    assert status == 0, screen
    assert stdout == ""
    assert "3/3" in screen and "1 failed" in screen
    assert "2 fetched, 0 unchanged, 1 failed" in screen

    status, stdout, screen = run_on_terminal([*base, "--quiet", "fetch"])
    assert status == 0, screen
    assert "━" not in screen and "/3" not in screen
    assert "missing.xml: HTTP 404" in screen   # errors are still printed


def test_the_bar_counts_article_pages_once_feeds_queue_them():
    screen = io.StringIO()
    with FetchProgress(Console(file=screen, force_terminal=True, color_system=None, width=100)) as progress:
        progress(FeedOutcome("http://a.test/", "fetched", new_entries=2), 1, 1)
        progress.pages(0, 2)
        progress.pages(1, 2)
        progress.pages(2, 2)
    text = screen.getvalue()
    assert "1/1 feeds" in text and "2/2 pages extracted" in text


ARTICLE = b"<html><body><article><h1>Title</h1>" + b"<p>" + b"A paragraph of the article body. " * 40 + b"</p>" \
          b"</article></body></html>"


def test_fetch_on_a_terminal_shows_the_pages_progress(server, tmp_path):
    items = [{"guid": str(n), "title": f"Story {n}", "link": server.route(f"/page{n}.html", Reply(
        body=ARTICLE, content_type="text/html"))} for n in range(3)]
    feed = server.route("/feed.xml", Reply(body=rss_document(items)))
    config = tmp_path / "feeds.yaml"
    config.write_text(f"feeds:\n  - url: {feed}\n", encoding="utf-8")
    status, _, screen = run_on_terminal(["--config", str(config), "--db", str(tmp_path / "agg.db"), "fetch"])
    assert status == 0, screen
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "1/1 feeds" in shown and "3/3 pages extracted" in shown


def test_the_run_tells_the_pages_done_of_those_queued(server, tmp_path):
    from aggregator.config import load_config
    from aggregator.pipeline import run
    from aggregator.store import Store

    items = [{"guid": str(n), "title": f"Story {n}", "link": server.route(f"/p{n}.html", Reply(
        body=ARTICLE, content_type="text/html"))} for n in range(4)]
    config = tmp_path / "feeds.yaml"
    config.write_text(f"feeds:\n  - url: {server.route('/feed.xml', Reply(body=rss_document(items)))}\n")
    told: list[tuple[int, int]] = []
    store = Store.open(tmp_path / "agg.db")
    try:
        summary = run(load_config(config), store, page_progress=lambda done, total: told.append((done, total)))
    finally:
        store.close()
    assert told[0] == (0, 4) and told[-1] == (4, 4)
    assert [done for done, _ in told] == sorted(done for done, _ in told)
    assert summary.pages_extracted + summary.pages_failed == 4
