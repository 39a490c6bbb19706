"""Placed reports' features stored in SQLite (migration 7, dedup.stored): written once, loaded instead of texts."""

from __future__ import annotations

import gc
import sqlite3
from datetime import timedelta
from itertools import combinations

import numpy as np
import pytest

from aggregator import store as store_module
from aggregator.dedup import DedupSettings, GroupingSession, StoryGrouper, group_new_entries, score_pair
from aggregator.dedup import grouper as grouper_module
from aggregator.dedup import session as session_module
from aggregator.dedup.stored import _HEADER, StoredTokens, complete, decode, decode_all, encode, snapshot
from aggregator.dedup.vectors import TOKENS
from aggregator.store import SCHEMA_VERSION, Store
from aggregator.dedup import Report
from tests.test_dedup import T0, _feeds, _insert_entries, article, fixture_reports
from tests.test_grouping_session import FIRST, SECOND, stories_by_title


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    yield store
    store.close()


def counting_make_features(monkeypatch) -> list:
    """Every report the grouper reads from its text, by id, from now on."""
    read: list = []
    real = grouper_module.make_features

    def make_features(report, settings, reading=None):
        if reading is None:  # else its text was read already, by a read-ahead worker
            read.append(report.id)
        return real(report, settings, reading)

    monkeypatch.setattr(grouper_module, "make_features", make_features)
    return read


def test_placed_reports_store_their_features_and_a_later_run_reads_no_stored_text(store, monkeypatch):
    db = store.db
    feed_ids = _feeds(db, fixture_reports(*FIRST, *SECOND))
    _insert_entries(db, fixture_reports(*FIRST), feed_ids)
    assert group_new_entries(db, DedupSettings()).placed == 6
    assert db.execute("SELECT count(*) FROM entry_features").fetchone()[0] == 6
    assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] > 100

    read = counting_make_features(monkeypatch)
    _insert_entries(db, fixture_reports(*SECOND), feed_ids)
    assert group_new_entries(db, DedupSettings()).placed == 4
    new_ids = {row[0] for row in db.execute(f"SELECT id FROM entries WHERE guid IN ({','.join('?' * 4)})",
                                            [f"guid-{r}" for r in SECOND])}
    assert set(read) == new_ids  # the six stored reports came from their rows
    assert db.execute("SELECT count(*) FROM entry_features").fetchone()[0] == 10
    stories = stories_by_title(db)
    assert len(stories) == 3 and max(len(s) for s in stories) >= 4  # the later reports joined stored stories


def test_stored_features_score_exactly_as_the_placed_ones(store):
    """Encoded, written and decoded with a fresh token map, a report compares with every other as before."""
    grouper = StoryGrouper(DedupSettings(window_hours=24 * 3650))  # every report stays in the window
    docs, snapshots = [], []
    for report in fixture_reports():
        grouper.add(report)
        docs.append(grouper.last_placed)
        snapshots.append(snapshot(grouper.last_placed))  # at once: a report that leaves the window is released
    grouper_docs = list(docs)
    docs = [doc for doc in docs if doc.key_tokens]  # the ones still in the window, to compare with
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    written = StoredTokens()
    blobs = {snap_doc.report.id: encode(snap, written, conn) for snap_doc, snap in zip(grouper_docs, snapshots)}
    conn.execute("COMMIT")
    tokens = StoredTokens()
    tokens.refresh(conn)
    loaded = [decode(blobs[doc.report.id], doc.report, tokens) for doc in docs]
    assert len(loaded) > 20
    settings = DedupSettings()
    for doc, again in zip(docs, loaded):
        for name in ("title", "sorted_title", "generic_title", "title_tokens", "has_body", "key_tokens",
                     "title_numbers", "figures", "years", "length", "hour", "canonical", "fingerprint",
                     "title_weights", "title_mass", "text", "lead", "names"):
            assert getattr(again, name) == getattr(doc, name), (doc.report.id, name)
        assert sorted(again.vocabulary.tolist()) == sorted(doc.vocabulary.tolist())
    for (a, a_again), (b, b_again) in combinations(list(zip(docs, loaded))[:30], 2):
        assert score_pair(a, b_again, settings) == score_pair(a, b, settings) == score_pair(a_again, b, settings)
    blob = blobs[docs[0].report.id]
    assert decode(b"\x63" + blob[1:], docs[0].report, tokens) is None  # a format it does not know
    assert decode(blob, docs[0].report, StoredTokens()) is None  # tokens not read yet: the text is read instead


