"""Benchmark of a whole run: fetch, parse, extract, group, store, over feeds with article pages.

Usage: python bench/pipeline.py [--feeds N] [--latency SECONDS] [--concurrency C] [--quick] [--no-extract]

The server of ``bench/fetch_scale.py`` (its own process, feeds spread over
50 loopback addresses, 50-entry RSS feeds, added latency per request) also
serves every entry's article page: 5-12 paragraphs inside navigation, a
cookie banner, related links and a footer. One cold run of agg's pipeline
(``aggregator.pipeline.run``, extraction on) goes over N feeds (default 200,
so 10,000 pages) in a child process; the RSS of its whole process tree (its
parse, extraction and grouping workers too) is sampled for the peak.

With ``--no-extract --feeds 1000`` it is the cold run of ``bench/fetch_scale.py``
seen from inside: when the last feed was stored, and what came after.

Printed: the seconds each stage was busy (``RunSummary.stage_seconds``: a
stage is busy while any of its operations is in progress, so overlapping
stages each count in full), the total, the peak RSS, and the target: the
total within 1.3x the slowest stage, i.e. the stages overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fetch_scale import ENTRIES_PER_FEED, FeedServer, TreeMemorySampler, write_agg_config  # noqa: E402

STAGES = ("fetch", "parse", "extract", "store", "group", "index")


def child(config_path: str, db_path: str, concurrency: int) -> None:
    """Run the pipeline once and print its summary as JSON (the parent measures memory)."""
    from aggregator.config import load_config
    from aggregator.pipeline import run
    from aggregator.store import Store

    started = time.perf_counter()
    feeds_done = 0.0

    def note_feed(*_: object) -> None:
        nonlocal feeds_done
        feeds_done = time.perf_counter() - started

    summary = run(load_config(config_path), Store.open(db_path), concurrency=concurrency, progress=note_feed)
    print(json.dumps({
        "total": time.perf_counter() - started, "stages": summary.stage_seconds, "feeds_done": feeds_done,
        "fetched": summary.count("fetched"), "failed": summary.count("failed"), "entries": summary.new_entries,
        "pages_extracted": summary.pages_extracted, "pages_failed": summary.pages_failed,
        "stories": summary.grouping.new_stories,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=200, help="feeds served, each with 50 pages (200)")
    parser.add_argument("--latency", type=float, default=0.1, help="added latency per request, seconds (0.1)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (50)")
    parser.add_argument("--quick", action="store_true", help="20 feeds (1,000 pages): for iterating")
    parser.add_argument("--no-extract", action="store_true",
                        help="feeds only, no article pages (extract: false), as in bench/fetch_scale.py's cold run")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.concurrency)
        return
    if args.quick:
        args.feeds = 20

    with FeedServer(args.feeds, args.latency) as server, tempfile.TemporaryDirectory(prefix="agg-bench-") as tmp:
        config, db = Path(tmp) / "feeds.yaml", Path(tmp) / "agg.db"
        write_agg_config(config, server.feed_urls, args.concurrency, extract=not args.no_extract)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, __file__, "--child", str(config), str(db),
                                    "--concurrency", str(args.concurrency)], stdout=subprocess.PIPE)
        assert process.stdout is not None
        with TreeMemorySampler(process.pid) as memory:  # the run, its parse, extraction and grouping workers
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the pipeline run failed (exit status {os.waitstatus_to_exitcode(status)})")
        answers = server.answers()
    result = json.loads(output.decode().strip().splitlines()[-1])
    stages = {name: result["stages"].get(name, 0.0) for name in STAGES}
    slowest = max(stages, key=stages.get)
    total = result["total"]

    pages = "without extraction" if args.no_extract else "with article pages"
    print(f"{args.feeds} feeds x {ENTRIES_PER_FEED} entries {pages}, {args.latency * 1000:.0f} ms latency, "
          f"{args.concurrency} in flight, {os.cpu_count()} cores; server answered "
          + ", ".join(f"{count} x {kind}" for kind, count in sorted(answers.items())) + "\n")
    print("| stage | busy seconds | share of total |")
    print("|---|---|---|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| every feed fetched, parsed and stored, after | {result['feeds_done']:.2f} | |")
    print(f"| **total (run)** | {total:.2f} | |")
    print(f"| process wall, incl. start-up | {wall:.2f} | |")
    peak_mb = max(memory.peak_total_kb, usage.ru_maxrss) / 1024
    print(f"| peak RSS, all processes together | {peak_mb:.0f} MB | |")
    print(f"| peak PSS, all processes together (shared pages counted once) | {memory.peak_pss_kb / 1024:.0f} MB | |")
    print(f"| peak RSS, largest process | {max(memory.peak_process_kb, usage.ru_maxrss) / 1024:.0f} MB | |")
    print(f"\n{result['fetched']} feeds fetched ({result['failed']} failed), {result['entries']} entries, "
          f"{result['pages_extracted']} pages extracted ({result['pages_failed']} not), {result['stories']} new stories")
    ratio = total / stages[slowest]
    print(f"summary: total {total:.1f} s, slowest stage {slowest} {stages[slowest]:.1f} s; total / slowest = "
          f"{ratio:.2f} (target <= 1.3: {'PASS' if ratio <= 1.3 else 'FAIL'}); peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
