"""``agg serve`` in a real browser: Debian's Chromium, driven by Playwright.

The reader serves a database fetched with ``agg fetch`` from the bundled
samples and two crafted feeds (see tests/reader.py): one with script payloads
in its titles, bodies and links, one that fails. Every page is checked for
what a person sees and for what must never happen: a dialog, a console
error, a script of the feed's running. The tests skip, saying why, only when
no Chromium is installed (``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

import pytest

from aggregator.config import load_config
from aggregator.evaluate import load_gold_by_entry
from aggregator.store import Store
from tests.reader import (
    BROKEN_FEED_TITLE,
    CHROMIUM,
    CHROMIUM_ARGS,
    HOSTILE_FEED_TITLE,
    HOSTILE_LINK_TITLE,
    HOSTILE_TEXT,
    HOSTILE_TITLE,
    SAMPLES,
)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests drive Debian's "
                    "(apt-get install -y chromium chromium-driver; AGG_CHROMIUM=PATH for another)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watched:
    """A page, and everything it did that a reader's page must not: dialogs, console errors, page errors,
    requests anywhere but the reader."""

    def __init__(self, context, base_url: str) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda message: message.type == "error"
                     and self.problems.append(f"console error: {message.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.base_url = base_url

    def _dialog(self, dialog) -> None:
        self.problems.append(f"dialog: {dialog.type} {dialog.message!r}")
        dialog.dismiss()

    def goto(self, path: str):
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        return response


@pytest.fixture
def watched(browser, running_reader) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    yield Watched(context, running_reader.base_url)
    context.close()


def listed_stories(page) -> list[dict]:
    return page.eval_on_selector_all("li.story", """items => items.map(item => ({
        title: item.querySelector("h2").innerText,
        href: item.querySelector("h2 a").getAttribute("href"),
        outlets: [...item.querySelectorAll(".chip")].map(chip => chip.dataset.outlet),
        original: [...item.querySelectorAll(".chip.original")].map(chip => chip.dataset.outlet),
    }))""")


def test_the_demo_stories_are_each_listed_once_with_all_their_outlets(watched, reader_db):
    watched.goto("/")
    listed = listed_stories(watched.page)
    outlet_of_feed = {feed.url: feed.title for feed in load_config(reader_db.config_path).feeds}
    gold_outlets: dict[str, set[str]] = defaultdict(set)
    for (feed_url, _guid), story in load_gold_by_entry(SAMPLES / "stories.jsonl", reader_db.samples_base_url).items():
        gold_outlets[str(story)].add(outlet_of_feed[feed_url])
    sample_outlets = set().union(*gold_outlets.values())
    samples_listed = [story for story in listed if set(story["outlets"]) <= sample_outlets]
    assert len(samples_listed) == len(gold_outlets) == 10
    assert sorted(sorted(story["outlets"]) for story in samples_listed) == sorted(
        sorted(outlets) for outlets in gold_outlets.values())
    assert len({story["title"] for story in listed}) == len(listed), "a story is listed twice"
    for story in samples_listed:
        assert len(story["outlets"]) == len(set(story["outlets"])), story
        assert len(story["original"]) == 1 and story["original"][0] in story["outlets"], story
    assert watched.problems == []


def test_a_story_page_shows_every_report_and_the_original_source(watched, reader_db):
    watched.goto("/?min_outlets=4")
    first = listed_stories(watched.page)[0]
    watched.page.click(f"li.story h2 a[href='{first['href']}']")
    watched.page.wait_for_url(re.compile(re.escape(first["href"]) + "$"))
    story_id = int(first["href"].rsplit("/", 1)[1])
    store = Store.open(reader_db.path, readonly=True)
    try:
        story = store.story(story_id)
        representative = store.entry(story["representative_id"])
    finally:
        store.close()
    page = watched.page
    assert page.inner_text("h1") == story["title"]
    reports = page.eval_on_selector_all("li.report", """items => items.map(item => ({
        outlet: item.querySelector(".outlet").innerText,
        title: item.querySelector(".report-title").innerText,
        href: item.querySelector(".report-title a")?.getAttribute("href"),
        rule: item.querySelector(".rule").innerText,
        original: item.classList.contains("is-original"),
    }))""")
    assert len(reports) == story["n_reports"] == len(story["reports"]) >= 4
    for shown, stored in zip(reports, story["reports"]):
        assert (shown["outlet"], shown["title"], shown["href"], shown["rule"]) == (
            stored["outlet"], stored["title"], stored["link"], stored["rule"])
        assert shown["original"] == (stored["id"] == story["original_entry_id"])
    original = next(r for r in story["reports"] if r["id"] == story["original_entry_id"])
    assert sum(r["original"] for r in reports) == 1
    assert f"Original source: {original['outlet']}" in page.inner_text(".original-source")
    assert page.locator("li.report.is-original .tag-original").inner_text().lower() == "original source"
    body = page.inner_text("section.body")
    first_paragraph = next(line for line in representative["text"].splitlines() if line.strip())
    assert first_paragraph.strip() in body
    assert watched.problems == []


def test_search_highlights_matches_one_result_per_story_and_explains_bad_syntax(watched):
    watched.goto("/")
    watched.page.fill(".quick-search input", "bridge")
    watched.page.press(".quick-search input", "Enter")
    watched.page.wait_for_url(re.compile(r"/search\?q=bridge$"))
    hits = watched.page.eval_on_selector_all("li.hit", """items => items.map(item => ({
        href: item.querySelector("h2 a").getAttribute("href"),
        marks: [...item.querySelectorAll("mark")].map(mark => mark.innerText.toLowerCase()),
    }))""")
    assert len(hits) == 1 and hits[0]["href"].startswith("/story/")
    assert hits[0]["marks"] and set(hits[0]["marks"]) == {"bridge"}
    assert "4 reports from 4 outlets" in watched.page.inner_text("li.hit .meta")

    watched.page.goto(watched.base_url + '/search?q=%22unbalanced')
    problem = watched.page.inner_text("[role=alert]")
    assert "cannot read the query" in problem and 'write phrases in "double quotes"' in problem
    assert watched.page.locator("li.hit").count() == 0
    assert [p for p in watched.problems if "400" not in p] == []  # the page itself is a 400


def test_the_feeds_page_highlights_the_failing_feed(watched):
    watched.goto("/feeds")
    row = watched.page.locator("tr", has_text=BROKEN_FEED_TITLE)
    assert row.count() == 1
    assert "has-error" in row.get_attribute("class") and "state-failing" in row.get_attribute("class")
    assert "HTTP 500" in row.locator("td.error").inner_text()
    assert watched.page.locator("tr.has-error").count() == 1  # only the broken one
    assert "1 failing" in watched.page.inner_text(".lede")
    assert watched.problems == []


def test_a_hostile_feed_shows_its_payloads_as_text_and_runs_nothing(watched, reader_db):
    store = Store.open(reader_db.path, readonly=True)
    try:
        story_ids = sorted({row["story_id"] for row in store.db.query(
            "SELECT e.story_id FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE f.url = ?",
            [reader_db.hostile_feed_url])})
    finally:
        store.close()
    assert len(story_ids) == 2 and None not in story_ids
    pages = ["/", *(f"/story/{story_id}" for story_id in story_ids), "/search?q=payload", "/feeds",
             "/?feed=" + HOSTILE_FEED_TITLE.replace("<", "%3C").replace(">", "%3E").replace(" ", "+")]
    seen_text = ""
    for path in pages:
        watched.goto(path)
        page = watched.page
        seen_text += page.inner_text("body")
        scripts = page.eval_on_selector_all("script", "all => all.map(s => s.getAttribute('src'))")
        assert scripts == ["/static/keys.js"], (path, scripts)
        handlers = page.evaluate("""() => [...document.querySelectorAll("*")].flatMap(
            element => [...element.attributes].map(a => a.name).filter(name => name.startsWith("on")))""")
        assert handlers == [], (path, handlers)
        hrefs = page.eval_on_selector_all("[href]", "all => all.map(a => a.getAttribute('href'))")
        assert not [h for h in hrefs if not h.startswith(("/", "http://", "https://"))], (path, hrefs)
        assert page.locator("img, svg, iframe, object, embed").count() == 0, path
        # Give anything that might run a moment to do it.
        page.wait_for_timeout(200)
    for payload in (HOSTILE_TITLE, HOSTILE_FEED_TITLE, HOSTILE_TEXT, HOSTILE_LINK_TITLE, "javascript:alert(12)"):
        assert payload in seen_text, f"{payload!r} is not shown as text"
    assert watched.problems == []
    assert all(url.startswith(watched.base_url) for url in watched.requests), watched.requests


def test_keyboard_j_k_move_between_stories_and_o_opens_one(watched):
    watched.goto("/")
    page = watched.page
    hrefs = [story["href"] for story in listed_stories(page)]

    def selected() -> list[str]:
        return page.eval_on_selector_all("li.story.selected h2 a", "all => all.map(a => a.getAttribute('href'))")

    assert selected() == []
    page.keyboard.press("j")
    assert selected() == [hrefs[0]]
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert selected() == [hrefs[2]]
    assert page.evaluate("document.activeElement.getAttribute('href')") == hrefs[2]
    page.keyboard.press("k")
    assert selected() == [hrefs[1]]
    page.keyboard.press("o")
    page.wait_for_url(re.compile(re.escape(hrefs[1]) + "$"))
    page.keyboard.press("j")
    assert page.locator("li.report.selected").count() == 1
    assert page.locator("li.report").first.get_attribute("class").endswith("selected")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("jk")  # typing in the box is typing, not moving
    assert page.input_value(".quick-search input") == "jk"
    assert page.locator("li.report.selected").count() == 1
    assert watched.problems == []


def listed_stories_of(browser, url: str) -> list[dict]:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(url)
        return listed_stories(page)
    finally:
        context.close()


def test_the_pages_work_without_javascript(browser, running_reader):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(running_reader.url("/"))
        page.select_option("select[name=tag]", "technology")
        page.click(".filters button[type=submit]")
        page.wait_for_url(re.compile(r"tag=technology"))
        stories = listed_stories(page)
        assert stories and all("Meridian Tech Review" in story["outlets"] for story in stories), stories
        assert len(stories) < len(listed_stories_of(browser, running_reader.url("/")))
        page.click("li.story h2 a >> nth=0")
        page.wait_for_url(re.compile(r"/story/\d+$"))
        assert page.locator("li.report").count() >= 1
    finally:
        context.close()
