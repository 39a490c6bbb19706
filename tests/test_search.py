"""Full-text search: the query reading, the index kept off the insert path, ``agg search``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed
from aggregator.search import MATCH_END, MATCH_START, SearchQueryError, fts_query, search, split_matches
from aggregator.store import Store, utc_now
from tests import sample_db
from tests.server import Reply


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return sample_db.build(tmp_path / "agg.db")


@pytest.fixture
def store(db: Path):
    store = Store.open(db)
    yield store
    store.close()


def integrity_ok(store: Store) -> None:
    """FTS5's own check that the index matches the entries table exactly (raises if not)."""
    store.db.execute("INSERT INTO entries_fts (entries_fts, rank) VALUES ('integrity-check', 1)")


def save(store: Store, feed_id: int, *entries: tuple[str, str, str]) -> list[int]:
    parsed = ParsedFeed(format="rss20", entries=[
        ParsedEntry(guid=guid, link=f"http://x.test/{guid}", title=title, summary_text=text)
        for guid, title, text in entries])
    result = FetchResult(url="http://x.test/feed", final_url="http://x.test/feed", status=200, body=b"")
    return store.save_fetch(feed_id, result, parsed, {}, extract=False).new_entry_ids


def hits_for(store: Store, query: str) -> list[int]:
    return [hit.entry_id for hit in search(store, query)]


# -- reading the query --------------------------------------------------------


@pytest.mark.parametrize(("typed", "query"), [
    ("port strike", '"port" "strike"'),
    ("AT&T covid-19", '"AT&T" "covid-19"'),
    ("it's", '"it\'s"'),
    ('"port strike" OR rates', '"port strike" OR rates'),
    ("strik*", "strik*"),
    ("title:strike", "title:strike"),
    ("NEAR(port strike)", "NEAR(port strike)"),
    ("and or not", '"and" "or" "not"'),   # lower-case words are words, not operators
])
def test_fts_query_quotes_plain_words_and_passes_fts_syntax_through(typed, query):
    assert fts_query(typed) == query


@pytest.mark.parametrize("typed", ["", "   ", "!!! ???"])
def test_fts_query_refuses_a_query_without_words(typed):
    with pytest.raises(SearchQueryError, match="no words"):
        fts_query(typed)


def test_split_matches():
    marked = f"The {MATCH_START}strike{MATCH_END} at the {MATCH_START}port{MATCH_END}"
    assert split_matches(marked) == [("The ", False), ("strike", True), (" at the ", False), ("port", True)]


# -- searching ----------------------------------------------------------------


def test_one_result_per_story_ranked_and_highlighted(store):
    hits = search(store, "strike")
    assert len(hits) == 1  # three reports match, all of one story
    hit = hits[0]
    assert (hit.story_id, hit.matching_reports, hit.story_reports, hit.story_outlets) == (1, 3, 3, 3)
    assert hit.story_title == "Port workers strike over pay"
    assert f"{MATCH_START}strike{MATCH_END}" in hit.snippet
    assert f"{MATCH_START}" in hit.title


def test_stemming_matches_other_forms_and_ranking_puts_the_better_story_first(store):
    hits = search(store, "rate")   # "rates", "rate", "Rates": porter stemming
    assert [h.story_id for h in hits] == [2]
    both = search(store, "central OR strike")
    assert {h.story_id for h in both} == {1, 2}
    titles_weighted = search(store, "interest")
    assert titles_weighted[0].title.startswith("Central bank raises")


def test_since_limits_to_recent_reports(store):
    assert {h.story_id for h in search(store, "strike OR library")} == {1, 3}
    recent = search(store, "strike OR library", since=utc_now() - timedelta(hours=24))
    assert [h.story_id for h in recent] == [1]