def test_decoding_many_blobs_at_once_gives_each_ones_features_and_none_for_the_unreadable(store):
    """decode_all reads the headers of a batch at once: every report's features as they were placed, blobs of
    both formats mixed, and None only in the place of a blob it cannot read (unknown format, cut short, longer
    than its header says, empty, or naming a token newer than the map)."""
    grouper = StoryGrouper(DedupSettings(window_hours=24 * 3650))
    docs = [grouper.last_placed for report in fixture_reports() if grouper.add(report)]
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    written = StoredTokens()
    blobs = [encode(snapshot(doc), written, conn) for doc in docs]
    conn.execute("COMMIT")
    tokens = StoredTokens()
    tokens.refresh(conn)
    assert tokens.current(conn)
    reports = [doc.report for doc in docs]
    mixed = [as_format_1(blob) if n % 2 else blob for n, blob in enumerate(blobs)]
    broken = {3: b"\x63" + blobs[3][1:], 5: blobs[5][:40], 6: blobs[6][:_HEADER.size + 8], 7: b"",
              8: blobs[8][:-3], 10: blobs[10] + b"\0", 9: None}
    mixed = [broken.get(n, blob) for n, blob in enumerate(mixed)]
    seeded = ("generic_title", "has_body", "key_tokens", "length", "hour", "dated", "canonical", "fingerprint",
              "title_mass")
    compared = ("title", "sorted_title", "title_tokens", "title_numbers", "figures", "years", "title_weights",
                "text", "lead", "names")
    for deferred in (False, True):
        for tokens_current in (False, True):
            decoded = decode_all(mixed, reports, tokens, deferred=deferred, tokens_current=tokens_current)
            assert [n for n, doc in enumerate(decoded) if doc is None] == sorted(broken)
            for doc, placed, blob in zip(decoded, docs, mixed):
                if doc is None:
                    continue
                for name in seeded + (() if deferred else compared):
                    assert getattr(doc, name) == getattr(placed, name), (placed.report.id, name)
                assert sorted(doc.vocabulary.tolist()) == sorted(placed.vocabulary.tolist())
                assert doc.key_ids.tolist() == [TOKENS.id_of(token) for token in placed.key_tokens]
                assert doc.deferred == (blob if deferred else None)
                if deferred:
                    complete(doc, tokens)
                    for name in compared:
                        assert getattr(doc, name) == getattr(placed, name), (placed.report.id, name)
    # A token added by another writer after the map was read: blobs naming it are read from their texts.
    other = sqlite3.connect(store.path)
    other.execute("INSERT INTO tokens (id, token) VALUES (?, 'a-token-added-since')", [tokens.newest + 1])
    other.commit()
    other.close()
    assert not tokens.current(conn)
    newer = bytearray(blobs[0])
    last_id = len(newer) - 4 - sum(_HEADER.unpack_from(blobs[0])[-3:])  # the last id, before the strings
    newer[last_id:last_id + 4] = (tokens.newest + 1).to_bytes(4, "little")
    first, second = decode_all([bytes(newer), blobs[1]], reports[:2], tokens)
    assert first is None and second is not None


def as_format_1(blob: bytes) -> bytes:
    """A version-2 blob as version 1 wrote it: the vectors' weights as float64."""
    header = _HEADER.unpack_from(blob)
    n_title, n_vectors = header[10], sum(header[16:19])
    at = _HEADER.size + 8 * n_title
    weights = np.frombuffer(blob, dtype="<f4", count=n_vectors, offset=at).astype("<f8")
    return b"\x01" + blob[1:at] + weights.tobytes() + blob[at + 4 * n_vectors:]


