"""The engine's fast paths decide exactly as plain versions of the same formulas: checked term by term and run by run.

Each speed-up of the grouping engine (issue 17) computes the same numbers in
fewer Python steps; here each is compared with the plain formula it
replaces, and a whole grouping run with the fast paths with one through the
plain versions: placements, scores and evidence must be equal, not close.
"""

import math
import random
import re
from collections import Counter
from datetime import timedelta
from itertools import combinations

import numpy as np
import pytest
from rapidfuzz import fuzz

from aggregator.dedup import DedupSettings, Report, StoryGrouper
from aggregator.dedup import grouper as grouper_module
from aggregator.dedup import features as features_module
from aggregator.dedup import scoring
from aggregator.dedup.features import PRIOR_MIN_FREQUENCY, PRIOR_TEXT_WORDS, Frequencies, Vector, make_features
from aggregator.dedup.text import first_tokens, fold_normalised, lead_of, normalise_numbers, token_counts, tokens
from aggregator.dedup.vectors import TOKENS, paired_cosines
from tests.test_dedup import fixture_reports


def plain_count(freq: Frequencies, token: str) -> int:
    """Reports in the window carrying the token, through the token table and the counts array one token at a time."""
    found = TOKENS.ids.get(token)
    freq._settle()  # vocabularies added in one step wait to be counted until the counts are read
    return int(freq.df[found]) if found is not None and found < len(freq.df) else 0


def plain_idf(freq: Frequencies, token: str) -> float:
    """The idf as issue 16 wrote it: the prior looked up and turned into documents for each token."""
    settings = freq.settings
    expected = 0.0
    if settings.prior_weight and (p := features_module.language_frequencies().get(token)) is not None:
        expected = settings.prior_weight * freq.n * -math.expm1(-p * PRIOR_TEXT_WORDS)
    rarity = math.log((freq.n + 1) / (plain_count(freq, token) + 0.5 + expected)) + 1.0
    return max(rarity, 0.01) ** settings.idf_power


def plain_vector(freq: Frequencies, counts: Counter, limit: int) -> Vector:
    unique = freq.settings.unique_word_weight
    return plain_vector_of({t: (1.0 + math.log(c)) * plain_idf(freq, t) * (unique if plain_count(freq, t) < 2 else 1.0)
                            for t, c in counts.items()}, limit)


def plain_vector_of(weighted: dict[str, float], limit: int) -> Vector:
    """The vector as the dict-based engine built it: the heaviest terms by a stable sort, ties in their order."""
    norm = math.sqrt(math.fsum(w * w for w in weighted.values()))
    kept = dict(sorted(weighted.items(), key=lambda item: item[1], reverse=True)[:limit]) \
        if len(weighted) > limit else weighted
    weights = np.array(list(kept.values()), dtype=np.float32)
    return Vector(TOKENS.ids_of(list(kept)).astype(np.int32), weights, norm, math.fsum(weights.tolist()))


def plain_weigh(freq: Frequencies, doc) -> None:
    settings = freq.settings
    doc.title_weights = {t: plain_idf(freq, t) for t in doc.title_tokens}
    doc.title_mass = sum(doc.title_weights.values())
    if doc.has_body:
        doc.text = plain_vector(freq, Counter(dict(doc.text_counts.items())), settings.max_vector_terms)
        doc.lead = plain_vector(freq, Counter(dict(doc.lead_counts.items())), settings.max_vector_terms)
        doc.names = plain_vector(freq, Counter(dict(doc.name_counts.items())), settings.max_names)
    doc.text_counts = doc.lead_counts = doc.name_counts = None


def plain_cosine(a: Vector, b: Vector) -> float:
    """The cosine over the shared terms by name, as the dict-based vectors computed it."""
    if not a.norm or not b.norm:
        return 0.0
    mine, theirs = a.terms(), b.terms()
    return math.fsum(mine[t] * theirs[t] for t in mine.keys() & theirs.keys()) / (a.norm * b.norm)


