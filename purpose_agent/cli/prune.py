"""``purpose-agent prune``: drop events a snapshot covers, old runs, and all but the newest.

The work is :func:`purpose_agent.ops.prune.prune`, which calls the store's own ``compact`` and
``delete_runs``; this module shows progress on standard error (when it is a terminal and
neither ``--quiet``, ``--json`` nor ``--dry-run`` is given) and prints what was removed.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import click
from rich.markup import escape
from rich.progress import Progress

from purpose_agent.cli.app import on_interrupt
from purpose_agent.cli.options import (
    Duration,
    json_option,
    selection_options,
    url_option,
)
from purpose_agent.cli.output import age, console, count, emit_json, err_console, selection_text
from purpose_agent.cli.progress import run_columns
from purpose_agent.cli.stores import open_url
from purpose_agent.ops.prune import Progress as OnProgress
from purpose_agent.ops.prune import PruneProgress, PruneResult, prunable
from purpose_agent.ops.prune import prune as prune_store
from purpose_agent.stores.open import describe


@contextmanager
def _progress_bar(show: bool, planned: PruneResult | None) -> Iterator[OnProgress | None]:
    """A bar per stage, its total the dry run's count (the runs of each stage)."""
    if not show or planned is None:
        yield None
        return
    columns = run_columns("[bold]{task.description}[/bold]")
    with Progress(*columns, console=err_console(), transient=True) as bar:
        totals = {"deleting runs": planned.old_runs, "compacting": planned.covered_runs}
        tasks = {
            stage: bar.add_task(stage, total=total, run="", events=0)
            for stage, total in totals.items()
            if total
        }

        def update(step: PruneProgress) -> None:
            task = tasks.get(step.stage)
            if task is None:  # runs that became prunable after the dry run
                task = tasks[step.stage] = bar.add_task(step.stage, total=None, run="", events=0)
            bar.update(
                task,
                completed=step.runs_done,
                run=escape(step.run_id),
                events=f"{step.events_done:,}",
            )

        yield update


def _rule(older_than: timedelta | None, keep_newest: int | None) -> str:
    """Why whole runs go, in the words of the options."""
    parts = []
    if keep_newest is not None:
        parts.append(f"beyond the newest {keep_newest:,}")
    if older_than is not None:
        parts.append(f"not written for {age(older_than)}")
    return " and ".join(parts)


@click.command()
@click.option("--covered", is_flag=True, help="Delete events at or below their run's snapshot seq.")
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    metavar="AGE",
    help="Delete runs not written for longer than AGE (30d, 12h, 90m, 2w...).",
)
@click.option(
    "--keep-newest",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Delete all runs but the N most recently written (with --older-than: only old ones).",
)
@selection_options("Prune only runs")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@url_option
def prune(
    covered: bool,
    older_than: timedelta | None,
    keep_newest: int | None,
    group: str | None,
    prefix: str | None,
    dry_run: bool,
    quiet: bool,
    as_json: bool,
    url: str | None,
) -> None:
    """Remove history a store no longer needs.

    --covered deletes the events recovery never reads again (a run resumes from its snapshot
    and the events after it); --older-than and --keep-newest delete whole runs (store-wide, a
    group's runs only with the group's newest, so a thread in use stays whole); --group and
    --prefix limit all three to some runs, aged one by one. The store's own retention
    methods do the work, a run or a page of runs per transaction, so a prune can be
    interrupted and run again. Try --dry-run first.
    """
    if not covered and older_than is None and keep_newest is None:
        raise click.UsageError(
            "say what to prune: --covered, --older-than AGE, --keep-newest N, or several"
        )
    on_interrupt(
        "what was pruned stays pruned and nothing is half-pruned (a run or a page of runs per "
        "transaction); run the same command again to finish"
    )
    show_bar = not quiet and not as_json and not dry_run and sys.stderr.isatty()
    with open_url(url, create=False) as opened:
        where = describe(opened)
        run = functools.partial(
            prune_store,
            prunable(opened),
            covered=covered,
            older_than=older_than,
            keep_newest=keep_newest,
            group=group,
            prefix=prefix,
        )
        # The bar's totals come from a dry run: one more read of the runs, only on a terminal.
        planned = run(dry_run=True) if show_bar else None
        with _progress_bar(show_bar, planned) as progress:
            result = run(dry_run=dry_run, progress=progress)
    if as_json:
        emit_json({"store": where, **result.to_dict()})
        return
    verb = "Would delete" if dry_run else "Deleted"
    scope = selection_text(group, prefix)
    out = console()
    if older_than is not None or keep_newest is not None:
        out.print(
            f"{verb} {count(result.old_runs, 'run')}{scope} {_rule(older_than, keep_newest)} "
            f"({count(result.old_run_events, 'event')}) from {where}"
        )
    if covered:
        out.print(
            f"{verb} {count(result.covered_events, 'event')} covered by snapshots "
            f"in {count(result.covered_runs, 'run')}{scope} from {where}"
        )
