"""feeds.yaml: what a valid file gives, how every kind of mistake is reported, and how the CLI finds it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aggregator.config import ConfigError, load_config, parse_duration, parse_size
from tests.conftest import rss_document
from tests.server import Reply

VALID = """\
# a comment the loader must not mind
defaults:
  interval: 45m
  extract: false
  concurrency: 5
  per_host: 3
  read_timeout: 12s
  max_body: 2MiB
hosts:
  slow.example.org:
    per_host: 1
    delay: 2s
feeds:
  - url: https://news.example.com/rss.xml
    title: Example News
    tags: [world, business]
    interval: 2h
    extract: true
  - url: http://other.example.net/atom
    tags: science
  - url: https://off.example.com/feed
    enabled: false
  - local/feed.xml
"""


def write(tmp_path: Path, text: str, name: str = "feeds.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_gives_settings_and_feeds(tmp_path):
    config = load_config(write(tmp_path, VALID))
    settings = config.settings
    assert (settings.interval, settings.extract, settings.concurrency, settings.per_host) == (2700, False, 5, 3)
    assert settings.read_timeout == 12 and settings.max_body == 2 * 2**20
    assert settings.host_policy("SLOW.example.org").max_in_flight == 1
    assert settings.host_policy("slow.example.org").min_delay == 2
    assert settings.host_policy("elsewhere.example").max_in_flight == 3

    first, second, third, local = config.feeds
    assert (first.url, first.title, first.tags, first.interval, first.extract, first.enabled) == (
        "https://news.example.com/rss.xml", "Example News", ["world", "business"], 7200, True, True)
    # Unset per-feed values come from the defaults block.
    assert (second.tags, second.interval, second.extract) == (["science"], None, False)
    assert third.enabled is False
    assert local.url == (tmp_path / "local" / "feed.xml").resolve().as_uri()
    assert config.feed("http://other.example.net/atom") is second


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path):
    path = write(tmp_path, """\
defaults:
  interval: 30x
  colour: blue
feeds:
  - url: http://a.example/feed
    titel: A
  - url: "ftp://b.example/feed"
  - url: http://a.example/feed
  - url: http://c.example/feed
    interval: soon
    extract: maybe
  - url: "http://"
  - title: no url here
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    expected = [
        (2, "interval", "not a duration"),
        (3, "colour", "unknown setting"),
        (6, "titel", "unknown feed key"),
        (7, "url", "only http, https"),
        (8, "url", "duplicate feed"),
        (10, "interval", "not a duration"),
        (11, "extract", "not true or false"),
        (12, "url", "no host"),
        (13, None, "no url"),
    ]
    assert len(problems) == len(expected), problems
    for line, key, words in expected:
        prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
        assert any(p.startswith(prefix) and words in p for p in problems), (line, key, words, problems)
    assert caught.value.path == path


def test_duplicate_names_the_first_line(tmp_path):
    path = write(tmp_path, "feeds:\n  - url: http://a.example/x\n  - http://b.example/y\n  - url: http://a.example/x\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:4: url: duplicate feed http://a.example/x: the same feed as line 2"]


def test_a_feed_spelled_otherwise_is_a_duplicate_naming_the_line_it_repeats(tmp_path):
    path = write(tmp_path, "feeds:\n  - url: https://a.example/feed.xml\n  - url: https://a.example/?feed=atom\n"
                           "  - url: HTTP://A.EXAMPLE:80/feed.xml?utm_source=rss&fbclid=x1\n"
                           "  - url: https://a.example/?feed=rss2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:4: url: duplicate feed HTTP://A.EXAMPLE:80/feed.xml?utm_source=rss&fbclid=x1: "
        "the same feed as line 2, as https://a.example/feed.xml"]


@pytest.mark.parametrize("text, words", [
    ("feeds: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("feeds: http://a.example/\n", "must be a list"),
    ("defaults:\n  per_host: 0\n", "at least 1"),
    ("defaults:\n  jitter: 2\n", "between 0 and 1"),
    ("defaults:\n  max_body: lots\n", "not a size"),
    ("defaults:\n  min_interval: 2d\n  max_interval: 1h\n", "longer than max_interval"),
    ("hosts:\n  a.example:\n    speed: 3\n", "unknown host setting"),
    ("feeds:\n  - url: http://a.example/x\n    tags: {a: 1}\n", "list of words"),
    ("feeds:\n  - url: http://exa mple.com/x\n", "white space"),
    ("feeds:\n  - url: http://a.example:99999/x\n", "bad port"),
    ("nonsense: 1\n", "unknown key"),
    ("feeds:\n  - url: news.example.com/rss\n", "without its scheme: write https://news.example.com/rss"),
    ("feeds:\n  - url: file://feeds/x.xml\n", "takes an absolute path"),
])
def test_each_kind_of_mistake_is_a_config_error(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(words in p and p.startswith(str(path)) for p in caught.value.problems), caught.value.problems


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("1d", 86400), ("1.5h", 5400), (45, 45), ("2 h", 7200),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "m5", "30m!", True, -1])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes():
    assert parse_size("10MiB") == 10 * 2**20 and parse_size("500kB") == 500_000 and parse_size(1024) == 1024


