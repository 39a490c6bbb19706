"""Tests for aggregator.extract: article text and metadata, decoding, the
page-or-feed text choice, and the worker pool's time limit and crash recovery."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.extract import (
    MIN_ARTICLE_CHARS,
    ExtractorPool,
    choose_text,
    decode_html,
    extract_article,
)
from aggregator.models import Article

ARTICLE_URL = "https://news.example.org/world/2024/03/05/river-town-floods?utm_source=feed"

ARTICLE_SENTENCES = [
    "The river rose faster than anyone in Millbrook had seen in forty years, spilling over the old stone embankment shortly after dawn on Tuesday.",
    "By midday the water had reached the steps of the town hall, where volunteers stacked sandbags and carried elderly residents to the school on the hill.",
    "Engineers from the regional water authority said the upstream reservoir had released water in a controlled way, but the rain simply did not stop.",
    "Shopkeepers on Mill Street described watching the brown water seep under their doors while they moved stock to upper shelves and upstairs rooms.",
    "The mayor said the town would ask the national government for emergency funds to repair the embankment before the autumn storms arrive.",
    "Forecasters expect drier weather later in the week, although they warned that the ground is saturated and further flooding remains possible.",
]

BOILERPLATE_LINES = [
    "We use cookies to improve your experience. Accept all cookies",
    "Related stories",
    "Ten bridges you have to see before you die",
    "Local council approves new cycling lanes",
    "Sign up for our morning newsletter and never miss a story",
    "Copyright 2024 Example News Group. All rights reserved.",
    "Subscribe now for full access",
]
NAVIGATION = ["Home", "Politics", "World", "Sport", "Accept", "Settings", "Sign up", "Privacy"]


def article_page(
    *,
    head_extra: str = "",
    lang: str = "en-GB",
    sentences: list[str] = ARTICLE_SENTENCES,
    charset_meta: str = '<meta charset="utf-8">',
) -> str:
    paragraphs = "\n".join(f"<p>{sentence}</p>" for sentence in sentences)
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
  {charset_meta}
  <title>Millbrook floods as river breaks its banks | Example News</title>
  <meta name="author" content="Jane Doe">
  <meta property="og:site_name" content="Example News">
  <meta property="og:title" content="Millbrook floods as river breaks its banks">
  <meta property="article:published_time" content="2024-03-05T14:30:00+01:00">
  {head_extra}
  <style>body {{ font-family: serif; }}</style>
  <script>window.analytics = {{ page: "article" }};</script>
</head>
<body>
  <div id="cookie-banner" class="cookie-consent">
    <p>{BOILERPLATE_LINES[0]}</p><button>Accept</button><button>Settings</button>
  </div>
  <header class="site-header">
    <nav class="main-nav"><ul>
      <li><a href="/">Home</a></li><li><a href="/politics">Politics</a></li>
      <li><a href="/world">World</a></li><li><a href="/sport">Sport</a></li>
    </ul></nav>
  </header>
  <main>
    <article class="story">
      <h1>Millbrook floods as river breaks its banks</h1>
      <div class="byline">By <span class="author">Jane Doe</span>, <time datetime="2024-03-05T14:30:00+01:00">5 March 2024</time></div>
      <div class="story-body">
        {paragraphs}
      </div>
      <aside class="newsletter-signup">
        <h3>{BOILERPLATE_LINES[4]}</h3>
        <form><input type="email" placeholder="Email"><button>Sign up</button></form>
      </aside>
    </article>
    <section class="related-stories">
      <h2>{BOILERPLATE_LINES[1]}</h2>
      <ul>
        <li><a href="/travel/bridges">{BOILERPLATE_LINES[2]}</a></li>
        <li><a href="/local/cycling">{BOILERPLATE_LINES[3]}</a></li>
      </ul>
    </section>
    <div class="paywall-prompt" style="display: none"><p>{BOILERPLATE_LINES[6]}</p></div>
  </main>
  <footer class="site-footer"><p>{BOILERPLATE_LINES[5]}</p><a href="/privacy">Privacy</a></footer>
</body>
</html>"""


# --- text and metadata ---------------------------------------------------------


def test_article_text_kept_and_boilerplate_dropped() -> None:
    article = extract_article(article_page(head_extra='<link rel="canonical" href="/world/millbrook-floods">'), ARTICLE_URL)

    for sentence in ARTICLE_SENTENCES:
        assert sentence in article.text
    for boilerplate in BOILERPLATE_LINES:
        assert boilerplate not in article.text
    kept_lines = {line.strip() for line in article.text.splitlines()}
    assert kept_lines.isdisjoint(NAVIGATION)


