"""A placed report's features as a row of the database, so that a later run seeds it without reading its text.

When the database step places a report it stores, in ``entry_features``
(migration 7), what the grouper compares it by: its frozen weighted vectors,
vocabulary, key tokens, title weights, figures, years, length and
fingerprint, as one compact blob; tokens are written as ids of the
``tokens`` table, which a :class:`StoredTokens` maps to the process's ids
(:data:`~aggregator.dedup.vectors.TOKENS`) with one numpy gather a report.
Loading such a row replaces reading the text into counts and weighing them:
the vectors keep the weights they were given when the report was placed, as
the in-memory engine's do.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, NamedTuple

import numpy as np

from aggregator.dedup.features import Features, Report
from aggregator.dedup.text import NO_TOKENS
from aggregator.dedup.vectors import NO_VECTOR, NO_WEIGHTS, TOKENS, Vector

FORMAT_VERSION = 2
# Version 1 stored the vectors' weights as float64; the engine now keeps them as float32 (aggregator.dedup.vectors).
READABLE_VERSIONS = (1, 2)
# version, flags (1: has a body, 2: generic title), length, title mass, then each vector's norm and mass,
# then the sizes of the id arrays and of the three strings.
_HEADER = struct.Struct("<BBxxi7d12I")
_HEADER_FIELDS = np.dtype([("version", "u1"), ("flags", "u1"), ("", "V2"), ("length", "<i4"), ("floats", "<f8", 7),
                           ("sizes", "<u4", 12)])  # the same header, as numpy reads many at once
# Then the weights: the title's (float64), then the three vectors' (float32); then the id arrays, in this order:
# title tokens, key tokens, vocabulary, title numbers, figures, years, then the text's, lead's and names' vector ids.


class StoredTokens:
    """The ``tokens`` table of one database, mapped to and from this process's token ids."""

    def __init__(self) -> None:
        self.process_of = np.zeros(0, dtype=np.int32)  # by database id; -1 where none
        self.database_of = np.zeros(0, dtype=np.int32)  # by process id; -1 where none
        self.newest = 0  # the largest database id read

    def _fit(self, process_size: int, database_size: int) -> None:
        if len(self.database_of) < process_size:
            self.database_of = _grown(self.database_of, process_size)
        if len(self.process_of) < database_size:
            self.process_of = _grown(self.process_of, database_size)

    def refresh(self, conn: Any) -> None:
        """Read the tokens other runs (or this one) added since the last read."""
        rows = conn.execute("SELECT id, token FROM tokens WHERE id > ? ORDER BY id", [self.newest]).fetchall()
        if not rows:
            return
        db_ids = np.array([row[0] for row in rows], dtype=np.int32)
        ids = TOKENS.ids_of([row[1] for row in rows])
        self._fit(len(TOKENS), int(db_ids[-1]) + 1)
        self.process_of[db_ids] = ids
        self.database_of[ids] = db_ids
        self.newest = int(db_ids[-1])

    def current(self, conn: Any) -> bool:
        """Whether the database holds no token newer than the last :meth:`refresh` read (tokens are only added,
        so no blob read before this answered True names one)."""
        return (conn.execute("SELECT max(id) FROM tokens").fetchone()[0] or 0) <= self.newest

    def to_database(self, conn: Any, ids: np.ndarray) -> np.ndarray:
        """The database ids of these process ids, adding the tokens the table lacks (inside a write transaction)."""
        self._fit(len(TOKENS), self.newest + 1)
        found = self.database_of[ids]
        if (found < 0).any():
            self.refresh(conn)  # another process may have added some of them
            self._fit(len(TOKENS), self.newest + 1)
            missing = np.unique(ids[self.database_of[ids] < 0])
            if len(missing):
                first = (conn.execute("SELECT max(id) FROM tokens").fetchone()[0] or 0) + 1
                new_ids = np.arange(first, first + len(missing), dtype=np.int32)
                conn.executemany("INSERT INTO tokens (id, token) VALUES (?, ?)",
                                 zip(new_ids.tolist(), TOKENS.tokens_of(missing.tolist())))
                self._fit(len(TOKENS), int(new_ids[-1]) + 1)
                self.process_of[new_ids] = missing
                self.database_of[missing] = new_ids
                self.newest = int(new_ids[-1])
            found = self.database_of[ids]
        return found

    def to_process(self, db_ids: np.ndarray) -> np.ndarray | None:
        """This process's ids of database ids, or None if one is newer than the last :meth:`refresh`."""
        if len(db_ids) and db_ids.max() >= len(self.process_of):
            return None
        ids = self.process_of[db_ids]
        return None if len(ids) and ids.min() < 0 else ids


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    grown = np.full(max(size, 2 * len(array), 1024), -1, dtype=np.int32)
    grown[: len(array)] = array
    return grown


