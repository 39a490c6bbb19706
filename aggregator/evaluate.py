"""Measure story grouping against gold labels: ``agg eval-dedup``.

This module owns reading labelled collections (JSON Lines with a gold
``story`` per document, or the UCI News Aggregator headlines CSV), running
them through exactly the engine the pipeline uses
(:meth:`aggregator.dedup.StoryGrouper.add_many`) and scoring the result
with pairwise and B-cubed precision, recall and F1, in the file's order
and, on request, in shuffled arrival orders; and scoring the stories
a database already holds against gold labels keyed by (feed URL, GUID), as
the bundled samples' ``stories.jsonl`` gives them.
"""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from aggregator.dedup import DedupSettings, Report, StoryGrouper, resolve_story_id

UCI_HEADLINES = Path("headlines") / "uci-news-aggregator.head6366.csv"


def shared_data_dir() -> Path:
    """Where the team's read-only test material lives (``$AGG_SHARED_DATA``, else ``../shared/data``)."""
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return Path(os.environ.get("AGG_SHARED_DATA", default))


@dataclass
class EvalResult:
    documents: int
    gold_clusters: int
    predicted_clusters: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # With shuffled arrival orders: their count, and the mean and lowest of each figure over them.
    orders: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class EvalInputError(ValueError):
    """The labelled file cannot be evaluated; the message says where and why."""


def _parse_time(value: object) -> datetime | None:
    """A publication time given as ISO 8601, an RFC 822 date, or seconds/milliseconds since the epoch."""
    if value in (None, "") or isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) > 1e11 else value  # milliseconds, as in the UCI file
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_jsonl(path: Path, warnings: list[str] | None = None) -> tuple[list[Report], dict[str, Hashable]]:
    """Reports and their gold story labels from a JSON Lines file.

    A line without ``id`` is numbered by its line, and one without ``text`` is
    grouped on its title alone: both are counted in ``warnings``, so that a
    file of the wrong shape is noticed.
    """
    reports: list[Report] = []
    gold: dict[str, Hashable] = {}
    without_id: list[int] = []
    without_text: list[int] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or row.get("story") is None:
                raise EvalInputError(f"line {number}: each line must be a JSON object with a gold 'story' label")
            if row.get("id") in (None, ""):
                without_id.append(number)
            if not _text(row.get("text")).strip():
                without_text.append(number)
            report_id = str(row["id"]) if row.get("id") not in (None, "") else str(number)
            if report_id in gold:
                raise EvalInputError(f"line {number}: id {report_id!r} appears twice")
            reports.append(
                Report(
                    id=report_id,
                    title=_text(row.get("title")),
                    text=_text(row.get("text")),
                    url=_text(row.get("url")),
                    source=_text(row.get("source")),
                    published=_parse_time(row.get("published")),
                    guid=_text(row.get("guid")) or None,
                )
            )
            story = row["story"]
            gold[report_id] = story if isinstance(story, Hashable) else json.dumps(story, sort_keys=True)
    (warnings if warnings is not None else []).extend(
        f"{len(lines)} of {len(reports)} lines have no '{key}'{consequence} (first: line {lines[0]})"
        for key, lines, consequence in (
            ("id", without_id, ": numbered by their line"),
            ("text", without_text, ": grouped on their titles alone"),
        )
        if lines
    )
    return reports, gold


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def load_uci(path: Path, warnings: list[str] | None = None) -> tuple[list[Report], dict[str, Hashable]]:
    """Headlines (titles only) from the UCI News Aggregator CSV; rows without a label are dropped."""
    reports: list[Report] = []
    gold: dict[str, Hashable] = {}
    dropped = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            # The file ends with a row cut short: it has no label or time.
            if not row.get("STORY") or not (row.get("TIMESTAMP") or "").isdigit():
                dropped += 1
                continue
            report_id = row["ID"]
            reports.append(
                Report(
                    id=report_id,
                    title=row["TITLE"],
                    url=row["URL"],
                    source=row["PUBLISHER"],
                    published=datetime.fromtimestamp(int(row["TIMESTAMP"]) / 1000, UTC),
                )
            )
            gold[report_id] = row["STORY"]
    if dropped and warnings is not None:
        warnings.append(f"{dropped} row{'s' if dropped > 1 else ''} without a STORY label or a TIMESTAMP: left out")
    return reports, gold