def test_metadata_found() -> None:
    article = extract_article(
        article_page(
            head_extra='<link rel="canonical" href="/world/millbrook-floods">'
            '<meta property="og:url" content="https://news.example.org/og-address">'
        ),
        ARTICLE_URL,
    )

    assert article.title == "Millbrook floods as river breaks its banks"
    assert article.author == "Jane Doe"
    assert article.published == datetime(2024, 3, 5, 13, 30, tzinfo=UTC)
    assert article.published.tzinfo is not None
    assert article.site_name == "Example News"
    assert article.language == "en"
    # rel=canonical wins over og:url and is resolved against the page address
    assert article.canonical_url == "https://news.example.org/world/millbrook-floods"


def test_canonical_from_og_url_when_no_link() -> None:
    article = extract_article(
        article_page(head_extra='<meta property="og:url" content="https://news.example.org/og-address">'),
        ARTICLE_URL,
    )
    assert article.canonical_url == "https://news.example.org/og-address"


def test_canonical_only_http() -> None:
    article = extract_article(
        article_page(head_extra='<link rel="canonical" href="javascript:alert(1)"><meta property="og:url" content="ftp://x.org/a">'),
        ARTICLE_URL,
    )
    assert article.canonical_url is None


@pytest.mark.parametrize(
    "head_extra",
    [
        '<link rel="canonical" href="http://[broken">',
        '<base href="http://[broken"><link rel="canonical" href="/a">',
        '<meta property="og:url" content="http://example.org:99999/x">',
        '<meta property="article:published_time" content="9999-12-31T23:59:59-01:00">',
    ],
    ids=["bad-canonical", "bad-base", "bad-port", "date-overflow"],
)
def test_malformed_metadata_does_not_lose_the_text(head_extra: str) -> None:
    # the malformed value goes first, ahead of the page's own published time
    page = article_page(head_extra="").replace("<head>", f"<head>{head_extra}", 1)
    article = extract_article(page, ARTICLE_URL)
    assert ARTICLE_SENTENCES[0] in article.text
    assert article.canonical_url in (None, "https://news.example.org/a")
    assert article.published == datetime(2024, 3, 5, 13, 30, tzinfo=UTC)


def test_relative_canonical_without_page_url_is_dropped() -> None:
    article = extract_article(article_page(head_extra='<link rel="canonical" href="/world/millbrook-floods">'))
    assert article.canonical_url is None
    assert ARTICLE_SENTENCES[0] in article.text


def test_language_from_content_language_meta() -> None:
    page = article_page(lang="", head_extra='<meta http-equiv="Content-Language" content="de-AT">')
    assert extract_article(page, ARTICLE_URL).language == "de"


def test_no_article_gives_empty_text() -> None:
    page = "<html><head><title>Loading</title><script>render()</script></head><body><div id='app'></div></body></html>"
    assert extract_article(page).text == ""


# --- decoding --------------------------------------------------------------------

# Characters that differ between latin-1, windows-1252 and UTF-8: accents,
# and the curly quotes and dash that windows-1252 has where latin-1 has C1 controls.
WESTERN = "Café société: “quoted” — résumé, naïve, Ærøskøbing"


@pytest.mark.parametrize(
    "meta",
    [
        '<meta charset="windows-1252">',
        '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">',
        "<meta charset='latin1'>",
    ],
)
def test_western_charset_declared_by_meta(meta: str) -> None:
    sentences = [f"{WESTERN}. {sentence}" for sentence in ARTICLE_SENTENCES]
    data = article_page(charset_meta=meta, sentences=sentences).encode("windows-1252")

    assert WESTERN in decode_html(data)
    assert WESTERN in extract_article(data, ARTICLE_URL).text


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_with_bom(codec: str) -> None:
    sentences = [f"{WESTERN}. {sentence}" for sentence in ARTICLE_SENTENCES]
    page = article_page(charset_meta='<meta charset="utf-16">', sentences=sentences)
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff",
           "utf-32-le": b"\xff\xfe\x00\x00", "utf-32-be": b"\x00\x00\xfe\xff"}[codec]
    data = bom + page.encode(codec)

    assert decode_html(data) == page
    assert WESTERN in extract_article(data, ARTICLE_URL).text


def test_declared_charset_from_http_header() -> None:
    russian = "Наводнение в городе: река вышла из берегов"
    page = article_page(charset_meta="", sentences=[f"{russian}. {s}" for s in ARTICLE_SENTENCES])
    data = page.encode("windows-1251")

    assert russian in decode_html(data, declared_charset="windows-1251")
    assert russian in extract_article(data, ARTICLE_URL, declared_charset="windows-1251").text


