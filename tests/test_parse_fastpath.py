"""The fast path of the parse stage (``read_common_rss``) against feedparser's path, field for field.

Wherever the gate admits a document, the ParsedFeed must equal what the
feedparser path (``_parse_xml_feed``) makes of the same bytes and headers:
ParsedFeed and ParsedEntry are dataclasses, so ``==`` compares every field
(guid, link, title, summary, content, their text twins, author, dates, tags,
enclosures; feed format, title, link, ttl, problem).
"""

from __future__ import annotations

import gzip
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import parse
from aggregator.parse import parse_feed, read_common_rss

FEED_URL = "https://news.example.com/section/feed.xml"

# What servers put in Content-Type, and none at all (files, careless servers).
HEADER_VARIANTS = [
    {},
    {"content-type": "application/rss+xml"},
    {"content-type": "application/rss+xml; charset=UTF-8"},
    {"content-type": "text/xml"},
    {"content-type": "text/xml; charset=utf-8"},
    {"content-type": "text/html"},
    {"content-type": "application/xml; charset=ISO-8859-1"},
]
GZIPPED = {"compressed.xml", "invalid-characters-gzipped.xml"}


def feedparser_path(body: bytes, url: str, headers: dict[str, str]):
    return parse._parse_xml_feed(body, url, dict(headers))


def assert_same(body: bytes, url: str, headers: dict[str, str]) -> bool:
    """Whether the fast path took the document; when it did, that it agrees with feedparser."""
    fast = read_common_rss(body, url, headers)
    if fast is None:
        return False
    slow = feedparser_path(body, url, headers)
    assert fast.entries == slow.entries
    assert fast == slow
    return True


# --- every feeds-dev document -------------------------------------------------


def feeds_dev_documents(root):
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix not in (".opml", ".md", ".json") and "expected-output" not in path.parts:
            body = path.read_bytes()
            yield path.relative_to(root).as_posix(), gzip.decompress(body) if path.name in GZIPPED else body


def test_fast_path_agrees_with_feedparser_on_every_feeds_dev_document(shared_data, capsys):
    root = shared_data / "feeds-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    taken: dict[str, int] = {}
    documents = 0
    for name, body in feeds_dev_documents(root):
        documents += 1
        url = f"https://feeds.example.net/{name}"
        for headers in HEADER_VARIANTS:
            if assert_same(body, url, headers):
                taken[name] = taken.get(name, 0) + 1
    with capsys.disabled():
        print(f"\nfast path taken for {len(taken)}/{documents} feeds-dev documents "
              f"({sum(taken.values())} document/header pairs), all equal to feedparser's result")
    # A floor, so that a gate made too strict by accident shows up (12 when written).
    assert len(taken) >= 10


# --- synthetic feeds ---------------------------------------------------------

# Text that exercises feedparser's rules: entities, markup it does or does not
# take for HTML, whitespace, Latin-1 mojibake, C1 controls, non-Latin scripts.
TRICKY_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\x85\x92\t\n "), max_size=40),
    st.sampled_from([
        "Caf\u00c3\u00a9 opens", "Tom &amp; Jerry", "<b>bold</b> move", "a < b & c", "&eacute;t&eacute;",
        "Rock &amp;amp; roll", "<script>x</script>", "  padded  ", "\u201cquoted\u201d", "\x93smart\x94",
        "日本語のタイトル", "1 &lt; 2", "<p>para</p><img src='/x.jpg'>", "&nosuch; entity", "",
    ]),
)
LINKS = st.sampled_from([
    "https://news.example.com/a/1", "/relative/path", "story.html", "https://x.example/?a=1&b=2",
    "https://x.example/?a=1&amp;b=2", "https://x.example/?a=1&b;=2", "  https://x.example/pad  ",
    "http:////x.example/many-slashes", "gemini://x.example/", "", "mailto:desk@example.com",
])
DATES = st.sampled_from([
    "Fri, 01 Mar 2024 10:00:00 +0000", "Fri, 01 Mar 2024 10:00:00 GMT", "01 Mar 2024 10:00 EST",
    "2024-03-01T10:00:00Z", "2024-03-01", "yesterday", "", "Mon, 31 Feb 2024 10:00:00 +0000",
])
AUTHORS = st.sampled_from([
    "desk@example.com (News desk)", "Jane Doe", "jane@example.com", "Jane <jane@example.com>", "  ", "(Anon)",
])


