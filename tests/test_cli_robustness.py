"""Bad input and hostile feed text: every command fails with ``agg: error:`` or a usage error, never a
traceback, and nothing a feed wrote reaches the terminal as a control sequence."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import TerminalSafeFormatter, cli
from aggregator.parse import safe_http_url
from aggregator.store import Store
from tests import sample_db
from tests.terminal import run_on_terminal

# An 8-bit CSI (C1 control): json.dumps lets it through, a terminal obeys it.
HOSTILE_TITLE = "Markets \x9b2J[bold red]calm[/bold red] \x1b]0;owned\x07today"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = sample_db.build(tmp_path / "agg.db")
    store = Store.open(path)
    with store.transaction() as conn:
        conn.execute("UPDATE stories SET title = ? WHERE id = 1", (HOSTILE_TITLE,))
        conn.execute("UPDATE entries SET title = ? WHERE id = 1", (HOSTILE_TITLE,))
    store.close()
    return path


def agg(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("since", ["99999999999d", "0001-01-01", "9999-12-31T23:59:59-05:00"])
def test_a_since_out_of_range_is_a_usage_error(db, since):
    for command in (["list"], ["search", "strike"], ["export", "digest"]):
        result = agg("--db", db, *command, "--since", since)
        assert result.exit_code == 2, (command, result.output)
        assert "Invalid value" in result.output and "Traceback" not in result.output


def test_numbers_beyond_sqlite_integers_do_not_crash(db):
    huge = "9" * 30
    assert agg("--db", db, "show", huge).exit_code == 1
    assert agg("--db", db, "show", "--entry", huge).exit_code == 1
    for args in (["list", "--limit", huge], ["list", "--min-outlets", huge], ["search", "strike", "--limit", huge],
                 ["export", "digest", "--min-outlets", huge]):
        result = agg("--db", db, *args)
        assert result.exit_code == 0, (args, result.output)
    assert agg("--db", db, "list", "--limit", "0").exit_code == 2


def test_a_config_that_is_a_folder_is_reported(tmp_path):
    folder = tmp_path / "feeds.yaml"
    folder.mkdir()
    for command in (["fetch"], ["feeds", "list"], ["feeds", "remove", "x"]):
        result = agg("--config", folder, "--db", tmp_path / "agg.db", *command)
        assert result.exit_code == 1, (command, result.output)
        assert "agg: error:" in result.stderr and "cannot read it" in result.stderr


def test_json_output_escapes_every_control_character(db):
    for args in (["list", "--json"], ["show", "1", "--json"], ["show", "--entry", "1", "--json"]):
        result = agg("--db", db, *args)
        assert result.exit_code == 0
        assert "\x9b" not in result.stdout and "\x1b" not in result.stdout
        titles = [json.loads(line)["title"] for line in result.stdout.splitlines()]
        assert HOSTILE_TITLE in titles, args  # escaped, not lost
    digest = agg("--db", db, "export", "digest")
    assert "\x9b" not in digest.stdout
    assert HOSTILE_TITLE in [story["title"] for story in json.loads(digest.stdout)["stories"]]


def test_atom_export_drops_c1_controls(db):
    result = agg("--db", db, "export", "atom")
    assert result.exit_code == 0 and "\x9b" not in result.stdout and "\x1b" not in result.stdout


def test_terminal_tables_print_feed_text_literally(db):
    status, _, screen = run_on_terminal(["--db", str(db), "list"], stdout_too=True, env={"NO_COLOR": "1"})
    assert status == 0
    assert "[bold red]calm" in screen  # shown as written, not taken as a style
    assert "\x9b" not in screen and "\x1b]0;" not in screen


def test_log_lines_are_terminal_safe():
    record = logging.LogRecord("aggregator.pipeline", logging.WARNING, __file__, 1, "%s has moved to %s", (
        "http://a.test/feed", "http://b.test/\x1b[2J\x9bfeed"), None)
    line = TerminalSafeFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING aggregator.pipeline: http://a.test/feed has moved to http://b.test/ feed"


@pytest.mark.parametrize(("value", "base", "expected"), [
    (" https://a.test/x ", None, "https://a.test/x"),
    ("/x", "https://a.test/y/", "https://a.test/x"),
    ("/x", None, None),
    ("http://a.test:99999/", None, None),
    ("http://[broken/", None, None),
    ("javascript:alert(1)", "https://a.test/", None),
    ("http://:80/", None, None),
    (None, "https://a.test/", None),
])
def test_safe_http_url_is_the_one_web_address_check(value, base, expected):
    assert safe_http_url(value, base) == expected


def test_an_unusable_lock_file_is_reported(tmp_path):
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds:\n  - url: feed.xml\n", encoding="utf-8")
    (tmp_path / "agg.db.lock").mkdir()
    result = agg("--config", config, "--db", tmp_path / "agg.db", "fetch")
    assert result.exit_code == 1
    assert "agg: error: cannot open the lock file" in result.stderr