def test_header_charset_outranks_meta() -> None:
    data = f'<meta charset="windows-1251"><p>{WESTERN}</p>'.encode("windows-1252")
    assert WESTERN in decode_html(data, declared_charset="ISO-8859-1")


def test_valid_utf8_wins_over_stale_label() -> None:
    data = f'<meta charset="iso-8859-1"><p>{WESTERN}</p>'.encode()
    assert WESTERN in decode_html(data)


def test_undeclared_legacy_bytes_are_sniffed() -> None:
    russian = "Наводнение в городе: река вышла из берегов, жители эвакуированы, школы закрыты. " * 5
    data = f"<html><body><p>{russian}</p></body></html>".encode("windows-1251")
    assert russian in decode_html(data)


def test_unknown_or_unusable_labels_are_ignored() -> None:
    data = f"<meta charset='no-such-charset'><p>{WESTERN}</p>".encode()
    assert WESTERN in decode_html(data)
    assert "<p>plain</p>" in decode_html(b"<meta charset='hex'><p>plain</p>", declared_charset="rot13")


# --- never raises ---------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert isinstance(extract_article(data, "https://example.org/a"), Article)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.one_of(st.none(), st.text(max_size=12)))
def test_decoding_never_raises(data: bytes, declared: str | None) -> None:
    assert isinstance(decode_html(data, declared), str)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["<html>", "<p>", "</p>", "<div>", "</div>", "<?xml version='1.0' encoding='utf-8'?>", "<!--", "-->",
                         "<meta charset='utf-16'>", "<script>", "</script>", "&#0;", "&#xD800;", "\x00", "é", "text "]),
        max_size=60,
    ).map("".join),
    st.one_of(st.none(), st.sampled_from(["", "x", "utf-8", "hex", "utf-32", "windows-1252"])),
)
def test_arbitrary_markup_never_raises(markup: str, declared: str | None) -> None:
    assert isinstance(extract_article(markup), Article)
    assert isinstance(extract_article(markup.encode("utf-8", "surrogatepass"), None, declared_charset=declared), Article)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        "",
        b"\x00" * 1000,
        bytes(range(256)) * 64,
        b"<html>" + b"<div>" * 50_000 + b"deep" + b"</div>" * 50_000,
        ("<html><body>" + "<p>" + "word " * 200 + "</p>" * 1 + "\n") * 3000,
    ],
    ids=["empty-bytes", "empty-str", "nuls", "binary", "deep-nesting", "huge"],
)
def test_odd_inputs_give_an_article(data: bytes | str) -> None:
    assert isinstance(extract_article(data), Article)


# --- choosing the text -------------------------------------------------------------

LONG = "A full paragraph of article text that goes on for a while. " * 6  # > MIN_ARTICLE_CHARS
SHORT = "Read more on our site."


def test_long_page_text_wins() -> None:
    assert choose_text(LONG, "", "summary", "ok") == (LONG.strip(), "page", "ok")


def test_feed_content_wins_when_longer_than_page() -> None:
    longer = LONG + " And the feed carries the whole story."
    assert choose_text(LONG, longer, "summary", "ok") == (longer.strip(), "feed-content", "ok")


def test_page_wins_ties_and_whitespace_does_not_count() -> None:
    spaced = LONG.replace(" ", "   ")
    assert choose_text(LONG, spaced, "", "ok")[1] == "page"


def test_empty_page_falls_back_to_content_then_summary() -> None:
    assert choose_text("", LONG, "summary", "ok") == (LONG.strip(), "feed-content", "empty")
    assert choose_text("  \n", "", "the summary", "ok") == ("the summary", "feed-summary", "empty")


def test_too_short_page_kept_only_when_feed_has_nothing_longer() -> None:
    assert choose_text(SHORT, "", "", "ok") == (SHORT, "page", "too-short")
    assert choose_text(SHORT, "", "Hi.", "ok") == (SHORT, "page", "too-short")
    assert choose_text(SHORT, "", LONG, "ok") == (LONG.strip(), "feed-summary", "too-short")
    assert len(SHORT) < MIN_ARTICLE_CHARS <= len(LONG.strip())


@pytest.mark.parametrize("status", ["http-error", "not-html", "too-large", "timeout", "skipped", "error"])
def test_failed_page_status_passes_through(status: str) -> None:
    # whatever text the caller hands over for a failed page is ignored
    assert choose_text(LONG, "", "the summary", status) == ("the summary", "feed-summary", status)
    assert choose_text("", LONG, "the summary", status) == (LONG.strip(), "feed-content", status)


