"""How well story grouping does, before and after a change, and what each of its signals earns.

For each labelled set, the precision, recall and F1 of the grouping (pairwise
and B-cubed) and the seconds ``agg eval-dedup`` took on it:

* ``allsides`` and ``ecbplus``: $AGG_SHARED_DATA/stories-dev, real reports
  grouped by people (the development sets: tune on one, check on the other);
* ``uci``: $AGG_SHARED_DATA/headlines, 6,366 real headlines (titles only);
* ``own`` and ``own-extra``: tests/fixtures/dedup*, written by us beside the rules;
* ``demo``: the bundled samples through the real pipeline (served on 127.0.0.1,
  fetched, extracted, grouped into a database), against data/samples/stories.jsonl;
* ``allsides-chrome`` and ``ecbplus-chrome``: the development sets with each
  report wrapped in page chrome made here (a menu, a byline, a list of three
  related headlines taken from other stories of the file, a newsletter line, a
  copyright line); ``ecbplus-chrome-topic`` takes two of the related headlines
  from the other event of the report's topic, as a site's "more on this" does;
* ``allsides-pages`` and ``ecbplus-pages``: each report wrapped in the real chrome
  of one of the pages in $AGG_SHARED_DATA/extraction-dev (the lines of the page
  before and after its article, as Readability's expected text marks it).
  Built afresh in a temporary folder at every run, never stored.

Each code version runs in a fresh process of its own: this tree, and with
``--before REV`` a git worktree of REV beside it, so the two columns come from
one run. ``--ablate`` adds a table of this tree with each signal removed in
turn (a channel's weight is shared out among the others in proportion, so the
scores keep their scale) on the two development sets.

Targets (issue 16): on each stories-dev file B-cubed F1 >= 0.90 at B-cubed
precision >= 0.95 and pairwise precision >= 0.93; eval-dedup on 1,000 reports
under 3 s; the UCI floors pairwise P >= 0.89 and F1 >= 0.655.

``--orders N`` also groups the two development sets in N shuffled orders of
arrival (the orders of ``agg eval-dedup --orders N``, given to each code
version as permutations) and shows the mean figures: a file lists each
story's reports together, an order that flatters an incremental grouper.

    .venv/bin/python bench/dedup_quality.py [--before c1e150c] [--ablate] [--orders 8]
                                            [--sets allsides ecbplus uci own demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SETS = ("allsides", "ecbplus", "uci", "own", "own-extra", "demo")
CHROME_SETS = ("allsides-chrome", "ecbplus-chrome", "ecbplus-chrome-topic", "allsides-pages", "ecbplus-pages")
METRICS = ("bcubed_precision", "bcubed_recall", "bcubed_f1", "pairwise_precision", "pairwise_recall", "pairwise_f1")

# Each signal removed in turn: settings overrides, or "lead_of" for the lead found past page chrome.
WEIGHTS = ("text_weight", "names_weight", "lead_weight")
ABLATIONS: dict[str, dict] = {
    "whole-text cosine": {"drop": "text_weight"},
    "names cosine": {"drop": "names_weight"},
    "title+lead cosine": {"drop": "lead_weight"},
    "lead past page chrome": {"plain_lead": True},
    "page chrome dropped (runs of lines that are not prose)": {"keep_chrome": True},
    "language word frequencies (wordfreq)": {"prior_weight": 0.0},
    "sharpened idf (power 1.5 -> 1)": {"idf_power": 1.0},
    "unique words weigh less": {"unique_word_weight": 1.0},
    "time decay": {"decay_per_day": 0.0},
    "figures clash": {"clash_factor": 1.0},
    "years clash (undated reports)": {"years_clash_factor": 1.0},
    "summary containment": {"summary_containment": 0.0},
    "headline route (pairs without two bodies)": {"title_only_weight": 0.0},
    "story cohesion (a newcomer about as close as the members)": {"cohesion_share": 0.0},
}

# Run in the measured tree's own interpreter path: evaluates one set with optional overrides, prints JSON.
WORKER = r"""
import json, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
from aggregator.dedup import DedupSettings
from aggregator.evaluate import evaluate_file, shared_data_dir
overrides = dict(spec.get("overrides", {}))
if overrides.pop("plain_lead", False):
    import aggregator.dedup.features as features
    features.lead_of = lambda body: body
