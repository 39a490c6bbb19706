"""The grouper: places reports into stories one at a time, in memory, with stable ids.

Decisions go from cheap to expensive:

1. identity: same canonical URL, same non-trivial GUID, or same
   fingerprint of a long enough normalised body;
2. candidates: only stories inside the time window that share informative
   (rare within the window) title, lead or name tokens, found through an
   inverted index (:mod:`aggregator.dedup.postings`), so the cost grows about
   linearly with the number of reports;
3. scoring (:mod:`aggregator.dedup.scoring`) of the report against the
   candidates' members;
4. clustering: a report joins a story only when its *average* link to the
   story's compared members clears the threshold (no single-link chaining),
   so a story's later reports are judged against the story, not one early
   member, and only when that link is close to the weakest link by which
   the story's members joined it (``cohesion_share``): a tight story of one
   event does not take in a report of its subject's next event; two stories
   that the report joins both, and whose average link clears the merge
   threshold, become one under the older id.

Work and memory per report are bounded, whatever the bodies and the window
hold: only the first ``max_body_chars`` of a body are read, texts are dropped
once features are built, each vector keeps its heaviest terms, candidate
search reads at most ``max_candidate_postings`` postings (rarest tokens
first), and a story whose representative scores below
``min_representative_link`` is not compared further; a token of more than
``max_posting_stories`` stories finds no candidates.
"""

from __future__ import annotations

import heapq
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from typing import Any

import numpy as np

from aggregator.dedup.features import Features, Frequencies, Report, TextReading, make_features, meaningful_guid
from aggregator.dedup.postings import StoryIndex
from aggregator.dedup.scoring import pair_scores, score_pair
from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.vectors import TOKENS


@dataclass
class Placement:
    """Where a report went, by which rule, and the scores that decided it."""

    story_id: int
    rule: str  # seed | same-url | same-guid | same-body | similar
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Merge:
    """Story ``merged`` was folded into the older story ``into``."""

    merged: int
    into: int
    score: float


@dataclass
class _Story:
    id: int
    members: list[Features] = field(default_factory=list)
    representative: Features | None = None
    links: int = 0  # joins and merges that made the story
    weakest_link: float = 1.0  # the lowest of their scores

    def linked(self, score: float, count: int = 1) -> None:
        self.links += count
        self.weakest_link = min(self.weakest_link, score)

    def admits(self, link: float, settings: DedupSettings) -> bool:
        """Whether a report linked this well is about as close to the story as its members were."""
        return self.links < settings.cohesion_min_joins or link >= min(
            settings.cohesion_share * self.weakest_link, settings.cohesion_cap)

    @property
    def first_compared(self) -> Features:
        """The member compared first: the representative, else the newest member."""
        return self.representative or self.members[-1]

    def compared_members(self, limit: int) -> list[Features]:
        """The representative first, then the newest members: a sample that follows the story as it moves."""
        first = self.first_compared
        newest = self.members[-limit:][::-1]
        return [first] + [m for m in newest if m is not first][: limit - 1]


# The token table (dedup.vectors.TOKENS) only grows, and a daemon groups in its own process run after
# run, meeting new names every day: past this many tokens, a grouper that starts while no other is
# alive (so no features hold ids) starts the table afresh.
TOKEN_TABLE_LIMIT = 1_000_000
_LIVE_GROUPERS: weakref.WeakSet = weakref.WeakSet()