def test_nothing_anywhere() -> None:
    assert choose_text("", "", "", "ok") == ("", "page", "empty")
    assert choose_text("", "", "", "timeout") == ("", "page", "timeout")


# --- the worker pool -----------------------------------------------------------------
# The pool runs these module-level functions in its workers (they must be
# importable there), standing in for trafilatura misbehaving on a page.

HANG, CRASH, RAISE = b"hang", b"crash", b"raise"


def misbehaving_extractor(html: bytes, url: str | None, declared_charset: str | None = None) -> Article:
    if html == HANG:
        time.sleep(300)
    if html == CRASH:
        os._exit(3)
    if html == RAISE:
        raise ValueError("lxml blew up")
    return extract_article(html, url, declared_charset=declared_charset)


def run(coroutine):
    return asyncio.run(coroutine)


def test_pool_extracts_in_parallel() -> None:
    pages = [
        article_page(sentences=[f"Story {n}. {sentence}" for sentence in ARTICLE_SENTENCES]).encode() for n in range(8)
    ]
    cp1252_page = article_page(charset_meta="", sentences=[f"{WESTERN}. {s}" for s in ARTICLE_SENTENCES]).encode("cp1252")

    async def scenario():
        async with ExtractorPool(workers=2) as pool:
            return await asyncio.gather(
                *(pool.extract(page, ARTICLE_URL) for page in pages),
                pool.extract(cp1252_page, ARTICLE_URL, declared_charset="windows-1252"),
            )

    outcomes = run(scenario())
    assert [outcome.status for outcome in outcomes] == ["ok"] * 9
    for n, outcome in enumerate(outcomes[:8]):
        assert outcome.article == extract_article(pages[n], ARTICLE_URL)
        assert f"Story {n}. {ARTICLE_SENTENCES[0]}" in outcome.article.text
    assert WESTERN in outcomes[8].article.text


def test_pool_cuts_off_a_hang_and_survives_crashes() -> None:
    page = article_page().encode()

    async def scenario():
        async with ExtractorPool(workers=2, time_limit=4, extractor=misbehaving_extractor) as pool:
            first = await asyncio.gather(
                pool.extract(HANG, None), pool.extract(page, ARTICLE_URL), pool.extract(CRASH, None)
            )
            raised = await pool.extract(RAISE, None)
            # after a killed and a dead worker, both replacements work
            after = await asyncio.gather(*(pool.extract(page, ARTICLE_URL) for _ in range(4)))
            return first, raised, after

    (hung, normal, crashed), raised, after = run(scenario())

    assert hung.status == "timeout"
    assert "4 s" in hung.error
    assert hung.article == Article()
    assert normal.status == "ok" and ARTICLE_SENTENCES[0] in normal.article.text
    assert crashed.status == "error"
    assert "exit code 3" in crashed.error
    assert raised.status == "error"
    assert "ValueError" in raised.error and "lxml blew up" in raised.error
    assert all(outcome.status == "ok" and ARTICLE_SENTENCES[0] in outcome.article.text for outcome in after)


@pytest.mark.timeout(30)
def test_cancelling_a_page_kills_its_worker() -> None:
    # With a 120 s limit, closing the pool would wait out the hang if
    # cancelling did not stop the worker; the timeout mark turns that into a failure.
    async def scenario():
        async with ExtractorPool(workers=1, time_limit=120, extractor=misbehaving_extractor) as pool:
            hanging = asyncio.create_task(pool.extract(HANG, None))
            await asyncio.sleep(1)
            hanging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hanging
            return await pool.extract(article_page().encode(), ARTICLE_URL)

    assert run(scenario()).status == "ok"


# --- the shared extraction-dev pages ---------------------------------------------------


def _shared_pages_dir() -> Path:
    shared = os.environ.get("AGG_SHARED_DATA") or str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    return Path(shared) / "extraction-dev" / "readability-test-pages"


def test_dev_pages_sample_extracts_without_failures() -> None:
    pages_dir = _shared_pages_dir()
    if not pages_dir.is_dir():
        pytest.skip(f"shared extraction-dev pages absent at {pages_dir}")
    folders = sorted(p for p in pages_dir.iterdir() if (p / "source.html").is_file())
    sample = folders[:: max(1, len(folders) // 20)]

    empty_readerable = []
    for folder in sample:
        metadata = json.loads((folder / "expected-metadata.json").read_text(encoding="utf-8"))
        article = extract_article((folder / "source.html").read_bytes(), "http://fakehost/test/page.html")
        if metadata.get("readerable") and not article.text:
            empty_readerable.append(folder.name)

    assert len(sample) >= 15
    assert empty_readerable == []