def snapshot(doc: Features) -> tuple:
    """What :func:`encode` needs of a placed report, taken at once: the grouper may release it later (which
    rebinds its fields, and leaves these objects as they are). References only: nothing is copied until written."""
    return (doc.title, doc.generic_title, doc.has_body, doc.length, doc.title_mass, doc.canonical, doc.fingerprint,
            doc.title_tokens, doc.key_tokens, doc.vocabulary, doc.title_numbers, doc.figures, doc.years,
            doc.title_weights, doc.text, doc.lead, doc.names)


def _arrays(snap: tuple) -> tuple:
    """A snapshot's header fields, weights, process token ids (in the blob's order) and strings."""
    (title, generic, has_body, length, title_mass, canonical, fingerprint, title_tokens, key_tokens, vocabulary,
     numbers, figures, years, title_weights, *vectors) = snap
    token_parts = (title_tokens, key_tokens, (), tuple(numbers), tuple(figures), tuple(years))
    ids = TOKENS.ids_of([t for part in token_parts for t in part])
    sizes = [len(part) for part in token_parts]
    sizes[2] = len(vocabulary)
    at = len(title_tokens) + len(key_tokens)
    ids = np.concatenate([ids[:at], vocabulary, ids[at:], *(v.ids for v in vectors)])
    header = (FORMAT_VERSION, has_body | generic << 1, length, title_mass,
              *(x for v in vectors for x in (v.norm, v.mass)), *sizes, *(len(v.ids) for v in vectors))
    title_weights = np.fromiter(map(title_weights.__getitem__, title_tokens), dtype=np.float64,
                                count=len(title_tokens))
    weights = np.concatenate([v.weights for v in vectors]) if vectors else NO_WEIGHTS
    return header, (title_weights, weights), ids, [s.encode() for s in (title, canonical, fingerprint or "")]


def encode_all(snapshots: Sequence[tuple], tokens: StoredTokens, conn: Any) -> list[bytes]:
    """The reports' features as blobs, tokens as database ids: the tokens ``tokens`` lacks are added first, at once
    (inside a write transaction)."""
    arrays = [_arrays(snap) for snap in snapshots]
    if arrays:
        tokens.to_database(conn, np.concatenate([ids for _, _, ids, _ in arrays]))
    return [_pack(parts, tokens, conn) for parts in arrays]


def encode(snap: tuple, tokens: StoredTokens, conn: Any) -> bytes:
    """One report's features as a blob, tokens as database ids (new ones added to ``tokens``)."""
    return _pack(_arrays(snap), tokens, conn)


def _pack(parts: tuple, tokens: StoredTokens, conn: Any) -> bytes:
    header, (title_weights, weights), ids, strings = parts
    db_ids = tokens.to_database(conn, ids)
    packed = _HEADER.pack(*header, *(len(s) for s in strings))
    # Native order is little-endian on every platform numpy ships wheels for that runs agg; astype is then free.
    return b"".join([packed, title_weights.astype("<f8", copy=False).tobytes(),
                     weights.astype("<f4", copy=False).tobytes(), db_ids.astype("<i4", copy=False).tobytes(), *strings])


