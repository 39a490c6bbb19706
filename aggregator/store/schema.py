"""The database's schema, as the migrations that build it: each takes version N-1 to N."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from aggregator.store.listing import write_outlet_feeds

# Each migration takes the schema from version N-1 to N. Never edit one that
# has shipped: append a new one. A migration is an SQL script, or a function of the connection where the
# new rows need Python.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], object]] = [
    # 1: the initial schema.
    """
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        title TEXT,
        site_url TEXT,
        tags TEXT NOT NULL DEFAULT '[]',           -- from feeds.yaml
        format TEXT,
        etag TEXT,
        last_modified TEXT,
        last_fetch_at TEXT,
        last_status INTEGER,
        last_error TEXT,
        problem TEXT,
        error_count INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'ok',          -- ok | failing | disabled
        next_check_at TEXT,
        ttl_seconds INTEGER,
        redirect_to TEXT,                          -- last permanent redirect target
        redirect_count INTEGER NOT NULL DEFAULT 0, -- consecutive fetches that saw it
        created_at TEXT NOT NULL
    );
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        feed_id INTEGER NOT NULL REFERENCES feeds(id),
        guid TEXT NOT NULL,
        link TEXT,
        canonical_url TEXT,
        title TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL DEFAULT '',
        author TEXT,
        published TEXT,
        updated TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        enclosures TEXT NOT NULL DEFAULT '[]',
        first_seen TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        text TEXT NOT NULL DEFAULT '',
        text_source TEXT,                          -- page | feed-content | feed-summary
        extract_status TEXT NOT NULL DEFAULT 'pending',
        extract_error TEXT,
        extracted_at TEXT,
        language TEXT,
        story_id INTEGER REFERENCES stories(id),
        UNIQUE (feed_id, guid)
    );
    CREATE INDEX entries_published ON entries(published);
    CREATE INDEX entries_first_seen ON entries(first_seen);
    CREATE INDEX entries_story ON entries(story_id);
    CREATE INDEX entries_extract_status ON entries(extract_status);
    CREATE TABLE fetch_log (
        id INTEGER PRIMARY KEY,
        feed_id INTEGER REFERENCES feeds(id),
        url TEXT NOT NULL,
        started_at TEXT NOT NULL,
        status INTEGER,
        bytes INTEGER NOT NULL DEFAULT 0,
        new_entries INTEGER NOT NULL DEFAULT 0,
        updated_entries INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX fetch_log_feed ON fetch_log(feed_id, started_at);
    CREATE TABLE stories (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        n_reports INTEGER NOT NULL DEFAULT 0,
        n_outlets INTEGER NOT NULL DEFAULT 0,
        representative_id INTEGER REFERENCES entries(id),
        original_entry_id INTEGER REFERENCES entries(id),
        credited_outlet TEXT,                      -- "…, the Financial Times reported"
        merged_into INTEGER REFERENCES stories(id) -- set when this story was folded into an older one
    );
    CREATE INDEX stories_last_seen ON stories(last_seen);
    CREATE TABLE story_members (
        entry_id INTEGER PRIMARY KEY REFERENCES entries(id),
        story_id INTEGER NOT NULL REFERENCES stories(id),
        rule TEXT NOT NULL,                        -- what joined it: seed, same-url, same-guid, same-body, similar, merge
        score REAL,
        evidence TEXT NOT NULL DEFAULT '{}',       -- JSON: the scores that decided
        joined_at TEXT NOT NULL
    );
    CREATE INDEX story_members_story ON story_members(story_id);
    """,
    # 2: scheduling. ``url`` stays the feed's identity in feeds.yaml; ``fetch_url``
    # is where it is fetched from once a permanent redirect has been confirmed.
    # ``entry_gap_seconds`` is the feed's rhythm (average gap between entries).
    """
    ALTER TABLE feeds ADD COLUMN fetch_url TEXT;
    ALTER TABLE feeds ADD COLUMN entry_gap_seconds REAL;
    """,
    # 3: full-text search and Datasette views.
    # ``entries_fts`` has the shape sqlite-utils' enable_fts gives (content=[entries]),
    # so sqlite-utils and Datasette find it. It has no INSERT trigger: indexing on
    # the insert path made inserts ~12x slower, so new entries are indexed in one
    # batch by Store.refresh_search_index after each run, up to the watermark
    # ``search_index_state.indexed_through``. Entries at or below the watermark are
    # kept in step by the UPDATE and DELETE triggers; a delete of the newest entries
    # lowers the watermark, as SQLite may hand their ids to the next inserts.
    """
    CREATE VIRTUAL TABLE [entries_fts] USING FTS5 (
        [title], [text],
        tokenize='porter unicode61 remove_diacritics 2',
        content=[entries]
    );
    CREATE TABLE search_index_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        indexed_through INTEGER NOT NULL
    );
    INSERT INTO search_index_state (id, indexed_through) VALUES (1, 0);
    CREATE TRIGGER entries_fts_update AFTER UPDATE OF title, text ON entries
    WHEN old.id <= (SELECT indexed_through FROM search_index_state)
         AND (old.title IS NOT new.title OR old.text IS NOT new.text)
    BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO entries_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
    END;
    CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries
    WHEN old.id <= (SELECT indexed_through FROM search_index_state)
    BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
        UPDATE search_index_state SET indexed_through = (SELECT COALESCE(max(id), 0) FROM entries)
        WHERE indexed_through > (SELECT COALESCE(max(id), 0) FROM entries);
    END;
    CREATE VIEW story_reports AS
    SELECT s.id AS story_id, s.title AS story_title, s.n_reports, s.n_outlets,
           e.id AS entry_id, COALESCE(f.title, f.url) AS outlet, e.title, e.link,
           e.published, e.first_seen, m.rule, m.score, e.id IS s.original_entry_id AS is_original,
           e.extract_status, e.text_source, length(e.text) AS text_chars, f.url AS feed_url
    FROM stories s
    JOIN entries e ON e.story_id = s.id
    JOIN feeds f ON f.id = e.feed_id
    LEFT JOIN story_members m ON m.entry_id = e.id
    WHERE s.merged_into IS NULL;
    CREATE VIEW story_overview AS
    SELECT s.id AS story_id, s.title, s.n_reports, s.n_outlets, s.first_seen, s.last_seen,
           (SELECT group_concat(outlet, ', ') FROM (
               SELECT COALESCE(f.title, f.url) AS outlet FROM entries e JOIN feeds f ON f.id = e.feed_id
               WHERE e.story_id = s.id GROUP BY f.id ORDER BY min(COALESCE(e.published, e.first_seen)))
           ) AS outlets,
           (SELECT COALESCE(f.title, f.url) FROM entries e JOIN feeds f ON f.id = e.feed_id
            WHERE e.id = s.original_entry_id) AS original_outlet,
           (SELECT e.link FROM entries e WHERE e.id = s.original_entry_id) AS original_link
    FROM stories s
    WHERE s.merged_into IS NULL;
    CREATE VIEW feed_health AS
    SELECT f.id AS feed_id, f.url, f.title, f.tags, f.state, f.format, f.last_status, f.last_error, f.fetch_url AS moved_to,
           f.error_count, f.last_fetch_at, f.next_check_at,
           (SELECT count(*) FROM entries e WHERE e.feed_id = f.id) AS entries,
           (SELECT max(COALESCE(e.published, e.first_seen)) FROM entries e WHERE e.feed_id = f.id) AS newest_entry,
           (SELECT count(*) FROM entries e WHERE e.feed_id = f.id AND e.extract_status = 'ok') AS pages_extracted,
           (SELECT count(*) FROM fetch_log l WHERE l.feed_id = f.id) AS fetches,
           (SELECT count(*) FROM fetch_log l WHERE l.feed_id = f.id AND l.error IS NOT NULL) AS failed_fetches,
           (SELECT CAST(avg(l.duration_ms) AS INTEGER) FROM fetch_log l WHERE l.feed_id = f.id) AS mean_fetch_ms
    FROM feeds f;
    """,
    # 4: no query reads entries_published (they all filter and sort on
    # COALESCE(published, first_seen), which it cannot serve), and it was the
    # dearest index to write: feeds' dates interleave, so one feed's entries land
    # on many of its pages (a quarter of the WAL pages written per 50-entry feed).
    """
    DROP INDEX IF EXISTS entries_published;
    """,
    # 5: a feed's state is ``error`` from its first failure (ok | error | failing | disabled),
    # no longer ``ok`` until failure_threshold failures. ``document_error`` is what made the
    # document whose validators are stored a failed fetch (not a feed, ...), which a 304 for
    # it repeats (schedule.validator_columns); validators used to be stored for feeds only.
    """
    UPDATE feeds SET state = 'error' WHERE state = 'ok' AND error_count > 0;
    ALTER TABLE feeds ADD COLUMN document_error TEXT;
    """,
    # 6: listing stories reads each one's outlets (which feeds, and when each first reported it)
    # from this index alone: an entry's row holds its texts and spans several pages, and reading
    # the rows took 2.8x as long (the outlets of 31,287 stories: 0.44 CPU-s, 0.16 from here). It
    # serves every lookup by story_id that entries_story did (the grouping's, READY_FOR_STORY),
    # so it replaces it.
    """
    CREATE INDEX entries_story_outlets ON entries(story_id, feed_id, published, first_seen);
    DROP INDEX IF EXISTS entries_story;
    """,
    # 7: what grouping compares a placed report by (its frozen weighted vectors, vocabulary, key
    # tokens, ...: aggregator.dedup.stored), so that a later run loads these rows instead of
    # reading and weighing every stored text in the window again (89 % of a later run). Tokens are
    # stored as ids of ``tokens``. A changed title, text or link makes the row stale: it goes, and
    # the entry's text is read again as before; entries grouped before this migration have none.
    """
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        token TEXT NOT NULL UNIQUE
    );
    CREATE TABLE entry_features (
        entry_id INTEGER PRIMARY KEY REFERENCES entries(id) ON DELETE CASCADE,
        features BLOB NOT NULL,
        credit TEXT                                 -- the outlet the text credits (dedup.credit)
    );
    CREATE TRIGGER entry_features_stale AFTER UPDATE OF title, summary, text, link, canonical_url ON entries
    WHEN old.title IS NOT new.title OR old.summary IS NOT new.summary OR old.text IS NOT new.text
        OR old.link IS NOT new.link OR old.canonical_url IS NOT new.canonical_url
    BEGIN
        DELETE FROM entry_features WHERE entry_id = new.id;
    END;
    """,
    # 8: each story's outlets (its feeds' ids, in the order they first reported it) kept in its row,
    # written with it, so that a listing reads them with the story: computing them from the reports
    # was two thirds of piped `agg list` over 126,000 stories. Filled in for the stories there are.
    lambda conn: (conn.execute("ALTER TABLE stories ADD COLUMN outlet_feeds TEXT NOT NULL DEFAULT ''"),
                  write_outlet_feeds(conn)),
]


def _split_sql(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