if overrides.pop("keep_chrome", False):
    import aggregator.dedup.features as features
    features.without_chrome = lambda body: body
drop = overrides.pop("drop", None)
settings = DedupSettings()
if drop:
    kept = [w for w in ("text_weight", "names_weight", "lead_weight") if w != drop]
    total = sum(getattr(settings, w) for w in kept)
    overrides.update({w: getattr(settings, w) / total for w in kept}, **{drop: 0.0})
for key, value in overrides.items():
    setattr(settings, key, value)
name = spec["set"]
shared = shared_data_dir()
paths = {
    "allsides": (shared / "stories-dev" / "allsides.jsonl", "jsonl"),
    "ecbplus": (shared / "stories-dev" / "ecbplus.jsonl", "jsonl"),
    "uci": (shared / "headlines" / "uci-news-aggregator.head6366.csv", "uci"),
    "own": (Path("tests/fixtures/dedup/stories.jsonl"), "jsonl"),
    "own-extra": (next((p for p in (Path("tests/fixtures/dedup-extra/stories.jsonl"),  # named dedup-heldout before
                                     Path("tests/fixtures/dedup-heldout/stories.jsonl")) if p.is_file()),
                       Path("tests/fixtures/dedup-extra/stories.jsonl")), "jsonl"),
}
if name == "demo":
    import tempfile
    from aggregator import pipeline
    from aggregator.config import load_config
    from aggregator.devserver import SampleServer, write_config
    from aggregator.evaluate import evaluate_db, load_gold_by_entry
    from aggregator.store import Store
    samples = Path("data/samples")
    folder = Path(tempfile.mkdtemp())
    if __name__ == "__main__":
        with SampleServer(samples) as server:
            write_config(server, samples / "feeds.yaml", folder / "feeds.yaml")
            config = load_config(folder / "feeds.yaml")
            config.settings.dedup = settings
            store = Store.open(folder / "agg.db")
            started = time.perf_counter()
            pipeline.run(config, store)
            scores = evaluate_db(store.db, load_gold_by_entry(samples / "stories.jsonl", server.base_url))
            scores["seconds"] = time.perf_counter() - started
            store.close()
        print(json.dumps(scores))
else:
    path, fmt = (Path(spec["path"]), "jsonl") if spec.get("path") else paths[name]
    if not path.is_file():
        print(json.dumps({"absent": str(path)}))
    else:
        result = evaluate_file(path, fmt=fmt, settings=settings).to_dict()
        orders = spec.get("orders")
        if orders:  # the reports in other orders of arrival, as this tree's evaluate_reports groups them
            from aggregator.evaluate import LOADERS, evaluate_reports
            reports, gold = LOADERS[fmt](path)
            if any(len(order) != len(reports) for order in orders):
                raise SystemExit(f"{len(reports)} reports, but orders of {len(orders[0])}")
            runs = [evaluate_reports([reports[i] for i in order], gold, settings).to_dict() for order in orders]
            names = [k for k in runs[0] if k.startswith(("pairwise_", "bcubed_"))]
            result["orders"] = {"count": len(runs), "mean": {k: sum(r[k] for r in runs) / len(runs) for k in names},
                                "lowest": {k: min(r[k] for r in runs) for k in names}}
        print(json.dumps(result))