def test_the_best_match_of_each_story_whatever_batches_the_stories_are_looked_up_in(store, monkeypatch):
    """Many matches, some in stories and some not yet: the same results and counts as ranking within each
    story in one query over every match, however few matches each lookup takes."""
    feed_id = store.feeds()[0]["id"]
    ids = save(store, feed_id, *[(f"h{n}", f"harbour report {n}", "harbour " * (1 + n % 7) + f"words {n}")
                                 for n in range(40)])
    with store.transaction() as conn:
        for index, entry_id in enumerate(ids[:24]):
            conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (1 + index % 3, entry_id))
    store.refresh_search_index()
    reference = store.db.execute("""
        WITH hits AS (SELECT rowid AS entry_id, bm25(entries_fts, 4.0, 1.0) AS rank
                      FROM entries_fts WHERE entries_fts MATCH 'harbour'),
        placed AS (SELECT h.entry_id, h.rank,
                          row_number() OVER (PARTITION BY COALESCE(e.story_id, -e.id) ORDER BY h.rank, e.id) AS place,
                          count(*) OVER (PARTITION BY COALESCE(e.story_id, -e.id)) AS matching
                   FROM hits h JOIN entries e ON e.id = h.entry_id)
        SELECT entry_id, matching FROM placed WHERE place = 1 ORDER BY rank, entry_id LIMIT 10""").fetchall()
    assert len(reference) == 10 and any(matching > 1 for _, matching in reference)
    for batch in (1, 3, 500):
        monkeypatch.setattr("aggregator.search.STORY_LOOKUP_BATCH", batch)
        hits = search(store, "harbour", limit=10)
        assert [(hit.entry_id, hit.matching_reports) for hit in hits] == [tuple(row) for row in reference], batch


def test_a_broken_fts_expression_is_a_clear_error(store):
    with pytest.raises(SearchQueryError, match=r'write phrases in "double quotes"'):
        search(store, '"unterminated phrase')
    with pytest.raises(SearchQueryError, match="syntax error"):
        search(store, "strike AND")


def test_the_index_has_the_sqlite_utils_shape_datasette_detects(store):
    assert store.db["entries"].detect_fts() == "entries_fts"


# -- keeping the index -----------------------------------------------------------


def test_new_entries_are_indexed_by_the_refresh_not_on_insert():
    store = Store.memory()
    feed_id = store.sync_feeds([SimpleNamespace(url="http://x.test/feed", title="X", tags=[])])["http://x.test/feed"]["id"]
    save(store, feed_id, ("a", "Glacier melts early", "Scientists measured the glacier."))
    assert store.entries_not_indexed() == 1
    assert hits_for(store, "glacier") == []
    assert store.refresh_search_index() == 1
    assert store.entries_not_indexed() == 0
    assert len(hits_for(store, "glacier")) == 1
    assert store.refresh_search_index() == 0  # nothing new: nothing indexed twice
    integrity_ok(store)


def test_a_refresh_limited_to_some_ids_indexes_those_and_the_next_refresh_the_rest():
    store = Store.memory()
    feed_id = store.sync_feeds([SimpleNamespace(url="http://x.test/feed", title="X", tags=[])])["http://x.test/feed"]["id"]
    for n in range(5):
        save(store, feed_id, (f"g{n}", f"Glacier report {n}", "Scientists measured the glacier."))
    assert store.refresh_search_index(most_ids=2) == 2
    assert store.entries_not_indexed() == 3 and len(hits_for(store, "glacier")) == 2
    assert store.refresh_search_index(most_ids=2) == 2
    assert store.refresh_search_index(most_ids=2) == 1
    assert store.entries_not_indexed() == 0 and len(hits_for(store, "glacier")) == 5
    integrity_ok(store)


