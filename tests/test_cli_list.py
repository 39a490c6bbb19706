"""``agg list``: a table on a terminal, plain lines when piped, JSON for scripts, and its filters."""

from __future__ import annotations

import json
import os
import sqlite3
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import aggregator.store as store_module
from aggregator.cli import cli, time_ago
from aggregator.store import Store, write_outlet_feeds
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
    assert all(column in header for column in ("ID", "Story", "Reports", "Outlets", "Last seen"))
    assert "3: The Daily Ledger, Northgate Post, Wire" in text
    assert "3 h ago" in text and "2 d ago" in text
    assert "3 stories" in text


# -- issue 18, item 11: the piped lines and the table show the same time, and the columns are documented


def test_piped_lines_and_the_table_show_the_same_time_the_list_is_sorted_by(db):
    piped = [line.split("\t") for line in agg(db, "list").stdout.splitlines()]
    stories = {s["id"]: s for s in map(json.loads, agg(db, "list", "--json").stdout.splitlines())}
    assert [line[3] for line in piped] == [stories[int(line[0])]["last_seen"] for line in piped]
    assert [line[3] for line in piped] == sorted((line[3] for line in piped), reverse=True)

    _, _, text = run_on_terminal(["--db", str(db), "list"], stdout_too=True, env={"NO_COLOR": "1"})
    header = next(line for line in text.splitlines() if "Story" in line)
    assert "Last seen" in header and "First seen" not in header
    strike = next(line for line in text.splitlines() if "Port workers strike" in line)
    last_seen = time_ago(stories[1]["last_seen"])
    assert strike.rstrip().endswith(last_seen) and last_seen == "3 h ago"


def test_help_documents_the_piped_columns():
    help_text = " ".join(CliRunner().invoke(cli, ["list", "--help"]).output.split())
    assert ("story id, reports, outlets, last seen (ISO 8601 UTC: its newest report, the time the list is "
            "sorted by and --since filters on), title, outlets' names") in help_text
    assert "entry id (for 'agg show --entry'), outlet, title, link" in help_text


# -- issue 18, item 12: --all at 80 columns, one line a report under its story


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_all_at_80_columns_gives_each_report_a_line_of_its_own(db):
    status, _, text = run_on_terminal(["--db", str(db), "list", "--all"], stdout_too=True,
                                      env={"NO_COLOR": "1", "COLUMNS": "80"})
    assert status == 0, text
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    assert max(len(line) for line in lines) <= 80
    reports = [json.loads(line) for line in agg(db, "list", "--json").stdout.splitlines()]
    story_lines = [number for number, line in enumerate(lines) if "Port workers strike over pay" in line]
    first = story_lines[0]  # the story's own row, then its three reports in order, each on one line
    for offset, report in enumerate(reports[0]["reports"], start=1):
        line = lines[first + offset]
        assert f"· {report['title']}" in line, line
        assert report["outlet"] in line and str(report["id"]) in line, line
    assert not any(f"{name}: " in text for name in ("The Daily Ledger", "Northgate Post", "Wire Service"))


def test_all_piped_puts_each_report_on_a_line_under_its_story(db):
    lines = agg(db, "list", "--all").stdout.splitlines()
    assert lines[0].startswith("1\t3\t3\t")
    assert [line.split("\t")[2] for line in lines[1:4]] == ["The Daily Ledger", "Northgate Post", "Wire Service"]
    assert all(line.startswith("\t") for line in lines[1:4]) and lines[4].startswith("2\t")


# -- a page at a time on a terminal (issue 17)


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """The sample database with 45 stories more (ids 101-145, the newest last), no reports of their own."""
    path = sample_db.build(tmp_path / "agg.db")
    store = Store.open(path)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets) VALUES (?, ?, ?, ?, 1, 1)",
            [(100 + n, f"Extra story {n}", f"2026-01-01T00:{n:02d}:00+00:00", f"2026-01-01T00:{n:02d}:00+00:00")
             for n in range(1, 46)])
    store.close()
    return path


def table_ids(text: str) -> list[int]:
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    return [int(line.split()[0]) for line in lines if line.strip()[:1].isdigit() and "│" in line]