def plain_containment(a: Vector, b: Vector) -> float:
    mine, theirs = a.terms(), b.terms()
    total = math.fsum(mine.values())
    return math.fsum(w for t, w in mine.items() if t in theirs) / total if total else 0.0


def rewritten_reports() -> list[Report]:
    """The fixture's reports and rewrites of them: sentences dropped and reordered, headlines cut, times moved.

    Many pairs of partly shared texts, words counted 64 times or more (past the fast path's table),
    summaries beside long texts, and reports with and without bodies.
    """
    rng = random.Random(17)
    originals = fixture_reports()
    reports = list(originals)
    for n, report in enumerate(originals * 3):
        sentences = re.split(r"(?<=[.!?])\s+", report.text)
        kept = rng.sample(sentences, max(1, len(sentences) * rng.choice([1, 2, 3]) // 4))
        words = report.title.split()
        title = " ".join(rng.sample(words, max(3, len(words) - 2))) if len(words) > 3 else report.title
        text = " ".join(kept) + (" storm" * 70 if n % 11 == 0 else "")
        reports.append(Report(f"{report.id}-r{n}", title, text if n % 7 else "", source=f"Outlet {n % 5}",
                              published=report.published + timedelta(hours=rng.uniform(-30, 30))))
    return reports


def test_language_frequencies_equal_wordfreqs_dictionary_cut_at_the_floor():
    from wordfreq import get_frequency_dict

    plain = {word: p for word, p in get_frequency_dict("en").items() if p >= PRIOR_MIN_FREQUENCY}
    assert features_module.language_frequencies() == plain
    assert len(plain) > 10_000


def weighed_window(settings: DedupSettings | None = None) -> tuple[Frequencies, list, list]:
    """One window's frequencies, and each report's features twice: weighed by the engine, and plainly."""
    settings = settings or DedupSettings()
    freq = Frequencies(settings)
    reports = rewritten_reports()
    fast = [make_features(report, settings) for report in reports]
    plain = [make_features(report, settings) for report in reports]
    for doc in fast:
        freq.add(doc.vocabulary)
    heavy_counts = sum(any(c >= 64 for _, c in doc.text_counts.items()) for doc in fast)
    assert heavy_counts, "no text counts a word 64 times: the fallback past the table would go untested"
    for fast_doc, plain_doc in zip(fast, plain):
        freq.weigh(fast_doc)
        plain_weigh(freq, plain_doc)
    return freq, fast, plain


@pytest.mark.parametrize("limits", [{}, {"max_vector_terms": 20, "max_names": 6}])  # the fixture's texts are short
def test_idfs_and_vectors_equal_the_plain_formulas_exactly(limits):
    freq, fast, plain = weighed_window(DedupSettings(**limits))
    tokens = sorted({t for doc in fast for t in TOKENS.tokens_of(doc.vocabulary)} | {"zzunseen", "the", "said"})
    assert freq.counts(tokens) == [plain_count(freq, t) for t in tokens]
    assert freq.idfs_of(tokens) == [plain_idf(freq, t) for t in tokens]
    assert all(freq.idfs_of([t]) == [plain_idf(freq, t)] for t in tokens[:50])  # one at a time, as the cache holds them
    cut = 0
    for fast_doc, plain_doc in zip(fast, plain):
        assert fast_doc.title_weights == plain_doc.title_weights and fast_doc.title_mass == plain_doc.title_mass
        for part in ("text", "lead", "names"):
            vector, plain_one = getattr(fast_doc, part), getattr(plain_doc, part)
            assert vector == plain_one, (fast_doc.report.id, part)
            # In the same order too: stored features keep it, so their blobs are the same byte for byte.
            assert vector.ids.tolist() == plain_one.ids.tolist(), (fast_doc.report.id, part)
            assert len(set(vector.ids.tolist())) == len(vector.ids) == len(vector.weights)
            cut += part == "text" and len(vector.ids) < len(fast_doc.vocabulary)  # the text's terms: its vocabulary
    assert cut > 100 or not limits, "few texts kept fewer terms than they have: the cut would go untested"


def test_idfs_kept_from_one_weighing_to_the_next_are_those_of_the_window_at_each():
    """A token's idf is kept with the window size and count it was computed for: weighed as the window grows and
    lets reports go, each report gets the weights the plain formulas give at that moment."""
    settings = DedupSettings()
    freq = Frequencies(settings)
    reports = rewritten_reports()
    fast = [make_features(report, settings) for report in reports]
    plain = [make_features(report, settings) for report in reports]
    window = fast[:40]
    for doc in window:
        freq.add(doc.vocabulary)
    changed = 0
    for n, (fast_doc, plain_doc) in enumerate(zip(fast[40:], plain[40:])):
        if n % 3 == 0:  # the window changes between some weighings and not between others
            freq.add(fast_doc.vocabulary)
            window.append(fast_doc)
        if n % 5 == 4:
            freq.remove(window.pop(0).vocabulary)
            changed += 1
        freq.weigh(fast_doc)
        plain_weigh(freq, plain_doc)
        assert fast_doc.title_weights == plain_doc.title_weights, fast_doc.report.id
        assert (fast_doc.text, fast_doc.lead, fast_doc.names) == (plain_doc.text, plain_doc.lead, plain_doc.names)
    assert changed > 10


def test_cosine_containment_and_sort_ratio_equal_the_plain_versions_exactly():
    _, docs, _ = weighed_window()
    with_bodies = [doc for doc in docs if doc.has_body]
    alike = 0
    for a, b in combinations(with_bodies[:120], 2):
        for part in ("text", "lead", "names"):
            va, vb = getattr(a, part), getattr(b, part)
            # Both ways round: the dense scatter is of the first, whichever report it is.
            assert va.cosine(vb) == plain_cosine(va, vb) == vb.cosine(va)
        # Containment both ways: each scatters the other vector.
        assert b.text.containment(a.text) == plain_containment(b.text, a.text)
        assert a.text.containment(b.text) == plain_containment(a.text, b.text)
        alike += a.text.cosine(b.text) > 0.2
    assert alike > 50
    # A report's cosines with many at once (a story's compared members), every kind at once: the same values as one
    # by one, empty vectors on either side included.
    parts = ("text", "lead", "names")
    bodiless = next(doc for doc in docs if not doc.has_body)  # its vectors are empty
    nameless = Vector()
    for a in [*with_bodies[:20], bodiless]:
        others = with_bodies[20:60] + [bodiless]
        mine = [getattr(a, part) for part in parts] + [nameless]
        theirs = [[getattr(o, part) for part in parts] + [nameless] for o in others]
        assert paired_cosines(mine, theirs) == [[x.cosine(y) for x, y in zip(mine, other)] for other in theirs]
    assert paired_cosines([with_bodies[0].text], []) == []
    for a, b in combinations(docs[:150], 2):
        assert fuzz.ratio(a.sorted_title, b.sorted_title) == fuzz.token_sort_ratio(a.title, b.title)


def test_a_run_through_the_plain_versions_places_every_report_alike(monkeypatch):
    reports = rewritten_reports()
    fast = StoryGrouper().add_many(reports)
    monkeypatch.setattr(Frequencies, "weigh", plain_weigh)
    monkeypatch.setattr(Frequencies, "idfs_of", lambda freq, tokens: [plain_idf(freq, t) for t in tokens])
    monkeypatch.setattr(Vector, "cosine", plain_cosine)
    monkeypatch.setattr(Vector, "containment", plain_containment)
    monkeypatch.setattr(scoring.fuzz, "ratio", lambda a, b: pytest.fail("the plain run took a fast path"))
    monkeypatch.setattr(scoring, "title_score", plain_title_score)
    monkeypatch.setattr(scoring, "paired_cosines", lambda mine, theirs: pytest.fail("the plain run took a fast path"))
    monkeypatch.setattr(grouper_module, "pair_scores",
                        lambda a, others, settings: [scoring.score_pair(a, o, settings)[0] for o in others])
    plain = StoryGrouper().add_many(reports)
    assert plain == fast
    assert sum(p.rule == "similar" for p in fast.values()) > 30
    assert sum(p.rule == "seed" for p in fast.values()) > 10


def plain_title_score(a, b, evidence=None):
    set_ratio = fuzz.token_set_ratio(a.title, b.title) / 100
    sort_ratio = fuzz.token_sort_ratio(a.title, b.title) / 100
    rare = scoring.weighted_jaccard(a.title_weights, b.title_weights, a.title_mass, b.title_mass)
    if evidence is not None:
        evidence.update(title_set=set_ratio, title_sort=sort_ratio, title_rare=rare)
    return 0.3 * set_ratio + 0.3 * sort_ratio + 0.4 * rare


def test_counts_equal_counters_added_in_order():
    """Ties in weight break by order of terms: the counts must come in the order Counter's "+" gives too."""
    settings = DedupSettings()
    for report in rewritten_reports():
        doc = make_features(report, settings)
        body = normalise_numbers(report.text[: settings.max_body_chars].strip())
        has_body = len(body) >= settings.min_body_chars
        title = () if doc.generic_title else doc.title_tokens
        body_counts = token_counts(fold_normalised(body) if has_body else "")
        lead = tokens(fold_normalised(lead_of(body)))[: settings.lead_tokens] if has_body else []
        assert list(doc.text_counts.items()) == list((body_counts + Counter(title)).items())
        assert list(doc.lead_counts.items()) == list((Counter(lead) + Counter(title)).items())


def test_the_first_tokens_of_a_text_are_those_of_folding_it_whole():
    """The lead's tokens are read from as much of the body as they take: the same tokens as folding all of it."""
    rng = random.Random(7)
    words = ["Zürich", "naïve", "the", "said", "Ärzte", "1.100", "6.4", "a", "CEO", "ΟΔΟΣ", "ﬁnance", "x",
             "state-run", "U.S.", "½", "\n", "\n\n", "  ", "São", "Paulo", "over", "Lumen-47c"]
    for _ in range(300):
        text = normalise_numbers(" ".join(rng.choice(words) for _ in range(rng.randrange(0, 400))))
        for limit in (1, 5, 60):
            assert first_tokens(text, limit) == tokens(fold_normalised(text))[:limit]
    assert first_tokens("some words here", 0) == []
    glued = "word" * 2000 + " tail words here"  # no space for the first cuts
    assert first_tokens(glued, 2) == tokens(fold_normalised(glued))[:2]


def test_vocabularies_counted_later_give_the_counts_of_counting_each_at_once(monkeypatch):
    """Frequencies.add_all (seeding stored stories) counts when the counts are next read: by then, and after a
    removal of a report counted only so far, every count is what adding each report in turn gave."""
    docs = [make_features(report, DedupSettings()) for report in rewritten_reports()]
    one_by_one, in_steps = Frequencies(DedupSettings()), Frequencies(DedupSettings())
    for doc in docs:
        one_by_one.add(doc.vocabulary)
    # Small enough a limit that some steps count at once and the last waits for the reads below.
    monkeypatch.setattr(features_module, "PENDING_IDS", sum(len(doc.vocabulary) for doc in docs) // 3)
    for first in range(0, len(docs), 7):
        in_steps.add_all([doc.vocabulary for doc in docs[first:first + 7]])
    assert in_steps._pending and in_steps.n == one_by_one.n == len(docs)
    words = sorted({TOKENS.words[i] for doc in docs for i in doc.vocabulary.tolist()})
    assert in_steps.counts(words) == one_by_one.counts(words)
    in_steps.add_all([docs[0].vocabulary])
    in_steps.remove(docs[0].vocabulary)
    assert [in_steps.count(word) for word in words] == [one_by_one.count(word) for word in words]
