"""Exports and imports: OPML both ways, the JSON digest, JSON Feed 1.1 and Atom 1.0.

Stories are written into a real SQLite store with plain SQL (the grouping
stage's own tests cover how they are made); one test also goes through the
real pipeline when the grouping stage is there.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import jsonschema
import lxml.html
import pytest
from lxml import etree

from aggregator import dedup
from aggregator.config import Config, FeedConfig, Settings, load_config
from aggregator.export import (
    ATOM_NS,
    OpmlError,
    OpmlFeed,
    build_atom,
    build_digest,
    build_json_feed,
    build_opml,
    import_opml,
    lead_summary,
    load_stories,
    parse_opml,
    plan_import,
    write_atomic,
)
from aggregator.store import Store, to_db_time, write_outlet_feeds
from tests.conftest import PROJECT_ROOT, rss_document
from tests.server import Reply

DIGEST_SCHEMA = json.loads((PROJECT_ROOT / "docs" / "digest.schema.json").read_text(encoding="utf-8"))
JSON_FEED_SCHEMA = json.loads(
    (PROJECT_ROOT / "tests" / "schemas" / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
NOW = datetime.now(UTC).replace(microsecond=0)

FEEDS = [
    FeedConfig(url="https://ledger.example/feed.xml", title="The Daily Ledger", tags=["business", "world"]),
    FeedConfig(url="https://northgate.example/rss", title="Northgate Post", tags=["news", "local"]),
    FeedConfig(url="https://brief.example/feed.json", title="Pocket Brief"),
    FeedConfig(url="https://evil.example/feed.xml", title='Evil <img src=x onerror="alert(1)"> & Co', tags=["news"]),
]
LEDGER, NORTHGATE, BRIEF, EVIL = (feed.url for feed in FEEDS)

BRIDGE_TEXT = (
    "The Kestrel Street bridge was closed on Saturday after inspectors found a crack in a main girder. "
    "J. Smith, the city engineer, said repairs would take months. Buses will be diverted along the quay. "
    "Further checks are planned."
)


@dataclass
class Rep:
    """A report to store: which feed, its title, link, hours before now, text and extraction status."""

    feed: str
    title: str
    link: str | None
    hours_ago: float
    text: str = ""
    status: str = "ok"
    published: bool = True


def hours_ago(hours: float) -> str:
    return to_db_time(NOW - timedelta(hours=hours))


def add_story(store: Store, title: str, reports: list[Rep], representative: int = 0,
              credited: str | None = None) -> int:
    """Store the reports as entries and group them into one story; the earliest report is the original."""
    feed_ids = {row["url"]: row["id"] for row in store.feeds()}
    with store.transaction() as conn:
        entry_ids = []
        for report in reports:
            seen = hours_ago(report.hours_ago)
            cursor = conn.execute(
                "INSERT INTO entries (feed_id, guid, link, title, published, first_seen, changed_at, content_hash, "
                "text, text_source, extract_status) VALUES (?, ?, ?, ?, ?, ?, ?, 'x', ?, 'page', ?)",
                (feed_ids[report.feed], f"{report.feed}#{title}#{len(entry_ids)}", report.link, report.title,
                 seen if report.published else None, seen, seen, report.text, report.status))
            entry_ids.append(cursor.lastrowid)
        earliest = max(range(len(reports)), key=lambda i: reports[i].hours_ago)
        cursor = conn.execute(
            "INSERT INTO stories (title, first_seen, last_seen, n_reports, n_outlets, representative_id, "
            "original_entry_id, credited_outlet) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (title, hours_ago(max(r.hours_ago for r in reports)), hours_ago(min(r.hours_ago for r in reports)),
             len(reports), len({r.feed for r in reports}), entry_ids[representative], entry_ids[earliest], credited))
        story_id = cursor.lastrowid
        for entry_id in entry_ids:
            conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (story_id, entry_id))
            conn.execute("INSERT INTO story_members (entry_id, story_id, rule, joined_at) VALUES (?, ?, 'similar', ?)",
                         (entry_id, story_id, to_db_time(NOW)))
    write_outlet_feeds(conn, [story_id])  # as the grouping writes them with a story
    return story_id


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database with four stories: three recent (one carried by three outlets, one hostile), one 10 days old."""
    path = tmp_path / "agg.db"
    store = Store.open(path)
    store.sync_feeds(FEEDS)
    for feed in FEEDS:
        row = store.feed_by_url(feed.url)
        store.update_feed(row["id"], site_url=feed.url.rsplit("/", 1)[0] + "/")
    add_story(store, "Kestrel Street bridge closed after crack found", [
        Rep(NORTHGATE, "Kestrel Street bridge closed after crack found", "https://northgate.example/bridge", 5,
            BRIDGE_TEXT),
        Rep(BRIEF, "Kestrel bridge shut", "https://brief.example/kestrel", 3, "Bridge shut.", "too-short",
            published=False),
        Rep(LEDGER, "Bridge closure hits port traffic", "https://ledger.example/bridge", 2, "", "http-error"),
    ], credited="Northgate Post")
    add_story(store, "Central bank holds rates", [
        Rep(LEDGER, "Central bank holds rates", "https://ledger.example/rates", 8, "Rates were held at 3.25%."),
    ])
    add_story(store, '<script>alert("x")</script> Harriers & Rovers "draw"', [
        Rep(EVIL, '<script>alert("x")</script> Harriers & Rovers "draw"', "javascript:alert(1)", 4,
            "<b onclick=alert(1)>Harriers</b> and Rovers drew 1-1.\x01"),
        Rep(NORTHGATE, "Harriers and Rovers draw", "https://northgate.example/draw?a=1&b=2", 1),
    ])
    add_story(store, "Old news", [Rep(BRIEF, "Old news", "https://brief.example/old", 240, "Long ago.")])
    store.close()
    return path


