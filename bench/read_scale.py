"""Reading at a year's scale: `agg list` and the story exports on databases of 50,000 and 200,000 entries.

Each database is built once and cached (``$TMPDIR/agg-read-scale/``; ``--rebuild`` makes it again):
1,000 feeds whose entries go in through the real write path (``Store.save_fetch``, 50 entries a
call, as a run stores a feed), then grouped into planted stories written as the grouping writes
them (``stories``, ``story_members``, ``entries.story_id``), then full-text indexed
(``Store.refresh_search_index``). The grouping engine itself is not run: at 200,000 entries it
would take many minutes, and what is read does not depend on how the stories were found.

Material: headlines from the UCI file and sentences from the stories-dev texts in
$AGG_SHARED_DATA (synthetic words when absent). An event has one report (80%) or several (up
to 25, one in five entries a copy of another outlet's report); each report has 4-6
paragraphs, stored as HTML content, a 300-character summary and the plain text. Entries are
spread over the last ``--days``: 365 by default, a year's scale (200,000 entries are ~550 a
day, ~3,800 in the 7-day window of the exports); ``--days 28`` is a stress case (a month of
1,000 busy feeds: the 7-day window holds a quarter of the entries).

Each command runs as a subprocess (``python -m aggregator``) for BEFORE (a git worktree of
``--before``, default c1e150c, on PYTHONPATH) and AFTER (this checkout), interleaved, ``--repeat``
times; medians are printed of the wall time, the CPU time and the peak RSS of the process
(``wait4``), and for ``list --json`` and ``list --all`` the time to the first line on stdout.
``list`` "terminal" runs with stdout and stderr on a pseudo-terminal (COLUMNS=120), as a person
sees it. A run still going after ``--limit`` seconds (120) is stopped and shown as such. The peak
RSS cannot read below this script's own (about 36 MB): the child starts as a vfork of it.

After each table, the floor of piped ``agg list`` on AFTER's copy: the query it needs (every
story with its outlets' feed ids, kept in its row since migration 8, sorted) fetched by a bare
Python process that prints nothing, and printed by the ``sqlite3`` shell when it is installed.

The database is built by the BEFORE code, so that its schema is an existing database's. BEFORE
reads a copy of it as it is; AFTER reads a copy that AFTER's ``Store.open`` migrated (the
upgrade the first ``agg fetch`` or ``agg group`` of the new version makes), so neither sees the
other's indexes.

    .venv/bin/python bench/read_scale.py [--sizes 50000 200000] [--repeat 5] [--days 365] [--before c1e150c]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import select
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The databases are built by the BEFORE code (its schema, as an existing database has it): see build_in.
sys.path.insert(0, os.environ.get("AGG_READ_SCALE_SOURCE", str(ROOT)))

from aggregator.evaluate import shared_data_dir  # noqa: E402
from aggregator.models import FetchResult, ParsedEntry, ParsedFeed  # noqa: E402
from aggregator.store import Store, from_db_time, to_db_time, utc_now  # noqa: E402

BUILDER_VERSION = 1  # change when the builder changes: cached databases are then built again
FEEDS = 1000
PER_FETCH = 50
TAGS = ["world", "business", "politics", "science", "sport", "culture", "tech", "local"]
TARGET_SECONDS = {"list (terminal)": 0.5, "list (piped)": 0.5, "list --json": 0.5, "list --all": 0.5,
                  "export atom --since 7d": 2.0, "export digest --since 7d": 2.0}
FIRST_LINE = ("list --json", "list --all")
FLAT_MB = 25
"""Memory counts as flat when the 200,000-entry peak is within this of the 50,000-entry peak."""


# --------------------------------------------------------------------------
# Material
# --------------------------------------------------------------------------


def material(rng: random.Random) -> tuple[list[list[str]], list[str], list[str], str]:
    """Headline clusters (one real story's headlines each), sentences, outlet names, and where they came from."""
    data = shared_data_dir()
    headlines_file = data / "headlines" / "uci-news-aggregator.head6366.csv"
    clusters: dict[str, list[str]] = defaultdict(list)
    publishers: list[str] = []
    if headlines_file.is_file():
        with headlines_file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                clusters[row["STORY"]].append(row["TITLE"])
                publishers.append(row["PUBLISHER"])
    sentences: list[str] = []
    for path in sorted((data / "stories-dev").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text") or ""
            sentences += [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if 40 <= len(s) <= 400]
    if clusters and len(sentences) >= 1000:
        names = list(dict.fromkeys(publishers))
        names += [f"{name} ({n})" for n in range(2, 2 + FEEDS // max(1, len(names))) for name in names]
        titles = [title for cluster in clusters.values() for title in cluster]
        # The UCI file has 88 stories for 6,366 headlines: here each headline leads a story of its own,
        # whose rewrites take one of three other headlines (titles only make the rows' size here).
        return ([[t] + rng.sample(titles, 3) for t in titles], sentences, names[:FEEDS],
                f"{len(titles)} UCI headlines, {len(sentences)} stories-dev sentences")
    words = ["".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
             for _ in range(20000)]
    sentences = [" ".join(rng.choices(words, k=rng.randint(8, 28))).capitalize() + "." for _ in range(8000)]
    titles = [" ".join(rng.choices(words, k=rng.randint(6, 11))).capitalize() for _ in range(5000)]
    return [[t] + rng.sample(titles, 3) for t in titles], sentences, [f"Outlet {n}" for n in range(FEEDS)], \
        "synthetic words ($AGG_SHARED_DATA not found)"


# --------------------------------------------------------------------------
# Building a database
# --------------------------------------------------------------------------


@dataclass
class Planted:
    feed: int
    guid: str
    title: str
    paragraphs: list[str]
    published: datetime
    event: int


@dataclass
class Feed:
    url: str
    title: str
    tags: list[str] = field(default_factory=list)


def event_size(rng: random.Random) -> int:
    draw = rng.random()
    if draw < 0.80:
        return 1
    if draw < 0.90:
        return 2
    if draw < 0.94:
        return 3
    if draw < 0.99:
        return rng.randint(4, 8)
    return rng.randint(9, 25)


def plant(entries: int, days: int, now: datetime, rng: random.Random) -> tuple[list[Planted], list[Feed], str]:
    clusters, sentences, names, source = material(rng)
    feeds = [Feed(f"https://feed{n}.example/{'rss' if n % 2 else 'atom'}.xml", names[n],
                  rng.sample(TAGS, rng.randint(0, 2))) for n in range(FEEDS)]
    planted: list[Planted] = []
    event = 0
    while len(planted) < entries:
        size = min(event_size(rng), entries - len(planted))
        headlines = rng.choice(clusters)
        when = now - timedelta(seconds=rng.randrange(days * 86400))
        base = [" ".join(rng.sample(sentences, rng.randint(2, 4))) for _ in range(rng.randint(4, 6))]
        for number, feed in enumerate(rng.sample(range(FEEDS), size)):
            copy = number and rng.random() < 0.5  # a syndicated copy of the first report
            paragraphs = base if number == 0 or copy else rng.sample(base, max(3, len(base) - 1))
            title = headlines[0] if number == 0 or copy else rng.choice(headlines)
            published = min(now, when + timedelta(minutes=number * rng.randint(1, 120)))
            planted.append(Planted(feed, f"e{len(planted)}", title, paragraphs, published, event))
        event += 1
    return planted, feeds, source


def build_database(path: Path, entries: int, days: int, seed: int = 17) -> str:
    """Fill a new database at ``path``; returns what its text came from."""
    rng = random.Random(seed)
    now = utc_now().replace(microsecond=0)
    planted, feeds, source = plant(entries, days, now, rng)
    store = Store.open(path)
    rows = store.sync_feeds(feeds, now - timedelta(days=days + 1))
    by_feed: dict[int, list[Planted]] = defaultdict(list)
    for item in planted:
        by_feed[item.feed].append(item)
    for number, feed in enumerate(feeds):
        mine = sorted(by_feed[number], key=lambda item: item.published)
        for start in range(0, len(mine), PER_FETCH):
            batch = mine[start:start + PER_FETCH]
            parsed = ParsedFeed(format="rss20", title=feed.title, entries=[
                ParsedEntry(guid=item.guid, link=f"{feed.url.rsplit('/', 1)[0]}/news/{item.guid}", title=item.title,
                            summary=item.paragraphs[0][:300], summary_text=item.paragraphs[0][:300],
                            content="".join(f"<p>{p}</p>" for p in item.paragraphs),
                            content_text="\n\n".join(item.paragraphs), published=item.published,
                            author="News desk", tags=rng.sample(TAGS, 1))
                for item in batch])
            result = FetchResult(url=feed.url, final_url=feed.url, status=200, body=b"")
            store.save_fetch(rows[feed.url]["id"], result, parsed, {"last_fetch_at": to_db_time(batch[-1].published),
                                                                     "last_status": 200},
                             extract=False, now=batch[-1].published)
    with store.transaction() as conn:
        # Four pages in five extracted (the rest stays with the feed's text, as a failed page does).
        conn.execute("UPDATE entries SET extract_status = CASE WHEN id % 5 THEN 'ok' ELSE 'http-error' END, "
                     "text_source = CASE WHEN id % 5 THEN 'page' ELSE text_source END")
        write_stories(conn, planted, feeds, now)
    store.refresh_search_index()
    store.close()
    return source


def write_stories(conn: sqlite3.Connection, planted: list[Planted], feeds: list[Feed], now: datetime) -> None:
    """Stories as the grouping writes them: one row each, a member row and ``story_id`` for each report."""
    entry_ids = dict(conn.execute("SELECT guid, id FROM entries"))
    events: dict[int, list[Planted]] = defaultdict(list)
    for item in planted:
        events[item.event].append(item)
    stamp = to_db_time(now)
    story_rows, members, placed = [], [], []
    for story_id, (_, reports) in enumerate(sorted(events.items()), start=1):
        reports.sort(key=lambda item: item.published)
        first = reports[0]
        story_rows.append((story_id, first.title, to_db_time(first.published), to_db_time(reports[-1].published),
                           len(reports), len({r.feed for r in reports}), entry_ids[first.guid],
                           entry_ids[first.guid], feeds[first.feed].title if len(reports) > 2 else None))
        for number, item in enumerate(reports):
            entry_id = entry_ids[item.guid]
            rule, score = ("seed", None) if number == 0 else (
                ("same-body", 1.0) if item.paragraphs is first.paragraphs else ("similar", 0.82))
            evidence = json.dumps({} if score is None else {"title": 0.71, "body": score})
            members.append((entry_id, story_id, rule, score, evidence, stamp))
            placed.append((story_id, entry_id))
    conn.executemany("INSERT INTO stories (id, title, first_seen, last_seen, n_reports, n_outlets, "
                     "representative_id, original_entry_id, credited_outlet) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     story_rows)
    conn.executemany("INSERT INTO story_members (entry_id, story_id, rule, score, evidence, joined_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", members)
    conn.executemany("UPDATE entries SET story_id = ? WHERE id = ?", placed)


def cached_database(entries: int, days: int, before: str, before_src: Path, rebuild: bool) -> tuple[Path, str]:
    """The database of ``entries`` entries, built by the code of ``before`` (in ``before_src``) unless cached."""
    folder = Path(tempfile.gettempdir()) / "agg-read-scale"
    folder.mkdir(exist_ok=True)
    path = folder / f"v{BUILDER_VERSION}-{before}-{entries}-{days}d.db"
    about = path.with_suffix(".json")
    # Entries are dated back from when the database was built: a day later, the 7-day window holds fewer.
    stale = about.exists() and utc_now() - from_db_time(json.loads(about.read_text())["built_at"]) > timedelta(days=1)
    if rebuild or stale or not about.exists():
        for stale in folder.glob(f"{path.stem}*"):
            stale.unlink()
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-into", str(path), "--sizes", str(entries),
                        "--days", str(days)], env={**os.environ, "AGG_READ_SCALE_SOURCE": str(before_src)},
                       check=True)
        print(f"built {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path, json.loads(about.read_text())["source"]


def build_into(path: Path, entries: int, days: int) -> None:
    started = time.perf_counter()
    source = build_database(path, entries, days)
    path.with_suffix(".json").write_text(json.dumps({
        "source": source, "built_at": to_db_time(utc_now()), "seconds": round(time.perf_counter() - started, 1)}))


# --------------------------------------------------------------------------
# Timing commands
# --------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float               # inf: stopped after the time limit
    first_line: float | None
    peak_mb: float
    cpu_seconds: float
    lines: int


def run_command(command: list[str], env: dict[str, str], cwd: Path, terminal: bool, limit: float) -> Run:
    """Wall time, time to the first line, peak RSS and CPU time of ``command`` with stdout on a pipe, or with
    stdout and stderr on a pseudo-terminal (as tests/terminal.py runs agg). Stopped after ``limit`` seconds."""
    if terminal:
        reader, writer = os.openpty()
        env = {**env, "COLUMNS": "120", "TERM": "xterm"}
    else:
        reader, writer = os.pipe()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=writer,
                               stderr=writer if terminal else subprocess.DEVNULL, env=env, cwd=cwd)
    os.close(writer)
    first_line, lines, stopped = None, 0, False
    while True:
        left = started + limit - time.perf_counter()
        if left <= 0 or not select.select([reader], [], [], left)[0]:
            process.kill()
            stopped = True
            break
        try:
            chunk = os.read(reader, 1 << 16)
        except OSError:  # a terminal whose other end closed
            break
        if not chunk:
            break
        if first_line is None and b"\n" in chunk:
            first_line = time.perf_counter() - started
        lines += chunk.count(b"\n")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    os.close(reader)
    if not stopped and os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} exited with {os.waitstatus_to_exitcode(status)}")
    return Run(math.inf if stopped else seconds, first_line, usage.ru_maxrss / 1024,
               usage.ru_utime + usage.ru_stime, lines)


COMMANDS: dict[str, tuple[list[str], bool]] = {
    "list (terminal)": (["list"], True),
    "list (piped)": (["list"], False),
    "list --limit 40 (piped)": (["list", "--limit", "40"], False),
    "list --json": (["list", "--json"], False),
    "list --all": (["list", "--all"], False),
    "export atom --since 7d": (["export", "atom", "--since", "7d", "-o", "-"], False),
    "export digest --since 7d": (["export", "digest", "--since", "7d", "-o", "-"], False),
}


@dataclass
class Side:
    name: str
    env: dict[str, str]
    db: Path


def before_worktree(rev: str) -> Path:
    """A git worktree of ``rev`` next to the cached databases, made once."""
    base = Path(tempfile.gettempdir()) / "agg-read-scale" / f"before-{rev}"
    if not (base / "aggregator").is_dir():
        base.parent.mkdir(exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(base), rev],
                       check=True, capture_output=True)
    return base


def prepare_sides(base: Path, db: Path, work: Path) -> list[Side]:
    """BEFORE (the worktree ``base``) and AFTER (this checkout), each on its own copy of ``db``."""
    sides = []
    for name, source in (("before", base), ("after", ROOT)):
        copy = work / f"{name}.db"
        shutil.copyfile(db, copy)
        env = {**os.environ, "PYTHONPATH": str(source), "NO_COLOR": "1"}
        env.pop("AGG_DB", None)
        sides.append(Side(name, env, copy))
    # AFTER's schema upgrade, as the first `agg fetch` or `agg group` of the new version would make it.
    upgrade = "import sys; from aggregator.store import Store; Store.open(sys.argv[1]).close()"
    subprocess.run([sys.executable, "-c", upgrade, str(sides[1].db)], env=sides[1].env, cwd=work, check=True)
    for side in sides:
        found = subprocess.run([sys.executable, "-c", "import aggregator; print(aggregator.__file__)"],
                               env=side.env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
        expected = base if side.name == "before" else ROOT
        assert found.startswith(str(expected)), f"{side.name} imports {found}, not from {expected}"
    return sides


def measure(sides: list[Side], repeat: int, work: Path, limit: float) -> dict[tuple[str, str], list[Run]]:
    runs: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for _ in range(repeat):
        for label, (args, terminal) in COMMANDS.items():
            for side in sides:  # interleaved, so that the machine's moods fall on both
                command = [sys.executable, "-m", "aggregator", "--db", str(side.db), *args]
                runs[(side.name, label)].append(run_command(command, side.env, work, terminal, limit))
    return runs


# What piped `agg list` cannot go below: the query it needs (every story with its outlets' feed ids, kept in its
# row since migration 8, sorted), fetched into Python and not printed, and the same printed by the sqlite3 shell.
FLOOR_STORIES = ("SELECT s.id, s.n_reports, s.n_outlets, s.last_seen, s.title, s.outlet_feeds FROM stories s "
                 "WHERE s.merged_into IS NULL AND s.n_outlets >= 1 ORDER BY +s.last_seen DESC, s.id DESC")
FLOOR_PYTHON = ("import sqlite3, sys; conn = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
                "[conn.execute(sql).fetchall() for sql in sys.argv[2:]]")


def print_floor(side: Side, repeat: int, work: Path, limit: float) -> None:
    """The floor of piped `agg list` on AFTER's copy: start-up is `agg list --limit 40` in the table above."""
    commands = {"python: sqlite3, the query fetched, nothing printed":
                [sys.executable, "-c", FLOOR_PYTHON, str(side.db), FLOOR_STORIES]}
    if shutil.which("sqlite3"):
        commands["sqlite3 shell: the query printed to the pipe"] = [
            "sqlite3", "-readonly", "-separator", "\t", str(side.db), FLOOR_STORIES + ";"]
    print("\nFloor of piped `agg list` (after's database):\n")
    print("| what | s | CPU s | peak MB |")
    print("|---|---|---|---|")
    for label, command in commands.items():
        run = median_run([run_command(command, side.env, work, False, limit) for _ in range(repeat)])
        print(f"| {label} | {seconds(run.seconds)} | {run.cpu_seconds:.2f} | {run.peak_mb:.0f} |")


def median_run(runs: list[Run]) -> Run:
    firsts = [r.first_line for r in runs if r.first_line is not None]
    return Run(statistics.median(r.seconds for r in runs), statistics.median(firsts) if firsts else None,
               statistics.median(r.peak_mb for r in runs), statistics.median(r.cpu_seconds for r in runs),
               max(r.lines for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--days", type=int, default=365,
                        help="the span of the entries' dates (365: 200,000 entries are a year of ~550 a day)")
    parser.add_argument("--limit", type=float, default=120, help="seconds a run may take before it is stopped (120)")
    parser.add_argument("--before", default="c1e150c", help="the commit to compare with (c1e150c)")
    parser.add_argument("--rebuild", action="store_true", help="build the cached databases again")
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # the builder's own process
    args = parser.parse_args()
    if args.build_into:
        build_into(args.build_into, args.sizes[0], args.days)
        return

    results: dict[int, dict[tuple[str, str], Run]] = {}
    with tempfile.TemporaryDirectory(prefix="agg-read-scale-") as tmp:
        work = Path(tmp)
        base = before_worktree(args.before)
        for size in args.sizes:
            db, source = cached_database(size, args.days, args.before, base, args.rebuild)
            side_work = work / str(size)
            side_work.mkdir()
            sides = prepare_sides(base, db, side_work)
            stories = json.loads(subprocess.run(
                [sys.executable, "-m", "aggregator", "--db", str(sides[1].db), "stats", "--json"],
                env=sides[1].env, cwd=side_work, capture_output=True, text=True, check=True).stdout)["stories"]
            print(f"\n{size:,} entries, {stories:,} stories over {args.days} days ({source}); "
                  f"{args.repeat} runs each, before = {args.before}, medians\n")
            runs = measure(sides, args.repeat, side_work, args.limit)
            results[size] = {key: median_run(value) for key, value in runs.items()}
            print_table(results[size])
            print_floor(sides[1], args.repeat, side_work, args.limit)
            for side in sides:
                side.db.unlink()
    print_verdicts(results)


def print_table(result: dict[tuple[str, str], Run]) -> None:
    print("| command | before s | after s | before CPU s | after CPU s | before first line s | "
          "after first line s | before peak MB | after peak MB | lines |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in COMMANDS:
        before, after = result[("before", label)], result[("after", label)]
        first = f"{seconds(before.first_line)} | {seconds(after.first_line)}" if label in FIRST_LINE else "- | -"
        print(f"| `agg {label}` | {seconds(before.seconds)} | {seconds(after.seconds)} | {before.cpu_seconds:.2f} | "
              f"{after.cpu_seconds:.2f} | {first} | {before.peak_mb:.0f} | {after.peak_mb:.0f} | {after.lines:,} |")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "stopped" if math.isinf(value) else f"{value:.2f}"


def print_verdicts(results: dict[int, dict[tuple[str, str], Run]]) -> None:
    largest = max(results)
    after = results[largest]
    print(f"\nTargets at {largest:,} entries (after):")
    verdicts = []
    for label, limit in TARGET_SECONDS.items():
        run = after[("after", label)]
        measured = run.first_line if label in FIRST_LINE else run.seconds
        what = "first line" if label in FIRST_LINE else "wall time"
        verdicts.append((f"`agg {label}` {what} <= {limit} s", f"{seconds(measured)} s (whole run: CPU "
                         f"{run.cpu_seconds:.2f} s)", measured is not None and measured <= limit))
    smallest = min(results)
    if smallest != largest:
        for label in FIRST_LINE:
            low, high = results[smallest][("after", label)].peak_mb, after[("after", label)].peak_mb
            verdicts.append((f"`agg {label}` memory flat ({smallest:,} -> {largest:,} entries, within {FLAT_MB} MB)",
                             f"{low:.0f} -> {high:.0f} MB", high - low <= FLAT_MB))
    for target, measured, passed in verdicts:
        print(f"  {'PASS' if passed else 'FAIL'}  {target}: {measured}")
    print(f"\nsummary: {sum(p for *_, p in verdicts)} of {len(verdicts)} targets met")


if __name__ == "__main__":
    main()
