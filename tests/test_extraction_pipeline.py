"""Article extraction through the real pipeline: pages served on 127.0.0.1, bodies stored in SQLite."""

from __future__ import annotations

import sqlite3

from tests.conftest import rss_document
from tests.server import Reply
from tests.test_pipeline import write_config

SENTENCES = [
    "The harbour authority approved a plan on Monday to deepen the northern shipping channel by four metres.",
    "Dredging will begin in April and is expected to take eighteen months, the authority said.",
    "Officials estimate the work will cost 41 million crowns, most of it paid by a regional transport fund.",
    "Fishing crews have warned that the silt could smother the mussel beds that sustain dozens of small firms.",
    "An independent survey of the seabed is due to be published before the first dredger arrives.",
    "The mayor called the decision a turning point for the port, which lost two container lines last year.",
]
BOILERPLATE = [
    "We use cookies to improve your experience. Accept all cookies",
    "Never miss a story: sign up for our morning newsletter",
    "Related stories",
    "Ferry timetable changes for the winter season",
    "Copyright 2026 Coastline Media Group. All rights reserved.",
    "Share on social media",
]


def article_page() -> bytes:
    related = "".join(f"<li><a href='/r{n}.html'>{title}</a></li>" for n, title in enumerate(
        [BOILERPLATE[3], "Council rejects plan for new marina", "Storm warning for the weekend"]))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Harbour channel to be deepened | Coastline News</title>
<link rel="canonical" href="https://coastline.example/news/harbour-channel-deepened">
</head><body>
<div class="cookie-banner"><p>{BOILERPLATE[0]}</p></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/local">Local</a></li>
<li><a href="/business">Business</a></li><li><a href="/sport">Sport</a></li></ul></nav></header>
<main><article>
<h1>Harbour channel to be deepened</h1>
<p class="byline">By Ines Okonkwo, 3 March 2026</p>
{''.join(f'<p>{s}</p>' for s in SENTENCES[:3])}
<aside class="newsletter"><p>{BOILERPLATE[1]}</p><form><input name="email"><button>Sign up</button></form></aside>
{''.join(f'<p>{s}</p>' for s in SENTENCES[3:])}
<div class="share"><a href="#">{BOILERPLATE[5]}</a></div>
</article>
<section class="related"><h2>{BOILERPLATE[2]}</h2><ul>{related}</ul></section>
</main>
<footer><p>{BOILERPLATE[4]}</p><a href="/about">About us</a> <a href="/privacy">Privacy</a></footer>
</body></html>""".encode()


def test_stored_body_holds_the_article_and_none_of_the_page_chrome(tmp_path, server, agg):
    page = server.route("/news/harbour.html", Reply(body=article_page(), content_type="text/html; charset=utf-8"))
    feed = server.route("/feed.xml", Reply(body=rss_document([
        {"guid": "harbour", "title": "Harbour channel to be deepened", "link": page + "?utm_source=rss",
         "description": "The harbour authority approved a plan."},
    ])))
    cfg = write_config(tmp_path, [{"url": feed, "extract": True}])
    db = tmp_path / "agg.db"
    assert agg("--config", cfg, "--db", db, "fetch").exit_code == 0

    conn = sqlite3.connect(db)
    entry_id, text, source, status, canonical = conn.execute(
        "SELECT id, text, text_source, extract_status, canonical_url FROM entries").fetchone()
    assert (source, status) == ("page", "ok")
    for sentence in SENTENCES:
        assert sentence in text
    for line in BOILERPLATE:
        assert line not in text
    assert canonical == "https://coastline.example/news/harbour-channel-deepened"

    shown = agg("--config", cfg, "--db", db, "show", "--entry", str(entry_id))
    assert shown.exit_code == 0 and SENTENCES[-1] in shown.output and BOILERPLATE[1] not in shown.output


def test_re_extract_fetches_pages_again(tmp_path, server, agg):
    page = server.route("/a.html", Reply(body=article_page(), content_type="text/html"))
    feed = server.route("/feed.xml", Reply(body=rss_document([{"guid": "a", "title": "A", "link": page}])))
    cfg = write_config(tmp_path, [{"url": feed, "extract": True}])
    db = tmp_path / "agg.db"
    for args in (["fetch"], ["fetch"], ["fetch", "--re-extract"]):
        assert agg("--config", cfg, "--db", db, *args).exit_code == 0
    assert len(server.hits("/a.html")) == 2  # once at first sight, once more when asked


def test_a_feed_with_extract_false_keeps_its_own_text_and_fetches_no_page(tmp_path, server, agg):
    page = server.route("/b.html", Reply(body=article_page(), content_type="text/html"))
    feed = server.route("/feed.xml", Reply(body=rss_document([
        {"guid": "b", "title": "B", "link": page, "description": "The feed's own teaser for B."}])))
    cfg = write_config(tmp_path, [{"url": feed, "extract": False}])
    db = tmp_path / "agg.db"
    assert agg("--config", cfg, "--db", db, "fetch").exit_code == 0
    text, source, status = sqlite3.connect(db).execute(
        "SELECT text, text_source, extract_status FROM entries").fetchone()
    assert (text, source, status) == ("The feed's own teaser for B.", "feed-summary", "skipped")
    assert server.hits("/b.html") == []