"""


# --- the development sets wrapped in page chrome -----------------------------------------------------------------

MENU = ("Skip to content", "Menu", "Home", "News", "Politics", "World", "Business", "Opinion", "Sport", "Video")
BLOCK_TAGS = ("p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "br", "tr", "td", "section",
              "article", "header", "footer", "nav", "aside", "figcaption", "figure", "blockquote", "a", "time")


def page_lines(markup: str) -> list[str]:
    """The lines a reader sees on a page: one per block element, whitespace folded, empty ones left out."""
    from lxml import html as lxml_html

    root = lxml_html.fromstring(markup)
    for hidden in root.xpath("//script|//style|//noscript|//template"):
        hidden.drop_tree()
    for element in root.iter(*BLOCK_TAGS):
        element.text = "\n" + (element.text or "")
        element.tail = "\n" + (element.tail or "")
    return [" ".join(line.split()) for line in root.text_content().splitlines() if line.strip()]


def real_page_chrome(pages: Path) -> list[tuple[list[str], list[str]]]:
    """Per page of extraction-dev: its lines before its article and after it (at most 15 and 25), the article being
    the lines of Readability's expected text."""
    chrome = []
    for folder in sorted(p for p in pages.iterdir() if p.is_dir()):
        try:
            lines = page_lines((folder / "source.html").read_text(encoding="utf-8", errors="replace"))
            article = set(page_lines((folder / "expected.html").read_text(encoding="utf-8", errors="replace")))
        except (OSError, ValueError):
            continue
        at = [n for n, line in enumerate(lines) if line in article]
        if len(at) < 3:
            continue
        before = [line for line in lines[:at[0]] if line not in article][-15:]
        after = [line for line in lines[at[-1] + 1:] if line not in article][:25]
        if before or after:
            chrome.append((before, after))
    return chrome


def chrome_sets(folder: Path) -> dict[str, Path]:
    """Write the chromed development sets (see the module's docstring) into ``folder``; their paths by name."""
    import random

    dev = shared_dir() / "stories-dev"
    pages = shared_dir() / "extraction-dev" / "readability-test-pages"
    built: dict[str, Path] = {}
    real = real_page_chrome(pages) if pages.is_dir() else []
    for base in ("allsides", "ecbplus"):
        if not (dev / f"{base}.jsonl").is_file():
            continue
        rows = [json.loads(line) for line in (dev / f"{base}.jsonl").read_text(encoding="utf-8").splitlines()]
        by_topic: dict[str, list[dict]] = {}
        for row in rows:
            by_topic.setdefault(row.get("topic") or row["story"], []).append(row)
        variants = {f"{base}-chrome": "related", f"{base}-pages": "pages"}
        if base == "ecbplus":
            variants[f"{base}-chrome-topic"] = "topic"
        for name, kind in variants.items():
            if kind == "pages" and not real:
                continue
            rng = random.Random(7)
            out = folder / f"{name}.jsonl"
            with out.open("w", encoding="utf-8") as file:
                for row in rows:
                    if kind == "pages":
                        before, after = rng.choice(real)
                    else:
                        others = [o for o in rows if o["story"] != row["story"]]
                        same_topic = [o for o in by_topic[row.get("topic") or row["story"]] if o["story"] != row["story"]]
                        related = (rng.sample(same_topic, min(2, len(same_topic))) + rng.sample(others, 1)
                                   if kind == "topic" else rng.sample(others, 3))
                        before = [*rng.sample(MENU, 5), "By Staff Reporter", f"Updated {rng.randint(1, 9)} hours ago"]
                        after = ["Related stories", *(o["title"][:120] for o in related),
                                 "Never miss a story: sign up for our newsletter.", "Share this article",
                                 f"Copyright 2021 {row.get('source') or 'The Daily Courier'}. All rights reserved."]
                    file.write(json.dumps({**row, "text": "\n".join([*before, row.get("text") or "", *after])}) + "\n")
            built[name] = out
    return built


def chrome_rule_on_extracted_pages() -> str | None:
    """What this tree's page-chrome rule drops of extraction-dev's pages as agg extracts them: the share of their
    words, and the share that Readability's expected text holds (article text dropped by mistake)."""
    from aggregator.dedup.text import PARAGRAPH_BREAK, without_chrome
    from aggregator.extract import extract_article

    pages = shared_dir() / "extraction-dev" / "readability-test-pages"
    if not pages.is_dir():
        return None
    words = dropped = article = measured = 0
    for folder in sorted(p for p in pages.iterdir() if p.is_dir()):
        try:
            text = extract_article((folder / "source.html").read_text(encoding="utf-8", errors="replace"),
                                   "https://example.com/article").text or ""
            expected = set(page_lines((folder / "expected.html").read_text(encoding="utf-8", errors="replace")))
        except (OSError, ValueError):
            continue
        kept = " ".join(without_chrome(text).split())
        gone = [" ".join(line.split()) for line in PARAGRAPH_BREAK.split(text) if line.strip()]
        gone = [line for line in gone if line not in kept]
        measured += 1
        words += len(text.split())
        dropped += sum(len(line.split()) for line in gone)
        article += sum(len(line.split()) for line in gone if line in expected)
    return (f"page chrome rule on the {measured} extraction-dev pages as agg extracts them: "
            f"{dropped / words:.1%} of {words:,} words dropped; article text dropped by mistake (lines of "
            f"Readability's expected text): {article / words:.1%} of the words")


