"""Tests of aggregator.parse: RSS, Atom and JSON Feed reading, hostile input, autodiscovery."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.models import Enclosure, ParsedFeed
from aggregator.parse import (
    COMMON_FEED_PATHS,
    MAX_TITLE_CHARS,
    defuse_entity_declarations,
    discover_feed_links,
    html_to_text,
    looks_like_html,
    parse_feed,
    parse_json_feed,
)

FEED_URL = "https://news.example.com/section/feed.xml"
SHARED_DATA = Path(os.environ.get("AGG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FEEDS_DEV = SHARED_DATA / "feeds-dev"
GZIPPED_DOCUMENTS = {"compressed.xml", "invalid-characters-gzipped.xml"}


def by_guid(feed: ParsedFeed) -> dict:
    return {entry.guid: entry for entry in feed.entries}


# --- RSS 2.0 -------------------------------------------------------------------

RSS20 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>News &amp; Views</title>
  <link>https://news.example.com/</link>
  <ttl>30</ttl>
  <item>
    <title>&lt;b&gt;Bold&lt;/b&gt;   headline &amp;amp; more</title>
    <link>/2024/story-1</link>
    <guid isPermaLink="false">story-1</guid>
    <description>&lt;p&gt;Short &lt;em&gt;summary&lt;/em&gt;&lt;/p&gt;&lt;p&gt;second&lt;/p&gt;</description>
    <content:encoded><![CDATA[<div><p>Full <a href="/x">text</a></p><script>evil()</script><p>here</p></div>]]></content:encoded>
    <pubDate>Tue, 10 Jun 2003 04:00:00 +0200</pubDate>
    <dc:creator>Ann Writer</dc:creator>
    <category>Politics</category><category>World</category><category>Politics</category>
    <enclosure url="/media/one.mp3" type="audio/mpeg" length="12345"/>
  </item>
  <item>
    <title>No guid, only a link</title>
    <link>https://news.example.com/2024/story-2</link>
  </item>
  <item>
    <title>Neither guid nor link</title>
    <description>words</description>
  </item>
  <item>
    <title>Script link</title>
    <link>javascript:alert(1)</link>
    <description>dangerous</description>
  </item>
</channel>
</rss>"""


def test_rss20_feed_level_fields() -> None:
    feed = parse_feed(RSS20, FEED_URL, {"Content-Type": "application/rss+xml; charset=utf-8"})
    assert feed.format == "rss20"
    assert feed.title == "News & Views"
    assert feed.link == "https://news.example.com/"
    assert feed.ttl_seconds == 30 * 60
    assert feed.problem is None
    assert len(feed.entries) == 4


def test_rss20_first_entry_is_normalised() -> None:
    entry = by_guid(parse_feed(RSS20, FEED_URL))["story-1"]
    assert entry.link == "https://news.example.com/2024/story-1"
    assert entry.title == "Bold headline & more"
    assert "<em>summary</em>" in entry.summary
    assert entry.summary_text == "Short summary second"
    assert '<a href="/x">' in entry.content  # HTML kept as the feed gave it
    assert entry.content_text == "Full text here"
    assert entry.author == "Ann Writer"
    assert entry.published == datetime(2003, 6, 10, 2, 0, tzinfo=UTC)
    assert entry.tags == ["Politics", "World"]
    assert entry.enclosures == [Enclosure("https://news.example.com/media/one.mp3", "audio/mpeg", 12345)]


def test_rss20_guid_falls_back_to_link_then_to_a_content_hash() -> None:
    entries = parse_feed(RSS20, FEED_URL).entries
    assert entries[1].guid == "https://news.example.com/2024/story-2"
    assert entries[2].guid.startswith("sha256:") and len(entries[2].guid) == len("sha256:") + 64
    assert entries[2].link is None
    # The hash depends on what the entry says, so it is stable across fetches.
    assert parse_feed(RSS20, FEED_URL).entries[2].guid == entries[2].guid


def test_javascript_link_is_dropped() -> None:
    entry = parse_feed(RSS20, FEED_URL).entries[3]
    assert entry.link is None
    assert "javascript" not in entry.guid


def test_ttl_ignored_unless_positive_integer() -> None:
    for ttl in (b"0", b"-5", b"soon", b""):
        body = RSS20.replace(b"<ttl>30</ttl>", b"<ttl>" + ttl + b"</ttl>")
        assert parse_feed(body, FEED_URL).ttl_seconds is None


