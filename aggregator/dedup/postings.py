"""The window's inverted index: which stories carry each key token, and the search for a report's candidate stories.

A report's key tokens are its title's and lead's informative words and its
heaviest names (``Features.key_tokens``). Each is posted under the report's
story, with a count of the story's reports in the window that carry it, so a
report leaving the window or moving with a merge takes its postings along.
A token of more than ``max_posting_stories`` stories finds no candidates, so
it keeps a count of its reports instead of its story list, until no more than
that many reports carry it. Stored stories seeded before anything was posted
wait unposted, as sorted token ids, until a token is first looked up: a later
run reaches a small share of the window's tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from operator import sub

import numpy as np

from aggregator.dedup.features import Features, Frequencies
from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.vectors import TOKENS, distinct_ids


class StoryIndex:
    """Key token -> the stories in the window whose reports carry it, and how many of each story's reports do."""

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        # token -> {story id: how many of its reports in the window carry the token}; plain dicts, not
        # Counters: a Counter's missing-key hook is a Python call on nearly every posting added.
        self.postings: dict[str, dict[int, int]] = defaultdict(dict)
        # token -> how many reports in the window carry it, for the tokens of more than
        # max_posting_stories stories: they find no candidates, so their story lists are dropped
        # (common words' lists were most of the grouper's memory) until few enough reports carry them.
        self.crowded: dict[str, int] = {}
        # Stored stories seeded before anything was posted keep their members' key tokens here, as token
        # ids and story ids, until a token is first looked up (ensure_posted): a later run reaches a
        # small share of the window's tokens, and posting all of 50,000 reports' cost a second.
        self.unposted: list[tuple[np.ndarray, int]] = []  # a story's members' key token ids, the story
        # Sorted: token id << 32 | the story's place in _unposted_stories (one int64 a posting, sorted in place).
        self._unposted_index: np.ndarray | None = None
        self._unposted_stories = np.zeros(0, dtype=np.int64)  # story ids, by place
        self.unposted_tokens: set[str] = set()

    def is_empty(self) -> bool:
        """Whether nothing has been posted or looked up yet: only then may a seeded story wait unposted
        (:meth:`defer`)."""
        return not (self.postings or self.crowded or self._unposted_index is not None)

    def defer(self, key_ids: np.ndarray, key_tokens: Iterable[str], story_id: int) -> None:
        """A seeded story's members' key tokens (``key_ids`` their ids, repeated as often as members carry them),
        posted when a token is first looked up (see ``unposted``)."""
        self.unposted.append((key_ids, story_id))
        self.unposted_tokens.update(key_tokens)

    def index_unposted(self) -> None:
        """Sort the key tokens of the stories seeded unposted into one index, as the first look-up of a token would:
        no story is seeded unposted after it (seed posts at once from then on). A warmed session does it ahead."""
        if self._unposted_index is not None:
            return
        index = np.empty(sum(len(ids) for ids, _ in self.unposted), dtype=np.int64)
        at = 0
        for place, (ids, _) in enumerate(self.unposted):
            index[at:at + len(ids)] = ids
            index[at:at + len(ids)] <<= 32
            index[at:at + len(ids)] |= place
            at += len(ids)
        index.sort()
        self._unposted_index = index
        self._unposted_stories = np.array([story_id for _, story_id in self.unposted], dtype=np.int64)
        self.unposted = []

    def ensure_posted(self, token: str) -> None:
        """Post the seeded stories that carry ``token`` and wait unposted (see ``unposted``): before any use of its
        postings, so that they are what posting every seeded story at once would have made them."""
        if self._unposted_index is None:  # the first look-up
            self.index_unposted()
        self.unposted_tokens.discard(token)
        found = TOKENS.known(token)
        index = self._unposted_index
        start, end = index.searchsorted(np.array([found << 32, (found + 1) << 32], dtype=np.int64))
        # Ascending (the token's bits of each entry are the same): each place's run found where the value changes,
        # with no sort (np.unique sorts again; a later run looks up thousands of tokens, some in most stories).
        if start == end:  # no seeded story carries it
            self.postings[token] = {}
            return
        places = index[start:end] & 0xFFFFFFFF
        runs = np.flatnonzero(np.concatenate(([True], places[1:] != places[:-1])))
        # The same end state as posting story after story: a token of more than max_posting_stories is crowded.
        if len(runs) > self.settings.max_posting_stories:
            self.crowded[token] = int(end - start)
        else:
            ends = [*runs[1:].tolist(), len(places)]
            self.postings[token] = dict(zip(self._unposted_stories[places[runs]].tolist(),
                                            map(sub, ends, runs.tolist())))

    def post_counts(self, counts: Mapping[str, int], story_id: int) -> None:
        """Post ``counts[token]`` reports of the story under each token."""
        crowded, limit, postings = self.crowded, self.settings.max_posting_stories, self.postings
        unposted = self.unposted_tokens
        for token, n in counts.items():
            if unposted and token in unposted:
                self.ensure_posted(token)
            if token in crowded:
                crowded[token] += n
                continue
            stories = postings[token]
            stories[story_id] = stories.get(story_id, 0) + n
            if len(stories) > limit:
                crowded[token] = sum(stories.values())
                del postings[token]

    def unpost(self, key_tokens: Iterable[str], story_id: int,
               stories_carrying: Callable[[str], dict[int, int]]) -> None:
        """Take a report leaving the window out of the postings; ``stories_carrying(token)`` lists, from the reports
        still in the window, the stories of a crowded token that few enough reports carry again."""
        crowded, limit, unposted = self.crowded, self.settings.max_posting_stories, self.unposted_tokens
        for token in key_tokens:
            if unposted and token in unposted:
                self.ensure_posted(token)
            carried = crowded.get(token)
            if carried is not None:
                if carried - 1 > limit:
                    crowded[token] = carried - 1
                else:  # few enough reports carry it to find candidates again: list its stories anew
                    del crowded[token]
                    self.postings[token] = stories_carrying(token)
                continue
            self._move_posting(token, story_id, None)

    def move(self, key_tokens: Iterable[str], from_story: int, to_story: int) -> None:
        """One report's postings leave ``from_story`` for ``to_story`` (a merge; a crowded token has none)."""
        for token in key_tokens:
            if self.unposted_tokens and token in self.unposted_tokens:
                self.ensure_posted(token)
            if token not in self.crowded:
                self._move_posting(token, from_story, to_story)

    def _move_posting(self, token: str, from_story: int, to_story: int | None) -> None:
        """One report's posting of ``token`` leaves ``from_story``, for ``to_story`` if given."""
        stories = self.postings[token]
        left = stories[from_story] - 1
        if left > 0:
            stories[from_story] = left
        else:
            del stories[from_story]
        if to_story is not None:
            stories[to_story] = stories.get(to_story, 0) + 1
        elif not stories:
            del self.postings[token]

    def candidates(self, doc: Features, freq: Frequencies) -> list[int]:
        """The stories sharing the most rare-token weight with the report, most first (story ids).

        Tokens that more than ``max_token_df`` of the window's reports carry
        find none; the others' lists are read rarest first until
        ``max_candidate_postings`` postings are read; a story's weight is the
        sum of the idfs of the tokens it shares (a title token's weight as the
        title has it); stories under ``min_candidate_share`` of the title's
        weight are left out.
        """
        settings = self.settings
        limit = settings.max_candidate_stories
        if limit <= 0:
            return []
        cap = max(20, settings.max_token_df * freq.n)
        postings = self.postings
        if self.unposted_tokens:
            for token in self.unposted_tokens.intersection(doc.key_tokens):
                self.ensure_posted(token)
        # Tokens of more than max_posting_stories stories have no list here (see post_counts).
        posted = [(token, stories) for token in doc.key_tokens if (stories := postings.get(token))]
        lists = sorted(
            (len(stories), token, stories)
            for (token, stories), count in zip(posted, freq.counts([token for token, _ in posted]))
            if count <= cap
        )
        read: list[tuple[str, dict[int, int]]] = []
        budget = settings.max_candidate_postings
        for size, token, stories in lists:  # rarest first, until the budget is spent
            budget -= size
            if budget < 0:
                break
            read.append((token, stories))
        if not read:
            return []
        # The idfs of the tokens read that the title does not weigh already, in one step.
        untitled = [token for token, _ in read if not doc.title_weights.get(token)]
        idf_of = dict(zip(untitled, freq.idfs_of(untitled)))
        sizes = [len(stories) for _, stories in read]
        # Every posting read, in one array: its story, and the idf of its token.
        story_ids = np.fromiter(chain.from_iterable(stories for _, stories in read), dtype=np.int64,
                                count=sum(sizes))
        idfs = np.repeat([doc.title_weights.get(token) or idf_of[token] for token, _ in read], sizes)
        # Each story's shared weight summed posting after posting in the order read (np.add.at adds in order: the
        # same doubles as adding them one by one; a dict updated posting by posting was the engine's largest cost).
        stories = distinct_ids(story_ids)
        shared = np.zeros(len(stories))
        np.add.at(shared, np.searchsorted(stories, story_ids), idfs)
        # The heaviest max_candidate_stories, ties to the larger id (as the largest (weight, id) pairs), then the
        # floor, relative to the title's weight: a shared lead adds evidence on top of it.
        if len(shared) > limit:
            contenders = shared >= np.partition(shared, len(shared) - limit)[len(shared) - limit]
            stories, shared = stories[contenders], shared[contenders]
        best = np.lexsort((stories, shared))[::-1][:limit]
        floor = settings.min_candidate_share * doc.title_mass
        return [story_id for story_id, weight in zip(stories[best].tolist(), shared[best].tolist()) if weight >= floor]
