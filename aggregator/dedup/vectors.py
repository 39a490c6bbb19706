"""Weighted term vectors as token ids and float weights, and their products.

Every distinct token (word, name, figure) a process reads gets a small integer
id once, in :data:`TOKENS`; a report's vectors hold ids (int32) and
weights (float32) in numpy arrays, 8 bytes a term instead of a dict entry of
about 50, so the window's reports take a third of the memory they did. A
weight rounded to float32 is off by a few parts in a hundred million, far
below the thousandths a decision turns on; every product is taken in float64.

A cosine scatters one vector's weights into a dense array indexed by token id
(kept for the next comparisons: the incoming report is compared with many
members in a row) and gathers the other's ids from it. The products are summed
with ``math.fsum``, exactly rounded, so a score does not depend on the order
of the terms.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter

import numpy as np

NO_IDS = np.zeros(0, dtype=np.int32)
NO_WEIGHTS = np.zeros(0, dtype=np.float32)


class TokenTable:
    """Token <-> id, for the life of the process: ids are never reused, so any report's ids stay valid."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.words)

    def id_of(self, token: str) -> int:
        found = self.ids.get(token)
        if found is not None:
            return found
        with self._lock:  # a new token: its id is the table's length, once
            found = self.ids.get(token)
            if found is None:
                found = self.ids[token] = len(self.words)
                self.words.append(token)
            return found

    def ids_of(self, tokens: Iterable[str]) -> np.ndarray:
        """The tokens' ids (new tokens get one), in their order, as int32."""
        tokens = tokens if isinstance(tokens, (list, tuple)) else list(tokens)
        try:  # every token known: one C-level pass
            return np.fromiter(map(self.ids.__getitem__, tokens), dtype=np.int32, count=len(tokens))
        except KeyError:
            return np.fromiter(map(self.id_of, tokens), dtype=np.int32, count=len(tokens))

    def clear(self) -> None:
        """Forget every token: only when no features hold ids (see ``StoryGrouper``), or theirs would mean others."""
        with self._lock:
            self.ids = {}
            self.words = []

    def known(self, token: str) -> int | None:
        """The token's id, or None if no report has carried it (no id is given)."""
        return self.ids.get(token)

    def tokens_of(self, ids: Iterable[int]) -> list[str]:
        words = self.words
        return [words[i] for i in ids]


TOKENS = TokenTable()


@dataclass(slots=True, frozen=True, eq=False)
class Vector:
    """A text's heaviest weighted terms, and the norm of all its terms (left-out terms still make texts less alike).

    ``weights[i]`` is the weight of token ``ids[i]`` (distinct ids, in no order that matters to a product: each
    goes through a dense scatter and an exact sum); ``mass`` is the sum of the kept weights.
    """

    ids: np.ndarray = field(default_factory=lambda: NO_IDS)
    weights: np.ndarray = field(default_factory=lambda: NO_WEIGHTS)
    norm: float = 0.0
    mass: float = 0.0

    @classmethod
    def of_arrays(cls, ids: np.ndarray, weights: np.ndarray, limit: int) -> Vector:
        """The vector of distinct token ids and their float64 weights: the ``limit`` heaviest kept, heaviest first
        (ties in their order; all of them in their order when they are that few), the norm of all."""
        norm = math.sqrt(math.fsum((weights * weights).tolist()))
        if len(weights) > limit:
            # The heaviest first, equal weights in their order: what a stable sort of the items gives.
            kept = np.argsort(-weights, kind="stable")[:limit]
            ids, weights = ids[kept], weights[kept]
        kept_weights = weights.astype(np.float32)
        # The mass of the weights as kept (rounded), so that a vector contains all of itself.
        return cls(ids.astype(np.int32), kept_weights, norm, math.fsum(kept_weights.tolist()))

    def cosine(self, other: Vector) -> float:
        if not self.norm or not other.norm:
            return 0.0
        products = np.multiply(_scattered(self)[other.ids], other.weights, dtype=np.float64)
        # Only the shared terms' products: those the other lacks are 0.0, which adds nothing to an exactly
        # rounded sum (and most terms are not shared).
        return math.fsum(products[products != 0.0].tolist()) / (self.norm * other.norm)

    def containment(self, other: Vector) -> float:
        """Share of this vector's weight on terms the other carries too."""
        if not self.mass or not len(other.ids):
            return 0.0
        # Every kept weight is positive: a term the other carries gathers a weight, one it lacks a 0.0.
        shared = self.weights[_scattered(other)[self.ids] != 0.0]
        return math.fsum(shared.tolist()) / self.mass

    def terms(self) -> dict[str, float]:
        """Term -> weight, heaviest first (for tests and inspection, not for scoring)."""
        pairs = sorted(zip(TOKENS.tokens_of(self.ids.tolist()), self.weights.tolist()), key=itemgetter(1), reverse=True)
        return dict(pairs)

    def __eq__(self, other: object) -> bool:
        """The same weights by token (in any order), norm and mass."""
        if not isinstance(other, Vector) or self.norm != other.norm or self.mass != other.mass:
            return False
        mine, theirs = np.argsort(self.ids), np.argsort(other.ids)
        return (np.array_equal(self.ids[mine], other.ids[theirs])
                and np.array_equal(self.weights[mine], other.weights[theirs]))

    def __hash__(self) -> int:  # consistent with __eq__; dataclass defaults must be hashable
        return hash((self.norm, self.mass, len(self.ids)))