def test_overlong_title_is_capped() -> None:
    body = RSS20.replace(b"No guid, only a link", b"word " * 1000)
    assert len(parse_feed(body, FEED_URL).entries[1].title) == MAX_TITLE_CHARS


def test_relative_guid_does_not_depend_on_where_the_feed_was_fetched() -> None:
    body = b'<rss version="2.0"><channel><title>t</title><item><guid>12345</guid><link>/p/12345</link></item></channel></rss>'
    over_http = parse_feed(body, "http://news.example.com/feed").entries[0]
    over_https = parse_feed(body, "https://news.example.com/rss/feed").entries[0]
    assert over_http.guid == over_https.guid == "12345"
    assert over_https.link == "https://news.example.com/p/12345"


def test_item_scoped_xml_base_applies_to_its_item_only() -> None:
    body = b"""<rss version="2.0"><channel><title>t</title><link>https://site.example/</link>
    <item xml:base="https://site.example/first/"><title>1</title><link>one</link></item>
    <item><title>2</title><link>two</link></item></channel></rss>"""
    first, second = parse_feed(body, "https://feeds.example/dir/rss").entries
    assert first.link == "https://site.example/first/one"
    assert second.link == "https://feeds.example/dir/two"


# --- Atom ----------------------------------------------------------------------

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://blog.example.org/base/">
  <title type="html">My &lt;i&gt;Blog&lt;/i&gt;</title>
  <link rel="alternate" href="https://blog.example.org/"/>
  <id>urn:uuid:feed</id>
  <updated>2024-02-01T10:00:00Z</updated>
  <entry>
    <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">An <b>xhtml</b> title</div></title>
    <link rel="alternate" href="posts/1"/>
    <link rel="enclosure" href="/files/a.pdf" type="application/pdf" length="99"/>
    <id>tag:blog.example.org,2024:1</id>
    <published>2024-01-31T23:30:00-05:00</published>
    <updated>2024-02-01T12:00:00+01:00</updated>
    <author><name>Jo Blogger</name><email>jo@example.org</email></author>
    <category term="python"/><category term="feeds"/>
    <summary type="text">1 &lt; 2 &amp; plain</summary>
    <content type="html">&lt;p&gt;Hello &lt;img src="pic.png"&gt;world&lt;/p&gt;</content>
  </entry>
</feed>"""


def test_atom_entry() -> None:
    feed = parse_feed(ATOM, "https://blog.example.org/feed.atom", {"content-type": "application/atom+xml"})
    assert feed.format == "atom10"
    assert feed.title == "My Blog"
    assert feed.link == "https://blog.example.org/"
    assert feed.ttl_seconds is None
    [entry] = feed.entries
    assert entry.guid == "tag:blog.example.org,2024:1"
    assert entry.link == "https://blog.example.org/base/posts/1"  # resolved against xml:base
    assert entry.title == "An xhtml title"
    assert entry.published == datetime(2024, 2, 1, 4, 30, tzinfo=UTC)
    assert entry.updated == datetime(2024, 2, 1, 11, 0, tzinfo=UTC)
    assert entry.published.tzinfo is UTC
    assert entry.author == "Jo Blogger"
    assert entry.tags == ["python", "feeds"]
    # Plain-text summaries are escaped into HTML so that summary is always HTML.
    assert entry.summary == "1 &lt; 2 &amp; plain"
    assert entry.summary_text == "1 < 2 & plain"
    assert entry.content_text == "Hello world"
    assert entry.enclosures == [Enclosure("https://blog.example.org/files/a.pdf", "application/pdf", 99)]


# --- RSS 1.0 -------------------------------------------------------------------

RSS10 = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://rdf.example.net/">
    <title>RDF Site</title><link>https://rdf.example.net/</link><description>d</description>
    <items><rdf:Seq><rdf:li resource="https://rdf.example.net/a"/><rdf:li resource="https://rdf.example.net/b"/></rdf:Seq></items>
  </channel>
  <item rdf:about="https://rdf.example.net/a">
    <title>First</title><link>https://rdf.example.net/a</link>
    <dc:date>2024-05-05T08:00:00+02:00</dc:date><dc:creator>Rita</dc:creator><dc:subject>tech</dc:subject>
  </item>
  <item rdf:about="https://rdf.example.net/b"><title>Second</title><link>https://rdf.example.net/b</link></item>
</rdf:RDF>"""


