"""``purpose-agent copy``: every run from one store into another, with a progress bar.

The work is :func:`purpose_agent.ops.copy.copy_runs`; this module shows progress on standard
error (when it is a terminal and ``--quiet`` is not given), prints the report, and exits
non-zero when a run could not be copied or its counts did not match.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table

from purpose_agent.cli.app import on_interrupt, print_then_fail
from purpose_agent.cli.options import json_option
from purpose_agent.cli.output import CommandFailed, console, emit_json
from purpose_agent.cli.progress import runs_bar
from purpose_agent.cli.stores import open_target
from purpose_agent.db.engine import in_memory_sqlite
from purpose_agent.errors import InvalidInput
from purpose_agent.ops.copy import DEFAULT_BATCH_SIZE, CopyReport, copy_runs
from purpose_agent.stores.open import Target, TargetKind, describe, parse_target


def _report_json(report: CopyReport, source: str, dest: str) -> dict[str, object]:
    return {
        "source": source,
        "dest": dest,
        "ok": report.ok,
        "runs_total": report.runs_total,
        "runs_copied": report.runs_copied,
        "events": report.events,
        "snapshots": report.snapshots,
        "problems": [{"run_id": p.run_id, "message": p.message} for p in report.problems],
        "notes": report.notes,
    }


def _print_report(report: CopyReport, source: str, dest: str) -> None:
    out = console()
    table = Table(title=f"Copied {source} -> {dest}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    table.add_row("runs copied", f"{report.runs_copied:,} of {report.runs_total:,}")
    table.add_row("events copied", f"{report.events:,}")
    table.add_row("snapshots written", f"{report.snapshots:,}")
    out.print(table)
    if report.notes:
        out.print("Not carried over exactly (seed-era data):")
        for note, count in sorted(report.notes.items()):
            out.print(f"  {count:>8,} x {note}")
    for problem in report.problems:
        out.print(f"  FAILED {problem.run_id!r}: {problem.message}")
    if report.ok:
        out.print("Verified: every run's event count, snapshot and group match the source.")


def _in_memory(target: Target) -> bool:
    """Whether ``target`` keeps its runs only in this process (``memory:``, ``sqlite://``)."""
    if target.kind is TargetKind.MEMORY:
        return True
    return target.kind is TargetKind.SQL and target.url is not None and in_memory_sqlite(target.url)


@click.command()
@click.argument("source")
@click.argument("dest")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Events per transaction on the destination.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def copy(source: str, dest: str, batch_size: int, quiet: bool, as_json: bool) -> None:
    """Copy every run (events and snapshots) from SOURCE into DEST.

    SOURCE and DEST are database URLs, jsonl:PATH (a JSONL folder, the seed's included) or, as
    a source, seed-sqlite:PATH (a SQLite file the seed wrote; also detected from
    sqlite:///PATH). Events keep their seqs and keys, so lookups by key (a LangGraph
    checkpoint by its id) work on the copy, and runs keep their groups. The copy streams, and
    can be interrupted and run again: what was copied is recognised, nothing is duplicated.
    Counts and groups are verified at the end; the exit status is 1 if any run failed or does
    not match.
    """
    on_interrupt(
        "run the same command again to finish; what was copied is recognised, nothing is duplicated"
    )
    source_target, dest_target = parse_target(source), parse_target(dest)
    if source_target.same_store(dest_target):
        raise InvalidInput(f"source and destination are the same store: {source_target}")
    if _in_memory(dest_target):
        # The copy was made, verified and reported, then thrown away with the process.
        raise InvalidInput(
            f"the destination {dest_target} is an in-memory store, which does not outlive the "
            "command; give a file (sqlite:///PATH, jsonl:PATH) or a server URL"
        )
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    with (
        open_target(source_target, given=source, create=False, read_only=True) as reader,
        open_target(dest_target, given=dest, create=True) as writer,
        runs_bar(show_bar, "copying") as progress,
    ):
        source_name, dest_name = describe(reader), describe(writer)
        report = copy_runs(reader, writer, progress, batch_size=batch_size)
    failure = None
    if not report.ok:
        failure = CommandFailed(
            f"{len(report.problems)} of {report.runs_total} runs were not copied completely"
        )
    if as_json:
        print_then_fail(lambda: emit_json(_report_json(report, source_name, dest_name)), failure)
    else:
        print_then_fail(lambda: _print_report(report, source_name, dest_name), failure)
