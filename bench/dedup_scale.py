"""How story grouping scales: seconds, CPU seconds, peak memory and the growth exponent.

Three measures, each in a fresh process so that peak RSS belongs to it alone:

* ``titles``: the engine (StoryGrouper) on headlines only — real headlines from
  the UCI file in $AGG_SHARED_DATA resampled into events spread over time, or
  synthetic headlines when the file is absent;
* ``bodies``: the engine on reports with full-text bodies. Bodies are built by
  resampling real sentences from $AGG_SHARED_DATA/extraction-dev (tags
  stripped) into planted stories: each event is a base article with names and
  figures of its own; its reports are sentence subsets, reorderings and light
  word substitutions of it, some of them short summaries; a share of reports
  are unrelated articles. Without the data, sentences are synthetic Zipfian text;
* ``db``: the pipeline's DB step, ``group_new_entries``, on a real SQLite file
  (Store.open) holding fresh entries with bodies in ``entries.text``, all
  inside one window (as after a first run over 1,000 feeds); then, as a later
  run, ``--steady K`` more entries (300: what a run every few minutes brings)
  placed into that window once it is grouped: the cost of a steady-state run,
  which must load the window's stored stories before it places anything.

Targets, each judged PASS or FAIL: 100k with bodies within 60 s on a 2-core
machine, growth exponent log(t_large/t_small)/log(large/small) <= 1.3; the DB
step on 50k fresh entries within a minute with peak RSS under 500 MB; a later
run (``--steady``) grouped within 5 s with peak RSS under 500 MB (issue 17).
``--base CHECKOUT`` measures another checkout's engine (a git worktree of the
base commit) in the same run, each measure of it just before this tree's.
``--kept`` adds the later run as ``agg daemon`` makes it: placed by the
session that grouped the window, which loads nothing again. ``--read-ahead``
adds the fresh entries grouped as the pipeline groups them (``agg group``, a
run's own grouping): ``group_new_entries(read_ahead=True)``, a worker process
reading the next batch's texts on the other core; its peak memory is the
process tree's, sampled (the worker and its fork server included).

    .venv/bin/python bench/dedup_scale.py [--mode titles bodies db] [--sizes 10000 100000] [--db-sizes 10000 50000]
                                          [--steady 300] [--kept] [--read-ahead] [--base /tmp/base]
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The checkout whose engine a child measures: this one, or the base given to the parent (see run_child).
ENGINE_ROOT = "AGG_BENCH_ENGINE_ROOT"
sys.path.insert(0, os.environ.get(ENGINE_ROOT) or str(Path(__file__).resolve().parent.parent))

from aggregator.dedup import DedupSettings, Report, StoryGrouper, group_new_entries  # noqa: E402
from aggregator.evaluate import UCI_HEADLINES, load_uci, shared_data_dir  # noqa: E402
from aggregator.store import Store, to_db_time  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
PREFIXES = ["", "", "", "UPDATE 1-", "WATCH: ", "EXCLUSIVE: "]
SUFFIXES = ["", "", "", " - Daily Planet", " | Wire", " - The Courier"]
EXTRACTION_PAGES = Path("extraction-dev") / "readability-test-pages"
UNRELATED_SHARE = 0.3
"""Share of reports (bodies mode) that belong to no planted event."""


# --------------------------------------------------------------------------
# Material: headlines and sentences
# --------------------------------------------------------------------------


def headline_pools() -> tuple[list[list[str]], str]:
    path = shared_data_dir() / UCI_HEADLINES
    if path.is_file():
        reports, gold = load_uci(path)
        by_story: dict[str, list[str]] = defaultdict(list)
        for report in reports:
            by_story[str(gold[report.id])].append(report.title)
        return [titles for titles in by_story.values() if len(titles) >= 2], "UCI headlines, resampled"
    rng = random.Random(7)
    words = invented_words(rng, 20000)
    common = "says new plan after talks over deal court vote rise fall record first report".split()
    pools = []
    for _ in range(500):
        names = rng.sample(words, 5)
        pools.append([" ".join(rng.sample(names, 4) + rng.sample(common, 3)) for _ in range(8)])
    return pools, "synthetic headlines"


def invented_words(rng: random.Random, n: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "tor", "va", "sel", "qui", "dan", "mor", "bel", "zu", "ost", "gri"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n)]


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
DROPPED_ELEMENTS = re.compile(r"(?is)<(script|style)[^>]*>.*?</\1>")
TAG = re.compile(r"<[^>]+>")


def sentence_pool() -> tuple[list[str], str]:
    """Real sentences from the extraction pages' expected texts, or Zipfian synthetic ones."""
    root = shared_data_dir() / EXTRACTION_PAGES
    sentences: list[str] = []
    for page in sorted(root.glob("*/expected.html")) if root.is_dir() else []:
        text = html.unescape(TAG.sub(" ", DROPPED_ELEMENTS.sub(" ", page.read_text(errors="replace"))))
        sentences += [s for s in SENTENCE_END.split(" ".join(text.split())) if 40 <= len(s) <= 400]
    if len(sentences) >= 1000:
        return sentences, f"{len(sentences)} real sentences from extraction-dev"
    rng = random.Random(11)
    vocabulary = invented_words(rng, 30000)
    # Zipf: the word of rank r is drawn with weight 1/r, as in real text.
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    sentences = [
        " ".join(rng.choices(vocabulary, weights, k=rng.randint(8, 30))).capitalize() + "."
        for _ in range(8000)
    ]
    return sentences, "synthetic Zipfian sentences"