@pytest.fixture
def stories(db_path: Path):
    store = Store.open(db_path, readonly=True)
    yield load_stories(store, since=NOW - timedelta(days=2))
    store.close()


# -- summaries -----------------------------------------------------------------


def test_lead_summary_takes_two_sentences_and_keeps_initials_inside_them():
    assert lead_summary(BRIDGE_TEXT) == (
        "The Kestrel Street bridge was closed on Saturday after inspectors found a crack in a main girder. "
        "J. Smith, the city engineer, said repairs would take months.")
    assert lead_summary("The U.S. Senate voted.\n\n  It passed 51-49. Then more.") == (
        "The U.S. Senate voted. It passed 51-49.")
    assert lead_summary("") == ""


def test_lead_summary_cuts_long_text_at_a_word():
    summary = lead_summary("word " * 200)
    assert len(summary) <= 300 and summary.endswith("word…")


# -- digest ----------------------------------------------------------------------


def test_digest_follows_its_schema_and_describes_each_story(stories):
    digest = build_digest(stories, since=NOW - timedelta(days=2), until=NOW, min_outlets=1, generated_at=NOW)
    jsonschema.validate(digest, DIGEST_SCHEMA)
    assert digest["version"] == 1
    assert digest["story_count"] == 3 and digest["report_count"] == 6
    assert digest["window"] == {"since": to_db_time(NOW - timedelta(days=2)), "until": to_db_time(NOW)}

    bridge = next(s for s in digest["stories"] if s["title"].startswith("Kestrel"))
    assert (bridge["report_count"], bridge["outlet_count"]) == (3, 3)
    assert bridge["outlets"] == ["Northgate Post", "Pocket Brief", "The Daily Ledger"]
    assert bridge["summary"] == lead_summary(BRIDGE_TEXT)
    assert bridge["url"] == "https://northgate.example/bridge"
    assert bridge["original_source"]["outlet"] == "Northgate Post"
    assert bridge["original_source"]["credited_outlet"] == "Northgate Post"
    assert [r["extraction_status"] for r in bridge["reports"]] == ["ok", "too-short", "http-error"]
    assert bridge["reports"][1]["published"] is None
    assert [s["title"] for s in digest["stories"]][0].startswith("<script>")  # newest activity first


