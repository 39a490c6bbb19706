"""Benchmark of the parse stage: entries per second of agg's parse_feed against feedparser.

Usage: python bench/parse.py [--feeds N] [--repeat R] [--before REV]

Runs, side by side on the same bytes: plain ``feedparser.parse`` (defaults),
feedparser with the sanitizer and relative-URI resolution off (as agg calls
it), agg's feedparser path alone (``_parse_xml_feed``: feedparser plus agg's
normalisation), agg's ``parse_feed`` (the lxml fast path for plain RSS 2.0,
feedparser for the rest), and ``fastfeedparser`` when it is installed, for
reference only. With ``--before REV`` (default HEAD) it also runs agg's
parse stage as it was at that git revision (aggregator/parse.py, or the
aggregator/parse package), loaded from git beside this one, for a before/after
table in one run; and it times
``html_to_text`` before and after on every summary and content, counting the
fragments where the two read different text. Inputs: N feeds like those
bench/fetch_scale.py serves (with synthetic words, and with its real text when
$AGG_SHARED_DATA has it), N synthetic 50-entry RSS 2.0 and Atom feeds with
HTML content (the Atom ones use xml:base, so they always go to feedparser),
and the feeds-dev documents from $AGG_SHARED_DATA when present. Each timing is the best of R passes, in CPU
time of this process (time.process_time): the parse stage is single-threaded
CPU work, and on a shared machine wall time would also count other processes.

It then counts the feeds-dev documents the fast path takes, checking that
each gives the same ParsedFeed as the feedparser path.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import os
import random
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from email.utils import format_datetime
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from aggregator.parse import _parse_xml_feed, html_to_text, parse_feed, read_common_rss  # noqa: E402
from fetch_scale import RealNews, feed_document  # noqa: E402

try:
    import fastfeedparser
except ImportError:  # optional, only for comparison
    fastfeedparser = None

ENTRIES_PER_FEED = 50
GZIPPED_DOCUMENTS = {"compressed.xml", "invalid-characters-gzipped.xml"}
WORDS = (
    "market council election storm river vaccine budget court energy school minister report "
    "league climate housing transport police museum festival harbour bridge data study"
).split()

Document = tuple[str, bytes]  # (url, body)


# --- inputs ------------------------------------------------------------------


def _sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."


def _article_html(rng: random.Random, number: int) -> str:
    paragraphs = []
    for paragraph in range(rng.randint(4, 8)):
        text = " ".join(_sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 5)))
        paragraphs.append(
            f'<p>{text} See <a href="/news/{number}/{paragraph}" title="more">the &amp; report</a>, '
            f"<em>said</em> <strong>officials</strong> &#8212; &ldquo;quote&rdquo;.</p>"
        )
    paragraphs.insert(1, f'<figure><img src="/img/{number}.jpg" alt="photo {number}"><figcaption>Photo</figcaption></figure>')
    if number % 5 == 0:
        paragraphs.append('<script>track("x")</script><iframe src="https://ads.example/x"></iframe>')
    return "\n".join(paragraphs)


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def synthetic_rss(seed: int) -> bytes:
    rng = random.Random(seed)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    items = []
    for number in range(ENTRIES_PER_FEED):
        moment = format_datetime(start - timedelta(minutes=37 * number))
        items.append(
            f"""<item><title>{_sentence(rng, 9)} &amp; more</title>
<link>https://news.example.com/{seed}/story/{number}</link>
<guid isPermaLink="false">story-{seed}-{number}</guid>
<pubDate>{moment}</pubDate><dc:creator>Reporter {number % 7}</dc:creator>
<category>{rng.choice(WORDS)}</category><category>{rng.choice(WORDS)}</category>
<description>{_cdata("<p>" + _sentence(rng, 25) + "</p>")}</description>
<content:encoded>{_cdata(_article_html(rng, number))}</content:encoded>
<enclosure url="https://cdn.example.com/{number}.mp3" type="audio/mpeg" length="{1000 + number}"/></item>"""
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>Synthetic {seed}</title><link>https://news.example.com/</link><ttl>30</ttl>"
        + "\n".join(items)
        + "</channel></rss>"
    ).encode()


def synthetic_atom(seed: int) -> bytes:
    rng = random.Random(seed)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    entries = []
    for number in range(ENTRIES_PER_FEED):
        moment = (start - timedelta(minutes=41 * number)).isoformat()
        summary = "<p>" + _sentence(rng, 25) + "</p>"
        entries.append(
            f"""<entry><title type="html">{_sentence(rng, 9)} &amp;amp; more</title>
