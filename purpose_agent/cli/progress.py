"""Progress on standard error: bars over runs, and a spinner for one long step.

Commands that walk runs (copy, verify, prune) count them; a migration, a change of layout or
a deletion (``runs delete``) is one transaction whose progress the database does not tell, so
it gets a spinner. Shown only
where a person watches (the commands decide: a terminal, no ``--quiet``, no ``--json``); each
bar counts runs and shows the run at hand and the events done so far.
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
    SpinnerColumn,
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


def run_columns(title: str, unit: str = "events") -> tuple[ProgressColumn, ...]:
    """The columns of a bar over runs: ``title`` (rich markup) first, then the run at hand.

    ``unit`` names what ``events_done`` counts (a LangGraph import counts checkpoints).
    """
    return (
        TextColumn(f"{title} {{task.fields[run]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn(f"{{task.fields[events]}} {unit}"),
        TimeElapsedColumn(),
    )


@contextmanager
def runs_bar(
    show: bool, verb: str, unit: str = "events"
) -> Iterator[Callable[[RunsDone], None] | None]:
    """A bar over runs labelled ``verb``, and the callback that moves it (``None`` if hidden)."""
    if not show:
        yield None
        return
    with Progress(
        *run_columns(f"[bold]{verb}[/bold]", unit), console=err_console(), transient=True
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


@contextmanager
def working(show: bool, what: str) -> Iterator[None]:
    """A spinner with ``what`` (plain text) and the time elapsed, while one long step runs.

    A migration or a change of layout of a large event table takes minutes in one statement
    or transaction, and deleting a run of millions of events takes seconds to minutes: without
    a sign of life, a user cannot tell it from a hang.
    """
    if not show:
        yield
        return
    with Progress(
        SpinnerColumn(),
        TextColumn(escape(what)),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as spinner:
        spinner.add_task(what, total=None)
        yield
