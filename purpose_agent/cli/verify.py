"""``purpose-agent runs verify``: read every record back, and name the ones that are damaged.

The work is :func:`purpose_agent.ops.verify.verify_runs`; this module shows progress on
standard error (when it is a terminal and neither ``--quiet`` nor ``--json`` is given), prints
the damaged records, and exits 1 when there is one, so that a scheduled check can alert.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table

from purpose_agent.cli.app import on_interrupt, print_then_fail
from purpose_agent.cli.options import json_option, selection_options, url_option
from purpose_agent.cli.output import (
    CommandFailed,
    console,
    count,
    emit_json,
    selection_text,
)
from purpose_agent.cli.progress import runs_bar
from purpose_agent.cli.stores import open_url
from purpose_agent.ops.summaries import run_ids
from purpose_agent.ops.verify import EventCheck, VerifyReport, verify_runs
from purpose_agent.stores.open import describe


def _integration_checks() -> EventCheck | None:
    """The LangGraph saver's checks of its own records, when its extra is installed."""
    try:
        from purpose_agent.integrations.langgraph.payloads import problem  # noqa: PLC0415 - optional extra
    except ImportError:
        return None
    return problem


def _print_report(report: VerifyReport, where: str, scope: str) -> None:
    out = console()
    if report.damaged:
        table = Table(title=f"Damaged records in {where}", title_justify="left")
        table.add_column("run id", overflow="fold")
        table.add_column("record")
        table.add_column("seq", justify="right")
        table.add_column("what is wrong", overflow="fold")
        for damage in report.damaged:
            seq = "?" if damage.seq is None else str(damage.seq)
            table.add_row(damage.run_id or "-", damage.record, seq, damage.detail)
        out.print(table)
    read = (
        f"Read {count(report.runs, 'run')}{scope} in {where}: "
        f"{count(report.events, 'event')} and {count(report.snapshots, 'snapshot')} read back"
    )
    if report.ok:
        out.print(f"{read}; nothing is damaged.")
    else:
        out.print(
            f"{read}; {count(len(report.damaged), 'damaged record')} "
            f"in {count(report.damaged_runs, 'run')}."
        )
    if report.damaged_file:
        out.print(
            "The SQLite file's own pages are damaged: restore it from a backup, or copy what "
            "still reads into a new store (purpose-agent copy) and check that."
        )


@click.command("verify")
@selection_options("Read only runs")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@url_option
def verify(
    group: str | None, prefix: str | None, quiet: bool, as_json: bool, url: str | None
) -> None:
    """Read every event and snapshot back, and list the records that are damaged.

    Each run's events and latest snapshot are decoded as a resume would decode them; a
    damaged record (a row changed by hand, a bad migration, a bit flip) is listed with its run
    and seq, and the run is read on after it. Nothing is written. The exit status is 1 if any
    record is damaged.
    """
    on_interrupt(
        "the check did not finish, so the runs it had not read yet are not known to be sound "
        "(nothing was written); run it again"
    )
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    with (
        open_url(url, create=False, read_only=True) as store,
        runs_bar(show_bar, "reading") as progress,
    ):
        where = describe(store)
        chosen = (
            None if group is None and prefix is None else run_ids(store, group=group, prefix=prefix)
        )
        report = verify_runs(store, chosen, progress, _integration_checks())
    failure = None
    if not report.ok:
        failure = CommandFailed(
            f"{count(len(report.damaged), 'damaged record')} in "
            f"{count(report.damaged_runs, 'run')} of {report.runs:,}"
        )
    if as_json:
        document = {"store": where, "group": group, "prefix": prefix, **report.to_dict()}
        print_then_fail(lambda: emit_json(document), failure)
    else:
        scope = selection_text(group, prefix)
        print_then_fail(lambda: _print_report(report, where, scope), failure)
