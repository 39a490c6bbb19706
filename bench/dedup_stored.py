"""What stored features (migration 7) change in the database step's decisions: the dev sets grouped in several runs.

Each labelled file (AllSides, ECB+ in $AGG_SHARED_DATA/stories-dev) is
stored as entries and grouped through the real database step
(``GroupingSession``) in ``--runs`` fetches split by publication time, each
run a new session as a new process would be: once reading and weighing
every stored text again (``stored_features=False``, as before migration 7)
and once loading the stored features. Both are scored against the gold
stories (B-cubed and pairwise) and against the in-memory engine's clusters
(``agg eval-dedup``: B-cubed F1 of one clustering taken as the other's gold),
with the CPU seconds of the grouping::

    .venv/bin/python bench/dedup_stored.py --runs 1 3 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.dedup import DedupSettings, GroupingSession, StoryGrouper  # noqa: E402
from aggregator.dedup.session import resolve_story_id  # noqa: E402
from aggregator.evaluate import as_fetched, load_jsonl, score_clustering, shared_data_dir  # noqa: E402
from aggregator.store import Store, to_db_time  # noqa: E402

FILES = ("allsides.jsonl", "ecbplus.jsonl")
FETCHED = datetime(2020, 1, 1, tzinfo=UTC)


def group_in_runs(reports: list, runs: int, stored: bool, path: Path) -> tuple[dict, float]:
    """The reports stored and grouped in ``runs`` fetches by time; their stories by report id, and CPU seconds."""
    store = Store.open(path)
    db = store.db
    feeds = {}
    for source in sorted({r.source for r in reports}):
        feeds[source] = db.execute("INSERT INTO feeds (url, title, created_at) VALUES (?, ?, ?)",
                                   [f"https://{len(feeds)}.example.com/feed", source, "2020-01-01T00:00:00+00:00"]
                                   ).lastrowid
    # Undated reports (all of ECB+) keep their file order, each run's taken as fetched at the run's hour.
    ordered = sorted(reports, key=lambda r: r.published or FETCHED) if any(r.published for r in reports) else reports
    cpu = 0.0
    entry_of = {}
    for run in range(runs):
        part = ordered[run * len(ordered) // runs:(run + 1) * len(ordered) // runs]
        fetched = FETCHED + timedelta(hours=run)
        for report in part:
            published = to_db_time(report.published) if report.published else None
            entry_of[report.id] = db.execute(
                "INSERT INTO entries (feed_id, guid, link, title, text, published, first_seen, changed_at, "
                "content_hash, extract_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'x', 'ok')",
                [feeds[report.source], f"guid-{report.id}", report.url, report.title, report.text, published,
                 to_db_time(report.published or fetched), to_db_time(fetched)],
            ).lastrowid
        started = time.process_time()
        GroupingSession(db, DedupSettings(), now=fetched, stored_features=stored).place_ready()
        cpu += time.process_time() - started
    story_of = dict(db.execute("SELECT id, story_id FROM entries").fetchall())
    clusters = {report_id: resolve_story_id(db, story_of[entry_id]) for report_id, entry_id in entry_of.items()}
    store.close()
    return clusters, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 3, 4], help="fetches the file is split into")
    args = parser.parse_args()
    shared = shared_data_dir() / "stories-dev"
    print("| file | runs | seeding | B-cubed P | B-cubed R | B-cubed F1 | pairwise F1 | stories | "
          "B-cubed F1 against in-memory | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in FILES:
        if not (shared / name).exists():
            print(f"{name}: not in {shared}, skipped")
            continue
        reports, gold = load_jsonl(shared / name)
        reports = as_fetched(reports)
        grouper = StoryGrouper(DedupSettings())
        grouper.add_many(reports)
        memory = grouper.clusters()
        scores = score_clustering(gold, memory)
        print(f"| {name} | - | in memory (agg eval-dedup) | {scores['bcubed_precision']:.3f} | "
              f"{scores['bcubed_recall']:.3f} | {scores['bcubed_f1']:.3f} | {scores['pairwise_f1']:.3f} | "
              f"{scores['predicted_clusters']} | 1.000 | |")
        with tempfile.TemporaryDirectory() as tmp:
            for runs in args.runs:
                for stored in (False, True):
                    clusters, cpu = group_in_runs(reports, runs, stored, Path(tmp) / f"{runs}-{stored}.db")
                    scores = score_clustering(gold, clusters)
                    agreement = score_clustering(memory, clusters)["bcubed_f1"]
                    label = "stored features" if stored else "texts re-read"
                    print(f"| {name} | {runs} | {label} | {scores['bcubed_precision']:.3f} | "
                          f"{scores['bcubed_recall']:.3f} | {scores['bcubed_f1']:.3f} | {scores['pairwise_f1']:.3f} | "
                          f"{scores['predicted_clusters']} | {agreement:.3f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
