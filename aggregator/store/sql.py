"""What every reader and writer of the database shares: times as fixed-width UTC text, write transactions,
SQL placeholders and batches, JSON columns, and errors said plainly."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

BUSY_TIMEOUT_MS = 30_000
"""How long a connection waits for another writer before it gives up."""

if TYPE_CHECKING:
    import sqlite_utils


class StoreError(Exception):
    """The database could not be opened or written; the message says what to do."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_db_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def from_db_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken before reading so that no other writer slips in between.

    Inside a transaction the caller already opened on ``conn``, it joins that
    one, and the caller commits or rolls back.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite has already rolled back after some errors, a full disk among them
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def _database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    # sqlite-utils is imported once a database is opened: commands that open none (agg --help,
    # agg feeds add) start without its 40-80 ms of imports.
    import sqlite_utils

    return sqlite_utils.Database(conn)


def _json_list(items: list) -> str:
    """``json.dumps(items)``, faster: dumps builds an encoder for each list, but not for a string,
    and most entries have no enclosures and a tag or two."""
    if not items:
        return "[]"
    return "[" + ", ".join(map(json.dumps, items)) + "]"


def json_value(text: str | None, default: Any) -> Any:
    """A JSON column's value (``default`` when empty or unreadable): library callers and ``--json``
    outputs get lists and objects, never JSON inside a string."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def sql_marks(items: Any) -> str:
    """One ``?`` per item, comma-separated: the inside of ``IN (...)``."""
    return ",".join("?" * len(items))


def in_batches(items: list, size: int = 500) -> Iterator[list]:
    """``items`` in lists of ``size`` at most, so that ``IN (...)`` stays under SQLite's limit on parameters."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def describe_sqlite_error(exc: sqlite3.Error, path: Path | None) -> str:
    """A sqlite error in words that say what to do."""
    message = str(exc)
    lowered = message.lower()
    # On a read-only disk SQLite cannot even open a WAL database (it needs the -shm file): "unable to open".
    read_only_disk = "unable to open" in lowered and path is not None and path.exists() and not os.access(
        path.parent, os.W_OK)
    if "readonly" in lowered or "read-only" in lowered or read_only_disk:
        return f"the database {path} is read-only: make it (and its folder) writable, or pass --db PATH"
    if "disk is full" in lowered or "disk i/o" in lowered:
        return f"cannot write the database {path}: {message} (free some disk space and run again)"
    if "unable to open" in lowered:
        return f"cannot open the database {path}: check the folder exists and is writable, or pass --db PATH"
    if "locked" in lowered:
        return f"the database {path} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000}s: {message}"
    if "not a database" in lowered or "malformed" in lowered:
        return f"{path} is not a usable agg database ({message}): move it aside and run again"
    return f"database error on {path}: {message}"
