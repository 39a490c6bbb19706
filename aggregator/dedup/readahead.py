"""Reading the next batch's texts in a worker process while the grouper places this one.

A first import places tens of thousands of entries a batch at a time, and a
third of the work is reading each text into counts (:func:`read_text`: folding,
tokens, names, the lead, the credited outlet), which depends on the text
alone. While the grouper places one batch, a worker process reads the next
batch's rows from the database file, and the session takes those readings
instead of reading the texts again: the second core does that third.

A run's grouping worker is served the same way (:func:`read_waiting`): once
its feeds are in, the run reads the texts of the entries left in its own
process while the worker still loads the stored stories, and hands the
readings over with the word to finish.

Nothing is decided differently: a reading is the same function's result, and
is used only for a row whose fields it was read from (:func:`reading_key`);
a row changed meanwhile, an entry not read ahead, or a worker that failed is
read in the session's process, as without read-ahead.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import pickle
import re
import shutil
import sqlite3
import tempfile
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from aggregator.dedup.credit import report_credit
from aggregator.dedup.features import Report, TextReading, read_text
from aggregator.dedup.rows import report_from_row, scored_rows
from aggregator.dedup.settings import DedupSettings
from aggregator.store import READY_FOR_STORY, in_batches

log = logging.getLogger(__name__)

CHUNK = 500
"""Entries a worker call reads: results come back a chunk at a time, the first while later ones are read."""

WAIT_SECONDS = 120.0
"""How long the session waits for a chunk still being read before reading its entries itself."""

# An entry's reading as the session takes it: what it was read from, the reading, the outlet its text credits.
Reading = tuple[bytes, TextReading, str | None]


def reading_key(report: Report) -> bytes:
    """A digest of what :func:`read_text` and :func:`report_credit` read of a report: a reading made from another
    version of the row is not used."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (report.title, report.text, report.url, report.canonical_url or "", report.source):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.digest()


def read_rows(connection: sqlite3.Connection, ids: list[int], settings: DedupSettings) -> dict[int, Reading]:
    """These entries' readings, by id, read from their rows (``CHUNK`` ids a query)."""
    readings: dict[int, Reading] = {}
    for part in in_batches(ids, CHUNK):
        for row in scored_rows(connection, part, settings):
            report = report_from_row(row)
            readings[report.id] = (reading_key(report), read_text(report, settings), report_credit(report))
    return readings


def _read_only(db_path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)