class StoryGrouper:
    """Places reports into stories one at a time; ids once given never change.

    Seed it with existing stories (:meth:`seed`), then :meth:`add` or
    :meth:`add_many` new reports. New stories get ids from ``first_new_id``
    upwards. When a report shows two stories to be one, the younger is folded
    into the older and the fold is recorded in :attr:`merges`.
    """

    def __init__(self, settings: DedupSettings | None = None, first_new_id: int = 1) -> None:
        if not _LIVE_GROUPERS and len(TOKENS) > TOKEN_TABLE_LIMIT:
            TOKENS.clear()
        _LIVE_GROUPERS.add(self)
        self.settings = settings or DedupSettings()
        self.next_id = first_new_id
        self.stories: dict[int, _Story] = {}
        self.story_of: dict[Any, int] = {}  # report id -> story id
        self.merges: list[Merge] = []
        self._merged_into: dict[int, int] = {}
        self._freq = Frequencies(self.settings)
        # Members of each story a merge compares (see _stories_link).
        self._merge_sample = max(2, self.settings.max_members_compared // 2)
        # A story's members that any comparison reads: its representative and its newest this many (the average
        # link's sample, and a merge's); a member further back is retired (its vectors dropped) for good.
        self._compared_span = max(self.settings.max_members_compared, self._merge_sample + 1)
        self._unplaced: dict[Any, Features] = {}  # observed, not placed yet
        self._counted: set[Any] = set()  # report ids whose tokens the frequencies hold
        self.index = StoryIndex(self.settings)  # key token -> the stories carrying it
        self._docs: dict[int, Features] = {}
        self._doc_story: dict[int, int] = {}
        self._by_url: dict[str, int] = {}
        self._by_guid: dict[str, int] = {}
        self._by_fingerprint: dict[str, int] = {}
        self._timeline: list[tuple[datetime, int]] = []  # heap of (published, seq), for eviction
        # The newest publication time among the reports that have left the index: a report published
        # less than a window after it would not find all its stories here.
        self.forgotten_through: datetime | None = None
        self.last_placed: Features | None = None  # the features of the report :meth:`add` placed last
        # Reads the rest of a member seeded deferred (``Features.deferred``), before it is first compared.
        self.complete: Callable[[Features], None] | None = None
        self._seq = 0

    # -- public ------------------------------------------------------------

    def observe(self, reports: Iterable[Report], readings: Mapping[Any, TextReading] | None = None) -> None:
        """Count the reports' tokens in the window's frequencies before placing them.

        Placing a batch after observing it all gives the first reports of the
        batch the same sense of which words are rare as the last ones.
        ``readings`` holds reports' texts read already (:func:`read_text`), by id.
        """
        for report in reports:
            if report.id not in self._counted:
                doc = make_features(report, self.settings, readings.get(report.id) if readings else None)
                self._unplaced[report.id] = doc
                self._count(doc)

    def seed(self, story_id: int, reports: Sequence[Report | Features], links: Sequence[float] = ()) -> None:
        """Load an existing story with its members (oldest first) and the scores of the links that made it.

        Nothing is re-decided. A member given as :class:`Features` (stored when it was placed) keeps the
        weights it has; a :class:`Report` is read and weighed now.
        """
        story = self.stories.setdefault(story_id, _Story(story_id))
        self.next_id = max(self.next_id, story_id + 1)
        for score in links:
            story.linked(score)
        docs = []
        uncounted: list[Features] = []  # stored members whose words the frequencies count at once, in one step
        size_before = len(story.members)
        for report in reports:
            if isinstance(report, Features):
                doc = report
                if doc.report.id not in self._counted:
                    uncounted.append(doc)
                self._number(doc)
            else:
                self._count_all(uncounted)  # a member read from its text is weighed by the frequencies so far
                self.observe([report])
                doc = self._new_doc(report)
            self._attach(doc, story, post=False, retire=False)
            docs.append(doc)
        # Once for all: the members past the compared span are those retired one by one, and a bodiless first
        # member that a bodied one replaced as the story's face (which no comparison reaches any more).
        self._retire_past_compared(story, size_before)
        self._count_all(uncounted)
        if not self.index.is_empty() or not docs or any(doc.key_ids is None for doc in docs):
            # The story's postings at once: its members share most of their key tokens (the same end state as
            # posting each member in turn; seeding a window of 50,000 spent a third of its time posting).
            self.index.post_counts(Counter(chain.from_iterable(doc.key_tokens for doc in docs)), story.id)
        else:  # nothing posted yet: the story's postings wait until their tokens are looked up
            self.index.defer(np.concatenate([doc.key_ids for doc in docs]),
                             chain.from_iterable(doc.key_tokens for doc in docs), story.id)
        for doc in docs:
            doc.key_ids = None

    def add(self, report: Report) -> Placement:
        """Place one report: into the story it matches, else into a new story."""
        self.observe([report])
        doc = self.last_placed = self._new_doc(report)
        self._evict_old(doc)
        identity = self._identity_match(doc)
        if identity is not None:
            rule, story_id = identity
            self._attach(doc, self.stories[story_id])
            return Placement(story_id, rule, 1.0, {"matched": rule})
        best = self._best_story(doc)
        if best is not None:
            story, score, evidence, runners_up = best
            self._attach(doc, story)
            story.linked(score)
            placed_in = self._merge_related(story, runners_up, bridge=doc)
            if placed_in != story.id:
                evidence["merged_into"] = placed_in
            return Placement(placed_in, "similar", round(score, 3), evidence)
        story = _Story(self.next_id)
        self.next_id += 1
        self.stories[story.id] = story
        self._attach(doc, story)
        return Placement(story.id, "seed", None, {})

    def add_many(self, reports: Iterable[Report]) -> dict[Any, Placement]:
        """Place reports in publication order (unknown times last); see :meth:`place_many`."""
        return {report.id: placement for report, placement in self.place_many(reports)}

    def place_many(self, reports: Iterable[Report]) -> Iterator[tuple[Report, Placement]]:
        """Place reports in publication order (unknown times last), yielding each placement as it is made.

        Each report is placed after observing every report of the batch it
        could match (published up to ``window_hours`` after it), so the first
        reports of a burst have the same sense of which words are rare as the
        last ones; reports further ahead are observed only when their time
        comes, so frequencies and memory stay those of one window.
        """
        ordered = sorted(reports, key=lambda r: (r.published is None, r.published or datetime.min.replace(tzinfo=UTC)))
        ahead = timedelta(hours=2 * self.settings.window_hours)
        observed = 0
        for report in ordered:
            horizon = report.published + ahead if report.published else None
            end = observed
            while end < len(ordered) and (horizon is None or (ordered[end].published or horizon) <= horizon):
                end += 1
            if end > observed:
                self.observe(ordered[observed:end])
                observed = end
            yield report, self.add(report)

    def resolve(self, story_id: int) -> int:
        while story_id in self._merged_into:
            story_id = self._merged_into[story_id]
        return story_id

    def clusters(self) -> dict[Any, int]:
        """Every report id placed so far, with its current story id."""
        return {report_id: self.resolve(story_id) for report_id, story_id in self.story_of.items()}

    def members(self, story_id: int) -> list[Report]:
        return [doc.report for doc in self.stories[self.resolve(story_id)].members]

    def representative(self, story_id: int) -> Report | None:
        rep = self.stories[self.resolve(story_id)].representative
        return rep.report if rep else None

    # -- internals ---------------------------------------------------------

    def _new_doc(self, report: Report) -> Features:
        doc = self._unplaced.pop(report.id, None) or make_features(report, self.settings)
        self._number(doc)
        self._freq.weigh(doc)
        return doc

    def _count(self, doc: Features) -> None:
        """The window's frequencies count the report's words (once a report: see ``_counted``)."""
        self._counted.add(doc.report.id)
        self._freq.add(doc.vocabulary)

    def _count_all(self, docs: list[Features]) -> None:
        """:meth:`_count` of each report, in one numpy step (a later run seeds 50,000); ``docs`` is emptied."""
        if docs:
            self._counted.update(doc.report.id for doc in docs)
            self._freq.add_all([doc.vocabulary for doc in docs])
            docs.clear()

    def _number(self, doc: Features) -> None:
        """The report's place in the order of arrival."""
        doc.seq = self._seq
        self._seq += 1

    def _attach(self, doc: Features, story: _Story, post: bool = True, retire: bool = True) -> None:
        story.members.append(doc)
        if story.representative is None or (doc.has_body and not story.representative.has_body):
            story.representative = doc
        if retire:
            self._retire_past_compared(story, len(story.members) - 1)
        self.story_of[doc.report.id] = story.id
        self._docs[doc.seq] = doc
        self._doc_story[doc.seq] = story.id
        if post:
            self.index.post_counts(dict.fromkeys(doc.key_tokens, 1), story.id)
        if doc.canonical:
            self._by_url.setdefault(doc.canonical, doc.seq)
        guid = meaningful_guid(doc.report.guid)
        if guid:
            self._by_guid.setdefault(guid, doc.seq)
        if doc.fingerprint:
            self._by_fingerprint.setdefault(doc.fingerprint, doc.seq)
        if doc.report.published:
            heapq.heappush(self._timeline, (doc.report.published, doc.seq))

    def _retire_past_compared(self, story: _Story, first_new: int) -> None:
        """Retire the members that members from ``first_new`` on pushed past the story's compared span.

        A story's members only grow at the end, so a member once past its newest ``_compared_span`` stays past
        them, and no comparison reads it again unless it is the representative.
        """
        span, members = self._compared_span, story.members
        for member in members[max(0, first_new - span):max(0, len(members) - span)]:
            # The report being placed is read whole once more after its placement (the database step stores it).
            if member is not story.representative and member is not self.last_placed:
                member.retire()

    def _evict_old(self, incoming: Features) -> None:
        """Forget index entries too old to match anything arriving from now on."""
        if incoming.report.published is None:
            return
        # Relative to the incoming report, so a late arrival still finds the stories of its own days.
        horizon = incoming.report.published - timedelta(hours=2 * self.settings.window_hours)
        while self._timeline and self._timeline[0][0] < horizon:
            published, seq = heapq.heappop(self._timeline)
            # Only what was really let go counts: a batch that reaches back no further finds everything here.
            self.forgotten_through = max(published, self.forgotten_through or published)
            old = self._docs.pop(seq)
            self.index.unpost(old.key_tokens, self._doc_story[old.seq], self._stories_carrying)
            self._read_deferred([old])  # a released member keeps its title and figures: they must be read first
            if old.report.id in self._counted:
                self._counted.discard(old.report.id)
                self._freq.remove(old.vocabulary)
            # Nothing arriving from now on is close enough in time to be compared with it.
            old.release()

    def _stories_carrying(self, token: str) -> dict[int, int]:
        """The stories of the reports in the window that carry ``token``, and how many of each story's do."""
        stories: dict[int, int] = {}
        for seq, doc in self._docs.items():
            if token in doc.key_tokens:
                story_id = self._doc_story[seq]
                stories[story_id] = stories.get(story_id, 0) + 1
        return stories

    def _identity_match(self, doc: Features) -> tuple[str, int] | None:
        guid = meaningful_guid(doc.report.guid)
        checks = (
            ("same-url", self._by_url, doc.canonical),
            ("same-guid", self._by_guid, guid),
            ("same-body", self._by_fingerprint, doc.fingerprint),
        )
        for rule, index, key in checks:
            if key and key in index:
                return rule, self.resolve(self._doc_story[index[key]])
        return None

    def _candidate_stories(self, doc: Features) -> list[_Story]:
        """Stories sharing the most rare-token weight with the report, most first (:meth:`StoryIndex.candidates`)."""
        return [self.stories[story_id] for story_id in self.index.candidates(doc, self._freq)]

    def _read_deferred(self, members: Iterable[Features]) -> None:
        """Read what seeding left in the stored blob of these members: a member is compared only once it is whole."""
        for member in members:
            if member.deferred is not None:
                assert self.complete is not None, "a member seeded deferred needs the grouper's complete"
                self.complete(member)

    def _best_story(self, doc: Features) -> tuple[_Story, float, dict[str, Any], list[tuple[_Story, float]]] | None:
        settings = self.settings
        candidates = self._candidate_stories(doc)
        firsts = [story.first_compared for story in candidates]
        self._read_deferred(firsts)
        # Each candidate's first member at once (one gather a vector kind): most stories end there.
        first_scores = pair_scores(doc, firsts, settings)
        # The stories that do not end there are sampled now, and all their other sampled members scored at once.
        samples = {story.id: story.compared_members(settings.max_members_compared)
                   for story, first in zip(candidates, first_scores) if first >= settings.min_representative_link}
        rest = [member for sample in samples.values() for member in sample[1:]]
        self._read_deferred(rest)
        rest_scores = iter(pair_scores(doc, rest, settings))
        linked = []
        for story, first in zip(candidates, first_scores):
            sample = samples.get(story.id)
            scores = [first, *islice(rest_scores, len(sample) - 1)] if sample else [first]
            average = sum(scores) / len(scores)
            if story.admits(average, settings):
                linked.append((average, story, scores))
        linked.sort(key=lambda x: -x[0])
        if not linked or linked[0][0] < settings.join_threshold:
            return None
        score, story, scores = linked[0]
        # Only stories the report would join as well are merge candidates: the report is the bridge.
        related = [(s, sc) for sc, s, _ in linked[1:] if sc >= settings.join_threshold]
        return story, score, self._link_evidence(doc, samples.get(story.id), scores, score), related

    def _link_evidence(self, doc: Features, sample: list[Features] | None, scores: list[float],
                       average: float) -> dict[str, Any]:
        """Why the report joined a story: its average link to the story's ``sample`` (``scores``, in its order), and
        the measures of its best link (scored again with them: only the story joined keeps its evidence); or, for a
        story not sampled (its first member scored below ``min_representative_link``), that one score."""
        if sample is None:
            return {"representative_link": round(scores[0], 3)}
        best_index = max(range(len(scores)), key=scores.__getitem__)
        best = sample[best_index]
        return {
            "average_link": round(average, 3),
            "compared": len(scores),
            "best_member": best.report.id,
            "best": round(scores[best_index], 3),
            **{name: round(value, 3) for name, value in score_pair(doc, best, self.settings)[1].items()},
        }

    def _merge_related(self, story: _Story, others: list[tuple[_Story, float]], bridge: Features) -> int:
        """Fold stories that the new report joined as well, when they match as wholes without it."""
        current = story
        for other, _ in others:
            if self.resolve(other.id) != other.id or other.id == current.id:
                continue
            link = self._stories_link(current, other, leaving_out=bridge)
            if link < self.settings.merge_threshold:
                continue
            older, younger = (current, other) if current.id < other.id else (other, current)
            older_size = len(older.members)
            for member in younger.members:
                older.members.append(member)
                if member.seq in self._docs:  # still in the window: its postings move with it
                    self.index.move(member.key_tokens, younger.id, older.id)
                self._doc_story[member.seq] = older.id
                self.story_of[member.report.id] = older.id
            if older.representative is None:
                older.representative = younger.representative
            self._retire_past_compared(older, older_size)
            older.linked(younger.weakest_link, younger.links)
            older.linked(link)
            younger.members = []
            self._merged_into[younger.id] = older.id
            self.merges.append(Merge(younger.id, older.id, round(link, 3)))
            current = older
        return current.id

    def _stories_link(self, a: _Story, b: _Story, leaving_out: Features) -> float:
        """Average link between two stories' compared members, the report that bridges them left out."""
        limit = self._merge_sample
        a_members, b_members = ([m for m in s.compared_members(limit + 1) if m is not leaving_out][:limit]
                                for s in (a, b))
        self._read_deferred([*a_members, *b_members])
        pairs = [score for x in a_members for score in pair_scores(x, b_members, self.settings)]
        return sum(pairs) / len(pairs) if pairs else 0.0
