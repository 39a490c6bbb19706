"""How long ``agg serve`` takes to make its pages over a 50,000-entry database.

Builds (or reuses) a database of N entries with bodies over 1,000 feeds, all
grouped into stories and indexed for search: ``bench/dedup_scale.py``'s
builder, then the pipeline's own grouping (about a minute for 50,000) and
search index refresh. The file is kept (default: in the temporary folder) and
reused by later runs.

Then starts ``agg serve`` over it on 127.0.0.1 (a process of its own, so the
client here does not share its interpreter) and requests each page many times
over one keep-alive connection. The figure is the server's time for the page,
from the ``Server-Timing`` header the reader sets (routing, database reads and
template rendering, without the network); the client's round trip is printed
beside it. Target: each page's median <= 100 ms.

``--before REV`` also times the library's ``search()`` in this process, the
code of REV (read with ``git show``) and this tree's alternately on the same
queries: the before and after of a change to search.

    .venv/bin/python bench/serve_pages.py [--entries 50000] [--requests 100] [--db PATH] [--quick]
                                          [--before REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dedup_scale import START, build_db  # noqa: E402

from aggregator.dedup import DedupSettings, group_new_entries  # noqa: E402
from aggregator import search as search_now  # noqa: E402
from aggregator.store import Store  # noqa: E402

TARGET_MS = 100.0
WARM_UP = 5
SERVER_TIMING = re.compile(r"app;dur=([\d.]+)")


def ensure_db(path: Path, entries: int) -> None:
    """The database at ``path``: built, grouped and indexed unless a complete one is there."""
    if path.exists():
        store = Store.open(path, readonly=True)
        try:
            grouped, indexed = store.db.execute(
                "SELECT count(story_id), (SELECT indexed_through FROM search_index_state) FROM entries").fetchone()
        finally:
            store.close()
        if grouped >= entries and indexed:
            print(f"reusing {path} ({grouped:,} entries in stories)", file=sys.stderr)
            return
        path.unlink()
    print(f"building {path}: {entries:,} entries ...", file=sys.stderr)
    started = time.perf_counter()
    origin = build_db(path, entries)
    store = Store.open(path)
    try:
        summary = group_new_entries(store.db, DedupSettings(), now=START + timedelta(days=4))
        store.refresh_search_index()
    finally:
        store.close()
    print(f"built in {time.perf_counter() - started:.0f} s ({origin}; {summary.new_stories:,} stories)",
          file=sys.stderr)


def pages_to_measure(path: Path) -> list[tuple[str, str]]:
    """(label, path) of the pages: the stories (first page, a deep page, filtered), stories, searches."""
    store = Store.open(path, readonly=True)
    try:
        stories = store.db.execute("SELECT count(*) FROM stories WHERE merged_into IS NULL").fetchone()[0]
        largest, reports = store.db.execute(
            "SELECT id, n_reports FROM stories WHERE merged_into IS NULL ORDER BY n_reports DESC LIMIT 1").fetchone()
        typical = store.db.execute(
            "SELECT id FROM stories WHERE merged_into IS NULL AND n_reports = 3 ORDER BY id LIMIT 1").fetchone()
        titles = [row[0] for row in store.db.execute("SELECT title FROM entries ORDER BY id LIMIT 5000")]
    finally:
        store.close()
    words = Counter(word.lower() for title in titles for word in re.findall(r"[A-Za-z]{4,}", title))
    common, rarer = words.most_common(1)[0][0], words.most_common(200)[-1][0]
    deep = max(1, stories // 50 // 2)
    pages = [
        ("stories, page 1", "/"),
        (f"stories, page {deep} of {stories // 50 + 1}", f"/?page={deep}"),
        ("stories, min 3 outlets", "/?min_outlets=3"),
        (f"story, the largest ({reports} reports)", f"/story/{largest}"),
    ]
    if typical:
        pages.append(("story, 3 reports", f"/story/{typical[0]}"))
    pages += [
        (f"search, commonest title word ({common!r})", f"/search?q={quote(common)}"),
        (f"search, a rarer word ({rarer!r})", f"/search?q={quote(rarer)}"),
        (f"search, a phrase + NOT ({common!r})", "/search?q=" + quote(f'"{common} {rarer}" OR {rarer} NOT {common}')),
    ]
    return pages


@contextmanager
def agg_serve(path: Path) -> Iterator[str]:
    """``agg serve`` over ``path`` on 127.0.0.1 and a free port, in its own process; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "aggregator", "--db", str(path), "serve", "--port", str(port)])
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(base_url + "/static/agg.css", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise SystemExit(f"agg serve exited with status {process.returncode}") from None
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=20)