@st.composite
def rss_items(draw) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"<title>{escape(draw(TRICKY_TEXT))}</title>")
    if draw(st.booleans()):
        parts.append(f"<link>{escape(draw(LINKS))}</link>")
    if draw(st.booleans()):
        permalink = draw(st.sampled_from(["", ' isPermaLink="false"', ' isPermaLink="true"', ' isPermaLink="False"']))
        parts.append(f"<guid{permalink}>{escape(draw(st.one_of(LINKS, TRICKY_TEXT)))}</guid>")
    if draw(st.booleans()):
        parts.append(f"<description>{escape(draw(TRICKY_TEXT))}</description>")
    if draw(st.booleans()):
        parts.append(f"<content:encoded><![CDATA[{draw(TRICKY_TEXT).replace(']]>', '')}]]></content:encoded>")
    if draw(st.booleans()):
        parts.append(f"<pubDate>{escape(draw(DATES))}</pubDate>")
    if draw(st.booleans()):
        parts.append(f"<dc:date>{escape(draw(DATES))}</dc:date>")
    if draw(st.booleans()):
        element = draw(st.sampled_from(["author", "dc:creator"]))
        parts.append(f"<{element}>{escape(draw(AUTHORS))}</{element}>")
    for _ in range(draw(st.integers(0, 3))):
        domain = draw(st.sampled_from(["", ' domain="https://tags.example/"']))
        parts.append(f"<category{domain}>{escape(draw(TRICKY_TEXT))}</category>")
    for _ in range(draw(st.integers(0, 2))):
        url = draw(st.sampled_from(["https://cdn.example/a.mp3", "/b.mp3", ""]))
        kind = draw(st.sampled_from(["audio/mpeg", "Audio/MPEG", ""]))
        parts.append(f'<enclosure url={quoteattr(url)} type={quoteattr(kind)} length="{draw(st.sampled_from(["12", "-1", "x", ""]))}"/>')
    return "<item>" + "".join(draw(st.permutations(parts))) + "</item>"


def rss(channel: str, items: list[str], declaration: str = '<?xml version="1.0" encoding="utf-8"?>') -> bytes:
    return (
        f'{declaration}\n<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">'
        f"<channel>{channel}{''.join(items)}</channel></rss>"
    ).encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=TRICKY_TEXT, link=LINKS, ttl=st.sampled_from(["", "30", " 15 ", "-5", "soon"]),
    items=st.lists(rss_items(), max_size=4), headers=st.sampled_from(HEADER_VARIANTS),
)
def test_fast_path_agrees_with_feedparser_on_generated_rss(title, link, ttl, items, headers):
    channel = (f"<title>{escape(title)}</title><link>{escape(link)}</link><ttl>{escape(ttl)}</ttl>"
               '<atom:link rel="self" href="https://news.example.com/feed.xml"/>')
    body = rss(channel, items)
    took = assert_same(body, FEED_URL, headers)
    charset_ok = "ISO-8859-1" not in headers.get("content-type", "")
    ascii_or_declared = body.isascii() or not headers.get("content-type", "").startswith("text/") or "charset" in headers.get("content-type", "")
    assert took == (charset_ok and ascii_or_declared)


def test_a_typical_news_feed_takes_the_fast_path_with_every_field():
    published = datetime(2024, 3, 1, 10, tzinfo=UTC)
    items = [
        f"<item><title>Storm &amp; flood number {n}</title><link>/news/{n}</link>"
        f'<guid isPermaLink="false">story-{n}</guid><pubDate>{format_datetime(published - timedelta(hours=n))}</pubDate>'
        f"<author>desk@example.com (News desk)</author><category>weather</category>"
        f"<description>{escape('<p>Rain <b>all</b> day</p>')}</description>"
        f"<content:encoded><![CDATA[<p>Long text {n}</p>]]></content:encoded>"
        f'<enclosure url="/audio/{n}.mp3" type="audio/mpeg" length="1234"/></item>'
        for n in range(3)
    ]
    body = rss("<title>Daily</title><link>https://news.example.com/</link><ttl>60</ttl>", items)
    assert assert_same(body, FEED_URL, {"content-type": "application/rss+xml"})
    feed = parse_feed(body, FEED_URL, {"content-type": "application/rss+xml"})
    first = feed.entries[0]
    assert (feed.format, feed.title, feed.link, feed.ttl_seconds) == ("rss20", "Daily", "https://news.example.com/", 3600)
    assert (first.guid, first.link, first.title) == ("story-0", "https://news.example.com/news/0", "Storm & flood number 0")
    assert (first.author, first.published, first.tags) == ("News desk", published, ["weather"])
    assert (first.summary_text, first.content_text) == ("Rain all day", "Long text 0")
    assert first.enclosures[0].url == "https://news.example.com/audio/0.mp3"


