"""Property-based tests (hypothesis) for what the other test files do not already cover.

Already elsewhere, not repeated here:
- URL canonicalisation never raises and is idempotent: tests/test_urls.py::test_never_raises_and_idempotent;
- parse_feed on arbitrary and feed-like bytes, the JSON Feed parser on arbitrary JSON:
  tests/test_parse.py::test_parse_feed_never_raises_on_bytes, ...on_feed_like_bytes,
  test_json_feed_parser_never_raises, test_json_parser_never_raises_on_arbitrary_json;
- extract_article on arbitrary bytes and markup: tests/test_extract.py::test_arbitrary_bytes_never_raise,
  test_arbitrary_markup_never_raises.

Added: structured fuzzing (real feed documents, mutated), the JSON Feed parser on raw bytes, entity
declarations that never expand past their budget, autodiscovery on hostile HTML, and the two output
guards: :func:`aggregator.cli.terminal_safe` and the exports' item HTML.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import html

from aggregator.cli import terminal_safe
from aggregator.export import ExportReport, ExportStory, story_html
from aggregator.models import ParsedFeed
from aggregator.parse import (
    MAX_ENTITY_EXPANSION,
    MAX_TITLE_CHARS,
    discover_feed_links,
    parse_feed,
    parse_json_feed,
)
from tests.conftest import PROJECT_ROOT

FEED_URL = "https://feeds.example/feed"
SAMPLES = sorted((PROJECT_ROOT / "data" / "samples" / "feeds").glob("*"))
SAMPLE_BYTES = [path.read_bytes().replace(b"{{BASE_URL}}", b"https://site.example") for path in SAMPLES]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def assert_well_formed(feed: ParsedFeed) -> None:
    """What every stage after parsing relies on, whatever the input."""
    assert isinstance(feed, ParsedFeed)
    for entry in feed.entries:
        assert entry.guid
        assert entry.link is None or entry.link.startswith(("http://", "https://"))
        assert len(entry.title) <= MAX_TITLE_CHARS and not CONTROL.search(entry.title)
        for moment in (entry.published, entry.updated):
            assert moment is None or moment.utcoffset().total_seconds() == 0


# --- structured fuzz: real feeds, mutated ------------------------------------------------------

@st.composite
def mutated_feed(draw) -> bytes:
    """A sample feed with a few spans deleted, duplicated, replaced by random bytes, or cut off."""
    assert SAMPLE_BYTES, "data/samples/feeds is part of the project"
    data = bytearray(draw(st.sampled_from(SAMPLE_BYTES)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        start = draw(st.integers(0, len(data) - 1))
        end = min(len(data), start + draw(st.integers(0, 200)))
        action = draw(st.sampled_from(["delete", "duplicate", "replace", "truncate", "insert-markup"]))
        if action == "delete":
            del data[start:end]
        elif action == "duplicate":
            data[start:start] = data[start:end]
        elif action == "replace":
            data[start:end] = draw(st.binary(max_size=end - start + 8))
        elif action == "truncate":
            del data[start:]
        else:
            data[start:start] = draw(st.sampled_from([
                b"<!DOCTYPE rss [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>", b"&x;", b"<![CDATA[", b"]]>",
                b"\xef\xbb\xbf", b"\xff\xfe", b"<script>", b"</item>", b"<item>", b'encoding="utf-16"', b"\x00",
            ]))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_feed(), content_type=st.sampled_from(["", "application/rss+xml", "application/json",
                                                          "text/html; charset=utf-16", "text/xml; charset=bogus"]))
def test_mutated_real_feeds_parse_without_raising(body: bytes, content_type: str) -> None:
    feed = parse_feed(body, FEED_URL, {"content-type": content_type})
    assert_well_formed(feed)
    assert not any("root:x:0:0" in entry.summary + entry.content for entry in feed.entries)  # no file was read


def test_unmutated_samples_parse_with_entries() -> None:
    """The fuzz starts from documents that do parse, so mutations test damage, not noise."""
    for path, body in zip(SAMPLES, SAMPLE_BYTES):
        feed = parse_feed(body, FEED_URL)
        assert feed.entries, path.name
        assert_well_formed(feed)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda depth, tail: b"[" * depth + tail, st.integers(0, 100_000), st.binary(max_size=20)),
    st.builds(lambda depth: b'{"version":"https://jsonfeed.org/version/1.1","items":' + b"[" * depth,
              st.integers(0, 50_000)),
))
def test_json_feed_parser_never_raises_on_bytes(body: bytes) -> None:
    assert_well_formed(parse_json_feed(body, FEED_URL))


# --- entity declarations: whatever is declared, the text never grows past the budget ---------------

ENTITY_VALUES = st.one_of(st.text(alphabet="ab <&;%#x0123", max_size=300), st.just("A" * 5000), st.just("B" * 200),
                          st.sampled_from(["&#160;", "&#x2014;", "&a;&a;", "%p;", "file:///etc/passwd"]))


@st.composite
def entity_document(draw) -> bytes:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "lol", "x"]), min_size=1, max_size=5, unique=True))
    declarations = "".join(
        f'<!ENTITY {name} {draw(st.sampled_from(["", "SYSTEM "]))}"{draw(ENTITY_VALUES).replace(chr(34), "")}">'
        for name in names)
    references = "".join(f"&{draw(st.sampled_from(names))};" * draw(st.sampled_from([1, 7, 300, 3000]))
                         for _ in range(3))
    return (f'<?xml version="1.0"?><!DOCTYPE rss [{declarations}]><rss version="2.0"><channel><title>t</title>'
            f"<item><guid>g</guid><title>{references[:500]}</title><description>{references}</description>"
            "</item></channel></rss>").encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entity_document())
def test_entities_never_expand_past_the_budget(body: bytes) -> None:
    feed = parse_feed(body, FEED_URL)
    assert_well_formed(feed)
    for entry in feed.entries:
        for text in (entry.summary, entry.summary_text, entry.content, entry.title):
            assert len(text) <= len(body) + MAX_ENTITY_EXPANSION


# --- autodiscovery on hostile pages --------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([
    '<link rel="alternate" type="application/rss+xml" href="/feed.xml">',
    '<link rel="alternate" type="application/atom+xml" href="javascript:alert(1)">',
    '<link rel="alternate" type="application/rss+xml" href="file:///etc/passwd">',
    '<link rel="ALTERNATE stylesheet" type="application/feed+json; charset=utf-8" href="//cdn.example/f.json">',
    '<base href="http://[::1">', '<base href="https://other.example/dir/">', "<html>", "<head>", "</head>",
    "<body>", "\x00", "<!--", "<link", "href=", '"', "\ufffe", "<svg><link rel=alternate href=/x></svg>",
]), max_size=30).map("".join), st.booleans())
def test_discovery_returns_only_absolute_http_links(page: str, as_bytes: bool) -> None:
    links = discover_feed_links(page.encode("utf-8", "surrogatepass") if as_bytes else page, "https://site.example/")
    assert all(link.startswith(("http://", "https://")) for link in links)
    assert len(links) == len(set(links))


# --- output guards --------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.lists(
    st.sampled_from(["\x1b[", "31m", "\x1b]", "0;t", "\x07", "\x1b\\", "\x9b", "\r", "\n", "text", "\x1bP", "\x00"]),
    max_size=30).map("".join))
def test_terminal_safe_leaves_no_control_characters(text: str) -> None:
    safe = terminal_safe(text)
    assert not CONTROL.search(safe) and "\n" not in safe and "\t" not in safe
    assert terminal_safe(safe) == safe
    kept = terminal_safe(text, keep_newlines=True)
    assert not CONTROL.search(kept.replace("\n", ""))


HOSTILE_TEXT = st.text(max_size=80) | st.sampled_from([
    "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)", "</p><iframe>",
    "&lt;script&gt;", "\x00\ufffe\ud800", "' onmouseover='x",
])
HOSTILE_URL = HOSTILE_TEXT | st.sampled_from([
    "javascript:alert(1)", " JAVASCRIPT:alert(1)", "data:text/html,<script>x</script>", "vbscript:x",
    'https://ok.example/"><script>x</script>', "https://ok.example/a?b=<c>", "//evil.example/", None,
])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(HOSTILE_TEXT, HOSTILE_TEXT, HOSTILE_URL), min_size=1, max_size=4), HOSTILE_TEXT,
       HOSTILE_TEXT)
def test_export_item_html_is_always_inert(reports, lead, credited) -> None:
    story = ExportStory(
        id=1, title="t", first_seen="2026-01-01T00:00:00+00:00", last_seen="2026-01-01T00:00:00+00:00",
        reports=[ExportReport(id=n, outlet=outlet, feed_url=f"https://f{n}.example/", title=title, url=url,
                              published=None, first_seen="2026-01-01T00:00:00+00:00", extract_status="ok")
                 for n, (outlet, title, url) in enumerate(reports)],
        original_entry_id=0, credited_outlet=credited, lead_text=lead)
    fragment = story_html(story)
    tree = html.fragment_fromstring(fragment, create_parent="div")
    assert {element.tag for element in tree.iter()} <= {"div", "p", "ul", "li", "a", "small"}
    for element in tree.iter():
        assert set(element.attrib) <= {"href", "rel"}
        href = element.get("href", "https://")
        assert href.startswith(("http://", "https://")), href