def test_rss10() -> None:
    feed = parse_feed(RSS10, "https://rdf.example.net/index.rdf")
    assert feed.format == "rss10"
    assert feed.title == "RDF Site"
    assert [entry.title for entry in feed.entries] == ["First", "Second"]
    first = feed.entries[0]
    assert first.guid == first.link == "https://rdf.example.net/a"
    # feedparser reads dc:date as the update date; the only date there is, it dates the entry.
    assert first.updated == first.published == datetime(2024, 5, 5, 6, 0, tzinfo=UTC)
    assert first.author == "Rita"
    assert first.tags == ["tech"]


# --- encodings -------------------------------------------------------------------


def test_charset_from_http_header_is_used() -> None:
    body = '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>Привет мир</title></item></channel></rss>'
    encoded = body.encode("koi8-r")
    with_header = parse_feed(encoded, FEED_URL, {"Content-Type": "application/xml; charset=KOI8-R"})
    assert with_header.entries[0].title == "Привет мир"
    # Without the header the bytes cannot be read as KOI8-R: proves the header did the work.
    assert parse_feed(encoded, FEED_URL).entries[0].title != "Привет мир"


def test_iso_8859_1_body_with_header_charset() -> None:
    body = '<rss version="2.0"><channel><title>Café</title><item><title>Crème brûlée</title></item></channel></rss>'
    feed = parse_feed(body.encode("iso-8859-1"), FEED_URL, {"content-type": "text/xml; charset=ISO-8859-1"})
    assert feed.title == "Café"
    assert feed.entries[0].title == "Crème brûlée"


def test_utf16_with_bom() -> None:
    body = '<?xml version="1.0" encoding="utf-16"?><rss version="2.0"><channel><title>Ünï</title><item><title>Ελληνικά</title><link>https://a.example/1</link></item></channel></rss>'
    feed = parse_feed(codecs.BOM_UTF16_LE + body.encode("utf-16-le"), FEED_URL)
    assert feed.format == "rss20"
    assert feed.title == "Ünï"
    assert feed.entries[0].title == "Ελληνικά"


# --- hostile XML -------------------------------------------------------------------


def billion_laughs(*, one_line: bool) -> bytes:
    declarations = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{level} "{("&lol" + (str(level - 1) if level > 1 else "") + ";") * 10}">' for level in range(1, 10)
    ]
    separator = "" if one_line else "\n"
    prolog = '<?xml version="1.0"?>' + separator + "<!DOCTYPE rss [" + separator + separator.join(declarations) + "]>"
    return (prolog + '\n<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title>'
            "<description>&lol9;</description><guid>g</guid></item></channel></rss>").encode()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("document", [
    billion_laughs(one_line=False),
    billion_laughs(one_line=True),  # feedparser's own line-based DOCTYPE stripping misses this one
    codecs.BOM_UTF16_LE + billion_laughs(one_line=True).decode().replace('"1.0"?>', '"1.0" encoding="utf-16"?>', 1).encode("utf-16-le"),
], ids=["multi-line", "one-line", "utf-16"])
def test_billion_laughs_does_not_expand(document: bytes) -> None:
    feed = parse_feed(document, FEED_URL)
    assert len(feed.entries) == 1
    entry = feed.entries[0]
    for text in (entry.title, entry.summary, entry.summary_text, entry.content):
        assert "lollollol" not in text
        assert len(text) < 100


def test_defusing_keeps_only_harmless_entity_declarations() -> None:
    defused = defuse_entity_declarations(billion_laughs(one_line=True)).decode()
    assert '<!ENTITY lol "lol">' in defused
    assert "lol1" not in defused.split("]>", 1)[0]
    assert "<rss" in defused and "&lol9;" in defused  # the document itself is untouched
    xxe = b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss/>'
    assert b"SYSTEM" not in defuse_entity_declarations(xxe)
    assert defuse_entity_declarations(RSS20) is RSS20  # no declarations: the very same bytes


