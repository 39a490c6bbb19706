"""``agg list``: a table on a terminal, plain lines when piped, JSON for scripts, and its filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from tests import sample_db
from tests.terminal import run_on_terminal


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return sample_db.build(tmp_path / "agg.db")


def agg(db: Path, *args: str):
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def story_ids(output: str) -> list[int]:
    return [int(line.split("\t")[0]) for line in output.splitlines()]


def test_plain_lines_when_piped_newest_first(db):
    result = agg(db, "list")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["1", "2", "3"]
    story_id, reports, outlets, last_seen, title, names = lines[0]
    assert (reports, outlets, title) == ("3", "3", "Port workers strike over pay")
    assert names == "The Daily Ledger, Northgate Post, Wire Service"


def test_filters(db):
    assert story_ids(agg(db, "list", "--min-outlets", "2").stdout) == [1, 2]
    assert story_ids(agg(db, "list", "--since", "24h").stdout) == [1]
    assert story_ids(agg(db, "list", "--tag", "business").stdout) == [1, 2]
    assert story_ids(agg(db, "list", "--tag", "local").stdout) == [1, 3]
    assert story_ids(agg(db, "list", "--limit", "1").stdout) == [1]


def test_json_for_scripts(db):
    stories = [json.loads(line) for line in agg(db, "list", "--json").stdout.splitlines()]
    assert [s["id"] for s in stories] == [1, 2, 3]
    assert stories[0]["outlets"] == ["The Daily Ledger", "Northgate Post", "Wire Service"]
    assert [r["outlet"] for r in stories[0]["reports"]] == stories[0]["outlets"]


def test_table_on_a_terminal(db):
    status, _, text = run_on_terminal(["--db", str(db), "list"], stdout_too=True, env={"NO_COLOR": "1"})
    assert status == 0, text
    header = next(line for line in text.splitlines() if "Story" in line)
    assert all(column in header for column in ("ID", "Story", "Reports", "Outlets", "First seen"))
    assert "3: The Daily Ledger, Northgate Post, Wire" in text
    assert "5 h ago" in text and "2 d ago" in text
    assert "3 stories" in text
