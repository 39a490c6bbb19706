"""``agg stats``, the numbers behind it, and the Datasette views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.stats import collect, describe, human_bytes
from aggregator.store import Store
from tests import sample_db


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return sample_db.build(tmp_path / "agg.db")


def test_collect_counts_the_sample_database(db):
    store = Store.open(db, readonly=True)
    stats = collect(store, [o.url for o in sample_db.OUTLETS[:2]])
    assert stats.feeds == 3
    assert stats.feeds_by_state == {"disabled": 1, "failing": 1, "ok": 1}
    assert stats.feeds_not_configured == 1
    assert (stats.entries, stats.grouped_entries, stats.stories) == (6, 6, 3)
    assert (stats.stories_with_several_reports, stats.largest_story) == (2, 3)
    assert stats.mean_reports_per_story == 2.0
    assert stats.folded_share == pytest.approx(0.5)   # 3 of 6 entries joined a story another had started
    assert stats.extraction == {"ok": 3, "pending": 1, "skipped": 1, "too-short": 1}
    assert (stats.pages_tried, stats.extraction_success_rate) == (4, 0.75)
    assert stats.fetches == 3 and stats.last_fetch_at
    assert stats.entries_not_indexed == 0
    assert stats.database_bytes >= db.stat().st_size > 0


def test_an_empty_database_has_no_rates():
    stats = collect(Store.memory())
    assert (stats.mean_reports_per_story, stats.folded_share, stats.extraction_success_rate) == (None, None, None)
    assert dict(describe(stats))["Extraction"] == "no pages tried yet"
    assert dict(describe(stats))["Feeds"] == "0 (none yet)"


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (2_345_678, "2.3 MB")])
def test_human_bytes(count, text):
    assert human_bytes(count) == text


def test_cli_stats_text(db, tmp_path):
    config = sample_db.write_config(tmp_path / "feeds.yaml")
    result = CliRunner().invoke(cli, ["--config", str(config), "--db", str(db), "stats"])
    assert result.exit_code == 0, result.output
    lines = {label: value.strip() for label, _, value in (line.partition(":") for line in result.stdout.splitlines())}
    assert lines["Feeds"] == "3 (1 disabled, 1 failing, 1 ok)"
    assert lines["Entries"] == "6"
    assert lines["Stories"] == "3 (2 with more than one report; largest 3)"
    assert lines["Reports folded"] == "2.00 reports per story; 50.0% of grouped entries joined an existing story"
    assert lines["Extraction"] == "75.0% of 4 pages tried (1 pending, 1 skipped, 1 too-short)"
    assert lines["Database"].endswith("kB")


def test_cli_stats_json_works_without_a_config(db, tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "missing.yaml"), "--db", str(db), "stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["feeds_not_configured"] is None
    assert data["extraction_success_rate"] == 0.75
    assert data["folded_share"] == 0.5


def test_cli_stats_without_a_database(tmp_path):
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "none.db"), "stats"])
    assert result.exit_code == 1
    assert "run 'agg fetch' first" in result.stderr


# -- Datasette views ------------------------------------------------------------


def test_story_reports_view_lists_every_report_with_its_story(db):
    store = Store.open(db, readonly=True)
    rows = list(store.db.query("SELECT * FROM story_reports ORDER BY story_id, entry_id"))
    assert len(rows) == len(sample_db.ENTRIES)
    strike = [row for row in rows if row["story_id"] == 1]
    assert {row["outlet"] for row in strike} == {"The Daily Ledger", "Northgate Post", "Wire Service"}
    assert [row["is_original"] for row in strike] == [1, 0, 0]
    assert [row["rule"] for row in strike] == ["seed", "similar", "similar"]


def test_story_overview_view_names_outlets_in_order_of_reporting(db):
    store = Store.open(db, readonly=True)
    row = next(store.db.query("SELECT * FROM story_overview WHERE story_id = 1"))
    assert row["outlets"] == "The Daily Ledger, Northgate Post, Wire Service"
    assert row["original_outlet"] == "The Daily Ledger"
    assert row["original_link"] == "http://ledger.test/feed.xml/l1"


def test_feed_health_view(db):
    store = Store.open(db, readonly=True)
    rows = {row["url"]: row for row in store.db.query("SELECT * FROM feed_health")}
    ledger = rows["http://ledger.test/feed.xml"]
    assert (ledger["entries"], ledger["pages_extracted"], ledger["fetches"], ledger["failed_fetches"]) == (2, 2, 1, 0)
    assert rows["http://wire.test/atom"]["state"] == "disabled"
    assert rows["http://northgate.test/rss"]["last_error"] == "HTTP 503"
