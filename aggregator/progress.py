"""The progress bars shown on a terminal: ``agg fetch`` (feeds done of total, failures so far)
and ``agg group`` (reports placed of those waiting).

:class:`FetchProgress` is a :data:`aggregator.pipeline.ProgressCallback`;
the command line shows a bar only when stderr is a terminal and neither
``--quiet`` nor ``-v`` is given (debug logs and a live bar would garble
each other).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from aggregator.pipeline import FeedOutcome


class _Bar:
    """A rich progress bar shown for the life of a ``with`` block, and gone from the terminal after it."""

    _bar: Progress

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._bar.stop()


class FetchProgress(_Bar):
    """``with FetchProgress(console) as progress: run(..., progress=progress)``."""

    def __init__(self, console: Console):
        self._failed = 0
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("feeds, [red]{task.fields[failed]} failed[/]"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("fetching", total=None, failed=0)

    def __call__(self, outcome: FeedOutcome, done: int, total: int) -> None:
        if outcome.status == "failed":
            self._failed += 1
        description = "fetching" if done < total else "extracting articles, grouping stories"
        self._bar.update(self._task, completed=done, total=total, failed=self._failed, description=description)


class GroupingProgress(_Bar):
    """``with GroupingProgress(console) as progress: finish_grouping(..., progress=progress)``."""

    def __init__(self, console: Console):
        self._bar = Progress(SpinnerColumn(), TextColumn("grouping reports into stories"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self._task = self._bar.add_task("grouping", total=None)

    def __call__(self, placed: int, waiting: int) -> None:
        self._bar.update(self._task, completed=placed, total=waiting)
