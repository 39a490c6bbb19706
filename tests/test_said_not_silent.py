"""Commands that have nothing to do say so instead of printing nothing: an empty feeds.yaml for
``agg fetch``, an unknown feed for ``agg list --feed``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import sample_db


@pytest.mark.parametrize("text, words", [
    ("", "lists no feeds"),
    ("# my feeds, one day\nfeeds: []\n", "lists no feeds"),
    ("feeds:\n  - url: http://127.0.0.1:9/feed.xml\n    enabled: false\n", "lists only feeds with enabled: false"),
])
def test_fetch_with_no_feed_to_fetch_says_so(tmp_path: Path, agg, text, words):
    config = tmp_path / "feeds.yaml"
    config.write_text(text, encoding="utf-8")
    result = agg("--config", config, "--db", tmp_path / "agg.db", "fetch")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == (f"agg: {config} {words}, so there is nothing to fetch: "
                             "add one with 'agg feeds add URL' or 'agg import opml FILE'\n")


def test_list_of_an_unknown_feed_says_so_and_fails(tmp_path: Path, agg):
    db = sample_db.build(tmp_path / "agg.db")
    unknown = agg("--db", db, "list", "--feed", "NOSUCH")
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert f"agg: error: no feed 'NOSUCH' in {db}" in unknown.stderr and "agg feeds list" in unknown.stderr
    for known in ("The Daily Ledger", "http://ledger.test/feed.xml"):
        listed = agg("--db", db, "list", "--feed", known)
        assert listed.exit_code == 0 and "Port workers strike over pay" in listed.stdout