def measure(client: httpx.Client, path: str, requests: int) -> tuple[list[float], list[float]]:
    """(server milliseconds, round-trip milliseconds) of ``requests`` GETs of ``path``, after a warm-up."""
    server, round_trip = [], []
    for number in range(WARM_UP + requests):
        started = time.perf_counter()
        response = client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
        if number >= WARM_UP:
            server.append(float(SERVER_TIMING.search(response.headers["server-timing"]).group(1)))
            round_trip.append(elapsed)
    return server, round_trip


def search_at(rev: str):
    """The module aggregator.search as it was at ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:aggregator/search.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent).stdout
    spec = importlib.util.spec_from_loader("search_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:aggregator/search.py", "exec"), module.__dict__)
    return module


def compare_search(path: Path, rev: str, pages: list[tuple[str, str]], requests: int) -> None:
    """search() of ``rev`` and of this tree, alternately, on the searches among ``pages``."""
    before = search_at(rev)
    store = Store.open(path, readonly=True)
    print(f"\nsearch() in this process, {rev} and this tree alternately, {requests} times each\n")
    print(f"| query | {rev} median ms | this tree median ms | same results |")
    print("|---|---|---|---|")
    try:
        for label, page in pages:
            if not page.startswith("/search?q="):
                continue
            query = unquote(page.removeprefix("/search?q="))
            timings: dict[str, list[float]] = {"before": [], "after": []}
            results = {}
            for _ in range(requests):
                for name, module in (("before", before), ("after", search_now)):
                    started = time.perf_counter()
                    results[name] = module.search(store, query, limit=50)
                    timings[name].append((time.perf_counter() - started) * 1000)
            same = [(h.entry_id, h.matching_reports) for h in results["before"]] == [
                (h.entry_id, h.matching_reports) for h in results["after"]]
            print(f"| {label} | {statistics.median(timings['before']):.1f} | "
                  f"{statistics.median(timings['after']):.1f} | {'yes' if same else 'NO'} |")
    finally:
        store.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=100, help="requests per page (after 5 to warm up)")
    parser.add_argument("--db", type=Path, help="database to build or reuse [default: in the temporary folder]")
    parser.add_argument("--quick", action="store_true", help="5,000 entries, 30 requests a page")
    parser.add_argument("--before", metavar="REV", help="also time search() at REV against this tree's")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.requests = 5_000, 30
    path = args.db or Path(tempfile.gettempdir()) / f"agg-bench-serve-{args.entries}.db"
    ensure_db(path, args.entries)

    pages = pages_to_measure(path)
    rows, failed = [], 0
    with agg_serve(path) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        for label, page in pages:
            server, round_trip = measure(client, page, args.requests)
            median = statistics.median(server)
            verdict = "PASS" if median <= TARGET_MS else "FAIL"
            failed += verdict == "FAIL"
            rows.append(f"| {label} | {median:.1f} | {percentile(server, 0.9):.1f} | {max(server):.1f} | "
                        f"{statistics.median(round_trip):.1f} | {verdict} |")
    print(f"\n{args.entries:,} entries, {args.requests} requests a page\n")
    print("| page | server median ms | p90 | max | round trip median ms | <= 100 ms median |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.before:
        compare_search(path, args.before, pages, max(10, args.requests // 4))
    print(f"\nsummary: {len(rows) - failed} of {len(rows)} pages within {TARGET_MS:.0f} ms median server time"
          + ("" if not failed else f"; {failed} FAIL"))


if __name__ == "__main__":
    main()
