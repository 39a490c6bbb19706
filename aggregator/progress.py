"""The progress bars shown on a terminal: ``agg fetch`` (feeds done of total, failures so far,
then article pages extracted of those queued) and ``agg group`` (reports placed of those waiting).

:class:`FetchProgress` is a :data:`aggregator.pipeline.ProgressCallback`, and its
:meth:`FetchProgress.pages` a :data:`aggregator.pipeline.PageProgressCallback`;
the command line shows a bar only when stderr is a terminal and neither
``--quiet`` nor ``-v`` is given (debug logs and a live bar would garble
each other).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

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
    """``with FetchProgress(console) as progress: run(..., progress=progress, page_progress=progress.pages)``.

    One line for the feeds and, once a feed queues article pages, one for the pages.
    """

    def __init__(self, console: Console):
        self._failed = 0
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("fetching", total=None, unit=self._feeds_unit())
        self._pages_task: TaskID | None = None

    def _feeds_unit(self) -> str:
        return f"feeds, [red]{self._failed} failed[/]"

    def __call__(self, outcome: FeedOutcome, done: int, total: int) -> None:
        if outcome.status == "failed":
            self._failed += 1
        description = "fetching" if done < total else "extracting articles, grouping stories"
        self._bar.update(self._task, completed=done, total=total, unit=self._feeds_unit(), description=description)

    def pages(self, done: int, total: int) -> None:
        if self._pages_task is None:
            self._pages_task = self._bar.add_task("article pages", total=total, unit="pages extracted")
        self._bar.update(self._pages_task, completed=done, total=total)


class GroupingProgress(_Bar):
    """``with GroupingProgress(console) as progress: finish_grouping(..., progress=progress)``."""

    def __init__(self, console: Console):
        self._bar = Progress(SpinnerColumn(), TextColumn("grouping reports into stories"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self._task = self._bar.add_task("grouping", total=None)

    def __call__(self, placed: int, waiting: int) -> None:
        self._bar.update(self._task, completed=placed, total=waiting)