def measure(tree: Path, set_name: str, overrides: dict | None = None, orders: list[list[int]] | None = None,
            path: Path | None = None) -> dict:
    """One set evaluated by the code of ``tree``, in a fresh process (its imports and its memory its own).

    With ``orders`` (permutations of the file's reports), in those orders of arrival too; ``path`` is the file of a
    set built by this script (:func:`chrome_sets`).
    """
    env = {**os.environ, "PYTHONPATH": str(tree), "AGG_SHARED_DATA": str(shared_dir())}
    spec = {"set": set_name, "overrides": overrides or {}, "orders": orders or [], "path": str(path or "")}
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def arrival_orders(set_name: str, count: int) -> list[list[int]]:
    """``count`` shuffled orders of a development set's reports (eval-dedup --orders), as index permutations."""
    from aggregator.evaluate import load_jsonl, shuffled_orders

    path = shared_dir() / "stories-dev" / f"{set_name}.jsonl"
    if not count or set_name not in ("allsides", "ecbplus") or not path.is_file():
        return []
    reports, _ = load_jsonl(path)
    place = {report.id: n for n, report in enumerate(reports)}
    return [[place[report.id] for report in order] for order in shuffled_orders(reports, count)]


def orders_cells(result: dict) -> str:
    """The mean and lowest figures over the shuffled orders: B-cubed P / R / F1, pairwise P."""
    orders = result.get("orders")
    if not orders:
        return "-"
    mean, lowest = orders["mean"], orders["lowest"]
    return (f"{mean['bcubed_precision']:.3f} / {mean['bcubed_recall']:.3f} / {mean['bcubed_f1']:.3f}, "
            f"pairwise P {mean['pairwise_precision']:.3f} (lowest B-cubed P {lowest['bcubed_precision']:.3f}, "
            f"F1 {lowest['bcubed_f1']:.3f})")


def ablation_cell(result: dict) -> str:
    if "bcubed_f1" not in result:
        return result.get("error") or f"not found: {result.get('absent')}"
    cell = f"{result['bcubed_precision']:.3f} / {result['bcubed_recall']:.3f} / {result['bcubed_f1']:.3f}"
    if result.get("orders"):
        mean = result["orders"]["mean"]
        cell += f"; {mean['bcubed_precision']:.3f} / {mean['bcubed_recall']:.3f} / {mean['bcubed_f1']:.3f}"
    return cell


def cells(result: dict) -> str:
    if "bcubed_f1" not in result:
        return f"- | - | - ({result.get('error') or 'not found: ' + str(result.get('absent'))})"
    return (f"{result['bcubed_precision']:.3f} / {result['bcubed_recall']:.3f} / {result['bcubed_f1']:.3f} | "
            f"{result['pairwise_precision']:.3f} / {result['pairwise_recall']:.3f} / {result['pairwise_f1']:.3f} | "
            f"{result.get('seconds', 0):.2f} s")


def verdicts(name: str, result: dict) -> list[str]:
    """PASS/FAIL for every target that applies to the set."""
    if "bcubed_f1" not in result:
        return []
    checks = []
    if name in ("allsides", "ecbplus"):
        checks = [("B-cubed F1 >= 0.90", result["bcubed_f1"] >= 0.90),
                  ("B-cubed P >= 0.95", result["bcubed_precision"] >= 0.95),
                  ("pairwise P >= 0.93", result["pairwise_precision"] >= 0.93)]
    elif name == "uci":
        checks = [("pairwise P >= 0.89", result["pairwise_precision"] >= 0.89),
                  ("pairwise F1 >= 0.655", result["pairwise_f1"] >= 0.655)]
    return [f"{label} {'PASS' if ok else 'FAIL'}" for label, ok in checks]