class _Layout(NamedTuple):
    """Where the parts of a stored blob are, from its header (what :func:`complete` reads; :func:`decode_all`
    reads many headers at once)."""

    norms: tuple[float, ...]  # each vector's norm and mass
    bounds: list[int]  # where each id array starts among the ids, and the end of the last
    string_sizes: tuple[int, ...]  # title, canonical URL, fingerprint
    weights: np.dtype  # of the vectors' weights: float64 in format 1, float32 since
    weights_at: int  # the vectors' weights (the title's, float64, come before)
    ids_at: int
    strings_at: int


def _layout(blob: bytes) -> _Layout:
    version, _, _, _, *figures = _HEADER.unpack_from(blob)
    norms, sizes, string_sizes = tuple(figures[:6]), figures[6:15], tuple(figures[15:])
    bounds = [0, *accumulate(sizes)]
    weights = np.dtype("<f8" if version == 1 else "<f4")
    weights_at = _HEADER.size + 8 * sizes[0]
    ids_at = weights_at + weights.itemsize * (bounds[9] - bounds[6])
    return _Layout(norms, bounds, string_sizes, weights, weights_at, ids_at, ids_at + 4 * bounds[9])


def decode(blob: bytes, report: Report, tokens: StoredTokens, *, deferred: bool = False) -> Features | None:
    """The features stored for ``report`` (its row's fields, texts left out), or None for a format not known.

    With ``deferred``, only what seeding a story needs of a member (its vocabulary, key tokens, identity,
    time) is read now; the rest waits in the blob until :func:`complete` reads it, which the grouper asks
    for when the member is first compared or leaves the window: most stored members never are in a later run.
    """
    return decode_all([blob], [report], tokens, deferred=deferred)[0]


def decode_all(blobs: Sequence[bytes | None], reports: Sequence[Report], tokens: StoredTokens, *,
               deferred: bool = False, tokens_current: bool = False) -> list[Features | None]:
    """:func:`decode` of each blob with its report, the headers of all read in one numpy step (a later run seeds
    50,000 members, and reading each header on its own was a fifth of its loading).

    With ``tokens_current``, the caller knows that the database held no token newer than ``tokens`` read
    when the blobs were read, so no blob is checked for one. A blob of a format not known, or whose length
    is not what its header says, gives None.
    """
    decoded: list[Features | None] = [None] * len(blobs)
    readable = [n for n, blob in enumerate(blobs) if blob and blob[0] in READABLE_VERSIONS and len(blob) >= _HEADER.size]
    if not readable:
        return decoded
    headers = np.frombuffer(b"".join([blobs[n][:_HEADER.size] for n in readable]), dtype=_HEADER_FIELDS)
    sizes = headers["sizes"].astype(np.int64)
    bounds = np.cumsum(sizes[:, :9], axis=1)  # where each id array ends among the ids
    weight_size = np.where(headers["version"] == 1, 8, 4)
    ids_at = _HEADER.size + 8 * sizes[:, 0] + weight_size * (bounds[:, 8] - bounds[:, 5])
    strings_at = ids_at + 4 * bounds[:, 8]
    canonical_at = strings_at + sizes[:, 9]
    fingerprint_at = canonical_at + sizes[:, 10]
    whole = fingerprint_at + sizes[:, 11] == np.fromiter(map(len, (blobs[n] for n in readable)), dtype=np.int64,
                                                         count=len(readable))
    word = TOKENS.words.__getitem__
    process_of, newest = tokens.process_of, tokens.newest
    for n, intact, flags, length, title_mass, key_at, vocabulary_at, seeded, every, ids_offset, canonical_from, \
            fingerprint_from in zip(
                readable, whole.tolist(), headers["flags"].tolist(), headers["length"].tolist(),
                headers["floats"][:, 0].tolist(), bounds[:, 0].tolist(), bounds[:, 1].tolist(),
                bounds[:, 2].tolist(), bounds[:, 8].tolist(), ids_at.tolist(), canonical_at.tolist(),
                fingerprint_at.tolist()):
        if not intact:
            continue  # cut short, or longer than its header says: the text is read instead
        blob, report = blobs[n], reports[n]
        every_id = np.frombuffer(blob, dtype="<i4", count=every, offset=ids_offset)
        if not tokens_current and every and every_id.max() > newest:
            continue  # written by another process since the tokens were read: the text is read instead
        # Title tokens, key tokens and the vocabulary: the ids seeding reads (the rest wait for complete). No id
        # is newer than the last refresh, which mapped every token up to it: a plain gather.
        ids = process_of[every_id[:seeded]]
        key_ids = ids[key_at:vocabulary_at]
        published = report.published
        doc = decoded[n] = Features(
            report=report,
            title="",
            sorted_title="",
            generic_title=bool(flags & 2),
            title_tokens=(),
            has_body=bool(flags & 1),
            key_tokens=tuple(map(word, key_ids.tolist())),
            vocabulary=ids[vocabulary_at:],  # a view of this process's ids
            text_counts=None,
            lead_counts=None,
            name_counts=None,
            title_numbers=NO_TOKENS,
            figures=NO_TOKENS,
            years=NO_TOKENS,
            length=length,
            hour=published.timestamp() / 3600 if published else None,
            dated=published is not None and not report.time_estimated,
            canonical=blob[canonical_from:fingerprint_from].decode(),
            fingerprint=blob[fingerprint_from:].decode() or None,
            title_mass=title_mass,
            deferred=blob,
            key_ids=key_ids,
        )
        if not deferred:
            complete(doc, tokens)
    return decoded


