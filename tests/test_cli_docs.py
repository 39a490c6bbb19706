"""The command line documents itself: docs/cli.md is current, every command has examples,
exit statuses and shell completion are documented (and completion works)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator import clidoc
from aggregator.cli import cli

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = [ctx.command_path for ctx, _ in clidoc.commands()]


def test_docs_cli_md_is_generated_from_the_current_cli():
    assert DOCS.exists(), "docs/cli.md is missing: run `python -m aggregator.clidoc > docs/cli.md` (or make docs)"
    assert DOCS.read_text(encoding="utf-8") == clidoc.render(), (
        "docs/cli.md is stale: run `python -m aggregator.clidoc > docs/cli.md` (or make docs)")


def test_docs_cover_every_command():
    text = DOCS.read_text(encoding="utf-8")
    for path in COMMANDS:
        assert f"\n## {path}\n" in text


@pytest.mark.parametrize("path", COMMANDS)
def test_the_docs_show_what_help_prints(path):
    shown = CliRunner().invoke(cli, [*path.split()[1:], "--help"], prog_name="agg",
                               terminal_width=clidoc.WIDTH).output
    assert f"\n## {path}\n\n```text\n{shown.rstrip()}\n```\n" in clidoc.render()


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_help_has_examples(path):
    result = CliRunner().invoke(cli, [*path.split()[1:], "--help"], prog_name="agg")
    assert result.exit_code == 0
    examples = result.output.split("Examples:\n", 1)
    assert len(examples) == 2, f"'{path} --help' has no Examples: block"
    assert examples[1].lstrip().startswith("agg "), f"'{path} --help' Examples: block does not start with a command"


def test_top_level_help_documents_exit_statuses_and_completion():
    text = CliRunner().invoke(cli, ["--help"], prog_name="agg").output
    for status in ("0 ", "1 ", "2 ", "75 "):
        assert f"\n    {status}" in text
    assert '_AGG_COMPLETE=bash_source agg' in text and "_AGG_COMPLETE=zsh_source agg" in text


def test_documented_completion_works():
    env = dict(os.environ, _AGG_COMPLETE="bash_complete", COMP_WORDS="agg fe", COMP_CWORD="1")
    result = subprocess.run([sys.executable, "-m", "aggregator"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,feeds", "plain,fetch"]


def test_usage_errors_exit_2():
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2
    assert CliRunner().invoke(cli, ["search", "x", "--limit", "0"]).exit_code == 2


def test_the_grouping_settings_table_gives_every_setting_with_its_default():
    """docs/dedup.md's table of the dedup: block is the code's: every field, its default, in order."""
    from dataclasses import fields

    from aggregator.dedup import DedupSettings

    text = (DOCS.parent / "dedup.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| `")]
    documented = [(name.strip("| `"), default) for name, default in rows]
    assert documented == [(f.name, str(f.default)) for f in fields(DedupSettings)]