NO_VECTOR = Vector()


@dataclass(slots=True, frozen=True)
class Counts:
    """A text's token counts, in the order the text gave them (ties in weight break by it): ids and counts, int32.

    What a report read but not yet placed holds until it is weighed: a twentieth of a Counter's memory.
    """

    ids: np.ndarray = field(default_factory=lambda: NO_IDS)
    counts: np.ndarray = field(default_factory=lambda: NO_IDS)

    @classmethod
    def of(cls, counter: dict[str, int]) -> Counts:
        return cls(TOKENS.ids_of(list(counter)), np.fromiter(counter.values(), dtype=np.int32, count=len(counter)))

    def items(self) -> list[tuple[str, int]]:
        return list(zip(TOKENS.tokens_of(self.ids.tolist()), self.counts.tolist()))

    def __len__(self) -> int:
        return len(self.ids)


NO_COUNTS = Counts()


def distinct_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct ids, ascending: ``np.unique(ids)``, without the first call's import of ``numpy.ma``
    (0.13 s, on the path of a later run's first placement)."""
    ids = np.sort(ids)
    if len(ids) < 2:
        return ids
    keep = np.empty(len(ids), dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]


def paired_cosines(mine: Sequence[Vector], theirs: Sequence[Sequence[Vector]]) -> list[list[float]]:
    """For each of ``theirs`` (vectors of the kinds of ``mine``, in its order: a report's text, names and lead), the
    :meth:`Vector.cosine` of each of ``mine`` with its counterpart: the same products in one gather a kind, one
    multiply and one mask for them all, each sum still an ``fsum`` of them (a report is compared with a dozen members
    of each candidate story, and three calls a comparison were mostly numpy's fixed costs)."""
    found = [[0.0] * len(mine) for _ in theirs]
    kinds = [kind for kind, vector in enumerate(mine) if vector.norm]  # a cosine with an empty vector is 0.0
    if not theirs or not kinds:
        return found
    gathered, weights, lengths = [], [], []
    for kind in kinds:
        others = [other[kind] for other in theirs]
        gathered.append(_scattered(mine[kind])[np.concatenate([other.ids for other in others])])
        weights.extend(other.weights for other in others)
        lengths.extend(len(other.ids) for other in others)
    # Products of two float32 weights are exact in float64.
    products = np.concatenate(gathered, dtype=np.float64)
    products *= np.concatenate(weights)
    shared = (products != 0.0).nonzero()[0]  # a mask's nonzero: 4x faster than the floats'
    # Where each pair's products end among the shared ones, kind after kind.
    ends = iter(shared.searchsorted(list(accumulate(lengths))).tolist())
    values = products[shared].tolist()
    at, fsum = 0, math.fsum
    for kind in kinds:
        norm = mine[kind].norm
        for row, other in zip(found, theirs):
            end = next(ends)
            other_norm = other[kind].norm
            row[kind] = fsum(values[at:end]) / (norm * other_norm) if other_norm else 0.0
            at = end
    return found


class _Scatters(threading.local):
    """Per thread, the last few vectors scattered into dense arrays: a report's text, lead and names."""

    def __init__(self) -> None:
        self.vectors: list[Vector | None] = [None, None, None]
        # float32, as the weights are: half the memory a gather reads at random (the token table's length each).
        self.dense: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in range(3)]
        self.next = 0


_SCATTERS = _Scatters()


def _scattered(vector: Vector) -> np.ndarray:
    """A dense array holding ``vector``'s weights at its ids and 0.0 elsewhere, as long as the token table."""
    scatters = _SCATTERS
    vectors, arrays, size = scatters.vectors, scatters.dense, len(TOKENS.words)
    for slot in (0, 1, 2):
        if vectors[slot] is vector and len(arrays[slot]) >= size:
            return arrays[slot]
    slot = scatters.next
    scatters.next = (slot + 1) % 3
    dense, held = arrays[slot], vectors[slot]
    if len(dense) < size:  # the table grew: a larger array, with room to grow
        dense = arrays[slot] = np.zeros(max(1024, 2 * size), dtype=np.float32)
    elif held is not None:
        dense[held.ids] = 0.0
    dense[vector.ids] = vector.weights
    vectors[slot] = vector
    return dense