def test_features_stored_with_float64_weights_load_as_the_engine_keeps_them(store):
    """Rows written before the weights were float32 (format 1) load with the same features and scores."""
    grouper = StoryGrouper(DedupSettings(window_hours=24 * 3650))
    docs = [grouper.last_placed for report in fixture_reports() if grouper.add(report)]
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    blobs = [encode(snapshot(doc), StoredTokens(), conn) for doc in docs]
    conn.execute("COMMIT")
    tokens = StoredTokens()
    tokens.refresh(conn)
    with_bodies = 0
    for doc, blob in zip(docs, blobs):
        old = decode(as_format_1(blob), doc.report, tokens)
        assert old is not None and old.text.weights.dtype == np.float32
        assert (old.text, old.lead, old.names, old.title_weights) == (doc.text, doc.lead, doc.names, doc.title_weights)
        with_bodies += doc.has_body
    assert with_bodies > 20


def test_entries_grouped_before_migration_7_are_read_from_their_texts(tmp_path, monkeypatch):
    path = tmp_path / "agg.db"
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 6)
    monkeypatch.setattr(session_module, "write_outlet_feeds", lambda conn, story_ids: None)  # no column before 8
    old = Store.open(path)
    feed_ids = _feeds(old.db, fixture_reports(*FIRST, *SECOND))
    _insert_entries(old.db, fixture_reports(*FIRST), feed_ids)
    # Grouped by an agg of schema 6: nothing stored.
    assert GroupingSession(old.db, DedupSettings(), stored_features=False).place_ready().placed == 6
    old.close()
    monkeypatch.undo()

    store = Store.open(path)
    db = store.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    assert db.execute("SELECT count(*) FROM entry_features").fetchone()[0] == 0
    read = counting_make_features(monkeypatch)
    _insert_entries(db, fixture_reports(*SECOND), feed_ids)
    assert group_new_entries(db, DedupSettings()).placed == 4
    assert len(read) == 10  # the six stored ones from their texts, then the four new ones
    assert db.execute("SELECT count(*) FROM entry_features").fetchone()[0] == 4
    store.close()

    # The same entries grouped by this agg throughout: the same stories.
    again = Store.open(tmp_path / "again.db")
    feed_ids = _feeds(again.db, fixture_reports(*FIRST, *SECOND))
    _insert_entries(again.db, fixture_reports(*FIRST), feed_ids)
    group_new_entries(again.db, DedupSettings())
    _insert_entries(again.db, fixture_reports(*SECOND), feed_ids)
    group_new_entries(again.db, DedupSettings())
    with sqlite3.connect(path) as conn:
        assert stories_by_title(again.db) == stories_by_title(conn)
    again.close()


def test_an_edited_entry_loses_its_stored_features_and_a_deleted_one_its_row(store):
    db = store.db
    feed_ids = _feeds(db, fixture_reports(*FIRST))
    _insert_entries(db, fixture_reports(*FIRST), feed_ids)
    group_new_entries(db, DedupSettings())
    first, second, third = (row[0] for row in db.execute("SELECT id FROM entries ORDER BY id LIMIT 3"))
    db.execute("UPDATE entries SET extract_status = 'done', changed_at = 'x' WHERE id = ?", [first])
    db.execute("UPDATE entries SET title = title WHERE id = ?", [first])  # the same title: still valid
    db.execute("UPDATE entries SET title = 'A corrected headline' WHERE id = ?", [second])
    db.execute("DELETE FROM story_members WHERE entry_id = ?", [third])
    db.execute("DELETE FROM entries WHERE id = ?", [third])
    stored = {row[0] for row in db.execute("SELECT entry_id FROM entry_features")}
    assert first in stored and second not in stored and third not in stored
    assert len(stored) == 4


def test_the_token_table_gives_each_token_one_id_across_sessions(store):
    db = store.db
    feed_ids = _feeds(db, fixture_reports(*FIRST, *SECOND))
    _insert_entries(db, fixture_reports(*FIRST), feed_ids)
    group_new_entries(db, DedupSettings())
    _insert_entries(db, fixture_reports(*SECOND), feed_ids)
    group_new_entries(db, DedupSettings())
    rows = db.execute("SELECT id, token FROM tokens").fetchall()
    assert len({token for _, token in rows}) == len(rows)
    assert all(TOKENS.known(token) is not None for _, token in rows)