def test_digest_window_and_min_outlets_select_stories(db_path):
    store = Store.open(db_path, readonly=True)
    everything = load_stories(store)
    busy = load_stories(store, since=NOW - timedelta(days=2), min_outlets=2)
    store.close()
    assert len(everything) == 4
    assert {s.title for s in busy} == {"Kestrel Street bridge closed after crack found",
                                       '<script>alert("x")</script> Harriers & Rovers "draw"'}


# -- JSON Feed and Atom ----------------------------------------------------------


def test_json_feed_follows_the_json_feed_schema_with_stable_ids(stories):
    document = build_json_feed(stories, feed_url="https://agg.example/feed.json")
    jsonschema.validate(document, JSON_FEED_SCHEMA)
    ids = [item["id"] for item in document["items"]]
    assert ids == [f"urn:agg:story:{s.id}" for s in stories] and len(set(ids)) == 3
    assert build_json_feed(stories, feed_url="https://agg.example/feed.json") == document
    bridge = next(item for item in document["items"] if item["title"].startswith("Kestrel"))
    assert bridge["url"] == "https://northgate.example/bridge"
    assert [a["name"] for a in bridge["authors"]] == ["Northgate Post", "Pocket Brief", "The Daily Ledger"]
    for outlet_link in ("https://northgate.example/bridge", "https://brief.example/kestrel",
                        "https://ledger.example/bridge"):
        assert f'href="{outlet_link}"' in bridge["content_html"]


def test_the_json_feed_schema_rejects_what_the_spec_forbids():
    valid = {"version": "https://jsonfeed.org/version/1.1", "title": "t",
             "items": [{"id": "1", "content_text": "x", "date_published": "2026-11-28T18:00:00+00:00"}]}
    jsonschema.validate(valid, JSON_FEED_SCHEMA)
    broken = [
        {**valid, "version": "https://jsonfeed.org/version/1"},
        {k: v for k, v in valid.items() if k != "title"},
        {**valid, "items": [{"id": "1"}]},                                      # no content
        {**valid, "items": [{"content_text": "x"}]},                            # no id
        {**valid, "items": [{"id": 1, "content_text": "x"}]},                   # id not a string
        {**valid, "items": [{"id": "1", "content_text": "x", "date_published": "28 Nov 2026"}]},
        {**valid, "author": {"name": "x"}},                                     # 1.0 key, unknown in 1.1
    ]
    for document in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, JSON_FEED_SCHEMA)


def assert_safe_html(fragment: str) -> None:
    """No script, no event handler, every link http(s)."""
    assert "<script" not in fragment.lower()
    tree = lxml.html.fragment_fromstring(fragment, create_parent="div")
    for element in tree.iter():
        assert element.tag in ("div", "p", "ul", "li", "a", "small"), element.tag
        assert not [name for name in element.attrib if name.lower().startswith("on")]
        if element.tag == "a" and "href" in element.attrib:
            assert element.attrib["href"].startswith(("http://", "https://"))
    assert "javascript:" not in " ".join(a.get("href", "") for a in tree.iter("a"))


def test_item_html_is_sanitized_and_feed_text_stays_text(stories):
    hostile = next(s for s in stories if "Harriers" in s.title)
    item = next(i for i in build_json_feed(stories)["items"] if i["id"] == hostile.item_id)
    assert_safe_html(item["content_html"])
    assert item["url"] == "https://northgate.example/draw?a=1&b=2"  # the javascript: link is never used
    text = lxml.html.fragment_fromstring(item["content_html"], create_parent="div").text_content()
    assert '<script>alert("x")</script> Harriers & Rovers "draw"' in text
    assert 'Evil <img src=x onerror="alert(1)"> & Co' in text
    assert "<b onclick=alert(1)>Harriers</b> and Rovers drew 1-1." in text
    for entry in feedparser.parse(build_atom(stories, generated_at=NOW)).entries:
        assert_safe_html(entry.content[0].value)