def test_unterminated_document_type_with_entities_is_refused() -> None:
    feed = parse_feed(b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "&b;&b;"><rss version="2.0"></rss>', FEED_URL)
    assert feed.entries == []
    assert feed.problem and feed.problem.startswith("refused")


def external_entity_documents(target: Path) -> dict[str, bytes]:
    uri = target.as_uri()
    item = '<rss version="2.0"><channel><title>t</title><item><title>x&xxe;y</title><description>&xxe;</description><guid>g</guid></item></channel></rss>'
    return {
        "general": f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{uri}">\n]>\n{item}'.encode(),
        "same-line": f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "{uri}">]>{item}'.encode(),
        "parameter": (
            f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY % ext SYSTEM "{uri}">\n%ext;\n]>\n'
            '<rss version="2.0"><channel><title>t</title><item><title>x</title><guid>g</guid></item></channel></rss>'
        ).encode(),
    }


def all_text(feed: ParsedFeed) -> str:
    parts = [feed.title or "", feed.problem or ""]
    for entry in feed.entries:
        parts += [entry.title, entry.summary, entry.content, entry.summary_text, entry.content_text, entry.guid]
    return "\n".join(parts)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("variant", ["general", "same-line", "parameter"])
def test_external_entities_are_not_read(variant: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-4711")
    feed = parse_feed(external_entity_documents(secret)[variant], FEED_URL)
    assert len(feed.entries) == 1
    assert "TOP-SECRET-MARKER-4711" not in all_text(feed)


@pytest.mark.timeout(30)
@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="no /etc/passwd on this system")
def test_etc_passwd_is_not_read() -> None:
    for body in external_entity_documents(Path("/etc/passwd")).values():
        assert "root:" not in all_text(parse_feed(body, FEED_URL))


def test_body_naming_a_local_file_is_not_opened(tmp_path: Path) -> None:
    # feedparser.parse(bytes) opens the bytes as a file name when such a file exists.
    local_feed = tmp_path / "local.xml"
    local_feed.write_bytes(RSS20)
    assert len(feedparser.parse(str(local_feed).encode()).entries) == 4  # the pitfall is real
    feed = parse_feed(str(local_feed).encode(), FEED_URL)
    assert feed.entries == []
    assert feed.problem and feed.problem.startswith("not a feed")


def test_harmless_declared_entity_still_works() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY nbsp "&#160;"><!ENTITY co "Example Co">]><rss version="2.0"><channel><title>&co;</title><item><title>a&nbsp;b</title></item></channel></rss>'
    feed = parse_feed(body, FEED_URL)
    assert feed.title == "Example Co"
    assert feed.entries[0].title == "a b"  # the no-break space, folded like any whitespace
    assert feed.problem is None


# --- not feeds ------------------------------------------------------------------------


def test_html_page_is_reported() -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Home</title></head><body><p>Welcome</p></body></html>"
    feed = parse_feed(page, "https://www.example.com/", {"content-type": "text/html"})
    assert feed.entries == []
    assert feed.problem == "not a feed: looks like an HTML page"