def test_the_token_table_starts_afresh_past_its_limit_only_while_no_grouper_is_alive(monkeypatch):
    """A daemon groups run after run in one process: the table of tokens must not grow for ever."""
    monkeypatch.setattr(grouper_module, "TOKEN_TABLE_LIMIT", 10)
    gc.collect()  # groupers of earlier tests
    first = StoryGrouper()
    placed = first.add_many(fixture_reports())
    assert len(TOKENS) > 10
    second = StoryGrouper()  # the first is alive: its features hold ids
    assert len(TOKENS) > 10 and second.add_many(fixture_reports()) == placed
    del first, second
    gc.collect()
    third = StoryGrouper()
    assert len(TOKENS) == 0  # nothing held ids: the table started afresh
    assert third.add_many(fixture_reports()) == placed


def seeded_twice(store, settings: DedupSettings) -> tuple[StoryGrouper, StoryGrouper, int]:
    """The rewritten fixture's first half grouped, stored, and seeded into two groupers: one reads every member
    whole (as before), one defers what only comparisons need and posts nothing until a token is looked up."""
    from tests.test_dedup_fastpaths import rewritten_reports

    reports = sorted(rewritten_reports(), key=lambda r: r.published)
    first, later = reports[: len(reports) // 2], reports[len(reports) // 2:]
    # Stories of words no later report uses: nothing reaches them.
    first += [Report(f"apart{n}", f"Qx{n}a Qx{n}b Qx{n}c Qx{n}d announced", article(n, 150), source="Elsewhere",
                     published=later[-1].published) for n in range(5)]
    placing = StoryGrouper(settings)
    members: dict[int, list] = {}
    snapshots = {}
    for report in first:
        placement = placing.add(report)
        members.setdefault(placement.story_id, []).append(report)
        snapshots[report.id] = snapshot(placing.last_placed)
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    written = StoredTokens()
    blobs = {report_id: encode(snap, written, conn) for report_id, snap in snapshots.items()}
    conn.execute("COMMIT")
    tokens = StoredTokens()
    tokens.refresh(conn)
    whole, deferred = StoryGrouper(settings, first_new_id=10_000), StoryGrouper(settings, first_new_id=10_000)
    deferred.complete = lambda doc: complete(doc, tokens)
    for story_id in sorted(placing.stories):
        story = [placing.resolve(story_id) == story_id and r for r in members.get(story_id, [])]
        story = [r for r in story if r]
        if story:
            read = [decode(blobs[r.id], r, tokens) for r in story]
            for doc in read:
                doc.key_ids = None  # posted at once, as members read from their texts are
            whole.seed(story_id, read)
            deferred.seed(story_id, [decode(blobs[r.id], r, tokens, deferred=True) for r in story])
    return whole, deferred, later


def test_a_later_run_seeded_lazily_decides_as_one_that_read_every_stored_member(store):
    """Deferred members and postings made on first look-up: the same placements, merges and postings, and most
    stored members never read whole. A low max_posting_stories crowds some tokens."""
    settings = DedupSettings(max_posting_stories=4)
    whole, deferred, later = seeded_twice(store, settings)
    assert deferred.index.unposted and not deferred.index.postings and whole.index.postings  # nothing posted yet
    for report in later:
        assert deferred.add(report) == whole.add(report), report.id
    assert deferred.merges == whole.merges and deferred.clusters() == whole.clusters()
    apart = [m for s in deferred.stories.values() for m in s.members if str(m.report.id).startswith("apart")]
    assert len(apart) == 5 and all(m.deferred is not None for m in apart)  # never compared, never read whole
    assert any(m.deferred is None and m.report.id in whole.story_of for s in deferred.stories.values()
               for m in s.members if not str(m.report.id).startswith("apart"))
    for token in list(deferred.index.unposted_tokens):
        deferred.index.ensure_posted(token)
    assert deferred.index.postings == {t: s for t, s in whole.index.postings.items() if s}
    assert deferred.index.crowded == whole.index.crowded
    assert whole.index.crowded  # crowded tokens were exercised


def test_a_blob_naming_a_token_newer_than_the_sessions_token_map_is_read_from_its_text(store):
    """Another process may store a report and its new tokens between a session's read of ``tokens`` and its
    read of the report's blob: an id the map lacks, in any part of the blob, sends the report to its text."""
    names = "Alvar Brisk, Cedric Dorn, Elsa Fenwick, Gustav Holm, Ingrid Jarl, Kasper Lund, Maja Norr, Olle Persson"
    grouper = StoryGrouper(DedupSettings())
    grouper.add(Report("x", "Harbour plan talks - Zorblatt Herald",
                       f"{names} met on Monday to discuss the harbour plan, officials said. " * 3,
                       source="Zorblatt Herald", published=T0))
    doc = grouper.last_placed
    read_by_seeding = np.unique(np.concatenate(
        [doc.vocabulary, TOKENS.ids_of(list(doc.key_tokens)), TOKENS.ids_of(list(doc.title_tokens))]))
    only_in_vectors = set(doc.names.ids.tolist()) - set(read_by_seeding.tolist())
    assert only_in_vectors  # the case: ids only the vectors carry ("zorblatt", "herald")
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    StoredTokens().to_database(conn, read_by_seeding)  # stored earlier, with other reports
    conn.execute("COMMIT")
    session_tokens = StoredTokens()
    session_tokens.refresh(conn)
    conn.execute("BEGIN IMMEDIATE")
    blob = encode(snapshot(doc), StoredTokens(), conn)  # another process: this report and its last tokens
    conn.execute("COMMIT")
    assert decode(blob, doc.report, session_tokens) is None
    assert decode(blob, doc.report, session_tokens, deferred=True) is None
    session_tokens.refresh(conn)
    again = decode(blob, doc.report, session_tokens, deferred=True)
    complete(again, session_tokens)
    assert again.names == doc.names and again.text == doc.text


def test_stories_seeded_after_the_first_look_up_are_posted_at_once(store):
    """Once postings were looked up, a story seeded later is posted at once: the index of unposted stories is
    never read again, so a token emptied meanwhile does not bring back the postings of a report gone since."""
    body = ("The city council approved the new harbour bridge after a long debate, officials said on Tuesday. "
            "Construction of the bridge is expected to take three years and cost the city a large sum. ")
    old = Report("old", "Council approves harbour bridge", body, source="A", published=T0)
    later = Report("later", "Council approves harbour bridge again", body, source="B", published=T0 + timedelta(days=14))
    untitled = Report("untitled", "", "", source="C", published=T0 + timedelta(days=7))
    incoming = Report("new", "Council approves the harbour bridge", body, source="D",
                      published=T0 + timedelta(days=14, hours=1))
    placing = StoryGrouper(DedupSettings(window_hours=24 * 3650))
    snapshots = {}
    for report in (old, later):
        placing.add(report)
        snapshots[report.id] = snapshot(placing.last_placed)
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    blobs = {key: encode(snap, StoredTokens(), conn) for key, snap in snapshots.items()}
    conn.execute("COMMIT")
    tokens = StoredTokens()
    tokens.refresh(conn)

    def placed(lazy: bool) -> tuple:
        grouper = StoryGrouper(DedupSettings(max_posting_stories=1), first_new_id=100)
        grouper.complete = lambda doc: complete(doc, tokens)

        def member(report):
            doc = decode(blobs[report.id], report, tokens, deferred=lazy)
            doc.key_ids = doc.key_ids if lazy else None  # posted at once, as members read from texts are
            return doc

        grouper.seed(1, [member(old)])
        placements = [grouper.add(untitled)]  # "old" leaves the window: nothing stays posted
        grouper.seed(2, [member(later)])
        placements.append(grouper.add(incoming))
        return placements, dict(grouper.index.postings), grouper.index.crowded

    assert placed(lazy=True) == placed(lazy=False)
    assert placed(lazy=True)[0][1].story_id == 2  # the later report's story, not a new one
