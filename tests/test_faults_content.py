"""Hostile feed content, end to end: stored as text, sanitised in every HTML agg writes, inert on a terminal.

One feed (channel title included) carries ``<script>``, ``javascript:``
links, event-handler attributes, a megabyte title and ANSI escape
sequences; it is fetched with ``agg fetch`` into a real database, then read
back through ``agg list/show/status/feeds list/search`` and the exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lxml import etree, html

from aggregator.cli import terminal_safe
from aggregator.parse import MAX_TITLE_CHARS
from tests.conftest import rss_document
from tests.faults import ANSI_TITLE, hostile_items
from tests.server import Reply
from tests.test_pipeline import query, write_config

# What a terminal would act on: ESC and the other C0/C1 controls except newline and tab.
TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def hostile_db(tmp_path, server, agg) -> tuple[Path, Path]:
    body = rss_document(hostile_items(), title=ANSI_TITLE + "<b>Evil</b> outlet")
    cfg = write_config(tmp_path, [{"url": server.route("/evil.xml", Reply(body=body)), "tags": ["evil"]}])
    db = tmp_path / "agg.db"
    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    return cfg, db


def entry(db: Path, guid: str) -> dict:
    [row] = query(db, "SELECT id, title, link, summary, text, story_id FROM entries WHERE guid = ?", guid)
    return dict(zip(("id", "title", "link", "summary", "text", "story_id"), row))


def test_hostile_entries_are_stored_as_text(hostile_db):
    _, db = hostile_db
    xss = entry(db, "xss-1")
    assert "alert" not in xss["text"] and "Body" in xss["text"] and "<" not in xss["text"]
    assert xss["title"] == "<script>alert(1)</script>Plain words"  # an RSS title is text: kept literally
    assert entry(db, "js-link")["link"] is None  # a javascript: link is no link
    huge = entry(db, "huge-title")
    assert len(huge["title"]) <= MAX_TITLE_CHARS
    ansi = entry(db, "ansi-1")
    assert not TERMINAL_CONTROL.search(ansi["title"]) and "RED ALERT" in ansi["title"]
    # The raw summary HTML is kept as the feed sent it: it is sanitised on the way out, never trusted.
    assert "onclick" in xss["summary"]


def output_of(agg, cfg: Path, db: Path, *args: str) -> str:
    result = agg("--config", cfg, "--db", db, *args)
    assert result.exit_code == 0, result.output
    return result.stdout + result.stderr


def test_terminal_output_carries_no_escape_sequences(hostile_db, agg):
    cfg, db = hostile_db
    story_ids = {row[0] for row in query(db, "SELECT story_id FROM entries WHERE story_id IS NOT NULL")}
    commands = [("list",), ("list", "--all"), ("status",), ("feeds", "list"), ("search", "RED"),
                ("search", "Body")]
    commands += [("show", str(story_id)) for story_id in story_ids]
    commands += [("show", "--entry", str(row[0])) for row in query(db, "SELECT id FROM entries")]
    assert story_ids, "the entries should have been grouped into stories"
    seen = ""
    for command in commands:
        output = output_of(agg, cfg, db, *command)
        assert not TERMINAL_CONTROL.search(output), (command, TERMINAL_CONTROL.findall(output)[:5])
        seen += output
    # The words survive, only the escapes are gone.
    assert "RED ALERT" in seen and "Overwritten" in seen and "Evil" in seen


@pytest.mark.parametrize("text, expected", [
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b]0;title\x07after", "after"),
    ("\x1b]8;;http://evil.test\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("a\rb\x08c\x9b2Jd", "a b c 2Jd"),
    ("tab\tand\nnewline", "tab and newline"),
])
def test_terminal_safe_strips_controls_and_escapes(text, expected):
    assert terminal_safe(text) == expected


def html_fragments(agg, cfg: Path, db: Path) -> dict[str, str]:
    """Every HTML fragment the exports write, by where it came from."""
    fragments = {}
    feed = json.loads(output_of(agg, cfg, db, "export", "jsonfeed", "--since", "30d").split("\nagg:")[0])
    for item in feed["items"]:
        fragments[f"jsonfeed {item['id']}"] = item["content_html"]
    atom = etree.fromstring(agg("--config", cfg, "--db", db, "export", "atom", "--since", "30d").stdout_bytes)
    for content in atom.iter("{http://www.w3.org/2005/Atom}content"):
        fragments[f"atom content {len(fragments)}"] = content.text
    assert fragments, "the exports should hold the hostile stories"
    return fragments


def test_every_html_agg_writes_is_sanitised(hostile_db, agg):
    cfg, db = hostile_db
    for where, fragment in html_fragments(agg, cfg, db).items():
        tree = html.fragment_fromstring(fragment, create_parent="div")
        assert not tree.xpath("//script | //style | //iframe | //object | //embed | //img"), where
        for element in tree.iter():
            for name, value in element.attrib.items():
                assert not name.lower().startswith("on"), (where, name)
                assert not value.strip().lower().startswith(("javascript:", "data:", "vbscript:")), (where, value)
        assert "<script" not in fragment.lower() and "javascript:" not in fragment.lower(), where


def test_exports_keep_hostile_titles_as_text(hostile_db, agg):
    cfg, db = hostile_db
    atom = etree.fromstring(agg("--config", cfg, "--db", db, "export", "atom", "--since", "30d").stdout_bytes)
    titles = [t for t in atom.iter("{http://www.w3.org/2005/Atom}title") if t.getparent().tag.endswith("entry")]
    assert titles and all(t.get("type") == "text" for t in titles)
    assert "<script>alert(1)</script>Plain words" in [t.text for t in titles]  # text, escaped by the XML writer
    assert all(len(t.text or "") <= MAX_TITLE_CHARS for t in titles)
    digest = json.loads(agg("--config", cfg, "--db", db, "export", "digest", "--since", "30d").stdout)
    links = [report.get("url") or report.get("link") for story in digest["stories"] for report in story["reports"]]
    assert not any(str(link).lower().startswith("javascript:") for link in links if link)