# --------------------------------------------------------------------------
# Planted stories
# --------------------------------------------------------------------------


def rewrite(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 5 and rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    return rng.choice(PREFIXES) + " ".join(words) + rng.choice(SUFFIXES)


class BodyMaker:
    """Base articles with names and figures of their own, and reports rewritten from them."""

    def __init__(self, sentences: list[str], rng: random.Random) -> None:
        self.sentences = sentences
        self.rng = rng
        self.names = [w.capitalize() for w in invented_words(random.Random(5), 50000)]
        self.substitutes = [w for s in rng.sample(sentences, min(500, len(sentences))) for w in s.split()]

    def base(self) -> tuple[list[str], list[str]]:
        """A base article (sentences) and its own names and figures, woven into its sentences."""
        rng = self.rng
        own = rng.sample(self.names, 3) + [str(rng.randint(10, 9999)) for _ in range(2)]
        start = rng.randrange(len(self.sentences))
        run = self.sentences[start:start + rng.randint(6, 14)]  # a coherent stretch of one page...
        run += rng.sample(self.sentences, rng.randint(2, 8))  # ...and other material
        article = [f"{s} {rng.choice(own)} {rng.choice(own)}." if rng.random() < 0.4 else s for s in run]
        return article, own

    def report(self, article: list[str]) -> str:
        """A subset of the article's sentences, lightly reordered and reworded; sometimes a short summary."""
        rng = self.rng
        if rng.random() < 0.15:
            kept = article[: rng.randint(2, 3)]
        else:
            kept = [s for s in article if rng.random() < 0.8] or article[:3]
            for _ in range(len(kept) // 4):
                i = rng.randrange(len(kept))
                j = min(len(kept) - 1, i + 1)
                kept[i], kept[j] = kept[j], kept[i]
        words = " ".join(kept).split()
        for _ in range(len(words) // 30):
            words[rng.randrange(len(words))] = rng.choice(self.substitutes)
        return " ".join(words)


def make_reports(n: int, pools: list[list[str]], per_day: int, seed: int = 1,
                 bodies: BodyMaker | None = None) -> list[Report]:
    """``n`` reports of planted events (2–8 reports each) spread at ``per_day`` a day, with bodies when given."""
    rng = random.Random(seed)
    span = timedelta(days=n / per_day)
    reports: list[Report] = []

    def add(title: str, text: str, when: datetime) -> None:
        reports.append(
            Report(
                id=len(reports),
                title=title,
                text=text,
                url=f"https://outlet{rng.randrange(500)}.example.com/a/{len(reports)}",
                source=f"Outlet {rng.randrange(500)}",
                published=when,
            )
        )

    while len(reports) < n:
        pool = rng.choice(pools)
        event_time = START + span * rng.random()
        if bodies is not None and rng.random() < UNRELATED_SHARE:
            article, _ = bodies.base()
            add(rewrite(rng.choice(pool), rng), bodies.report(article), event_time)
            continue
        article, own = bodies.base() if bodies is not None else ([], [])
        for _ in range(rng.randint(2, 8)):
            if len(reports) == n:
                break
            title = rewrite(rng.choice(pool), rng)
            if own:
                title = f"{own[0]} {title}"
            add(title, bodies.report(article) if bodies else "", event_time + timedelta(minutes=rng.uniform(0, 720)))
    return reports


def bodied_reports(n: int, per_day: int) -> tuple[list[Report], str]:
    pools, titles_origin = headline_pools()
    sentences, body_origin = sentence_pool()
    return make_reports(n, pools, per_day, bodies=BodyMaker(sentences, random.Random(3))), \
        f"{titles_origin}; {body_origin}"


# --------------------------------------------------------------------------
# One measurement (run in its own process)
# --------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_engine(size: int, per_day: int, with_bodies: bool) -> dict:
    if with_bodies:
        reports, origin = bodied_reports(size, per_day)
    else:
        pools, origin = headline_pools()
        reports = make_reports(size, pools, per_day)
    rss_before = peak_rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    grouper = StoryGrouper()
    grouper.add_many(reports)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    stories = len(set(grouper.clusters().values()))
    return {"origin": origin, "seconds": seconds, "cpu": cpu, "stories": stories,
            "rss_before": rss_before, "rss_peak": peak_rss_mb()}


def build_db(path: Path, size: int, held_back: int = 0, feeds: int = 1000) -> str:
    """A database of ``size`` fresh, extracted entries over ``feeds`` feeds, all inside one 72 h window.

    ``held_back`` more are stored with their extraction pending, so that the
    first grouping leaves them: :func:`release` makes them ready for a later one.
    """
    reports, origin = bodied_reports(size + held_back, per_day=max(1, size // 3))
    store = Store.open(path)
    now = to_db_time(START)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO feeds (id, url, title, created_at) VALUES (?, ?, ?, ?)",
            [(i + 1, f"https://outlet{i}.example.com/feed", f"Outlet {i}", now) for i in range(feeds)],
        )
        conn.executemany(
            "INSERT INTO entries (feed_id, guid, link, title, summary, text, text_source, extract_status, "
            "published, first_seen, changed_at, content_hash) "
            "VALUES (?, ?, ?, ?, '', ?, 'feed-content', ?, ?, ?, ?, '')",
            [
                (r.id % feeds + 1, f"guid-{r.id}", r.url, r.title, r.text, "done" if n < size else "pending",
                 to_db_time(r.published), now, now)
                for n, r in enumerate(reports)
            ],
        )
    store.close()
    return origin


def release(path: Path) -> None:
    """The entries held back by :func:`build_db` become ready for a story, as a later run's would."""
    store = Store.open(path)
    with store.transaction() as conn:
        conn.execute("UPDATE entries SET extract_status = 'done' WHERE extract_status = 'pending'")
    store.close()


def measure_db(path: Path, read_ahead: bool = False) -> dict:
    """The library's DB step; ``read_ahead`` as the pipeline asks for it (``agg group``, a run's own grouping), with
    the peak memory of the process tree (the worker reading texts included: the sum of the RSS sampled), and
    without it the process's own peak, exact (the process is all there is)."""
    tree = None
    if read_ahead:
        from fetch_scale import TreeMemorySampler

        tree = TreeMemorySampler(os.getpid(), interval=0.2)
    # Asked only where wanted: a base checkout from before read_ahead takes no such argument.
    options = {"read_ahead": True} if read_ahead else {}
    store = Store.open(path)
    rss_before = peak_rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    with tree or contextlib.nullcontext():
        summary = group_new_entries(store.db, DedupSettings(), now=START + timedelta(days=4), **options)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    store.close()
    rss_peak = peak_rss_mb()
    return {"seconds": seconds, "cpu": cpu, "stories": summary.new_stories, "rss_before": rss_before,
            "rss_peak": max(rss_peak, tree.peak_total_kb / 1024) if tree else rss_peak}


def measure_kept(path: Path) -> dict:
    """A later run as ``agg daemon`` makes it: the session that grouped the window places the new entries."""
    from aggregator.dedup import GroupingSession

    store = Store.open(path)
    session = GroupingSession(store.db, DedupSettings(), now=START + timedelta(days=4))
    while session.place_ready(at_most=5000).placed:
        pass
    release(path)  # another connection makes the held-back entries ready, as the run's fetch would
    rss_before = peak_rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    later = session.place_ready()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    store.close()
    return {"seconds": seconds, "cpu": cpu, "stories": later.new_stories, "rss_before": rss_before,
            "rss_peak": peak_rss_mb()}


def run_child(*args: str, root: Path | None = None) -> dict:
    """One measure in a fresh process, with the engine of ``root`` (default: this checkout)."""
    env = {**os.environ, ENGINE_ROOT: str(root.resolve())} if root else None
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args: list[str]) -> None:
    kind = args[0]
    if kind == "engine":
        result = measure_engine(int(args[1]), int(args[2]), args[3] == "bodies")
    elif kind == "build-db":
        result = {"origin": build_db(Path(args[1]), int(args[2]), int(args[3]))}
    elif kind == "release":
        release(Path(args[1]))
        result = {}
    elif kind == "db-kept":
        result = measure_kept(Path(args[1]))
    elif kind == "db-ahead":
        result = measure_db(Path(args[1]), read_ahead=True)
    else:
        result = measure_db(Path(args[1]))
    print(json.dumps(result))


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


ENGINE_SECONDS = {100_000: 60.0}
"""Engine runs with bodies: most seconds for this many reports."""
MAX_EXPONENT = 1.3
DB_FRESH = {50_000: 60.0}
"""DB step, fresh entries in one window: most seconds for this many."""
STEADY_SECONDS = 5.0
"""A later run: most seconds from start to every new entry in its story (issue 17)."""
MAX_PEAK_MB = 500.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def exponents(timings: dict[int, dict]) -> list[str]:
    if len(timings) < 2:
        return []
    small, large = min(timings), max(timings)
    lines = []
    # CPU time too: on a busy machine wall time says more about the neighbours than about agg.
    for label in ("seconds", "cpu"):
        exponent = math.log(timings[large][label] / timings[small][label]) / math.log(large / small)
        lines.append(f"growth exponent ({label}) log(t{large}/t{small})/log({large}/{small}) = {exponent:.2f}"
                     f" <= {MAX_EXPONENT}: {verdict(exponent <= MAX_EXPONENT)}")
    return lines


HEADER = (f"{'engine':>6}  {'reports':>8}  {'seconds':>8}  {'cpu s':>8}  {'ms/report':>9}  {'stories':>8}  "
          f"{'RSS MB':>7}  {'peak MB':>7}  targets")


def row(engine: str, size: int, r: dict, targets: str = "") -> str:
    return (f"{engine:>6}  {size:>8}  {r['seconds']:>8.1f}  {r['cpu']:>8.1f}  {r['seconds'] / size * 1000:>9.2f}  "
            f"{r['stories']:>8}  {r['rss_before']:>7.0f}  {r['rss_peak']:>7.0f}  {targets}")


def engine_targets(mode: str, size: int, r: dict) -> str:
    limit = ENGINE_SECONDS.get(size) if mode == "bodies" else None
    return f"<= {limit:.0f} s: {verdict(r['seconds'] <= limit)}" if limit else ""


def fresh_targets(size: int, r: dict) -> str:
    limit = DB_FRESH.get(size)
    if not limit:
        return ""
    return (f"<= {limit:.0f} s: {verdict(r['seconds'] <= limit)}; "
            f"< {MAX_PEAK_MB:.0f} MB: {verdict(r['rss_peak'] < MAX_PEAK_MB)}")


def steady_targets(r: dict) -> str:
    return (f"<= {STEADY_SECONDS:.0f} s: {verdict(r['seconds'] <= STEADY_SECONDS)}; "
            f"< {MAX_PEAK_MB:.0f} MB: {verdict(r['rss_peak'] < MAX_PEAK_MB)}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", nargs="+", choices=["titles", "bodies", "db"], default=["titles", "bodies", "db"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="engine sizes")
    parser.add_argument("--db-sizes", type=int, nargs="+", default=[10_000, 50_000], help="DB step sizes")
    parser.add_argument("--per-day", type=int, default=2000, help="engine: reports per day (the window's density)")
    parser.add_argument("--steady", type=int, default=300, metavar="K",
                        help="DB step: new entries placed into each grouped window afterwards, as a later run (300)")
    parser.add_argument("--kept", action="store_true",
                        help="DB step: also the later run as agg daemon makes it, by the session that grouped the "
                             "window (this checkout only)")
    parser.add_argument("--read-ahead", action="store_true",
                        help="DB step: also the fresh entries grouped as the pipeline groups them, a worker process "
                             "reading the next batch's texts (rows ENGINE+; peak MB is the process tree's)")
    parser.add_argument("--base", type=Path, metavar="CHECKOUT",
                        help="also measure this checkout's engine (a git worktree of the base commit), side by side")
    args = parser.parse_args()
    engines: list[tuple[str, Path | None]] = ([("base", args.base)] if args.base else []) + [("after", None)]
    print("default settings (72 h window); RSS MB = peak before grouping (input built), peak MB = peak after")
    if args.base:
        print(f"base = the engine of {args.base}; after = this checkout's")
    for mode in ("titles", "bodies"):
        if mode not in args.mode:
            continue
        timings: dict[str, dict[int, dict]] = {engine: {} for engine, _ in engines}
        for size in args.sizes:
            for engine, root in engines:
                result = run_child("engine", str(size), str(args.per_day), mode, root=root)
                if size == args.sizes[0] and engine == engines[0][0]:
                    print(f"\nengine, {mode}: {result['origin']}; {args.per_day} reports a day\n{HEADER}")
                timings[engine][size] = result
                print(row(engine, size, result, engine_targets(mode, size, result)), flush=True)
        for engine, _ in engines:
            for line in exponents(timings[engine]):
                print(f"  {engine}: {line}")
    if "db" in args.mode:
        fresh: dict[str, dict[int, dict]] = {engine: {} for engine, _ in engines}
        steady: list[tuple[str, int, dict]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.db_sizes:
                origin = ""
                for engine, root in engines:
                    # Each engine groups its own copy of the same entries (the builder is seeded).
                    path = Path(tmp) / f"bench-{size}-{engine}.db"
                    # Built by the engine's own code: its schema (a base before migration 7 refuses a newer file).
                    origin = run_child("build-db", str(path), str(size), str(args.steady), root=root)["origin"]
                    if size == args.db_sizes[0] and engine == engines[0][0]:
                        print(f"\nDB step group_new_entries, fresh entries in one 72 h window: {origin}\n{HEADER}")
                    if args.read_ahead:
                        ahead_path = path.with_name(f"{path.stem}-ahead.db")
                        shutil.copyfile(path, ahead_path)
                    fresh[engine][size] = run_child("db", str(path), root=root)
                    print(row(engine, size, fresh[engine][size], fresh_targets(size, fresh[engine][size])), flush=True)
                    if args.read_ahead:
                        ahead = run_child("db-ahead", str(ahead_path), root=root)
                        print(row(f"{engine}+", size, ahead, fresh_targets(size, ahead)), flush=True)
                        ahead_path.unlink()
                    if args.steady:
                        run_child("release", str(path), root=root)
                        steady.append((engine, size, run_child("db", str(path), root=root)))
                    path.unlink()
                if args.steady and args.kept:
                    path = Path(tmp) / f"bench-{size}-kept.db"
                    run_child("build-db", str(path), str(size), str(args.steady))
                    steady.append(("kept", size, run_child("db-kept", str(path))))
                    path.unlink()
        for engine, _ in engines:
            for line in exponents(fresh[engine]):
                print(f"  {engine}: {line}")
        if steady:
            print(f"\nDB step, a later run: {args.steady} new entries into the grouped window of the size shown"
                  + ("; kept = this checkout, the session that grouped the window kept (agg daemon)" if args.kept else ""))
            print(f"{'engine':>6}  {'window':>8}  {'seconds':>8}  {'cpu s':>8}  {'stories':>8}  {'peak MB':>7}  targets")
            for engine, size, r in steady:
                print(f"{engine:>6}  {size:>8}  {r['seconds']:>8.1f}  {r['cpu']:>8.1f}  {r['stories']:>8}  "
                      f"{r['rss_peak']:>7.0f}  {steady_targets(r)}")


if __name__ == "__main__":
    main()