def complete(doc: Features, tokens: StoredTokens) -> None:
    """Read the rest of a member :func:`decode` deferred: its title, weights, vectors, figures and years."""
    blob = doc.deferred
    assert blob is not None
    layout = _layout(blob)
    bounds, norms = layout.bounds, layout.norms
    # decode_all found every id of the blob in the token map then (each checked, or none newer in the
    # database), and the map only grows. The ids
    # after the vocabulary are mapped apart: the vectors' ids are views of them (decode's hold the rest).
    every_id = np.frombuffer(blob, dtype="<i4", count=bounds[9], offset=layout.ids_at)
    title_ids, ids = tokens.to_process(every_id[:bounds[1]]), tokens.to_process(every_id[bounds[3]:])
    assert title_ids is not None and ids is not None
    word = TOKENS.words.__getitem__
    doc.title_tokens = tuple(map(word, title_ids.tolist()))
    title_weights = np.frombuffer(blob, dtype="<f8", count=bounds[1], offset=_HEADER.size).tolist()
    doc.title_weights = dict(zip(doc.title_tokens, title_weights))
    doc.title = blob[layout.strings_at:layout.strings_at + layout.string_sizes[0]].decode()
    doc.sorted_title = " ".join(sorted(doc.title.split()))
    part = [end - bounds[3] for end in bounds[3:]]  # where each id array after the vocabulary starts in ids
    # The shared empty set where there are none: an empty frozenset of its own takes 216 bytes.
    numbers, figures, years = (frozenset(map(word, ids[part[n]:part[n + 1]].tolist())) for n in (0, 1, 2))
    doc.title_numbers, doc.figures, doc.years = numbers or NO_TOKENS, figures or NO_TOKENS, years or NO_TOKENS
    # Copied (astype copies): views would keep the whole blob (database token ids and all) alive beside the features.
    weights = np.frombuffer(blob, dtype=layout.weights, count=bounds[9] - bounds[6],
                            offset=layout.weights_at).astype(np.float32)
    vectors = []
    for n in range(3):
        start, end = part[3 + n], part[4 + n]
        vectors.append(Vector(ids[start:end], weights[start - part[3]:end - part[3]], norms[2 * n],
                              norms[2 * n + 1]) if end > start else NO_VECTOR)
    doc.text, doc.lead, doc.names = vectors
    doc.deferred = None
