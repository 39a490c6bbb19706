"""Everyday commands import only what they use: checked in ``python -X importtime`` of real runs.

Start-up counts in every cron run and every shell command, so the heavy
libraries load only in the commands that use them: the HTTP client (aiohttp),
the scheduler, the parsers and extractors, the exports' XML and HTML
libraries, the YAML reader when no config is read. The times themselves are
measured by ``bench/startup.py``, never here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import sample_db

HEAVY = ("aiohttp", "apscheduler", "feedparser", "trafilatura", "pebble", "lxml", "nh3", "rich", "ruamel",
         "aggregator.pipeline", "aggregator.fetch", "aggregator.export", "aggregator.daemon")


def import_tree(args: list[str]) -> list[tuple[int, str]]:
    """Each module ``agg ARGS`` imported, with its depth, in importtime's order (a module after its imports)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "aggregator", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    tree = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            name = line.split("|")[2].rstrip()
            tree.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    return tree


def importer(tree: list[tuple[int, str]], index: int) -> str:
    """The module whose import brought in the one at ``index`` ("" at the top)."""
    depth = tree[index][0]
    return next((name for level, name in tree[index + 1:] if level < depth), "")


def top_level(name: str) -> str:
    return next((heavy for heavy in HEAVY if name == heavy or name.startswith(heavy + ".")), "")


@pytest.mark.parametrize("command", [["--help"], ["list"], ["status"], ["list", "--json"], ["status", "--json"]],
                         ids=" ".join)
def test_everyday_commands_import_no_heavy_library(tmp_path: Path, command: list[str]):
    db = sample_db.build(tmp_path / "agg.db")
    tree = import_tree(["--config", str(sample_db.write_config(tmp_path / "feeds.yaml")), "--db", str(db), *command])
    loaded = {name for _, name in tree}
    assert "aggregator.cli" in loaded
    heavy = sorted({top_level(name) for name in loaded} - {""})
    assert heavy == [], f"agg {' '.join(command)} imported {heavy}"


def test_help_opens_no_database_and_reads_the_dedup_settings_without_the_engine(tmp_path: Path):
    # aggregator.config takes DedupSettings from aggregator.dedup, whose package loads only its settings.
    loaded = {name for _, name in import_tree(["--help"])}
    assert "aggregator.dedup.settings" in loaded
    engine = {"sqlite_utils", "rapidfuzz", "wordfreq", "aggregator.dedup.features", "aggregator.dedup.grouper"}
    assert not loaded & engine, sorted(loaded & engine)


def test_piped_list_reads_without_sqlite_utils(tmp_path: Path):
    # Its 40-120 ms of imports were a quarter of piped `agg list`'s 0.5 s target (issue 17); the listing
    # reads through the store's own connection.
    db = sample_db.build(tmp_path / "agg.db")
    loaded = {name for _, name in import_tree(["--db", str(db), "list"])}
    assert "aggregator.store" in loaded and "sqlite_utils" not in loaded
