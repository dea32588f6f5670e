"""Progress bars on standard error for commands that walk runs (copy, verify, prune).

Shown only where a person watches (the commands decide: a terminal, no ``--quiet``, no
``--json``); each bar counts runs and shows the run at hand and the events done so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from purpose_agent.cli.output import err_console


class RunsDone(Protocol):
    """Where a walk over runs stands (``CopyProgress``, ``VerifyProgress``)."""

    @property
    def run_id(self) -> str:
        """The run at hand."""
        ...

    @property
    def runs_done(self) -> int:
        """Runs finished."""
        ...

    @property
    def runs_total(self) -> int:
        """Runs in all."""
        ...

    @property
    def events_done(self) -> int:
        """Events done over all runs."""
        ...


def run_columns(title: str) -> tuple[ProgressColumn, ...]:
    """The columns of a bar over runs: ``title`` (rich markup) first, then the run at hand."""
    return (
        TextColumn(f"{title} {{task.fields[run]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[events]} events"),
        TimeElapsedColumn(),
    )


@contextmanager
def runs_bar(show: bool, verb: str) -> Iterator[Callable[[RunsDone], None] | None]:
    """A bar over runs labelled ``verb``, and the callback that moves it (``None`` if hidden)."""
    if not show:
        yield None
        return
    with Progress(
        *run_columns(f"[bold]{verb}[/bold]"), console=err_console(), transient=True
    ) as bar:
        task = bar.add_task("runs", total=None, run="", events=0)

        def update(step: RunsDone) -> None:
            bar.update(
                task,
                total=step.runs_total,
                completed=step.runs_done,
                run=escape(step.run_id),
                events=f"{step.events_done:,}",
            )

        yield update