@pytest.mark.parametrize("body", [b"", b"   \n\t", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\n "])
def test_empty_document(body: bytes) -> None:
    assert parse_feed(body, FEED_URL) == ParsedFeed(problem="empty document")


def test_plain_text_is_not_a_feed() -> None:
    feed = parse_feed(b"Service temporarily unavailable", FEED_URL)
    assert feed.entries == []
    assert feed.problem and feed.problem.startswith("not a feed")


def test_ill_formed_feed_keeps_entries_and_says_why() -> None:
    body = b'<rss version="2.0"><channel><title>t</title><item><title>one & two</title></item><item><title>three</title></item></channel></rss>'
    feed = parse_feed(body, FEED_URL, {"content-type": "application/rss+xml"})
    assert len(feed.entries) == 2
    assert feed.problem and "SAXParseException" in feed.problem


def test_valid_feed_served_as_html_has_no_problem() -> None:
    assert parse_feed(RSS20, FEED_URL, {"content-type": "text/html"}).problem is None


# --- JSON Feed ------------------------------------------------------------------------

JSON_FEED_1 = {
    "version": "https://jsonfeed.org/version/1",
    "title": "JSON &amp; Friends",
    "home_page_url": "https://json.example.org/blog/",
    "feed_url": "https://json.example.org/blog/feed.json",
    "author": {"name": "Feed Author"},
    "items": [
        {
            "id": 1,
            "url": "posts/one",
            "title": "First <em>post</em>",
            "content_html": "<p>Hello <b>JSON</b></p>",
            "summary": "A  short\nsummary",
            "date_published": "2024-01-02T03:04:05+02:00",
            "date_modified": "2024-01-03T00:00:00Z",
            "tags": ["a", "b", 3, "a"],
            "attachments": [
                {"url": "/audio/one.m4a", "mime_type": "audio/x-m4a", "size_in_bytes": 2048},
                {"url": "ftp://files.example.org/x", "mime_type": "text/plain"},
            ],
        },
        {"id": "2", "external_url": "https://elsewhere.example.com/article", "content_text": "Just text"},
    ],
}


def test_json_feed_1_0() -> None:
    body = json.dumps(JSON_FEED_1).encode()
    feed = parse_feed(body, "https://json.example.org/blog/feed.json", {"content-type": "application/feed+json"})
    assert feed.format == "json1"
    assert feed.title == "JSON & Friends"
    assert feed.link == "https://json.example.org/blog/"
    assert feed.problem is None
    first, second = feed.entries
    assert first.guid == "1"
    assert first.link == "https://json.example.org/blog/posts/one"
    assert first.title == "First post"
    assert first.content == "<p>Hello <b>JSON</b></p>"
    assert first.content_text == "Hello JSON"
    assert first.summary_text == "A short summary"
    assert first.published == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert first.updated == datetime(2024, 1, 3, tzinfo=UTC)
    assert first.author == "Feed Author"
    assert first.tags == ["a", "b"]
    assert first.enclosures == [Enclosure("https://json.example.org/audio/one.m4a", "audio/x-m4a", 2048)]
    assert second.guid == "2"
    assert second.link == "https://elsewhere.example.com/article"
    assert second.content == "Just text"
    assert second.content_text == "Just text"


def test_json_feed_1_1_detected_without_content_type() -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Eleven",
        "authors": [{"name": "Feed One"}],
        "items": [
            {"id": "x", "url": "https://j.example/x", "authors": [{"url": "https://no.name"}, {"name": "Item Author"}],
             "content_text": "<not html>", "date_published": "2024-06-01T12:00:00"},
            {"content_text": "no id and no url"},
        ],
    }
    body = codecs.BOM_UTF8 + b"\n  " + json.dumps(document).encode()
    feed = parse_feed(body, "https://j.example/feed.json", {"content-type": "text/plain"})
    assert feed.format == "json1.1"
    first, second = feed.entries
    assert first.author == "Item Author"
    assert first.content == "&lt;not html&gt;"
    assert first.content_text == "<not html>"
    assert first.published == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # no offset: taken as UTC
    assert second.guid.startswith("sha256:")
    assert second.author == "Feed One"


def test_json_feed_with_wrong_types_never_raises() -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": ["not a string"],
        "home_page_url": {"not": "a string"},
        "feed_url": 12,
        "authors": {"not": "a list"},
        "items": [
            {"id": True, "title": 1000, "content_text": ["x"], "content_html": True, "summary": False,
             "date_published": "not a date", "date_modified": {}, "url": 1.2, "external_url": None,
             "authors": "nobody", "author": ["x"], "tags": "tag", "attachments": {"url": "/a"}},
            {"id": 7.5, "attachments": [None, 3, {"url": 5}, {"url": "/ok", "size_in_bytes": "big", "mime_type": 4}]},
            "not an item",
        ],
    }
    feed = parse_feed(json.dumps(document).encode(), "https://w.example/feed.json")
    assert feed.format == "json1.1"
    assert feed.title is None
    assert len(feed.entries) == 2
    first, second = feed.entries
    assert first.guid.startswith("sha256:")
    assert (first.title, first.link, first.published, first.author, first.tags, first.enclosures) == ("", None, None, None, [], [])
    assert second.guid == "7.5"
    assert second.enclosures == [Enclosure("https://w.example/ok", None, None)]


def test_invalid_json() -> None:
    feed = parse_feed(b'{"version": "https://jsonfeed.org/version/1", "items": [', FEED_URL)
    assert feed.entries == []
    assert feed.problem and feed.problem.startswith("invalid JSON")


def test_unknown_json_feed_version() -> None:
    feed = parse_feed(b'{"version": "https://jsonfeed.org/version/9", "items": [{"id": "1"}]}', FEED_URL)
    assert feed.entries == []
    assert feed.problem == "unsupported JSON Feed version 'https://jsonfeed.org/version/9'"


