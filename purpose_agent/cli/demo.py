"""``purpose-agent demo``: a run you can kill and resume.

The run itself is :class:`purpose_agent.cli.demo_agent.DemoRun`; this module prints what happens
and, on request, kills its own process with a real ``SIGKILL`` (no exception handler, no
``finally``, no flush of anything but what was committed):

* ``--crash-after N``: right after step N was committed;
* ``--crash-during N``: inside step N's commit, after its events were sent to the database
  and before it commits them (SQL stores), to show that a step lands whole or not at all.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from typing import Any

import click
from rich.console import Console
from sqlalchemy import Engine, event

from purpose_agent.cli.app import on_interrupt
from purpose_agent.cli.demo_agent import DEFAULT_STEPS, DemoRun, StepRecord
from purpose_agent.cli.options import url_flag, url_option
from purpose_agent.cli.output import console, count, money
from purpose_agent.cli.stores import open_url
from purpose_agent.errors import InvalidInput
from purpose_agent.stores.open import describe
from purpose_agent.stores.sql import SQLCheckpointer

DEFAULT_RUN_ID = "demo"
_WHY = {
    "skipped": "restored from the snapshot",
    "replayed": "rebuilt from its events after the snapshot",
}


def _kill(out: Console, message: str) -> None:
    out.print(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_inside_next_commit(engine: Engine, out: Console, step: int) -> None:
    def on_commit(_conn: Any) -> None:
        _kill(
            out,
            f"--crash-during {step}: killing this process inside step {step}'s save, before "
            "it is committed",
        )

    opened = [False]

    def before_statement(*args: Any) -> None:
        # A write transaction (SQLite, MariaDB) ends with a COMMIT statement, which
        # SQLAlchemy sees like any other: the kill lands after the step's events are sent and
        # just before the server commits them. On Postgres a step is one autocommit statement,
        # which commits as it runs: the kill lands just before it is sent.
        statement = str(args[2]).lstrip().upper()
        if statement.startswith(("BEGIN", "START TRANSACTION")):
            opened[0] = True
        elif statement.startswith("COMMIT") or (
            not opened[0] and statement.startswith(("WITH", "INSERT")) and "PA_EVENTS" in statement
        ):
            on_commit(None)

    # Engine events reach the store's connections, including those of its derived engines.
    event.listen(engine, "before_cursor_execute", before_statement)
    event.listen(engine, "commit", on_commit)


def _line(record: StepRecord) -> str:
    if record.how == "run":
        note = "committed with the state" if record.snapshot else "committed (events only)"
    else:
        note = _WHY[record.how]
    seqs = f"{record.first_seq}-{record.last_seq}"
    return (
        f"  step {record.step:<3} {record.how:<9} {record.item:<16} "
        f"{money(record.price_cents):>7}   seq {seqs:<9} {note}"
    )


@click.command()
@click.option(
    "--run-id", default=DEFAULT_RUN_ID, show_default=True, help="The run to start or resume."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help=f"Steps of a new run [default: {DEFAULT_STEPS}]; a resumed run keeps its own.",
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Save the state with every n-th step only; the steps between are replayed on resume.",
)
@click.option(
    "--crash-after",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Kill this process with SIGKILL right after step N is committed.",
)
@click.option(
    "--crash-during",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Kill this process with SIGKILL inside step N's commit (SQL stores).",
)
@url_option
def demo(
    run_id: str,
    steps: int | None,
    snapshot_every: int,
    crash_after: int | None,
    crash_during: int | None,
    url: str | None,
) -> None:
    """Run a small deterministic agent that checkpoints every step; run it again to resume.

    The agent prices a shopping list, one item per step (a scripted model picks the item, a
    tool returns its price). Kill it at any point - with --crash-after, or with kill -9 - and
    run the same command again: it resumes from the snapshot and the events after it, and ends
    in the same state as a run that was never interrupted.
    """
    on_interrupt(
        f"run {run_id!r} keeps every step it committed; run the same command again to resume it",
        prints_as_it_works=True,
    )
    out = console()
    with open_url(url, create=True) as store:
        if crash_during is not None and not isinstance(store, SQLCheckpointer):
            raise InvalidInput("--crash-during needs a SQL store (it kills inside a commit)")
        run = DemoRun(store, run_id, steps=steps, snapshot_every=snapshot_every)
        for flag, step in (("--crash-after", crash_after), ("--crash-during", crash_during)):
            if step is not None and step > run.steps:
                raise InvalidInput(f"{flag} {step}: run {run_id!r} has only {run.steps} steps")
        where = describe(store)
        if not run.resumed:
            out.print(f"Run {run_id!r} on {where}: new, {count(run.steps, 'step')}")
        else:
            tail = run.state.seq - (run.snapshot_seq or 0)
            origin = (
                f"the snapshot at seq {run.snapshot_seq}"
                if run.snapshot_seq is not None
                else "no snapshot"
            )
            out.print(
                f"Run {run_id!r} on {where}: resuming from {origin} and "
                f"{count(tail, 'event')} after it"
            )
        for record in run.history:
            out.print(_line(record))
        if run.partial_events:
            out.print(
                f"  {run.partial_events} events of an unfinished step were found; "
                "the step runs again and re-saving them is a no-op"
            )
        if run.finished:
            out.print(f"Run {run_id!r} had already finished; nothing to do.")
        for step in run.pending_steps():
            if step == crash_during:
                assert isinstance(store, SQLCheckpointer)  # checked above
                _kill_inside_next_commit(store.engine, out, step)
            record = run.run_step(step)
            out.print(_line(record))
            if step == crash_after:
                _kill(out, f"--crash-after {step}: killing this process with SIGKILL")
        final = run.finish()
        data = final.data
        out.print(
            f"Run {run_id!r} finished at seq {final.seq}: {count(len(data['cart']), 'item')}, "
            f"total {money(int(data['total_cents']))}, state digest {data['digest']}"
        )
        show = f"purpose-agent runs show {shlex.quote(run_id)}{url_flag(url, where)}"
        out.print(f"Inspect it with: {show}")
