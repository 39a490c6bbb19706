"""How likely two reports tell the same story: one score in [0, 1] with the measures behind it.

Two routes in. Reports with bodies are compared by what they say: the cosine
of their whole texts, of their names and figures, and of their titles and
leads; the whole text is the first evidence, so a rewrite under a new headline
joins, and the names keep apart two events of one kind (two earthquakes, two
rehab check-ins). A pair without two bodies has only its headlines: rapidfuzz
ratios and the overlap of rare title words, weighed down since a headline
alone proves less. Signs of two different events lower either score:
disjoint figures ("kills 14" / "kills 6"), and time, since follow-up events
come a day or more later; where a report has no time of its own (none, or the
time it was fetched), disjoint years named in the texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import add
from typing import Any

from rapidfuzz import fuzz

from aggregator.dedup.features import Features
from aggregator.dedup.settings import DedupSettings
from aggregator.dedup.vectors import paired_cosines


def time_factor(hours_apart: float, settings: DedupSettings) -> float:
    """Share of the score kept for reports this far apart: 1 within ``full_credit_hours``, less each day after."""
    late_days = max(0.0, hours_apart - settings.full_credit_hours) / 24
    return max(0.0, 1.0 - settings.decay_per_day * late_days)


def weighted_jaccard(a: dict[str, float], b: dict[str, float], a_mass: float, b_mass: float) -> float:
    """Jaccard overlap of two weighted token sets, each token counted by its rarity."""
    if not a or not b:
        return 0.0
    common = a.keys() & b.keys()
    if not common:
        return 0.0
    # fsum makes the result independent of the set's order.
    shared = math.fsum(map(add, map(a.__getitem__, common), map(b.__getitem__, common))) / 2
    union = a_mass + b_mass - shared
    return shared / union if union else 0.0


def figures_clash(a: Features, b: Features) -> bool:
    """Whether two reports give different figures: two or more each, none shared (or disjoint title numbers)."""
    if a.has_body and b.has_body:
        return len(a.figures) >= 2 and len(b.figures) >= 2 and not a.figures & b.figures
    return bool(a.title_numbers and b.title_numbers and not a.title_numbers & b.title_numbers)


def title_score(a: Features, b: Features, evidence: dict[str, Any] | None = None) -> float:
    """Headline agreement: rapidfuzz set and sort ratios and the overlap of rare title words (put in ``evidence``)."""
    set_ratio = fuzz.token_set_ratio(a.title, b.title) / 100
    # token_sort_ratio is the ratio of the sorted words: sorted once a report, not once a pair.
    sort_ratio = fuzz.ratio(a.sorted_title, b.sorted_title) / 100
    rare = weighted_jaccard(a.title_weights, b.title_weights, a.title_mass, b.title_mass)
    if evidence is not None:
        evidence.update(title_set=set_ratio, title_sort=sort_ratio, title_rare=rare)
    return 0.3 * set_ratio + 0.3 * sort_ratio + 0.4 * rare


def content_score(a: Features, b: Features, settings: DedupSettings, cosines: Sequence[float] | None = None,
                  evidence: dict[str, Any] | None = None) -> float:
    """Body agreement of two reports with bodies: their texts', names' and leads' cosines (given, or taken here),
    weighted (the measures put in ``evidence``)."""
    text, names, lead = cosines or (a.text.cosine(b.text), a.names.cosine(b.names), a.lead.cosine(b.lead))
    if evidence is not None:
        evidence.update(text=text, names=names, lead=lead)
    short, long = (a, b) if a.length <= b.length else (b, a)
    if short.length < settings.short_body_tokens and 2 * short.length <= long.length:
        # A summary or teaser: a cosine punishes it for all the long text it leaves out.
        contained = short.text.containment(long.text)
        if evidence is not None:
            evidence["contained"] = contained
        text = max(text, settings.summary_containment * contained)
    return settings.text_weight * text + settings.names_weight * names + settings.lead_weight * lead


def score_pair(a: Features, b: Features, settings: DedupSettings,
               cosines: Sequence[float] | None = None) -> tuple[float, dict[str, Any]]:
    """How likely two reports tell the same story, in [0, 1], with the measures behind it (``cosines``: their
    texts', names' and leads', where :func:`pair_scores` took them already)."""
    evidence: dict[str, Any] = {}
    return _pair_score(a, b, settings, cosines, evidence), evidence


def pair_scores(a: Features, others: Sequence[Features], settings: DedupSettings) -> list[float]:
    """:func:`score_pair`'s score of ``a`` with each of ``others``, without the evidence (a report is scored against
    dozens of members, and only the best one's evidence is kept): the cosines of those with bodies are taken at
    once (:func:`paired_cosines`). The same scores, in fewer numpy calls."""
    if not a.has_body:
        return [_pair_score(a, other, settings, None, None) for other in others]
    cosines = iter(paired_cosines((a.text, a.names, a.lead),
                                  [(o.text, o.names, o.lead) for o in others if o.has_body]))  # in their order
    return [_pair_score(a, other, settings, next(cosines) if other.has_body else None, None) for other in others]


def _pair_score(a: Features, b: Features, settings: DedupSettings, cosines: Sequence[float] | None,
                evidence: dict[str, Any] | None) -> float:
    """The score of :func:`score_pair`; the measures behind it are put in ``evidence``, when given."""
    gap = abs(a.hour - b.hour) if a.hour is not None and b.hour is not None else 0.0
    if gap > settings.window_hours:
        if evidence is not None:
            evidence["hours_apart"] = gap
        return 0.0
    factor = 1.0
    if gap > settings.full_credit_hours:
        factor = time_factor(gap, settings)
        if evidence is not None:
            evidence["hours_apart"] = gap
    if figures_clash(a, b):
        factor *= settings.clash_factor
        if evidence is not None:
            evidence["figures_clash"] = 1.0
    if not (a.dated and b.dated) and a.years and b.years and not a.years & b.years:
        # Without a publication time of its own (none, or the time it was fetched), the years a text names are
        # all that dates it.
        factor *= settings.years_clash_factor
        if evidence is not None:
            evidence["years_clash"] = 1.0
    if a.has_body and b.has_body:
        score = content_score(a, b, settings, cosines, evidence)
    elif not (a.generic_title or b.generic_title):
        score = title_score(a, b, evidence) * settings.title_only_weight
    else:
        if evidence is not None:
            evidence["generic_title"] = 1.0
        return 0.0
    return factor * score