@pytest.mark.parametrize("body, problem_start", [
    (b'{"items": []}', "not a JSON Feed: unknown version None"),
    (b'{"version": "2"}', "not a JSON Feed: unknown version '2'"),
    (b"[1, 2]", "not a JSON Feed: the document is not a JSON object"),
    (b"\xff\xfe\x00garbage", "invalid JSON"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', "JSON Feed without an items list"),
])
def test_json_documents_that_are_not_feeds(body: bytes, problem_start: str) -> None:
    feed = parse_feed(body, FEED_URL, {"content-type": "application/json"})
    assert feed.entries == []
    assert feed.problem and feed.problem.startswith(problem_start)


def test_xml_served_as_json_is_still_read_as_xml() -> None:
    assert len(parse_feed(RSS20, FEED_URL, {"content-type": "application/json"}).entries) == 4


# --- helpers ------------------------------------------------------------------------------


def test_html_to_text() -> None:
    assert html_to_text("<div><p>One</p><p>Two<br>Three</p><script>x()</script><style>p{}</style></div>") == "One Two Three"
    assert html_to_text("Tom &amp; Jerry &eacute; <b>bo</b>ld") == "Tom & Jerry é bold"
    assert html_to_text("a\x00b\x01c") == "abc"
    assert html_to_text("<!-- only a comment -->") == ""
    assert html_to_text('<?xml version="1.0" encoding="utf-8"?><p>x</p>') == "x"
    assert html_to_text("") == ""


def test_looks_like_html() -> None:
    assert looks_like_html(b"\n<!doctype html><title>x</title>")
    assert looks_like_html(b"<html lang=en><body>hi</body></html>")
    assert not looks_like_html(RSS20)
    assert not looks_like_html(ATOM)
    assert not looks_like_html(b"")
    assert not looks_like_html(b'{"version": 1}')


PAGE = b"""<!DOCTYPE html><html><head>
<base href="https://site.example.com/blog/">
<link rel="stylesheet" href="/style.css">
<link rel="alternate" type="application/rss+xml" title="RSS" href="feed.rss">
<link rel="Alternate" type="application/atom+xml; charset=utf-8" href="/atom.xml">
<link rel="alternate" type="application/feed+json" href="https://cdn.example.net/feed.json">
<link rel="alternate" type="application/json" href="/feed.json">
<link rel="alternate" type="application/rss+xml" href="feed.rss">
<link rel="alternate" type="text/html" hreflang="de" href="/de/">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
<link rel="alternate" type="application/rss+xml">
</head><body><link rel="alternate" type="application/rss+xml" href="/comments.rss"></body></html>"""


def test_discover_feed_links() -> None:
    assert discover_feed_links(PAGE, "https://site.example.com/blog/post/1") == [
        "https://site.example.com/blog/feed.rss",
        "https://site.example.com/atom.xml",
        "https://cdn.example.net/feed.json",
        "https://site.example.com/feed.json",
        "https://site.example.com/comments.rss",
    ]


def test_discover_feed_links_without_base_and_from_str() -> None:
    page = '<html><head><link rel="alternate" type="application/rss+xml" href="rss"></head></html>'
    assert discover_feed_links(page, "https://x.example/a/b") == ["https://x.example/a/rss"]
    assert discover_feed_links(b"", "https://x.example/") == []
    assert discover_feed_links("<p>no links</p>", "https://x.example/") == []


def test_common_feed_paths() -> None:
    assert all(path.startswith("/") for path in COMMON_FEED_PATHS)
    assert "/feed.json" in COMMON_FEED_PATHS


# --- the feeds-dev corpus ------------------------------------------------------------------


def feed_documents() -> list[Path]:
    """Every feed document of feeds-dev: not OPML, not READMEs, not rss-parser's expected outputs."""
    return [
        path
        for path in sorted(FEEDS_DEV.rglob("*"))
        if path.is_file() and path.suffix not in (".opml", ".md") and "expected-output" not in path.parts
    ]


def served_body(path: Path) -> bytes:
    body = path.read_bytes()
    return gzip.decompress(body) if path.name in GZIPPED_DOCUMENTS else body


def expected_output_count(path: Path) -> int | None:
    expected = FEEDS_DEV / "rss-parser" / "expected-output" / (path.stem + ".json")
    if "rss-parser" not in path.parts or not expected.is_file():
        return None
    document = json.loads(expected.read_bytes().decode("utf-8", errors="replace"))
    return len(document.get("feed", {}).get("items", []))


@pytest.mark.timeout(120)
def test_feeds_dev_corpus() -> None:
    if not FEEDS_DEV.is_dir():
        pytest.skip(f"shared test data not found at {FEEDS_DEV} (set AGG_SHARED_DATA)")
    documents = feed_documents()
    assert documents, "feeds-dev holds no documents"
    totals = {"documents": 0, "with entries": 0, "entries": 0}
    count_mismatches, rss_parser_mismatches = [], []
    for path in documents:
        body = served_body(path)
        name = path.relative_to(FEEDS_DEV).as_posix()
        feed = parse_feed(body, f"https://feeds.example.net/{name}")
        assert isinstance(feed, ParsedFeed)
        assert feed.entries or feed.problem or feed.format, f"{name}: neither entries nor a problem"
        if path.suffix == ".json":
            document = json.loads(body)
            if str(document.get("version", "")).rstrip("/") in ("https://jsonfeed.org/version/1", "https://jsonfeed.org/version/1.1"):
                expected = len(document["items"])
            else:
                expected = 0
                assert feed.problem, f"{name}: unknown version without a problem"
        else:
            expected = len(feedparser.parse(io.BytesIO(body)).entries)
        if len(feed.entries) != expected:
            count_mismatches.append(f"{name}: {len(feed.entries)} entries, reference {expected}")
        reference = expected_output_count(path)
        if reference is not None and reference != len(feed.entries):
            rss_parser_mismatches.append(f"{name}: agg {len(feed.entries)}, rss-parser {reference}")
        for entry in feed.entries:
            assert entry.guid, name
            assert entry.link is None or entry.link.startswith(("http://", "https://")), name
            assert len(entry.title) <= MAX_TITLE_CHARS, name
            for moment in (entry.published, entry.updated):
                assert moment is None or moment.utcoffset().total_seconds() == 0, name
        totals["documents"] += 1
        totals["with entries"] += bool(feed.entries)
        totals["entries"] += len(feed.entries)
    print(f"\nfeeds-dev: {totals}")
    print("rss-parser expected-output mismatches:", rss_parser_mismatches or "none")
    assert not count_mismatches, count_mismatches


# --- properties ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=25,
)
ITEM_KEYS = st.sampled_from([
    "id", "url", "external_url", "title", "content_html", "content_text", "summary", "date_published",
    "date_modified", "authors", "author", "tags", "attachments",
])
ITEMS = st.dictionaries(ITEM_KEYS, JSON_VALUES, max_size=8)
JSON_FEEDS = st.fixed_dictionaries(
    {"version": st.sampled_from(["https://jsonfeed.org/version/1", "https://jsonfeed.org/version/1.1"])},
    optional={
        "title": JSON_VALUES, "home_page_url": JSON_VALUES, "feed_url": JSON_VALUES,
        "author": JSON_VALUES, "authors": JSON_VALUES, "items": st.lists(ITEMS | JSON_VALUES, max_size=4),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000), content_type=st.sampled_from(["", "application/xml", "application/json", "text/html; charset=utf-16"]))
def test_parse_feed_never_raises_on_bytes(body: bytes, content_type: str) -> None:
    assert isinstance(parse_feed(body, FEED_URL, {"content-type": content_type}), ParsedFeed)


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from([b"<rss version='2.0'><channel><item><title>", b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><title>", b"<!DOCTYPE x [<!ENTITY "]), tail=st.binary(max_size=500))
def test_parse_feed_never_raises_on_feed_like_bytes(prefix: bytes, tail: bytes) -> None:
    assert isinstance(parse_feed(prefix + tail, FEED_URL), ParsedFeed)


@settings(max_examples=300, deadline=None)
@given(document=JSON_FEEDS)
def test_json_feed_parser_never_raises(document: dict) -> None:
    feed = parse_json_feed(json.dumps(document), "https://j.example/feed.json")
    assert feed.format in ("json1", "json1.1")
    items = document.get("items")
    if isinstance(items, list):
        assert len(feed.entries) == sum(isinstance(item, dict) for item in items)


@settings(max_examples=200, deadline=None)
@given(document=JSON_VALUES)
def test_json_parser_never_raises_on_arbitrary_json(document: object) -> None:
    assert isinstance(parse_json_feed(json.dumps(document), FEED_URL), ParsedFeed)
