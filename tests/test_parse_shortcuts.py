"""The shortcuts aggregator.parse takes for speed give what the general code gives.

Each shortcut is checked against an independent reference: the plain urllib
reading of a URL, feedparser's own date, link and author rules, and the
strip-mark-itertext way of reading text out of HTML that html_to_text used
before it walked the tree itself.
"""

from __future__ import annotations

import gzip
import html
import io
import json
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

import feedparser
import pytest
from feedparser.datetimes import _parse_date
from feedparser.urls import _urljoin
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.parse import common_rss, feedparser_path, normalise
from aggregator.parse import fold_whitespace, html_to_text, parse_feed, safe_http_url

GZIPPED = {"compressed.xml", "invalid-characters-gzipped.xml"}
C0_C1_CONTROLS = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)])


# --- references ----------------------------------------------------------------


def reference_fold(text: str) -> str:
    return " ".join(text.translate(C0_C1_CONTROLS).split())


def reference_html_to_text(markup: str) -> str:
    """Strip the invisible elements, put a space after each breaking one, read itertext()."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        return reference_fold(markup)
    parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True, remove_pis=True, encoding="utf-8")
    try:
        root = etree.fromstring(markup.encode("utf-8", errors="replace"), parser)
    except (etree.LxmlError, ValueError):
        return reference_fold(html.unescape(markup)) if "<" not in markup else ""
    if root is None:
        return ""
    etree.strip_elements(root, "script", "style", "template", "noscript", "head", with_tail=False)
    for element in root.iter(*normalise._BREAKING_ELEMENTS):
        element.tail = " " + element.tail if element.tail else " "  # raises on a tail with controls: see below
    return reference_fold("".join(root.itertext()))


def reference_safe_http_url(value: object, base: str | None = None) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        absolute = urljoin(base, value.strip()) if base else value.strip()
        parts = urlsplit(absolute)
        parts.port  # noqa: B018
    except ValueError:
        return None
    return absolute if parts.scheme in ("http", "https") and parts.hostname else None


def feedparser_author_name(author: str) -> str | None:
    body = f'<rss version="2.0"><channel><item><author>{escape(author)}</author></item></channel></rss>'
    entries = feedparser.parse(io.BytesIO(body.encode())).entries
    return entries[0].get("author_detail", {}).get("name") if entries else None


# --- html_to_text and fold_whitespace -----------------------------------------------

FRAGMENT_PIECES = st.sampled_from([
    "<p>", "</p>", "<br>", "<br/>", "<div>", "</div>", "<script>", "</script>", "<style>", "</style>", "<head>",
    "<title>", "</title>", "<noscript>", "</noscript>", "<template>", "</template>", "<b>", "</b>", "<img src=x>",
    "<a href='/x'>", "</a>", "<!-- c -->", "<?pi x?>", "<table>", "<tr>", "<td>", "</td>", "<li>", "<ul>", "<h1>",
    "</h1>", "<o:p>", "</o:p>", "&amp;", "&nbsp;", "&#x9b;", "&#150;", "&bogus;", "&amp", " ", "\n", "\t", "\x85",
    "\xa0", "word", "é", "<", ">", "&", "<![CDATA[x]]>", "<!DOCTYPE html>", "<html>", "<body>", "</body>", "<pre>",
    "<textarea>", "</textarea>", "<xmp>", "<plaintext>", "<svg><p>x</p></svg>",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(FRAGMENT_PIECES, st.text(max_size=4)), max_size=25))
def test_html_to_text_reads_what_strip_mark_itertext_reads(pieces: list[str]) -> None:
    markup = "".join(pieces)
    try:
        expected = reference_html_to_text(markup)
    except ValueError:  # lxml refuses a tail holding control characters: the reference cannot say
        assume(False)
    assert html_to_text(markup) == expected


def test_html_to_text_reads_every_feeds_dev_summary_and_content_as_before(shared_data) -> None:
    root = shared_data / "feeds-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    fragments: set[str] = set()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".opml", ".md") or "expected-output" in path.parts:
            continue
        body = gzip.decompress(path.read_bytes()) if path.name in GZIPPED else path.read_bytes()
        for entry in parse_feed(body, f"https://feeds.example.net/{path.name}").entries:
            fragments.update((entry.summary, entry.content))
    differing = [fragment for fragment in fragments if html_to_text(fragment) != reference_html_to_text(fragment)]
    assert len(fragments) > 1_000
    assert differing == []


def test_html_to_text_takes_control_characters_after_a_break() -> None:
    # The strip-mark-itertext reading raised ValueError here (lxml refuses such a tail), and with it parse_feed.
    assert html_to_text("<p>One</p>\x1fTwo<br>\x9bThree") == "One Two Three"
    item = {"id": "1", "content_html": "<p>One</p>\u001fTwo"}
    body = json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": [item]}).encode()
    assert parse_feed(body, "https://news.example.com/feed.json").entries[0].content_text == "One Two"


@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_fold_whitespace_drops_controls_before_splitting(text: str) -> None:
    assert fold_whitespace(text) == reference_fold(text)


def test_fold_whitespace_takes_no_control_for_a_space() -> None:
    assert fold_whitespace("a\x1cb \x85c\td") == "ab c d"


# --- safe_http_url ----------------------------------------------------------------------

BASES = st.sampled_from([
    None, "", "https://news.example.com/section/feed.xml", "http://127.0.1.1:8000/feeds/1.xml",
    "https://news.example.com/a;b?c#d", "file:///tmp/feed.xml", "http://[broken/feed", "https://x.example:99999/",
])
URL_ALPHABET = "abcAB019:/?#;=&%.-_~@[]!$'()*+, \t"


@settings(max_examples=500)
@given(st.one_of(st.from_regex(normalise._PLAIN_HTTP_URL), st.from_regex(r"\Ahttps?://[a-z.]+(:[0-9]{1,6})?\Z")), BASES)
def test_safe_http_url_shortcut_reads_plain_urls_as_urllib_does(url: str, base: str | None) -> None:
    assert safe_http_url(url, base) == reference_safe_http_url(url, base)


@settings(max_examples=500)
@given(st.sampled_from(["http://", "https://", "HTTP://", "https:", "//", ""]), st.text(URL_ALPHABET, max_size=30), BASES)
def test_safe_http_url_reads_any_url_as_urllib_does(prefix: str, rest: str, base: str | None) -> None:
    url = prefix + rest
    assert safe_http_url(url, base) == reference_safe_http_url(url, base)
    assert safe_http_url(url, base.replace("https", "http") if base else base) == reference_safe_http_url(
        url, base.replace("https", "http") if base else base)


@pytest.mark.parametrize(("url", "base"), [
    ("http://x.example/a?", "http://b.example/"), ("https://x.example?", "https://b.example/"), ("http://x.example/a?", None),
    ("http://x.example/a#", "http://b.example/"), ("http://x.example/a;", "http://b.example/"),
    ("http://x.example:65536/", None), ("http://x.example:65535/", None), ("http://x.example/a", "http://[broken/"),
    ("https://x.example/./a/../b", "https://b.example/"), ("http://x.example/a", "https://b.example/"),
])
def test_safe_http_url_edges(url: str, base: str | None) -> None:
    assert safe_http_url(url, base) == reference_safe_http_url(url, base)


# --- feedparser's rules, read without feedparser ---------------------------------------------


@st.composite
def rfc822_dates(draw) -> str:
    day_name = draw(st.sampled_from(["", "Sat, ", "Mon, ", "sat, ", "Sat ", "Xyz, "]))
    day = draw(st.sampled_from([f"{n:02d}" for n in range(0, 33)] + ["1", "9", "99", "001"]))
    month = draw(st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "jan", "Foo"]))
    year = draw(st.sampled_from(["0000", "0001", "1969", "1970", "2024", "2026", "9999", "24", "99"]))
    clock = draw(st.sampled_from(["00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "17:55:00", "7:05:00", "17:55"]))
    zone = draw(st.sampled_from(["+0000", "-0000", "+0130", "-0930", "+2400", "-9999", "+99", "GMT", "gmt", "UT", "EST", "Z", "+01:00"]))
    return f"{day_name}{day} {month} {year} {clock} {zone}"


@settings(max_examples=600)
@given(rfc822_dates(), st.sampled_from(["", " ", "\n  "]))
def test_dates_read_as_feedparser_reads_them(date: str, padding: str) -> None:
    assert common_rss._feedparser_date(padding + date + padding) == _parse_date(date)


@given(st.sampled_from(["", "http", "https", "h+t.p", "1http", " http"]), st.sampled_from(["", ":", "://", ":///", "://///"]),
       st.text(st.sampled_from("htps:/x.e?&"), max_size=12))
def test_links_repaired_as_feedparser_repairs_them(scheme: str, separator: str, rest: str) -> None:
    text = scheme + separator + rest
    assert common_rss._feedparser_uri(text) == (_urljoin("", text) if text else text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["desk@example.com", "(", ")", "<", ">", "News", " ", "desk", "a.b@c.example",
                                 "Jane Doe", "?subject=x", "&lt;&gt;", "()", "[1.2.3.4]"]), max_size=6))
def test_author_names_read_as_feedparser_reads_them(pieces: list[str]) -> None:
    author = "".join(pieces).strip()
    assume(author)
    assert common_rss._feedparser_author_name(author) == feedparser_author_name(author)


@given(st.lists(st.sampled_from(["a", " ", "<", ">", "/", "b", "&", ";", "#", "1", "amp", "p", "script", "é"]), max_size=12))
def test_html_guessed_as_feedparser_guesses_it(pieces: list[str]) -> None:
    from feedparser.mixin import _FeedParserMixin

    text = "".join(pieces)
    assert common_rss._feedparser_looks_like_html(text) == bool(_FeedParserMixin.looks_like_html(text))


@pytest.mark.parametrize("markup", [
    "<title>T</title><p>x</p>", "<head><title>T</title></head><body>x</body>", "<noscript><p>n</p></noscript>tail",
    "<template><p>t</p></template>x", "<style>p{}</style>x<script>y()</script>z", "<p>a</p><p>b</p>c<br>d",
    "<table><tr><td>a</td><td>b</td></tr></table>", "<div>a<!-- c -->b</div><?pi x?>c",
])
def test_html_to_text_on_invisible_and_breaking_elements(markup: str) -> None:
    assert html_to_text(markup) == reference_html_to_text(markup)


@pytest.mark.parametrize(("description", "content", "texts"), [
    ("<p>Short</p>", "<p>Short</p><p>More</p>", ("Short", "Short More")),
    (None, "<p>Only content</p>", ("Only content", "Only content")),
    ("<p>Only summary</p>", None, ("Only summary", "")),
])
def test_summary_and_content_texts_each_read_from_their_own_html(description, content, texts) -> None:
    parts = [f"<description>{escape(description)}</description>"] if description else []
    parts += [f"<content:encoded>{escape(content)}</content:encoded>"] if content else []
    body = ('<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
            f"<item><guid>g</guid>{''.join(parts)}</item></channel></rss>").encode()
    for read in (parse_feed, feedparser_path._parse_xml_feed):
        entry = read(body, "https://news.example.com/feed.xml", {})
        assert (entry.entries[0].summary_text, entry.entries[0].content_text) == texts