def test_atom_export_parses_back_with_every_story(stories):
    document = build_atom(stories, generated_at=NOW, feed_url="https://agg.example/feed.atom")
    parsed = feedparser.parse(document)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert [e.id for e in parsed.entries] == [s.item_id for s in stories]
    assert [e.title for e in parsed.entries] == [s.title for s in stories]
    assert [e.link for e in parsed.entries] == [s.link for s in stories]
    for entry, story in zip(parsed.entries, stories):
        assert entry.updated == story.last_seen and entry.published == story.first_seen
        assert [a.name for a in entry.authors] == story.outlets
    assert parsed.feed.updated == max(s.last_seen for s in stories)

    # RFC 4287's required elements, checked on the XML itself.
    root = etree.fromstring(document)
    ns = {"a": ATOM_NS}
    for name in ("id", "title", "updated"):
        assert len(root.findall(f"a:{name}", ns)) == 1
    for entry in root.findall("a:entry", ns):
        for name in ("id", "title", "updated", "content"):
            assert len(entry.findall(f"a:{name}", ns)) == 1
    assert build_atom(stories, generated_at=NOW + timedelta(hours=1),
                      feed_url="https://agg.example/feed.atom") == document  # unchanged stories, same bytes


def test_empty_exports_are_still_valid():
    atom = feedparser.parse(build_atom([], generated_at=NOW))
    assert not atom.bozo and atom.entries == [] and atom.feed.updated == to_db_time(NOW)
    jsonschema.validate(build_json_feed([]), JSON_FEED_SCHEMA)
    jsonschema.validate(build_digest([], since=None, until=NOW, min_outlets=1, generated_at=NOW), DIGEST_SCHEMA)


# -- OPML export -----------------------------------------------------------------


def test_opml_export_is_escaped_opml_2_with_folders_and_site_urls():
    rows = {LEDGER: {"title": "Ledger (from feed)", "site_url": "https://ledger.example/"}}
    feeds = [*FEEDS, FeedConfig(url="https://untitled.example/rss")]
    rows["https://untitled.example/rss"] = {"title": "Untitled & Co", "site_url": None}
    root = etree.fromstring(build_opml(feeds, rows, generated_at=NOW))
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/dateCreated")
    folders = [o.get("text") for o in root.findall("body/outline") if o.get("xmlUrl") is None]
    assert folders == ["business", "news"]
    outlines = {o.get("xmlUrl"): o for o in root.iter("outline") if o.get("xmlUrl")}
    assert list(outlines) == [LEDGER, NORTHGATE, EVIL, BRIEF, "https://untitled.example/rss"]
    ledger = outlines[LEDGER]
    assert ledger.attrib == {"type": "rss", "text": "The Daily Ledger", "title": "The Daily Ledger",
                             "xmlUrl": LEDGER, "htmlUrl": "https://ledger.example/", "category": "business,world"}
    assert outlines[EVIL].get("title") == FEEDS[3].title
    assert outlines["https://untitled.example/rss"].get("text") == "Untitled & Co"
    assert outlines[BRIEF].getparent().tag == "body"  # untagged: top level


def test_opml_round_trip_through_the_command_line_gives_the_same_subscriptions(tmp_path, db_path, agg):
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "feeds:\n"
        + "".join(f"  - url: {f.url}\n    title: {json.dumps(f.title)}\n    tags: {json.dumps(f.tags)}\n"
                  for f in FEEDS)
        + "  - url: http://plain.example/feed\n",
        encoding="utf-8")
    exported = tmp_path / "out.opml"
    result = agg("--config", config, "--db", db_path, "export", "opml", "-o", exported)
    assert result.exit_code == 0, result.output
    assert b'htmlUrl="https://northgate.example/"' in exported.read_bytes()

    fresh = tmp_path / "new" / "feeds.yaml"
    result = agg("--config", fresh, "import", "opml", exported)
    assert result.exit_code == 0, result.output
    assert "added 5 feeds" in result.stderr

    def subscriptions(path: Path) -> set[tuple]:
        return {(f.url, f.title, tuple(f.tags)) for f in load_config(path).feeds}

    assert subscriptions(fresh) == subscriptions(config)


# -- OPML import -----------------------------------------------------------------

