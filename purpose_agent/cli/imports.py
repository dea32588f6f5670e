"""``purpose-agent import langgraph``: threads from LangGraph's own checkpointers into a store.

The work is :func:`purpose_agent.integrations.langgraph.imports.import_threads`; this module
opens the source (``PostgresSaver`` or ``SqliteSaver``, see
:mod:`~purpose_agent.integrations.langgraph.sources`) and the store, shows progress on
standard error (when it is a terminal and neither ``--quiet`` nor ``--json`` is given), prints
the summary, and exits non-zero when a thread was refused. LangGraph is imported only when the
command runs, so the rest of the command line works without the ``langgraph`` extra.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from purpose_agent.cli.app import on_interrupt, print_then_fail
from purpose_agent.cli.options import json_option, url_option
from purpose_agent.cli.output import CommandFailed, console, count, emit_json
from purpose_agent.cli.progress import runs_bar
from purpose_agent.cli.stores import open_url
from purpose_agent.errors import InvalidInput
from purpose_agent.stores.open import describe

if TYPE_CHECKING:
    from purpose_agent.integrations.langgraph.imports import ImportProgress, ImportReport

_NEEDS_LANGGRAPH = (
    "importing LangGraph threads needs LangGraph: pip install 'purpose-agent[langgraph]'"
)


@click.group(name="import")
def import_group() -> None:
    """Import threads from another checkpointer into the store."""


@dataclass(frozen=True)
class _ThreadsDone:
    """An import's progress as the bar over runs reads it: a thread for a run."""

    run_id: str
    runs_done: int
    runs_total: int
    events_done: int


@contextmanager
def _threads_bar(show: bool) -> Iterator[Callable[[ImportProgress], None] | None]:
    """A bar over threads, with the thread at hand and the checkpoints written so far."""
    with runs_bar(show, "importing", unit="checkpoints") as update:
        if update is None:
            yield None
            return
        moved = update

        def step(done: ImportProgress) -> None:
            moved(
                _ThreadsDone(
                    done.thread_id, done.threads_done, done.threads_total, done.checkpoints_done
                )
            )

        yield step


def _summary(report: ImportReport) -> str:
    # A checkpoint an earlier import left without some of its writes is neither written nor
    # already there: said apart, so that the three add up to the source's checkpoints.
    completed = report.checkpoints_completed
    return (
        f"{count(report.threads_total, 'thread')} ({report.threads_imported:,} imported, "
        f"{report.threads_unchanged:,} already there, {len(report.problems):,} refused), "
        f"{count(report.checkpoints, 'checkpoint')} and {count(report.writes, 'write')} "
        "written, "
        + (
            f"{count(completed, 'checkpoint')} completed (missing writes added), "
            if completed
            else ""
        )
        + f"{count(report.checkpoints_present, 'checkpoint')} already there"
    )


@import_group.command(name="langgraph")
@click.option(
    "--from",
    "source_url",
    required=True,
    metavar="SOURCE",
    help="LangGraph's checkpointer: postgres://USER@HOST/DB (PostgresSaver) or "
    "sqlite:PATH (SqliteSaver).",
)
@url_option
@click.option(
    "--thread",
    "threads",
    multiple=True,
    metavar="ID",
    help="Import this thread (repeatable); every thread of the source by default.",
)
@click.option(
    "--stop-on-conflict",
    is_flag=True,
    help="Stop at the first thread the store holds with other content, instead of going on.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Threads imported at once (a server database takes several faster).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def langgraph(
    source_url: str,
    url: str | None,
    threads: tuple[str, ...],
    stop_on_conflict: bool,
    workers: int,
    quiet: bool,
    as_json: bool,
) -> None:
    """Import LangGraph threads (checkpoints, writes, interrupts) from SOURCE into the store.

    Every checkpoint of every namespace of each thread keeps its id, parent, metadata and
    values, and its pending writes their tasks, so a graph compiled with PurposeAgentSaver
    on the store resumes each thread as it would have on SOURCE. The import can be
    interrupted and run again: what is already in the store is recognised and nothing is
    written twice. A thread the store holds with other content is refused, never merged;
    the exit status is 1 if any thread was refused.
    """
    try:
        from purpose_agent.integrations.langgraph import (  # noqa: PLC0415
            PurposeAgentSaver,
            import_threads,
        )
        from purpose_agent.integrations.langgraph.sources import (  # noqa: PLC0415
            open_source,
            parse_source,
        )
    except ImportError as exc:
        raise InvalidInput(_NEEDS_LANGGRAPH) from exc
    source = parse_source(source_url)
    on_interrupt(
        "what was imported stays, and a thread is written checkpoint by checkpoint; "
        "run the same command again to finish"
    )
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    with (
        open_source(source) as reader,
        open_url(url, create=True) as store,
        _threads_bar(show_bar) as progress,
    ):
        where = describe(store)
        report = import_threads(
            reader,
            PurposeAgentSaver(store),
            threads or None,
            stop_on_conflict=stop_on_conflict,
            workers=workers,
            progress=progress,
            where=source.shown,
        )
    failure = None
    if not report.ok:
        failure = CommandFailed(
            f"{len(report.problems)} of {count(report.threads_total, 'thread')} not imported"
        )
    print_then_fail(lambda: _print_report(report, source.shown, where, as_json), failure)


def _print_report(report: ImportReport, source: str, where: str, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "source": source,
                "dest": where,
                "ok": report.ok,
                "threads_total": report.threads_total,
                "threads_imported": report.threads_imported,
                "threads_unchanged": report.threads_unchanged,
                "checkpoints": report.checkpoints,
                "writes": report.writes,
                "checkpoints_present": report.checkpoints_present,
                "checkpoints_completed": report.checkpoints_completed,
                "problems": [
                    {"thread_id": p.thread_id, "message": p.message} for p in report.problems
                ],
            }
        )
        return
    out = console()
    out.print(f"Imported {source} -> {where}")
    for problem in report.problems:
        out.print(f"  REFUSED {problem.thread_id!r}: {problem.message}")
    out.print(_summary(report))