def test_parse_feed_does_not_call_feedparser_for_the_common_case(monkeypatch):
    body = rss("<title>T</title>", ["<item><title>A</title><guid>g1</guid></item>"])

    def refuse(*args, **kwargs):
        raise AssertionError("feedparser was called")

    monkeypatch.setattr(parse, "_parse_xml_feed", refuse)
    assert [entry.guid for entry in parse_feed(body, FEED_URL).entries] == ["g1"]


ONE_ITEM = "<item><title>A</title><guid>g1</guid></item>"


@pytest.mark.parametrize(
    ("reason", "body", "headers"),
    [
        ("declared Latin-1", rss("", [ONE_ITEM], '<?xml version="1.0" encoding="ISO-8859-1"?>'), {}),
        ("charset header says otherwise", rss("", [ONE_ITEM]), {"content-type": "text/xml; charset=windows-1252"}),
        ("text/* without charset, not ASCII", rss("<title>Café</title>", [ONE_ITEM]), {"content-type": "text/xml"}),
        ("bytes that are not UTF-8", rss("", [ONE_ITEM]).replace(b"A</title>", b"\xe9</title>"), {}),
        ("ill-formed", rss("", [ONE_ITEM]).replace(b"</title>", b"", 1), {}),
        ("xml:base", rss("", ['<item xml:base="https://other.example/"><guid>g</guid></item>']), {}),
        ("a DOCTYPE", b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss version="2.0"><channel>'
                      b"<item><title>&e;</title></item></channel></rss>", {}),
        ("RSS 0.91", rss("", [ONE_ITEM]).replace(b'version="2.0"', b'version="0.91"'), {}),
        ("an element feedparser may read as a title", rss("", ["<item><dc:title>B</dc:title><title>A</title></item>"]), {}),
        ("an unknown element", rss("", ["<item><title>A</title><foo>x</foo></item>"]), {}),
        ("markup inside a title", rss("", ["<item><title>A <b>bold</b></title></item>"]), {}),
        ("a comment inside a title", rss("", ["<item><title>A<!-- c -->B</title></item>"]), {}),
        ("two titles", rss("", ["<item><title>A</title><title>B</title></item>"]), {}),
        ("two descriptions", rss("", ["<item><description>A</description><description>B</description></item>"]), {}),
        ("author and dc:creator", rss("", ["<item><author>a@b.example</author><dc:creator>C</dc:creator></item>"]), {}),
        ("a typed description", rss("", ['<item><description type="text/plain">A</description></item>']), {}),
        ("an Atom alternate link in the channel", rss('<atom:link href="https://x.example/"/>', [ONE_ITEM]), {}),
        ("an Atom link in an item", rss("", ['<item><atom:link rel="enclosure" href="https://x.example/a.mp3"/></item>']), {}),
        ("two channel titles", rss("<title>A</title><title>B</title>", [ONE_ITEM]), {}),
        ("a processing instruction", rss("", ["<item><?php echo 1 ?><title>A</title></item>"]), {}),
        ("an Atom feed", b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title></feed>', {}),
    ],
)
def test_what_the_gate_leaves_to_feedparser(reason, body, headers):
    assert read_common_rss(body, FEED_URL, headers) is None, reason
    assert parse_feed(body, FEED_URL, headers) == feedparser_path(body, FEED_URL, headers)


def test_parse_feed_never_raises_through_the_fast_path():
    for body in (b"<rss version='2.0'/>", b"<rss version='2.0'><channel/></rss>", rss("", ["<item/>"] * 3)):
        feed = parse_feed(body, FEED_URL)
        assert feed == feedparser_path(body, FEED_URL, {})