OPML_TO_IMPORT = b"""<?xml version="1.0" encoding="ISO-8859-1"?>
<opml version="1.0">
  <head><title>Exported by some reader</title></head>
  <body>
    <outline text="Already here" xmlUrl="https://ledger.example/feed.xml" type="rss"/>
    <outline title="Tech" text="">
      <outline text="Caf\xe9 Tech" xmlurl="https://cafe.example/rss" type="atom"/>
      <outline text="Deep">
        <outline title="Nested" xmlUrl="https://nested.example/feed" category="/science,extra"/>
      </outline>
    </outline>
    <outline text="Again" xmlUrl="https://cafe.example/rss"/>
    <outline text="Script" xmlUrl="javascript:alert(1)"/>
    <outline text="Local" xmlUrl="/etc/passwd"/>
    <outline text="Newsboat command" xmlUrl="|~/bin/fetch.sh"/>
    <outline text="Ftp" xmlUrl="ftp://files.example/feed"/>
    <outline text="A link, not a feed" type="link" url="https://example.org/"/>
  </body>
</opml>
"""

EXISTING_CONFIG = """\
# my feeds: keep this comment
defaults:
  interval: 30m   # check twice an hour

feeds:
  # business first
  - url: https://ledger.example/feed.xml
    title: The Daily Ledger
    tags: [business]
  - url: https://northgate.example/rss   # the local paper
"""


def test_import_keeps_the_file_adds_new_feeds_and_reports_what_it_skips(tmp_path, agg):
    config = tmp_path / "feeds.yaml"
    config.write_text(EXISTING_CONFIG, encoding="utf-8")
    opml = tmp_path / "in.opml"
    opml.write_bytes(OPML_TO_IMPORT)

    result = agg("--config", config, "import", "opml", opml)
    assert result.exit_code == 0, result.output
    text = config.read_text(encoding="utf-8")
    assert text.startswith(EXISTING_CONFIG)  # comments, order and indentation untouched
    feeds = load_config(config).feeds
    assert [(f.url, f.title, f.tags) for f in feeds[2:]] == [
        ("https://cafe.example/rss", "Café Tech", ["Tech"]),
        ("https://nested.example/feed", "Nested", ["Tech", "Deep", "science", "extra"]),
    ]
    assert result.stdout.count("added\t") == 2
    for url, reason in [("https://ledger.example/feed.xml", "already in feeds.yaml"),
                        ("https://cafe.example/rss", "listed earlier in the file"),
                        ("javascript:alert(1)", "not an http(s) URL"), ("/etc/passwd", "not an http(s) URL"),
                        ("|~/bin/fetch.sh", "not an http(s) URL"), ("ftp://files.example/feed", "not an http(s)")]:
        assert f"skipped {url}" in result.stderr and reason in result.stderr

    again = agg("--config", config, "import", "opml", opml)
    assert again.exit_code == 0 and config.read_text(encoding="utf-8") == text
    assert "added 0 feeds" in again.stderr


def test_import_dry_run_prints_and_writes_nothing(tmp_path, agg):
    config = tmp_path / "feeds.yaml"
    config.write_text(EXISTING_CONFIG, encoding="utf-8")
    opml = tmp_path / "in.opml"
    opml.write_bytes(OPML_TO_IMPORT)
    result = agg("--config", config, "import", "opml", "--dry-run", opml)
    assert result.exit_code == 0, result.output
    assert "would add\thttps://cafe.example/rss" in result.stdout
    assert config.read_text(encoding="utf-8") == EXISTING_CONFIG
    missing = tmp_path / "missing.yaml"
    assert agg("--config", missing, "import", "opml", "--dry-run", opml).exit_code == 0
    assert not missing.exists()


def test_import_creates_a_missing_feeds_yaml(tmp_path):
    config = tmp_path / "feeds.yaml"
    plan = import_opml(config, OPML_TO_IMPORT)
    assert len(plan.added) == 3 and len(plan.skipped) == 5
    text = config.read_text(encoding="utf-8")  # written as 'agg feeds add' writes a new file
    assert text.startswith("# agg subscriptions") and "\nfeeds:\n  - url: https://ledger.example/feed.xml\n" in text
    assert [f.url for f in load_config(config).feeds] == [
        "https://ledger.example/feed.xml", "https://cafe.example/rss", "https://nested.example/feed"]