def git_worktree(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="agg-before-")) / "tree"
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", str(folder), rev],
                   check=True, capture_output=True)
    return folder


def shared_dir() -> Path:
    """The shared data this tree's tests read, whichever tree is measured (a worktree has no ../shared)."""
    from aggregator.evaluate import shared_data_dir

    return shared_data_dir()


def thousand_reports_seconds(tree: Path) -> float | None:
    """eval-dedup seconds on 1,000 real reports: all of allsides.jsonl, then the first ecbplus.jsonl lines."""
    dev = shared_dir() / "stories-dev"
    if not (dev / "allsides.jsonl").is_file():
        return None
    lines = (dev / "allsides.jsonl").read_text().splitlines() + (dev / "ecbplus.jsonl").read_text().splitlines()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as out:
        out.write("\n".join(lines[:1000]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-m", "aggregator", "eval-dedup", "--json", out.name], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)
    os.unlink(out.name)
    return json.loads(done.stdout)["seconds"] if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REV", help="also measure this git revision, side by side")
    parser.add_argument("--ablate", action="store_true", help="each signal removed in turn, on the development sets")
    parser.add_argument("--sets", nargs="+", choices=SETS + CHROME_SETS, default=list(SETS + CHROME_SETS))
    parser.add_argument("--orders", type=int, default=0, metavar="N",
                        help="also group the development sets in N shuffled orders of arrival (eval-dedup --orders)")
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT))

    trees = {"after (this tree)": PROJECT}
    if args.before:
        trees = {f"before ({args.before})": git_worktree(args.before), **trees}
    try:
        # The chromed sets are built afresh in a folder that goes with the run.
        with tempfile.TemporaryDirectory(prefix="agg-chrome-") as folder:
            report(args, trees, chrome_sets(Path(folder)))
    finally:
        for tree in trees.values():
            if tree != PROJECT:
                subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)


def report(args: argparse.Namespace, trees: dict[str, Path], built: dict[str, Path]) -> None:
    """Every table of the run: each set by each tree, eval-dedup's seconds, the chrome rule on real pages, and the
    ablations when asked."""
    orders = {name: arrival_orders(name, args.orders) for name in ("allsides", "ecbplus")}
    print("| set | code | B-cubed P / R / F1 | pairwise P / R / F1 | seconds | targets |"
          + (f" {args.orders} shuffled orders: mean B-cubed P / R / F1 |" if args.orders else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.orders else ""))
    for name in args.sets:
        for label, tree in trees.items():
            if name in CHROME_SETS and name not in built:
                continue
            result = measure(tree, name, orders=orders.get(name), path=built.get(name))
            print(f"| {name} | {label} | {cells(result)} | {', '.join(verdicts(name, result)) or '-'} |"
                  + (f" {orders_cells(result)} |" if args.orders else ""), flush=True)
    for label, tree in trees.items():
        seconds = thousand_reports_seconds(tree)
        if seconds is not None:
            print(f"eval-dedup on 1,000 real reports, {label}: {seconds:.2f} s "
                  f"({'PASS' if seconds < 3 else 'FAIL'}: under 3 s)")
    on_pages = chrome_rule_on_extracted_pages()
    if on_pages:
        print(f"this tree's {on_pages}")
    if args.ablate:
        shuffled = f" (file order; mean of {args.orders} shuffled orders)" if args.orders else ""
        chromed = [name for name in ("allsides-pages", "ecbplus-pages") if name in built]
        print(f"\n| signal removed | allsides B-cubed P / R / F1{shuffled} | ecbplus B-cubed P / R / F1{shuffled} |"
              + "".join(f" {name} B-cubed P / R / F1 |" for name in chromed))
        print("|---|---|---|" + "---|" * len(chromed))
        for label, overrides in {"(none: the engine as it is)": {}, **ABLATIONS}.items():
            row = [measure(PROJECT, name, overrides, orders[name]) for name in ("allsides", "ecbplus")]
            row += [measure(PROJECT, name, overrides, path=built[name]) for name in chromed]
            print(f"| {label} | " + " | ".join(ablation_cell(r) for r in row) + " |", flush=True)

if __name__ == "__main__":
    main()
