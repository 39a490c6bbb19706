"""Whether a change to the grouping engine changed any decision: every placement compared with a saved run.

Runs the engine exactly as ``agg eval-dedup`` does (``as_fetched`` reports
through ``StoryGrouper.add_many``) on the development sets in
$AGG_SHARED_DATA (AllSides, ECB+, the UCI headlines) and on the bundled
``tests/fixtures/dedup/stories.jsonl``, and records each report's placement:
story id, rule, score and evidence. ``--save`` writes them to a JSON file;
``--compare`` reports every difference from such a file (none expected: the
engine's speed-ups must not change what it decides), and prints PASS or FAIL.
``--root`` runs another checkout's engine (a base worktree), so that the
reference is made by the code before the change. ``--cli-runs N`` also times
the whole ``agg eval-dedup`` command (a fresh process each) on 1,000 reports
(the AllSides file and ECB+'s first 312 lines) and on the UCI headlines, for
this checkout and, with ``--base``, another one, interleaved, median of N,
with PASS/FAIL against 3 s:

    git worktree add /tmp/speed-base 3f0d5b8
    .venv/bin/python bench/dedup_identity.py --root /tmp/speed-base --save /tmp/base-placements.json
    .venv/bin/python bench/dedup_identity.py --compare /tmp/base-placements.json --cli-runs 5 --base /tmp/speed-base
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def collections(shared: Path) -> list[tuple[str, Path, str]]:
    found = [
        ("allsides", shared / "stories-dev" / "allsides.jsonl", "jsonl"),
        ("ecbplus", shared / "stories-dev" / "ecbplus.jsonl", "jsonl"),
        ("uci", shared / "headlines" / "uci-news-aggregator.head6366.csv", "uci"),
        ("fixture", HERE / "tests" / "fixtures" / "dedup" / "stories.jsonl", "jsonl"),
    ]
    return [item for item in found if item[1].is_file()]


def placements(path: Path, fmt: str) -> tuple[dict[str, list], float]:
    """Every report's placement as [story, rule, score, evidence], and the seconds the engine took."""
    from aggregator.dedup import StoryGrouper
    from aggregator.evaluate import LOADERS, as_fetched

    reports, _ = LOADERS[fmt](path, [])
    started = time.perf_counter()
    placed = StoryGrouper().add_many(as_fetched(reports))
    seconds = time.perf_counter() - started
    return {str(rid): [p.story_id, p.rule, p.score, json.loads(json.dumps(p.evidence, default=str))]
            for rid, p in placed.items()}, seconds


def differences(old: dict[str, list], new: dict[str, list], tolerance: float) -> list[str]:
    """What differs, report by report; numbers within ``tolerance`` (float rounding) count as equal."""
    found = [f"{rid}: missing" for rid in old.keys() - new.keys()]
    found += [f"{rid}: extra" for rid in new.keys() - old.keys()]
    for rid in sorted(old.keys() & new.keys()):
        if not same(old[rid], new[rid], tolerance):
            found.append(f"{rid}: {old[rid]} -> {new[rid]}")
    return found


def same(a: object, b: object, tolerance: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or math.isclose(a, b, rel_tol=0, abs_tol=tolerance)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b))
    return a == b


EVAL_SECONDS = 3.0
"""Most seconds for ``agg eval-dedup`` on 1,000 reports (issue 17); the UCI file is held to it too."""


def time_cli(shared: Path, roots: dict[str, Path], runs: int) -> None:
    """Median seconds of the whole ``agg eval-dedup`` command per checkout, runs interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        thousand = Path(tmp) / "allsides+ecbplus312.jsonl"
        ecb = (shared / "stories-dev" / "ecbplus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        thousand.write_text((shared / "stories-dev" / "allsides.jsonl").read_text(encoding="utf-8")
                            + "".join(ecb[:312]), encoding="utf-8")
        uci = shared / "headlines" / "uci-news-aggregator.head6366.csv"
        inputs = {"1,000 reports": [str(thousand)], "UCI 6,366 headlines": ["--format", "uci", str(uci)]}
        print(f"\nagg eval-dedup, whole command, median of {runs} (interleaved)")
        for label, arguments in inputs.items():
            seconds: dict[str, list[float]] = {name: [] for name in roots}
            for _ in range(runs):
                for name, root in roots.items():
                    started = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "aggregator", "eval-dedup", *arguments], check=True,
                                   capture_output=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
                    seconds[name].append(time.perf_counter() - started)
            for name, times in seconds.items():
                median = statistics.median(times)
                print(f"  {label:<20} {name:<6} {median:5.2f} s  <= {EVAL_SECONDS:.0f} s: "
                      f"{'PASS' if median <= EVAL_SECONDS else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose engine runs (default: this one)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", type=Path, help="write the placements to this JSON file")
    action.add_argument("--compare", type=Path, help="compare the placements with this JSON file")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="numbers this close count as equal (default 0: exactly equal)")
    parser.add_argument("--cli-runs", type=int, default=0, metavar="N",
                        help="also time the whole agg eval-dedup command N times (see above)")
    parser.add_argument("--base", type=Path, help="with --cli-runs: time this checkout's command too")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from aggregator.evaluate import shared_data_dir

    import aggregator

    print(f"engine: {Path(aggregator.__file__).parent}")
    saved = json.loads(args.compare.read_text()) if args.compare else {}
    result: dict[str, dict[str, list]] = {}
    failed = False
    for name, path, fmt in collections(shared_data_dir()):
        result[name], seconds = placements(path, fmt)
        line = f"{name:<9} {len(result[name]):>6} reports  {seconds:6.2f} s"
        if args.compare:
            if name not in saved:
                print(f"{line}  (not in {args.compare})")
                continue
            diffs = differences(saved[name], result[name], args.tolerance)
            failed |= bool(diffs)
            line += f"  {'identical' if not diffs else f'{len(diffs)} differ'}"
            for diff in diffs[:10]:
                line += f"\n    {diff}"
        print(line, flush=True)
    if args.save:
        args.save.write_text(json.dumps(result))
        print(f"saved to {args.save}")
    else:
        print("FAIL: placements differ" if failed else "PASS: every placement identical")
    if args.cli_runs:
        roots = ({"base": args.base.resolve()} if args.base else {}) | {"after": args.root.resolve()}
        time_cli(shared_data_dir(), roots, args.cli_runs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
