"""Peak memory of ``agg fetch`` through hostile bodies: a 50 MB body, a gzip bomb, XML entity attacks.

Usage: python bench/fault_memory.py [--bomb-gib N] [--max-body SIZE]

Each case serves one feed from a local server on 127.0.0.1 (the bodies are
generated lazily, chunk by chunk, so the server holds none of them), runs
``python -m aggregator fetch`` on it as a separate process with a fresh
database, and prints the process's peak resident memory: from
``/usr/bin/time -v`` when present, else from ``getrusage(RUSAGE_CHILDREN)``
in a one-child wrapper process. The target is under 200 MB in every case.
A small healthy feed gives the baseline (Python, agg and its libraries).
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import rss_document  # noqa: E402
from tests.faults import (  # noqa: E402
    BILLION_LAUGHS,
    GzipBomb,
    MiB,
    big_body_reply,
    bomb_reply,
    external_entity,
    quadratic_blowup,
)
from tests.server import Reply, ScriptedServer  # noqa: E402

TARGET_MB = 200
GNU_TIME = Path("/usr/bin/time")
# Runs the command as its only child, then reports that child's peak RSS (kB on Linux).
RUSAGE_WRAPPER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
                  "print('Maximum resident set size (kbytes):', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
                  "file=sys.stderr)")
PEAK = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def cases(bomb_gib: int) -> dict[str, tuple[str, Reply]]:
    """Name → (what is served, the reply)."""
    healthy = rss_document([{"guid": f"h{n}", "title": f"Story {n}", "link": f"http://example.test/{n}"}
                            for n in range(50)])
    bomb = GzipBomb(bomb_gib * 2**30)
    return {
        "baseline": ("a 50-entry feed", Reply(body=healthy)),
        "50 MB, no length": ("50 MB streamed, no Content-Length", big_body_reply(50 * 10**6, declared=False)),
        "50 MB, declared": ("50 MB with Content-Length", big_body_reply(50 * 10**6, declared=True)),
        "gzip bomb": (f"{bomb.wire_size / MiB:.1f} MiB gzip → {bomb_gib} GiB", bomb_reply(bomb_gib * 2**30)),
        "billion laughs": ("10^9 'lol' by nested entities", Reply(body=BILLION_LAUGHS)),
        "quadratic blow-up": ("200 kB entity × 5,000 references",
                              Reply(body=quadratic_blowup(size=200_000, uses=5_000))),
        "external entity": ("SYSTEM file:///etc/passwd", Reply(body=external_entity())),
    }


def measure(command: list[str]) -> tuple[int, float, str]:
    """(peak RSS in kB, seconds, stderr) of ``command``."""
    if GNU_TIME.exists():
        wrapped = [str(GNU_TIME), "-v", *command]
    else:
        wrapped = [sys.executable, "-c", RUSAGE_WRAPPER, *command]
    started = time.monotonic()
    done = subprocess.run(wrapped, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    match = PEAK.search(done.stderr)
    if not match:
        raise SystemExit(f"no peak memory in the output of {wrapped[0]}:\n{done.stderr}")
    return int(match.group(1)), seconds, done.stderr


def outcome(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        error, entries = conn.execute(
            "SELECT f.last_error, (SELECT count(*) FROM entries) FROM feeds f").fetchone()
    return (error or f"stored {entries} entries")[:70]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-gib", type=int, default=4, help="decompressed size of the gzip bomb [4]")
    parser.add_argument("--max-body", default="10MiB", help="the config's max_body [10MiB, agg's default]")
    args = parser.parse_args()

    tool = "/usr/bin/time -v" if GNU_TIME.exists() else "getrusage(RUSAGE_CHILDREN)"
    print(f"peak RSS of 'agg fetch' (one process), measured with {tool}; max_body {args.max_body}\n")
    header = f"{'case':<18} {'served':<36} {'peak MB':>8} {'seconds':>8}  what agg did"
    print(header)
    print("-" * len(header))
    worst = 0.0
    with ScriptedServer() as server, tempfile.TemporaryDirectory() as scratch:
        for number, (name, (served, reply)) in enumerate(cases(args.bomb_gib).items()):
            url = server.route(f"/case{number}", reply)
            folder = Path(scratch) / f"case{number}"
            folder.mkdir()
            config = folder / "feeds.yaml"
            config.write_text(f"defaults:\n  extract: false\n  max_body: {args.max_body}\nfeeds:\n  - url: {url}\n")
            db = folder / "agg.db"
            peak_kb, seconds, stderr = measure(
                [sys.executable, "-m", "aggregator", "--config", str(config), "--db", str(db), "fetch"])
            peak_mb = peak_kb / 1024
            worst = max(worst, peak_mb)
            print(f"{name:<18} {served:<36} {peak_mb:>8.1f} {seconds:>8.1f}  {outcome(db)}")
    verdict = "under" if worst < TARGET_MB else "OVER"
    print(f"\nworst peak {worst:.1f} MB: {verdict} the {TARGET_MB} MB target")
    if worst >= TARGET_MB:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