def test_a_terminal_shows_a_page_and_says_how_to_see_more(many):
    _, _, text = run_on_terminal(["--db", str(many), "list"], stdout_too=True, env={"NO_COLOR": "1"})
    assert table_ids(text) == [1, 2, 3, *range(145, 108, -1)]
    assert ("1-40 of 48 stories: the next 40 with --offset 40, more at once with --limit N, all with --no-limit"
            in " ".join(text.split()))

    _, _, text = run_on_terminal(["--db", str(many), "list", "--offset", "40"], stdout_too=True,
                                 env={"NO_COLOR": "1"})
    assert table_ids(text) == list(range(108, 100, -1))
    assert "41-48 of 48 stories" in text and "--offset" not in text

    _, _, text = run_on_terminal(["--db", str(many), "list", "--no-limit"], stdout_too=True, env={"NO_COLOR": "1"})
    assert len(table_ids(text)) == 48 and "48 stories" in text

    _, _, text = run_on_terminal(["--db", str(many), "list", "--limit", "5", "--offset", "2"], stdout_too=True,
                                 env={"NO_COLOR": "1"})
    assert table_ids(text) == [3, 145, 144, 143, 142]
    assert "3-7 of 48 stories: the next 40 with --offset 7" in " ".join(text.split())


def test_piped_and_json_list_every_story_unless_limited(many):
    assert len(story_ids(agg(many, "list").stdout)) == 48
    assert len(agg(many, "list", "--json").stdout.splitlines()) == 48
    assert story_ids(agg(many, "list", "--limit", "3", "--offset", "2").stdout) == [3, 145, 144]
    result = agg(many, "list", "--limit", "3", "--no-limit")
    assert result.exit_code == 2 and "contradict" in result.output


# -- streaming: the first story is out before the rest are read


def test_stories_are_read_a_batch_at_a_time_with_one_query_per_batch(many, monkeypatch):
    monkeypatch.setattr(store_module, "STORY_BATCH", 10)
    store = Store.open(many, readonly=True)
    queries: list[str] = []
    store.db.conn.set_trace_callback(queries.append)
    stories = store.iter_stories(reports=True)
    first = next(stories)
    assert first["id"] == 1 and len(first["reports"]) == 3 and first["original_outlet"] == "The Daily Ledger"
    # The originals' feeds and the reports of the first 10 stories only (their outlets come with their rows).
    assert sum("FROM entries" in q for q in queries) == 2
    rest = list(stories)
    assert len(rest) == 47
    # 48 stories in 5 batches, not 2 queries a story; the extra stories have no original report to look up.
    assert sum("FROM entries" in q for q in queries) == 2 + 4
    store.db.conn.set_trace_callback(None)
    for story in [first, *rest]:  # the same as one story's own reading gives (which adds a few details)
        detailed = store.story(story["id"])["reports"]
        assert story["reports"] == [{key: report[key] for key in story["reports"][0]} for report in detailed]
        assert story["outlets"] == list(dict.fromkeys(r["outlet"] for r in story["reports"]))
    store.close()