LOADERS = {"jsonl": load_jsonl, "uci": load_uci}


def _pairs(sizes: Mapping[Hashable, int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes.values())


def score_clustering(gold: Mapping[str, Hashable], predicted: Mapping[str, Hashable]) -> dict[str, float]:
    """Pairwise and B-cubed precision/recall/F1 of ``predicted`` against ``gold`` (same document ids)."""
    ids = list(gold)
    joint = Counter((gold[i], predicted[i]) for i in ids)
    gold_sizes = Counter(gold[i] for i in ids)
    predicted_sizes = Counter(predicted[i] for i in ids)
    together = _pairs(joint)
    pairwise_p = together / _pairs(predicted_sizes) if _pairs(predicted_sizes) else 1.0
    pairwise_r = together / _pairs(gold_sizes) if _pairs(gold_sizes) else 1.0
    # B-cubed: per document, the share of its predicted (gold) cluster that shares its gold (predicted) label.
    bcubed_p = sum(n * n / predicted_sizes[p] for (_, p), n in joint.items()) / len(ids) if ids else 1.0
    bcubed_r = sum(n * n / gold_sizes[g] for (g, _), n in joint.items()) / len(ids) if ids else 1.0
    return {
        "pairwise_precision": pairwise_p,
        "pairwise_recall": pairwise_r,
        "pairwise_f1": _f1(pairwise_p, pairwise_r),
        "bcubed_precision": bcubed_p,
        "bcubed_recall": bcubed_r,
        "bcubed_f1": _f1(bcubed_p, bcubed_r),
        "gold_clusters": len(gold_sizes),
        "predicted_clusters": len(predicted_sizes),
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def as_fetched(reports: list[Report]) -> list[Report]:
    """Reports with a time each, as the pipeline sees them: an undated one takes its file neighbour's time.

    The pipeline gives an entry without a publication time the time it was
    fetched, with the entries fetched in the same run. A labelled file has no
    fetch times, so a report without ``published`` is taken as fetched with the
    dated report before it in the file (the first dated one, for those before
    any): it is placed among the reports of its time, never after every dated
    report, and never evicted from the window because of its missing time.
    Where no report has a time, all are placed together in file order.
    """
    times = [r.published for r in reports]
    last = next((t for t in times if t is not None), None)
    dated = []
    for report, published in zip(reports, times):
        last = published or last
        dated.append(report if published or last is None else replace(report, published=last, time_estimated=True))
    return dated


def cluster(reports: list[Report], settings: DedupSettings | None = None) -> dict[str, Hashable]:
    """Each report's story, as the pipeline's engine places the reports in the order given."""
    grouper = StoryGrouper(settings or DedupSettings())
    grouper.add_many(as_fetched(reports))
    return grouper.clusters()


SCORES = ("pairwise_precision", "pairwise_recall", "pairwise_f1", "bcubed_precision", "bcubed_recall", "bcubed_f1")


def shuffled_orders(reports: list[Report], count: int, seed: int = 0) -> list[list[Report]]:
    """``count`` orders of arrival of the reports, the same for the same seed.

    Reports with times are still placed in time order; the shuffle decides
    the order of those of one time (a file of dates without hours) and of
    undated ones, which a labelled file often lists story by story, an order
    no run of feeds brings them in.
    """
    rng = random.Random(seed)
    orders = []
    for _ in range(count):
        order = list(reports)
        rng.shuffle(order)
        orders.append(order)
    return orders


def score_orders(reports: list[Report], gold: Mapping[str, Hashable], count: int,
                 settings: DedupSettings | None = None) -> dict[str, Any]:
    """The figures over ``count`` shuffled arrival orders: their mean and the lowest of each."""
    scores = [score_clustering(gold, cluster(order, settings)) for order in shuffled_orders(reports, count)]
    return {
        "count": count,
        "mean": {name: statistics.fmean(s[name] for s in scores) for name in SCORES},
        "lowest": {name: min(s[name] for s in scores) for name in SCORES},
    }


def evaluate_reports(
    reports: list[Report], gold: Mapping[str, Hashable], settings: DedupSettings | None = None, orders: int = 0
) -> EvalResult:
    """Score the grouping of ``reports`` in their order, and in ``orders`` shuffled orders of arrival if asked."""
    started = time.perf_counter()
    predicted = cluster(reports, settings)
    seconds = time.perf_counter() - started
    scores = score_clustering(gold, predicted)
    result = EvalResult(documents=len(reports), seconds=round(seconds, 3), **scores)
    if orders:
        result.orders = score_orders(reports, gold, orders, settings)
    return result


def evaluate_file(path: str | Path, fmt: str = "jsonl", settings: DedupSettings | None = None,
                  orders: int = 0) -> EvalResult:
    """Cluster a labelled file with the pipeline's engine and score it. ``fmt`` is ``jsonl`` or ``uci``.

    With ``orders``, also in that many shuffled orders of arrival (:func:`score_orders`).
    """
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(LOADERS)}")
    warnings: list[str] = []
    reports, gold = LOADERS[fmt](Path(path), warnings)
    if not reports:
        expected = "a CSV with ID, TITLE, URL, PUBLISHER, STORY, TIMESTAMP columns" if fmt == "uci" else \
            "one JSON object a line with id, title, text, url, source, published and a gold story"
        raise EvalInputError(f"no labelled documents found (expected {expected})")
    result = evaluate_reports(reports, gold, settings, orders)
    result.warnings = warnings
    return result


def format_result(result: EvalResult) -> str:
    """A small table for people."""
    rows = [
        ("documents", f"{result.documents}"),
        ("gold / predicted stories", f"{result.gold_clusters} / {result.predicted_clusters}"),
        ("pairwise P / R / F1", _triple(result.pairwise_precision, result.pairwise_recall, result.pairwise_f1)),
        ("B-cubed P / R / F1", _triple(result.bcubed_precision, result.bcubed_recall, result.bcubed_f1)),
        ("seconds", f"{result.seconds:.2f}"),
    ]
    if result.orders:
        mean, lowest, count = result.orders["mean"], result.orders["lowest"], result.orders["count"]
        rows += [
            (f"{count} shuffled orders, mean pairwise P / R / F1",
             _triple(mean["pairwise_precision"], mean["pairwise_recall"], mean["pairwise_f1"])),
            ("  mean B-cubed P / R / F1", _triple(mean["bcubed_precision"], mean["bcubed_recall"], mean["bcubed_f1"])),
            ("  lowest B-cubed P / R / F1",
             _triple(lowest["bcubed_precision"], lowest["bcubed_recall"], lowest["bcubed_f1"])),
        ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _triple(p: float, r: float, f: float) -> str:
    return f"{p:.3f} / {r:.3f} / {f:.3f}"


# --------------------------------------------------------------------------
# Stories already in a database, against gold labels by (feed URL, GUID)
# --------------------------------------------------------------------------

BASE_URL_PLACEHOLDER = "{{BASE_URL}}"


def load_gold_by_entry(path: str | Path, base_url: str = "") -> dict[tuple[str, str], Hashable]:
    """Gold stories keyed by (feed URL, GUID) from JSON Lines with ``feed``, ``guid`` and ``story``.

    ``{{BASE_URL}}`` in either field becomes ``base_url``; a feed given as a
    path (``/feeds/x.xml``) is joined to ``base_url``.
    """
    gold: dict[tuple[str, str], Hashable] = {}
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            feed = row["feed"].replace(BASE_URL_PLACEHOLDER, base_url)
            if feed.startswith("/"):
                feed = base_url.rstrip("/") + feed
            gold[(feed, row["guid"].replace(BASE_URL_PLACEHOLDER, base_url))] = row["story"]
    return gold


def evaluate_db(db: sqlite_utils.Database, gold: Mapping[tuple[str, str], Hashable]) -> dict[str, float]:
    """Score the stories stored in ``db`` against ``gold``; gold entries missing from the DB count as alone.

    Adds ``missing`` (gold entries not in the DB, or in no story yet) to the scores.
    """
    stored = {
        (feed_url, guid): story_id
        for feed_url, guid, story_id in db.execute(
            "SELECT f.url, e.guid, e.story_id FROM entries e JOIN feeds f ON f.id = e.feed_id"
        ).fetchall()
    }
    predicted: dict[str, Hashable] = {}
    missing = 0
    for key in gold:
        story_id = stored.get(key)
        if story_id is None:
            missing += 1
            predicted[repr(key)] = ("alone", key)
        else:
            predicted[repr(key)] = resolve_story_id(db, story_id)
    scores = score_clustering({repr(key): label for key, label in gold.items()}, predicted)
    scores["missing"] = missing
    return scores