def read_entries(db_path: str, ids: list[int], settings: DedupSettings, out: str) -> str:
    """In the worker: read these entries' rows and texts (``CHUNK`` at most), and pickle ``{id: Reading}`` into the
    file ``out``.

    The readings go through a file, not the pool's pipe: the session's
    process is busy placing, and a pipe's reader needs its interpreter lock
    for every 64 KB, which held the worker up mid-reply.
    """
    connection = _read_only(db_path)
    try:
        readings = read_rows(connection, ids, settings)
    finally:
        connection.close()
    one_of: dict[str, str] = {}
    for _, reading, _ in readings.values():
        _share_tokens(reading, one_of)
    Path(out).write_bytes(pickle.dumps(readings, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def _share_tokens(reading: TextReading, one_of: dict[str, str]) -> None:
    """Make each token of the reading the one string object ``one_of`` holds for it: pickle then writes a chunk's
    token once and refers to it after, and the session unpickles one string a token, not one an occurrence, whose
    hash it computes once (unpickling a chunk and finding its tokens' ids took a third less time)."""
    one = one_of.setdefault
    reading.text_counts = {one(token, token): count for token, count in reading.text_counts.items()}
    reading.lead_counts = {one(token, token): count for token, count in reading.lead_counts.items()}
    reading.name_counts = {one(token, token): count for token, count in reading.name_counts.items()}
    reading.title_tokens = tuple(one(token, token) for token in reading.title_tokens)
    reading.key_tokens = tuple(one(token, token) for token in reading.key_tokens)


def read_waiting(db_path: str, settings: DedupSettings, most: int) -> dict[int, Reading]:
    """The readings of the entries waiting for a story, if ``most`` or fewer wait (else none), on a connection
    of its own.

    A run reads them in its own process once its feeds are in, while its
    grouping worker still loads the stored stories (or places a batch), and
    hands them over with the word to finish: the worker then places them
    without reading their texts.
    """
    connection = _read_only(db_path)
    try:
        ids = [entry_id for entry_id, in connection.execute(
            f"SELECT e.id FROM entries e WHERE {READY_FOR_STORY} ORDER BY e.id LIMIT ?", [most + 1])]
        return read_rows(connection, ids, settings) if len(ids) <= most else {}
    finally:
        connection.close()


def _exit_with_parent() -> None:
    """In the worker: exit when the session's process does, however it ends (an ``agg group`` killed midway
    would otherwise leave the worker waiting on the pool's queue for good)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(0)), name="agg-read-ahead-watch", daemon=True).start()


FOLDER_PREFIX = "agg-read-ahead-"
STALE_FOLDER = re.compile(rf"^{FOLDER_PREFIX}(\d+)-")


def _remove_stale_folders() -> None:
    """Remove the read-ahead folders of processes that are gone (killed before they could clean up)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{FOLDER_PREFIX}*"):
        found = STALE_FOLDER.match(folder.name)
        if found is None or not folder.is_dir():
            continue
        try:
            os.kill(int(found[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, another user's
            pass


def _remove_file(future: Future) -> None:
    """A chunk nobody takes: its file goes when the worker has written it."""
    if not future.cancelled() and future.exception() is None:
        Path(future.result()).unlink(missing_ok=True)


class ReadingsAhead:
    """The readings one batch takes, for :meth:`get` in ascending order of entry id, as the session reads its rows:
    one chunk file is unpickled at a time (waited for if the worker is still at it), not the batch's at once."""

    def __init__(self, owner: ReadAhead, chunks: list[tuple[set[int], Future]]) -> None:
        self._owner = owner
        self._chunks = chunks
        self._chunk_of = {entry_id: n for n, (part, _) in enumerate(chunks) for entry_id in part}
        self._loaded: tuple[int, dict[int, Reading]] = (-1, {})

    def get(self, entry_id: int) -> Reading | None:
        n = self._chunk_of.get(entry_id)
        if n is None or self._owner.failed:
            return None
        if self._loaded[0] != n:
            self._loaded = (n, {})  # the chunk before goes first
            try:
                path = Path(self._chunks[n][1].result(timeout=WAIT_SECONDS))
                self._loaded = (n, pickle.loads(path.read_bytes()))
                path.unlink()
            except Exception as exc:  # died, killed, or too slow: what it would have read is read by the session
                self._owner._fail(exc)
                return None
        return self._loaded[1].get(entry_id)


class ReadAhead:
    """One worker process reading the entries a session will place next (:meth:`submit`), for :meth:`take`.

    Started on the first :meth:`submit`, from a fork server (a fresh process,
    not a copy of the grouper's memory); :meth:`close` stops it.
    """

    def __init__(self, db_path: str, settings: DedupSettings) -> None:
        self.db_path = db_path
        self.settings = settings
        self._executor: ProcessPoolExecutor | None = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._pending: list[tuple[set[int], Future]] = []
        self._calls = 0
        self.failed = False

    def submit(self, ids: list[int]) -> None:
        """Have the worker read these entries (ascending ids), a chunk a call."""
        if self.failed or not ids:
            return
        try:
            if self._executor is None:
                _remove_stale_folders()
                self._folder = tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
                self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"),
                                                     initializer=_exit_with_parent)
            for part in in_batches(ids, CHUNK):
                self._calls += 1
                out = str(Path(self._folder.name) / f"{self._calls}.pickle")
                self._pending.append((set(part), self._executor.submit(read_entries, self.db_path, list(part),
                                                                       self.settings, out)))
        except Exception as exc:  # no process to be had: the session reads every text itself
            self._fail(exc)

    def take(self, ids: list[int]) -> ReadingsAhead:
        """The readings of those of ``ids`` that were submitted; calls for other entries are dropped."""
        wanted = set(ids)
        pending, self._pending = self._pending, []
        chunks = []
        for part, future in pending:
            if part & wanted and not self.failed:
                chunks.append((part, future))
            else:
                future.cancel()
                future.add_done_callback(_remove_file)
        return ReadingsAhead(self, chunks)

    def _fail(self, exc: BaseException) -> None:
        log.warning("reading texts ahead in a worker process failed (%s: %s); reading them in this one",
                    type(exc).__name__, exc)
        self.failed = True

    def close(self) -> None:
        """Stop the worker and drop what it read and nobody took."""
        for _, future in self._pending:
            future.cancel()
        self._pending = []
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