def test_json_list_streams_to_a_reader_that_stops_early(many, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with subprocess.Popen([sys.executable, "-m", "aggregator", "--db", str(many), "list", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path) as process:
        first = json.loads(process.stdout.readline())
        process.stdout.close()  # like `agg list --json | head -1`
        error = process.stderr.read().decode()
        status = process.wait(timeout=60)
    assert first["id"] == 1 and first["reports"]
    assert status == 0 and "Traceback" not in error and "BrokenPipe" not in error


# -- issue 18, item 13: --json outputs carry arrays and objects, never JSON inside strings


def json_in_strings(value: Any, path: str = "") -> list[str]:
    """Where ``value`` holds a string that is itself a JSON array or object."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in json_in_strings(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for number, item in enumerate(value) for found in json_in_strings(item, f"{path}[{number}]")]
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return [f"{path} = {value!r}"] if isinstance(json.loads(value), (list, dict)) else []
        except ValueError:
            return []
    return []


def test_every_json_output_carries_real_arrays_and_objects(db, tmp_path):
    store = Store.open(db)
    with store.transaction() as conn:
        conn.execute("UPDATE entries SET tags = ?, enclosures = ? WHERE id = 1",
                     ['["Business"]', '[{"url": "http://ledger.test/a.mp3", "type": "audio/mpeg", "length": 3}]'])
        conn.execute("UPDATE story_members SET evidence = ? WHERE entry_id = 3", ['{"title": 0.7, "body": 0.9}'])
    store.close()
    config = sample_db.write_config(tmp_path / "feeds.yaml")
    outputs = {}
    for command in (["list", "--json"], ["list", "--all", "--json"], ["show", "1", "--json"],
                    ["show", "--entry", "1", "--json"], ["search", "strike", "--json"], ["stats", "--json"],
                    ["status", "--json"], ["feeds", "list", "--json"], ["export", "digest", "--since", "7d"],
                    ["export", "jsonfeed"]):
        result = CliRunner().invoke(cli, ["--db", str(db), "--config", str(config), *command],
                                    catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
        documents = [json.loads(line) for line in result.stdout.splitlines()] if "--json" in command \
            else [json.loads(result.stdout)]
        assert documents and not json_in_strings(documents), (command, json_in_strings(documents))
        outputs[" ".join(command)] = documents
    entry = outputs["show --entry 1 --json"][0]
    assert entry["tags"] == ["Business"]
    assert entry["enclosures"] == [{"url": "http://ledger.test/a.mp3", "type": "audio/mpeg", "length": 3}]
    reports = {r["id"]: r for r in outputs["show 1 --json"][0]["reports"]}
    assert reports[3]["evidence"] == {"title": 0.7, "body": 0.9} and reports[1]["evidence"] == {}
    # The stories' own outlets column stays inside: their outlets are given by name.
    assert all("outlet_feeds" not in story for key in ("list --json", "show 1 --json") for story in outputs[key])


def test_a_database_of_schema_4_lists_the_same_before_and_after_migrations_5_to_8(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 4)  # as agg c1e150c made it
    path = sample_db.build(tmp_path / "agg.db")
    monkeypatch.undo()
    before, _, _ = listing_as_before(path)
    assert agg(path, "list").stdout == "".join(before)  # a reading command upgrades the file first
    before = [agg(path, "list", *args).stdout for args in ([], ["--json"], ["--all"], ["--tag", "local"])]
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT story_id, feed_id, MIN(COALESCE(published, first_seen)) "
                            "FROM entries WHERE story_id IN (1, 2) GROUP BY story_id, feed_id").fetchall()
    assert "entries_story_outlets" in indexes and "entries_story" not in indexes
    assert "COVERING INDEX entries_story_outlets" in plan[0][-1]
    assert [agg(path, "list", *args).stdout for args in ([], ["--json"], ["--all"], ["--tag", "local"])] == before


def test_a_database_of_an_earlier_schema_that_cannot_be_written_says_how_to_upgrade_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 7)
    path = sample_db.build(tmp_path / "agg.db")
    monkeypatch.undo()
    monkeypatch.setattr(store_module.os, "access", lambda *args: False)  # a file this user cannot write
    result = agg(path, "list")
    assert result.exit_code != 0
    assert "written by an earlier agg (schema version 7; this agg reads 8)" in result.output
    assert "cannot be upgraded here: run 'agg fetch' once where it is writable" in result.output
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7  # left as it was


def test_a_reading_command_upgrades_an_older_database_only_under_the_run_lock(tmp_path, monkeypatch):
    from aggregator.lock import RunLock

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 7)
    path = sample_db.build(tmp_path / "agg.db")
    monkeypatch.undo()
    with RunLock(path, purpose="agg daemon (an earlier version)"):
        result = agg(path, "list")
    assert result.exit_code != 0 and "another agg run holds its lock (" in result.output
    assert "agg daemon (an earlier version)" in result.output
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7  # not upgraded beneath it
    assert agg(path, "list").exit_code == 0  # the lock free: upgraded, then read
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION


def test_a_file_that_is_not_an_agg_database_is_refused_by_a_reading_command_and_left_as_it_is(tmp_path):
    empty, foreign = tmp_path / "empty.db", tmp_path / "other.db"
    empty.touch()
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE feeds (x)")
    for path in (empty, foreign):
        before = path.read_bytes()
        result = agg(path, "list")
        assert result.exit_code != 0 and "is not an agg database" in result.output
        assert path.read_bytes() == before


# -- issue 17: piped `agg list` made in batches, byte for byte what it printed before


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> Path:
    """130 feeds (names with escape sequences, tabs, one without a title), 1,500 entries through the store's
    write path with publication times that tie (some missing), grouped into ~540 stories: one of 110 outlets,
    titles with control and other non-printable characters, equal last-seen times, a merged story and one
    with no reports."""
    import random
    from datetime import timedelta

    from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
    from aggregator.store import to_db_time, utc_now

    rng = random.Random(17)
    now = utc_now().replace(microsecond=0)
    path = tmp_path_factory.mktemp("crowded") / "agg.db"
    store = Store.open(path)
    titles = ["Outlet \x1b[31mred\x1b[0m", "Tab\tNews", "Bell\x07 Times", *(f"Outlet {n}" for n in range(3, 129))]
    feeds = [sample_db.Outlet(f"http://feed{n}.test/rss", title, []) for n, title in enumerate(titles)]
    feeds.append(sample_db.Outlet("http://untitled.test/rss", None, []))
    rows = store.sync_feeds(feeds, now)
    moments = [now - timedelta(hours=hours) for hours in range(40)]  # few distinct times: ties
    odd_titles = ["Plain headline", "Escape \x1b]0;pwned\x07 here", "C1 \x9b31m text", "Line\nbreak",
                  "Tab\there", "No\u00a0break space", "Sep\u2028arator", "Zero\u200bwidth"]
    entries: list[tuple[int, str]] = []
    for number, feed in enumerate(feeds):
        parsed = ParsedFeed(format="rss20", title=feed.title or "", entries=[
            ParsedEntry(guid=f"g{number}-{n}", link=f"{feed.url}/{n}", title=rng.choice(odd_titles) + f" {n}",
                        summary="text", summary_text="text",
                        published=None if rng.random() < 0.1 else rng.choice(moments))
            for n in range(12 if number < 125 else 2)])
        result = FetchResult(url=feed.url, final_url=feed.url, status=200, body=b"<rss/>")
        saved = store.save_fetch(rows[feed.url]["id"], result, parsed, {"last_fetch_at": to_db_time(now)},
                                 extract=False, now=rng.choice(moments))
        entries += [(rows[feed.url]["id"], entry_id) for entry_id in saved.new_entry_ids]
    rng.shuffle(entries)
    big = {}  # one report from each of 110 feeds
    for feed_id, entry_id in entries:
        if feed_id not in big and len(big) < 110:
            big[feed_id] = entry_id
    rest = [entry_id for _, entry_id in entries if entry_id not in big.values()]
    groups = [list(big.values())]
    while rest:
        size = min(len(rest), rng.choice([1, 1, 1, 1, 2, 2, 3, 5, 8]))
        groups.append(rest[:size])
        rest = rest[size:]
    with store.transaction() as conn:
        for story_id, members in enumerate(groups, start=1):
            title = rng.choice(odd_titles) + f" story {story_id}, told at some length " + "." * 100
            last_seen = to_db_time(rng.choice(moments))  # ties between stories too
            conn.execute("INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets, "
                         "representative_id, original_entry_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (story_id, title, last_seen, last_seen, len(members), len(members), members[0],
                          rng.choice(members)))
            conn.executemany("UPDATE entries SET story_id = ? WHERE id = ?", [(story_id, m) for m in members])
        conn.execute("INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets) "
                     "VALUES (5000, 'No reports', ?, ?, 1, 1)", (to_db_time(now), to_db_time(now)))
        write_outlet_feeds(conn)  # as the grouping writes them with a story
        conn.execute("UPDATE stories SET merged_into = 1 WHERE id = 2")
    store.close()
    return path


def listing_as_before(path: Path, min_outlets: int = 1) -> tuple[list[str], dict[int, list[str]], dict[int, str]]:
    """Piped `agg list` as 82bcf83 made it (its outlets query and its line), each story's outlets and the
    outlet of its original report: the reference the batched listing must equal."""
    from aggregator.cli import terminal_safe

    conn = sqlite3.connect(path)
    names = dict(conn.execute("SELECT id, COALESCE(title, url) FROM feeds"))
    firsts = conn.execute(
        "SELECT e.story_id, e.feed_id, MIN(COALESCE(e.published, e.first_seen)) AS t, "
        "MAX(e.id IS s.original_entry_id) FROM entries e JOIN stories s ON s.id = e.story_id "
        "GROUP BY e.story_id, e.feed_id").fetchall()
    firsts.sort(key=lambda row: (row[0], row[2], row[1]))
    outlets: dict[int, list[str]] = {}
    originals: dict[int, str] = {}
    for story_id, feed_id, _, has_original in firsts:
        outlets.setdefault(story_id, []).append(names[feed_id])
        if has_original:
            originals[story_id] = names[feed_id]
    lines = []
    for story_id, reports, n_outlets, last_seen, title in conn.execute(
            "SELECT id, n_reports, n_outlets, last_seen, title FROM stories WHERE merged_into IS NULL "
            "AND n_outlets >= ? ORDER BY last_seen DESC, id DESC", [min_outlets]):
        mine = outlets.get(story_id, [])
        shown = ", ".join(terminal_safe(o) for o in mine[:99]) + (f" +{len(mine) - 99}" if len(mine) > 99 else "")
        lines.append(f"{story_id}\t{reports}\t{n_outlets}\t{last_seen}\t{terminal_safe(title)}\t{shown}\n")
    conn.close()
    return lines, outlets, originals


@pytest.mark.parametrize("batch", [1000, 7])
def test_piped_list_prints_what_it_printed_before_byte_for_byte(crowded, monkeypatch, batch):
    monkeypatch.setattr(store_module, "LISTING_BATCH", batch)
    before, _, _ = listing_as_before(crowded)
    assert len(before) > 500 and any(" +11\n" in line for line in before)  # the story of 110 outlets
    assert any("\x1b" in title for title in sample_db_titles(crowded)), "escape sequences to make safe"
    output = agg(crowded, "list").stdout_bytes
    assert output == "".join(before).encode()
    assert agg(crowded, "list", "--min-outlets", "2").stdout == "".join(listing_as_before(crowded, 2)[0])
    assert agg(crowded, "list", "--limit", "30", "--offset", "5").stdout == "".join(before[5:35])
    assert agg(crowded, "list", "--offset", "20").stdout == "".join(before[20:])


def sample_db_titles(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [title for (title,) in conn.execute("SELECT title FROM stories")]


def test_stories_have_the_outlets_and_original_outlet_they_had_before(crowded):
    _, outlets, originals = listing_as_before(crowded)
    store = Store.open(crowded, readonly=True)
    stories = list(store.iter_stories())
    store.close()
    assert len(stories) == len(listing_as_before(crowded)[0])
    assert {s["id"]: s["outlets"] for s in stories} == {s["id"]: outlets.get(s["id"], []) for s in stories}
    assert {s["id"]: s["original_outlet"] for s in stories} == {s["id"]: originals.get(s["id"]) for s in stories}


def test_piped_list_stops_quietly_when_the_reader_does(crowded, tmp_path):
    assert len("".join(listing_as_before(crowded)[0])) > 65536  # more than a pipe holds
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with subprocess.Popen([sys.executable, "-m", "aggregator", "--db", str(crowded), "list"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path) as process:
        first = process.stdout.readline().decode()
        process.stdout.close()  # like `agg list | head -1`, before the rest (more than a pipe holds) is written
        error = process.stderr.read().decode()
        status = process.wait(timeout=60)
    assert first == listing_as_before(crowded)[0][0]
    assert status == 0 and error == ""
