"""How story grouping scales: group 10k and 100k reports and print seconds and the growth exponent.

Reports are real headlines from the UCI file in $AGG_SHARED_DATA (resampled into
events spread over time, with light rewrites), or synthetic headlines when the
file is absent. Every event has several reports (the planted duplicates).
Targets: 100k in under 60 s on a 2-core machine, exponent log(t100k/t10k)/log(10) <= 1.3.

    .venv/bin/python bench/dedup_scale.py [--sizes 10000 100000] [--per-day 2000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.dedup import Report, StoryGrouper  # noqa: E402
from aggregator.evaluate import UCI_HEADLINES, load_uci, shared_data_dir  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
PREFIXES = ["", "", "", "UPDATE 1-", "WATCH: ", "EXCLUSIVE: "]
SUFFIXES = ["", "", "", " - Daily Planet", " | Wire", " - The Courier"]


def headline_pools() -> tuple[list[list[str]], str]:
    path = shared_data_dir() / UCI_HEADLINES
    if path.is_file():
        reports, gold = load_uci(path)
        by_story: dict[str, list[str]] = defaultdict(list)
        for report in reports:
            by_story[str(gold[report.id])].append(report.title)
        return [titles for titles in by_story.values() if len(titles) >= 2], "UCI headlines, resampled"
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ren", "tor", "va", "sel", "qui", "dan", "mor", "bel", "zu"]
    words = ["".join(rng.choice(syllables) for _ in range(3)) for _ in range(20000)]
    common = "says new plan after talks over deal court vote rise fall record first report".split()
    pools = []
    for _ in range(500):
        names = rng.sample(words, 5)
        pools.append([" ".join(rng.sample(names, 4) + rng.sample(common, 3)) for _ in range(8)])
    return pools, "synthetic headlines"


def rewrite(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 5 and rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    return rng.choice(PREFIXES) + " ".join(words) + rng.choice(SUFFIXES)


def make_reports(n: int, pools: list[list[str]], per_day: int, seed: int = 1) -> list[Report]:
    rng = random.Random(seed)
    span = timedelta(days=n / per_day)
    reports: list[Report] = []
    while len(reports) < n:
        pool = rng.choice(pools)
        event_time = START + span * rng.random()
        for _ in range(rng.randint(2, 8)):
            if len(reports) == n:
                break
            reports.append(
                Report(
                    id=len(reports),
                    title=rewrite(rng.choice(pool), rng),
                    url=f"https://outlet{rng.randrange(500)}.example.com/a/{len(reports)}",
                    source=f"Outlet {rng.randrange(500)}",
                    published=event_time + timedelta(minutes=rng.uniform(0, 720)),
                )
            )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--per-day", type=int, default=2000, help="reports per day (the window's density)")
    args = parser.parse_args()
    pools, origin = headline_pools()
    print(f"{origin}; {args.per_day} reports a day; default settings (72 h window)")
    print(f"{'reports':>8}  {'seconds':>8}  {'cpu s':>8}  {'ms/report':>9}  {'stories':>8}")
    timings = {}
    for size in args.sizes:
        reports = make_reports(size, pools, args.per_day)
        started, cpu_started = time.perf_counter(), time.process_time()
        grouper = StoryGrouper()
        grouper.add_many(reports)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        timings[size] = (seconds, cpu)
        stories = len(set(grouper.clusters().values()))
        print(f"{size:>8}  {seconds:>8.1f}  {cpu:>8.1f}  {seconds / size * 1000:>9.2f}  {stories:>8}", flush=True)
    if len(timings) >= 2:
        small, large = min(timings), max(timings)
        # CPU time too: on a busy machine wall time says more about the neighbours than about agg.
        for label, index in (("wall", 0), ("cpu", 1)):
            exponent = math.log(timings[large][index] / timings[small][index]) / math.log(large / small)
            print(f"growth exponent ({label}) log(t{large}/t{small})/log({large}/{small}) = {exponent:.2f}")


if __name__ == "__main__":
    main()