def test_import_into_a_config_with_problems_changes_nothing(tmp_path, agg):
    config = tmp_path / "feeds.yaml"
    broken = EXISTING_CONFIG.replace("interval: 30m", "interval: soon")
    config.write_text(broken, encoding="utf-8")
    opml = tmp_path / "in.opml"
    opml.write_bytes(OPML_TO_IMPORT)
    result = agg("--config", config, "import", "opml", opml)
    assert result.exit_code == 1
    assert "agg: error: cannot add feeds to" in result.stderr and "interval" in result.stderr
    assert config.read_text(encoding="utf-8") == broken


def test_plan_import_compares_with_the_feeds_already_configured_by_their_identity():
    config = Config(Path("feeds.yaml"), Settings(), [FeedConfig("https://a.example/rss", line=3)])
    plan = plan_import([OpmlFeed(" https://a.example/rss "), OpmlFeed("https://b.example/rss"),
                        OpmlFeed("HTTP://A.example:80/rss?utm_source=opml"), OpmlFeed("https://b.example/rss#top")],
                       config)
    assert [f.url for f in plan.added] == ["https://b.example/rss"]
    assert [reason for _, reason in plan.skipped] == [
        "already in feeds.yaml (line 3)", "already in feeds.yaml (line 3, as https://a.example/rss)",
        "listed earlier in the file, as https://b.example/rss"]


@pytest.mark.parametrize("document, message", [
    (b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
     b'<opml><body><outline text="&b;" xmlUrl="https://x.example/"/></body></opml>', "DOCTYPE"),
    (b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
     b'<opml><body><outline text="t" xmlUrl="https://x.example/">&x;</outline></body></opml>', "DOCTYPE"),
    (b'<opml><body><outline text="caf&eacute;" xmlUrl="https://x.example/"/></body></opml>', "not well-formed"),
    (b"<opml><body><outline", "not well-formed"),
    (b"", "not well-formed"),
    (b"<rss><channel/></rss>", "not an OPML file"),
    (b'<opml version="2.0"><head/></opml>', "no <body>"),
])
def test_unreadable_opml_is_refused_and_feeds_yaml_untouched(tmp_path, agg, document, message):
    with pytest.raises(OpmlError, match=message):
        parse_opml(document)
    config = tmp_path / "feeds.yaml"
    config.write_text(EXISTING_CONFIG, encoding="utf-8")
    opml = tmp_path / "bad.opml"
    opml.write_bytes(document)
    result = agg("--config", config, "import", "opml", opml)
    assert result.exit_code == 1
    assert message in result.stderr and "was not changed" in result.stderr
    assert config.read_text(encoding="utf-8") == EXISTING_CONFIG


def test_newsboat_opml_files_import_or_fail_clearly(shared_data, tmp_path, agg):
    folder = shared_data / "feeds-dev" / "newsboat"
    files = sorted(folder.glob("*.opml"))
    if not files:
        pytest.skip(f"no OPML files in {folder}")
    malformed = {"opml-element-missing.opml": "not an OPML file", "body-element-missing.opml": "no <body>"}
    imported = {}
    for path in files:
        config = tmp_path / f"{path.stem}.yaml"
        config.write_text(EXISTING_CONFIG, encoding="utf-8")
        result = agg("--config", config, "import", "opml", path)
        if path.name in malformed:
            assert result.exit_code == 1 and malformed[path.name] in result.stderr, result.output
            assert config.read_text(encoding="utf-8") == EXISTING_CONFIG
            continue
        assert result.exit_code == 0, (path.name, result.output)
        imported[path.name] = {f.url: f for f in load_config(config).feeds[2:]}
    example = imported["example.opml"]
    assert len(example) == 7
    assert example["https://blogs.example.com/~mike/.rss"].tags == ["Blogs", "friends"]
    assert example["https://blogs.example.com/~mike/.rss"].title == "Notes by Mike"
    assert imported["category.opml"]["http://feeds.bbci.co.uk/news/business/rss.xml?edition=int"].tags == [
        "tag one", "tag_two", "tag/three"]
    assert imported["test-urls+.opml"]["http://onemorefeed.at/feed/"].tags == ["tag1", "tag3"]
    assert list(imported["piped.opml"]) == ["https://example.com/feed.atom"]  # the |command is skipped