def test_changes_to_indexed_entries_are_kept_in_step():
    store = Store.memory()
    feed_id = store.sync_feeds([SimpleNamespace(url="http://x.test/feed", title="X", tags=[])])["http://x.test/feed"]["id"]
    first, second = save(store, feed_id, ("a", "Old headline", "walrus"), ("b", "Other", "penguin"))
    store.refresh_search_index()

    store.save_extraction(first, text="the page says narwhal", text_source="page", status="ok")
    save(store, feed_id, ("b", "Other, updated", "penguin and puffin"))   # the feed changed entry b
    assert hits_for(store, "walrus") == []
    assert hits_for(store, "narwhal") == [first]
    assert hits_for(store, "puffin") == [second]
    integrity_ok(store)

    # A delete of the newest entry hands its id to the next insert: that one must still be indexed.
    store.db.execute("DELETE FROM entries WHERE id = ?", [second])
    (reused,) = save(store, feed_id, ("c", "Fresh", "albatross"))
    assert reused == second
    store.refresh_search_index()
    assert hits_for(store, "albatross") == [reused]
    assert hits_for(store, "puffin") == []
    integrity_ok(store)


def test_rebuild_gives_the_same_index(store):
    before = [(h.story_id, h.entry_id) for h in search(store, "strike OR rates OR library")]
    assert store.refresh_search_index(rebuild=True) == len(sample_db.ENTRIES)
    integrity_ok(store)
    assert [(h.story_id, h.entry_id) for h in search(store, "strike OR rates OR library")] == before


# -- agg search ------------------------------------------------------------------


def agg(db: Path, *args: str):
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def test_cli_search_plain_lines_when_piped(db):
    result = agg(db, "search", "harbour", "strike")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(lines) == 1
    story_id, entry_id, published, outlet, title, snippet = lines[0]
    assert story_id == "1" and outlet in ("The Daily Ledger", "Northgate Post")
    assert MATCH_START not in snippet and "strike" in snippet.lower()


def test_cli_search_json(db):
    result = agg(db, "search", "central bank", "--json")
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["story_id"] for hit in hits] == [2]
    assert "<mark>central</mark>" in hits[0]["snippet_html"].lower()
    assert MATCH_START not in hits[0]["snippet"]
    assert hits[0]["story_title"] == "Central bank raises interest rates"


def test_cli_search_since_and_limit(db):
    assert agg(db, "search", "strike OR library", "--since", "24h").stdout.count("\n") == 1
    assert agg(db, "search", "strike OR library", "--limit", "1").stdout.count("\n") == 1


def test_cli_search_bad_query_is_a_usage_error(db):
    result = agg(db, "search", "strike AND")
    assert result.exit_code == 2
    assert result.stderr.startswith("agg: error: cannot read the query 'strike AND'")


def test_cli_search_says_when_entries_wait_for_the_index(db):
    store = Store.open(db)
    feed_id = store.feeds()[0]["id"]
    save(store, feed_id, ("late", "Late news", "not yet searchable"))
    store.close()
    result = agg(db, "search", "searchable")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "1 entries are not searchable yet" in result.stderr


def test_cli_search_without_a_database(tmp_path):
    result = agg(tmp_path / "none.db", "search", "x")
    assert result.exit_code == 1
    assert "no database" in result.stderr


def test_agg_fetch_leaves_new_entries_searchable(server, tmp_path):
    server.route("/feed.xml", Reply(body=(
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Zoo</title><link>http://zoo.test/</link>'
        b"<item><title>Quokka born at the zoo</title><link>http://zoo.test/1</link>"
        b"<description>Keepers welcomed a healthy quokka joey.</description></item>"
        b"</channel></rss>")))
    config = tmp_path / "feeds.yaml"
    config.write_text(f"defaults:\n  extract: false\nfeeds:\n  - url: {server.url('/feed.xml')}\n", encoding="utf-8")
    base = ["--config", str(config), "--db", str(tmp_path / "agg.db")]
    assert CliRunner().invoke(cli, [*base, "fetch"]).exit_code == 0
    result = CliRunner().invoke(cli, [*base, "search", "quokka", "--json"])
    assert result.exit_code == 0, result.output
    (hit,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert hit["title"] == "Quokka born at the zoo" and hit["outlet"] == "Zoo"
    assert result.stderr == ""   # nothing left waiting for the index