# -- through the command line ------------------------------------------------------------------


def entry_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM entries").fetchone()[0]


def test_bad_config_exits_1_with_every_problem_and_fetches_nothing(tmp_path, server, agg):
    good = server.route("/good.xml", Reply(body=rss_document([{"guid": "g1", "title": "Kept out"}])))
    cfg = write(tmp_path, f"feeds:\n  - url: {good}\n    extract: false\n  - url: {good}\n    colour: red\n")
    db = tmp_path / "agg.db"
    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 1
    assert f"{cfg}:4: url: duplicate feed" in result.stderr
    assert f"{cfg}:5: colour: unknown feed key" in result.stderr
    assert "nothing was done" in result.stderr
    assert server.requests == [] and entry_count(db) == 0


def test_config_and_db_from_options_and_environment(tmp_path, server, agg, monkeypatch):
    url_a = server.route("/a.xml", Reply(body=rss_document([{"guid": "a1", "title": "Alpha one"}])))
    url_b = server.route("/b.xml", Reply(body=rss_document(
        [{"guid": "b1", "title": "Beta one"}, {"guid": "b2", "title": "Beta two"}])))
    cfg_a = write(tmp_path, f"feeds:\n  - url: {url_a}\n    extract: false\n", "a.yaml")
    cfg_b = write(tmp_path, f"feeds:\n  - url: {url_b}\n    extract: false\n", "b.yaml")
    monkeypatch.chdir(tmp_path)  # so the defaults (./feeds.yaml, data/agg.db) would be visible if used

    assert agg("--config", cfg_a, "--db", tmp_path / "opt.db", "fetch").exit_code == 0
    assert entry_count(tmp_path / "opt.db") == 1

    env = {"AGG_CONFIG": str(cfg_b), "AGG_DB": str(tmp_path / "env.db")}
    assert agg("fetch", env=env).exit_code == 0
    assert entry_count(tmp_path / "env.db") == 2

    # Options win over the environment.
    assert agg("--config", cfg_a, "--db", tmp_path / "both.db", "fetch", env=env).exit_code == 0
    assert entry_count(tmp_path / "both.db") == 1
    assert not (tmp_path / "data").exists() and not (tmp_path / "feeds.yaml").exists()


def test_missing_default_config_is_reported(tmp_path, agg, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGG_CONFIG", raising=False)
    result = agg("fetch")
    assert result.exit_code == 1 and "feeds.yaml: no such file" in result.stderr


def test_local_feeds_by_plain_path_and_file_url(tmp_path, agg):
    feeds_dir = tmp_path / "feeds"
    feeds_dir.mkdir()
    (feeds_dir / "relative.xml").write_bytes(rss_document([{"guid": "r1", "title": "Relative path item"}]))
    absolute = tmp_path / "absolute.xml"
    absolute.write_bytes(rss_document([{"guid": "p1", "title": "Absolute path item"}]))
    by_url = tmp_path / "by url.xml"
    by_url.write_bytes(rss_document([{"guid": "u1", "title": "File URL item"}, {"guid": "u2", "title": "Second"}]))
    cfg = write(tmp_path, f"""\
defaults:
  extract: false
feeds:
  - feeds/relative.xml
  - url: {absolute}
  - url: {by_url.as_uri()}
""")
    db = tmp_path / "agg.db"
    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    assert entry_count(db) == 4
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM feeds WHERE last_error IS NULL AND last_status = 200").fetchone() == (3,)


@pytest.mark.parametrize("path", ["feeds.yaml", "data/samples/feeds.yaml"])
def test_fast_and_round_trip_readings_agree(path):
    from aggregator.config import _validate, load_yaml_document

    source = Path(__file__).resolve().parent.parent / path
    fast = _validate(source, load_yaml_document(source, round_trip=False))
    slow = _validate(source, load_yaml_document(source))
    for config in (fast, slow):
        for feed in config.feeds:
            feed.line = None  # only the round-trip reading knows lines
    assert fast == slow and len(fast.feeds) >= 7