# -- writing ---------------------------------------------------------------------


def test_write_atomic_replaces_the_file_whole_and_keeps_its_mode(tmp_path):
    target = tmp_path / "digest.json"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)
    write_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["digest.json"]


def test_write_atomic_leaves_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "feed.atom"
    target.write_bytes(b"old")

    def refuse(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["feed.atom"]


def test_write_atomic_dash_is_stdout(capsysbinary):
    write_atomic("-", b"<opml/>\n")
    assert capsysbinary.readouterr().out == b"<opml/>\n"


# -- the command line ------------------------------------------------------------


def test_story_exports_from_the_command_line(tmp_path, db_path, agg):
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: []\n", encoding="utf-8")
    base = ["--config", config, "--db", db_path, "export"]

    digest = agg(*base, "digest")
    assert digest.exit_code == 0, digest.output
    document = json.loads(digest.stdout)
    jsonschema.validate(document, DIGEST_SCHEMA)
    assert document["story_count"] == 3  # the default window is 24h

    out = tmp_path / "busy.json"
    assert agg(*base, "digest", "--since", "30d", "--min-outlets", "2", "-o", out).exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["story_count"] == 2

    jsonfeed = agg(*base, "jsonfeed", "--title", "My news", "--since", "30d")
    assert jsonfeed.exit_code == 0, jsonfeed.output
    feed = json.loads(jsonfeed.stdout)
    jsonschema.validate(feed, JSON_FEED_SCHEMA)
    assert feed["title"] == "My news" and len(feed["items"]) == 4

    atom_file = tmp_path / "agg.atom"
    atom = agg(*base, "atom", "--min-outlets", "3", "-o", atom_file)
    assert atom.exit_code == 0, atom.output
    assert [e.title for e in feedparser.parse(atom_file.read_bytes()).entries] == [
        "Kestrel Street bridge closed after crack found"]

    unwritable = agg(*base, "atom", "-o", tmp_path / "no" / "such" / "dir" / "agg.atom")
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.stderr


def test_exports_through_the_real_pipeline(tmp_path, server, agg):
    if not hasattr(dedup, "group_new_entries"):
        pytest.skip("story grouping (dedup.group_new_entries) is not there yet")
    published = NOW - timedelta(hours=2)
    story = "Kestrel Street bridge closed after inspectors find cracked girder"
    urls = []
    for name in ("north", "south"):
        item = {"guid": f"{name}-1", "title": story, "link": f"http://{name}.test/bridge",
                "pubDate": published.strftime("%a, %d %b %Y %H:%M:%S +0000"),
                "description": BRIDGE_TEXT}
        other = {"guid": f"{name}-2", "title": f"{name.title()} council names a new mayor", "link":
                 f"http://{name}.test/mayor", "pubDate": published.strftime("%a, %d %b %Y %H:%M:%S +0000")}
        urls.append(server.route(f"/{name}.xml", Reply(body=rss_document([item, other], title=f"{name.title()} Times"))))
    config = tmp_path / "feeds.yaml"
    config.write_text("defaults:\n  extract: false\nfeeds:\n" + "".join(f"  - url: {u}\n" for u in urls),
                      encoding="utf-8")
    db = tmp_path / "agg.db"
    assert agg("--config", config, "--db", db, "fetch").exit_code == 0
    atom = agg("--config", config, "--db", db, "export", "atom")
    digest = json.loads(agg("--config", config, "--db", db, "export", "digest").stdout)
    jsonschema.validate(digest, DIGEST_SCHEMA)
    assert digest["report_count"] == 4
    parsed = feedparser.parse(atom.stdout_bytes)
    assert len(parsed.entries) == digest["story_count"]
    assert {e.id for e in parsed.entries} == {f"urn:agg:story:{s['id']}" for s in digest["stories"]}
