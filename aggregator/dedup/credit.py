"""The original source of a story: its earliest report, and the outlet its texts credit ("…, the FT reported")."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aggregator.dedup.features import Report
from aggregator.dedup.text import fold

# "…, the Financial Times reported" / "according to Reuters" / "first reported by Bloomberg".
OUTLET_NAME = r"((?:the\s+)?[A-Z][\w&.'-]*(?:\s+(?:[A-Z][\w&.'-]*|of|de|du|the)){0,5})"
CREDIT_PATTERNS = [
    re.compile(r"(?:first\s+)?reported\s+(?:earlier\s+|first\s+)?by\s+" + OUTLET_NAME),
    re.compile(r"according\s+to\s+(?:a\s+report\s+(?:by|in|from)\s+)?" + OUTLET_NAME),
    re.compile(r",\s+" + OUTLET_NAME + r"\s+(?:reported|said in a report|first reported|revealed)\b"),
    re.compile(r"\b(?:told|in an interview with)\s+" + OUTLET_NAME),
    re.compile(r"\b(?:as\s+)?(?:first\s+)?(?:reported|revealed)\s+(?:earlier\s+)?(?:in|on)\s+" + OUTLET_NAME),
]
# Every credit pattern above contains one of these words: a text without them is spared the five scans.
CREDIT_WORDS = ("report", "according", "told", "interview", "revealed")
NOT_OUTLETS = frozenset(
    {"the", "he", "she", "they", "it", "police", "officials", "sources", "the company", "the ministry",
     "people", "a", "an", "i", "we", "state", "the government", "the report", "data"}
)


def credited_outlet(text: str) -> str | None:
    """The outlet a text credits for the story ("…, the Financial Times reported"), if any."""
    if not any(word in (text or "") for word in CREDIT_WORDS):
        return None
    for pattern in CREDIT_PATTERNS:
        for match in pattern.finditer(text or ""):
            name = match.group(1).strip().rstrip(".,'")
            name = re.sub(r"^the\s+", "", name, flags=re.IGNORECASE)
            if name.lower() not in NOT_OUTLETS and not name.lower().startswith(("the ", "a ")):
                return name
    return None


def report_credit(report: Report) -> str | None:
    """The outlet a report's text credits for the story, unless it is the report's own outlet."""
    name = credited_outlet(f"{report.title}. {report.text}")
    return name if name and fold(name) != fold(report.source) else None


def original_source(
    reports: Sequence[Report], known_credits: dict[Any, str | None] | None = None
) -> tuple[Report | None, str | None]:
    """The earliest report (unknown times last), and the outlet the texts credit most often, if any.

    ``known_credits`` holds :func:`report_credit` of reports by id, found while their texts were
    at hand; the texts of the others are read here.
    """
    if not reports:
        return None, None
    known = known_credits or {}
    earliest = min(reports, key=lambda r: (r.published is None, r.published or datetime.max.replace(tzinfo=UTC)))
    credits = Counter(name for r in reports if (name := known[r.id] if r.id in known else report_credit(r)))
    return earliest, credits.most_common(1)[0][0] if credits else None