<link rel="alternate" href="/{seed}/post/{number}"/><id>tag:blog.example.org,2024:{seed}-{number}</id>
<published>{moment}</published><updated>{moment}</updated><author><name>Writer {number % 5}</name></author>
<category term="{rng.choice(WORDS)}"/><summary type="html">{_escape(summary)}</summary>
<content type="html">{_escape(_article_html(rng, number))}</content></entry>"""
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://blog.example.org/">'
        f'<title>Synthetic Atom {seed}</title><link href="https://blog.example.org/"/><id>urn:feed:{seed}</id>'
        f"<updated>{start.isoformat()}</updated>" + "\n".join(entries) + "</feed>"
    ).encode()


def _escape(markup: str) -> str:
    return markup.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shared_data() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("AGG_SHARED_DATA", default))


def feeds_dev_documents() -> list[Document]:
    """The feed documents of feeds-dev, as a server would deliver them (gzip already undone)."""
    root = shared_data() / "feeds-dev"
    if not root.is_dir():
        return []
    documents = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix in (".opml", ".md") or "expected-output" in path.parts:
            continue
        body = path.read_bytes()
        if path.name in GZIPPED_DOCUMENTS:
            body = gzip.decompress(body)
        documents.append((f"https://feeds.example.net/{path.relative_to(root).as_posix()}", body))
    return documents


# --- timing ------------------------------------------------------------------


def _feedparser(**options: bool) -> Callable[[Document], int]:
    def run(document: Document) -> int:
        url, body = document
        headers = {"content-location": url, "content-type": "application/xml"}
        return len(feedparser.parse(io.BytesIO(body), response_headers=headers, **options).entries)

    return run


def _agg(document: Document) -> int:
    url, body = document
    return len(parse_feed(body, url, {"content-type": "application/xml"}).entries)


def _agg_feedparser_path(document: Document) -> int:
    url, body = document
    return len(_parse_xml_feed(body, url, {"content-type": "application/xml"}).entries)


def _fastfeedparser(document: Document) -> int:
    try:
        return len(fastfeedparser.parse(document[1])["entries"])
    except Exception:  # it raises on documents it cannot read; those would go to the fallback
        return 0


def parse_module_at(revision: str) -> types.ModuleType | None:
    """The parse stage as it was at a git revision, loaded beside this one; None if it is the working copy's.

    Before the stage became a package it was one file, executed here as a module of its own; a package is written
    to a temporary folder and imported under another name (its modules import each other relatively).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

    files = git("ls-tree", "-r", "--name-only", revision, "--", "aggregator/parse.py", "aggregator/parse").split()
    sources = {name: git("show", f"{revision}:{name}") for name in files if name.endswith(".py")}
    working = {str(path.relative_to(ROOT)): path.read_text() for path in (ROOT / "aggregator" / "parse").glob("*.py")}
    if sources == working:
        return None
    name = f"parse_at_{revision}".replace("-", "_").replace("~", "_").replace("^", "_")
    if list(sources) == ["aggregator/parse.py"]:
        module = types.ModuleType(name)
        exec(compile(sources["aggregator/parse.py"], f"{revision}:aggregator/parse.py", "exec"),  # noqa: S102
             module.__dict__)  # the project's own history
        return module
    # Its files are needed only while it is imported: every module of the package imports the others at its top.
    with tempfile.TemporaryDirectory(prefix="agg-parse-bench-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        for path, source in sources.items():
            (folder / Path(path).name).write_text(source)
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def _module_parsers(module: types.ModuleType) -> tuple[Callable[[Document], int], Callable[[Document], int]]:
    """(the whole parse stage, its feedparser path only) of one version of the parse stage."""

    def whole(document: Document) -> int:
        return len(module.parse_feed(document[1], document[0], {"content-type": "application/xml"}).entries)

    def feedparser_path(document: Document) -> int:
        return len(module._parse_xml_feed(document[1], document[0], {"content-type": "application/xml"}).entries)

    return whole, feedparser_path


def parsers(before: types.ModuleType | None, label: str) -> dict[str, Callable[[Document], int]]:
    table = {
        "feedparser (defaults)": _feedparser(),
        "feedparser sanitize=off": _feedparser(sanitize_html=False),
        "feedparser sanitize=off resolve=off": _feedparser(sanitize_html=False, resolve_relative_uris=False),
    }
    if before is not None:
        whole, feedparser_path = _module_parsers(before)
        table[f"agg, feedparser path only @{label}"] = feedparser_path
        table[f"agg parse_feed @{label} (before)"] = whole
    table["agg, feedparser path only"] = _agg_feedparser_path
    table["agg parse_feed (fast path)"] = _agg
    if fastfeedparser is not None:
        table["fastfeedparser (reference, not normalised)"] = _fastfeedparser
    return table


def measure(
    table: dict[str, Callable[[Document], int]], inputs: dict[str, list[Document]], repeat: int
) -> dict[str, dict[str, float]]:
    """Entries per second of every parser on every input, best of ``repeat`` rounds.

    Rounds interleave the parsers, so that a burst of load on a shared
    machine slows all of them rather than whichever happened to be running.
    """
    best = {name: {label: float("inf") for label in inputs} for name in table}
    entries = {name: {label: 0 for label in inputs} for name in table}
    for _ in range(repeat):
        for name, parse in table.items():
            for label, documents in inputs.items():
                started = time.process_time()
                entries[name][label] = sum(parse(document) for document in documents)
                best[name][label] = min(best[name][label], time.process_time() - started)
    return {name: {label: entries[name][label] / best[name][label] for label in inputs} for name in table}


# --- fast-path coverage -------------------------------------------------------


def fast_path_coverage(documents: list[Document]) -> tuple[int, list[str]]:
    """How many documents the fast path takes, and those where it disagrees with the feedparser path."""
    taken, differing = 0, []
    for url, body in documents:
        headers = {"content-type": "application/xml"}
        fast = read_common_rss(body, url, headers)
        if fast is not None:
            taken += 1
            if fast != _parse_xml_feed(body, url, dict(headers)):
                differing.append(url)
    return taken, differing


def compare_html_to_text(before: types.ModuleType, inputs: dict[str, list[Document]], repeat: int) -> None:
    """Microseconds per fragment of html_to_text before and after, and how many fragments read differently."""
    print(f"\nhtml_to_text, microseconds per summary/content fragment, best of {repeat}")
    print(f"{'input':24}{'fragments':>10}{'before':>10}{'after':>10}{'speed-up':>10}{'differ':>8}")
    for label, documents in inputs.items():
        fragments = [text for url, body in documents for entry in parse_feed(body, url).entries
                     for text in (entry.summary, entry.content) if text]
        best = {"before": float("inf"), "after": float("inf")}
        for _ in range(repeat):
            for name, function in (("before", before.html_to_text), ("after", html_to_text)):
                started = time.process_time()
                for fragment in fragments:
                    function(fragment)
                best[name] = min(best[name], time.process_time() - started)
        differ = sum(1 for fragment in fragments if before.html_to_text(fragment) != html_to_text(fragment))
        per = {name: seconds / len(fragments) * 1e6 for name, seconds in best.items()}
        print(f"{label:24}{len(fragments):>10}{per['before']:>10.1f}{per['after']:>10.1f}"
              f"{per['before'] / per['after']:>9.2f}x{differ:>8}")


# --- report ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--feeds", type=int, default=4, help="synthetic feeds of each format (50 entries each)")
    options.add_argument("--repeat", type=int, default=5, help="passes per measurement; the best is kept")
    options.add_argument("--before", default="HEAD", metavar="REV",
                         help="git revision of the parse stage to compare with (default HEAD; e4a24a4: lxml fast path, "
                              "before its normalisation was made faster)")
    arguments = options.parse_args(argv)
    before = parse_module_at(arguments.before)
    if before is None:
        print(f"the parse stage is the same as at {arguments.before}: no before/after rows (pass --before REV)")

    inputs: dict[str, list[Document]] = {
        "fetch_scale RSS": [(f"http://127.0.1.1:8000/feeds/{n}.xml", feed_document(n, "http://127.0.1.1:8000"))
                            for n in range(arguments.feeds)],
        "synthetic RSS": [(f"https://news.example.com/{n}/rss", synthetic_rss(n)) for n in range(arguments.feeds)],
        "synthetic Atom": [(f"https://blog.example.org/{n}/atom", synthetic_atom(n)) for n in range(arguments.feeds)],
    }
    if RealNews.available():  # what fetch_scale.py serves by default: real headlines and sentences, curly quotes
        news = RealNews(1000)
        inputs["fetch_scale real text"] = [
            (f"http://127.0.1.1:8000/feeds/{n}.xml", feed_document(n, "http://127.0.1.1:8000", news))
            for n in range(arguments.feeds)]
    corpus = feeds_dev_documents()
    if corpus:
        inputs["feeds-dev XML"] = [document for document in corpus if not document[0].endswith(".json")]
    else:
        print("feeds-dev not found under AGG_SHARED_DATA: synthetic feeds only")

    table = parsers(before, arguments.before)
    results = measure(table, inputs, arguments.repeat)
    baseline = results["feedparser (defaults)"]

    print(f"entries per CPU second, best of {arguments.repeat} (x = relative to feedparser defaults)")
    header = f"{'parser':38}" + "".join(f"{label:>24}" for label in inputs)
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        cells = "".join(f"{row[label]:>14,.0f} ({row[label] / baseline[label]:4.2f}x)" for label in inputs)
        print(f"{name:38}{cells}")
    print("inputs: " + ", ".join(f"{label}: {len(docs)} documents, {sum(_agg(d) for d in docs)} entries" for label, docs in inputs.items()))

    agg_row, slow_row = results["agg parse_feed (fast path)"], results["agg, feedparser path only"]
    summary = ", ".join(f"{label} {agg_row[label] / slow_row[label]:.1f}x" for label in inputs)
    print(f"summary: agg parse_feed vs agg's feedparser path, entries/s: {summary}")
    if before is not None:
        before_row = results[f"agg parse_feed @{arguments.before} (before)"]
        summary = ", ".join(f"{label} {agg_row[label] / before_row[label]:.2f}x" for label in inputs)
        print(f"summary: agg parse_feed now vs @{arguments.before}, entries/s: {summary}")
        compare_html_to_text(before, inputs, arguments.repeat)
    if corpus:
        xml_documents = inputs["feeds-dev XML"]
        taken, differing = fast_path_coverage(xml_documents)
        print(f"fast path taken for {taken}/{len(xml_documents)} feeds-dev XML documents; "
              f"{len(differing)} differ from the feedparser path" + "".join(f"\n  {url}" for url in differing))


if __name__ == "__main__":
    main()
