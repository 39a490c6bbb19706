"""The engine's shortcuts change work, never decisions: checked against plain versions of the same rules."""

import os
import random
import string
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta


from aggregator.dedup import DedupSettings, Report, StoryGrouper
from tests.test_dedup import fixture_reports
from tests.test_dedup_fastpaths import plain_idf

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def plain_candidates(grouper: StoryGrouper, doc) -> list[int]:
    """Candidate stories by the rule's words: posting lists rarest first within the budget, heaviest stories first."""
    settings, freq = grouper.settings, grouper._freq
    cap = max(20, settings.max_token_df * freq.n)
    lists = sorted(
        (len(stories), token, stories)
        for token in doc.key_tokens
        if (stories := grouper.index.postings.get(token)) and len(stories) <= settings.max_posting_stories
        and freq.count(token) <= cap
    )
    weight: dict[int, float] = defaultdict(float)
    budget = settings.max_candidate_postings
    for size, token, stories in lists:
        budget -= size
        if budget < 0:
            break
        for story_id in stories:
            weight[story_id] += doc.title_weights.get(token) or plain_idf(freq, token)
    floor = settings.min_candidate_share * doc.title_mass
    ranked = sorted(((shared, story_id) for story_id, shared in weight.items() if shared >= floor), reverse=True)
    return [story_id for _, story_id in ranked[: settings.max_candidate_stories]]


class CheckedGrouper(StoryGrouper):
    """A grouper that checks every candidate search against :func:`plain_candidates`."""

    checked = 0

    def _candidate_stories(self, doc):
        found = super()._candidate_stories(doc)
        assert [story.id for story in found] == plain_candidates(self, doc), doc.report.id
        self.checked += 1
        return found


def crowded_headlines(n: int) -> list[Report]:
    """Five-word headlines over 150 unlike words: each word is shared by many stories, and many tie."""
    rng = random.Random(4)
    words = ["".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(150)]
    return [Report(i, " ".join(rng.sample(words, 5)), published=T0 + timedelta(minutes=7 * i)) for i in range(n)]


def test_candidate_search_finds_the_heaviest_stories_ties_and_budget_included():
    # A budget that stops the search midway, and no list too common to read.
    settings = DedupSettings(max_candidate_postings=300, max_token_df=1.0, max_posting_stories=400)
    grouper = CheckedGrouper(settings)
    grouper.add_many(crowded_headlines(400))
    assert grouper.checked == 400
    assert len(set(grouper.clusters().values())) > 100  # many stories to choose among, not a few big ones


def test_candidate_search_on_reports_with_bodies():
    grouper = CheckedGrouper()
    grouper.add_many(fixture_reports())
    assert grouper.checked >= 50


GROUP_IN_A_FRESH_PROCESS = """
import json, random, sys
from datetime import UTC, datetime, timedelta
from aggregator.dedup import DedupSettings, Report, StoryGrouper
rng = random.Random(7)
names = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3)).capitalize()
         for _ in range(400)]
reports = []
for story in range(12):
    cast = rng.sample(names, 70)  # more names than max_names keeps: which survive must not depend on the process
    for outlet in range(3):
        said = rng.sample(cast, 60)
        body = " ".join(f"{a} met {b} on Tuesday and {c} said {n} people came." for a, b, c, n in
                        zip(said[::3], said[1::3], said[2::3], range(20)))
        reports.append(Report(f"{story}-{outlet}", f"{cast[0]} and {cast[1]} sign pact number {story}", body,
                              published=datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=outlet + 5 * story)))
placements = StoryGrouper(DedupSettings()).add_many(reports)
json.dump({k: [p.story_id, p.rule, p.score, p.evidence] for k, p in placements.items()}, sys.stdout, sort_keys=True)
"""


def test_grouping_does_not_depend_on_the_process_hash_seed():
    outputs = {
        subprocess.run([sys.executable, "-c", GROUP_IN_A_FRESH_PROCESS], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    assert '"similar"' in outputs.pop()  # the reports did meet: the scores compared are real


def test_a_token_of_too_many_stories_drops_its_story_list_until_reports_leave_the_window():
    grouper = StoryGrouper(DedupSettings(max_posting_stories=3))
    rng = random.Random(3)

    def report(report_id: str, hours: float) -> Report:
        """Five words of its own and "harbour": a story of its own that shares one word with the others."""
        own = " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(5))
        return Report(report_id, f"Harbour {own}", published=T0 + timedelta(hours=hours))

    for n in range(5):
        grouper.add(report(f"r{n}", hours=n))
    assert "harbour" not in grouper.index.postings and grouper.index.crowded["harbour"] == 5  # 5 stories > 3
    # Six days later r0, r1 and r2 leave the window: with the late report, three carry the word,
    # so its story list is back, and exact.
    grouper.add(report("late", hours=2 * grouper.settings.window_hours + 2.5))
    assert "harbour" not in grouper.index.crowded
    assert grouper.index.postings["harbour"] == {grouper.story_of[r]: 1 for r in ("r3", "r4", "late")}
