"""``purpose-agent runs``: list, show, page through and delete runs.

Listings are paged (``--limit``/``--offset`` for runs, ``--since``/``--limit`` for events), so
a store with millions of events is never loaded at once; ``runs events --all`` streams a whole
log page by page. ``--json`` prints one JSON document, except for ``runs events``, which prints
JSON Lines (one event per line) so that a script can stream it.
"""

from __future__ import annotations

import itertools
import json

import click
from rich.table import Table

from purpose_agent.cli.options import json_option, url_option
from purpose_agent.cli.output import console, emit_json, emit_json_line, one_line, when
from purpose_agent.cli.stores import open_url
from purpose_agent.errors import InvalidInput
from purpose_agent.ops.summaries import run_detail, run_summaries
from purpose_agent.stores.open import describe

_DATA_WIDTH = 60


def _unknown(run_id: str, where: str) -> InvalidInput:
    return InvalidInput(f"no run {run_id!r} in {where}")


@click.group()
def runs() -> None:
    """List, inspect, page through and delete runs."""


@runs.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Runs per page, most recently written first.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Runs to skip: where the previous page said more start (next_offset in --json).",
)
@json_option
@url_option
def list_runs(limit: int, offset: int, as_json: bool, url: str | None) -> None:
    """List runs, most recently written first."""
    with open_url(url, create=False, read_only=True) as store:
        summaries = run_summaries(store, limit, offset)
        where = describe(store)
    more = len(summaries) == limit and limit > 0
    if as_json:
        emit_json(
            {
                "store": where,
                "offset": offset,
                "limit": limit,
                "next_offset": offset + len(summaries) if more else None,
                "runs": [summary.to_dict() for summary in summaries],
            }
        )
        return
    out = console()
    if not summaries:
        out.print(f"No runs in {where}" + (f" at offset {offset}." if offset else "."))
        return
    table = Table(title=f"Runs in {where}", title_justify="left")
    table.add_column("run id", overflow="fold")
    table.add_column("status")
    table.add_column("last seq", justify="right")
    table.add_column("snapshot", justify="right")
    table.add_column("updated (UTC)", no_wrap=True)
    for summary in summaries:
        table.add_row(
            summary.run_id,
            summary.status or "-",
            str(summary.last_seq),
            "-" if summary.snapshot_seq is None else str(summary.snapshot_seq),
            when(summary.updated_at),
        )
    out.print(table)
    if more:
        out.print(f"More runs: --offset {offset + len(summaries)}")


@runs.command("show")
@click.argument("run_id")
@json_option
@url_option
def show_run(run_id: str, as_json: bool, url: str | None) -> None:
    """Show one run: its status, its events by kind, and its latest state."""
    with open_url(url, create=False, read_only=True) as store:
        detail = run_detail(store, run_id)
        where = describe(store)
    if detail is None:
        raise _unknown(run_id, where)
    if as_json:
        emit_json({"store": where, **detail.to_dict()})
        return
    out = console()
    summary = detail.summary
    table = Table(title=f"Run {run_id!r} in {where}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("status", summary.status or "- (no snapshot)")
    table.add_row("last seq", str(summary.last_seq))
    table.add_row(
        "snapshot seq", "-" if summary.snapshot_seq is None else str(summary.snapshot_seq)
    )
    first = "-" if detail.first_seq is None else str(detail.first_seq)
    table.add_row("events stored", f"{detail.event_count} (from seq {first})")
    for kind, count in detail.kinds.items():
        table.add_row(f"  {kind}", str(count))
    table.add_row("updated (UTC)", when(summary.updated_at))
    out.print(table)
    if detail.state is not None:
        out.print("State data:")
        out.print(json.dumps(detail.state.data, indent=2, ensure_ascii=False))


@runs.command("events")
@click.argument("run_id")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Only events after this seq.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Events per page.",
)
@click.option("--all", "every", is_flag=True, help="Stream every event after --since.")
@json_option
@url_option
def list_events(
    run_id: str, since: int, limit: int, every: bool, as_json: bool, url: str | None
) -> None:
    """Print a run's events in seq order, a page at a time (--json: JSON Lines)."""
    with open_url(url, create=False, read_only=True) as store:
        where = describe(store)
        if every:
            events = store.iter_events(run_id, since)
        else:
            # One more than the page, to know whether to point at the next page.
            events = iter(store.list_events(run_id, since, limit + 1))
        first = next(events, None)
        if first is None and since == 0 and store.load_latest(run_id) is None:
            raise _unknown(run_id, where)
        shown = 0
        last_seq = since
        for event in itertools.chain([first] if first is not None else [], events):
            if not every and shown == limit:
                if not as_json:
                    click.echo(f"More events: --since {last_seq}")
                return
            if as_json:
                emit_json_line(event.to_dict())
            else:
                if shown == 0:
                    click.echo(f"{'seq':>8}  {'kind':<15} {'lane':<8} {'time (UTC)':<24}  data")
                data = one_line(json.dumps(event.data, ensure_ascii=False))
                if len(data) > _DATA_WIDTH:
                    data = data[: _DATA_WIDTH - 3] + "..."
                click.echo(
                    f"{event.seq:>8}  {event.kind.value:<15} {event.lane_id:<8} "
                    f"{when(event.ts):<24}  {data}"
                )
            shown += 1
            last_seq = event.seq
        if shown == 0 and not as_json:
            click.echo(f"No events after seq {since} in run {run_id!r}.")


@runs.command("delete")
@click.argument("run_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
def delete_run(run_id: str, yes: bool, url: str | None) -> None:
    """Delete a run's events and snapshot."""
    with open_url(url, create=False) as store:
        where = describe(store)
        detail = run_detail(store, run_id)
        if detail is None:
            raise _unknown(run_id, where)
        what = f"{detail.event_count} events" + (
            " and its snapshot" if detail.state is not None else ""
        )
        if not yes:
            click.confirm(f"Delete run {run_id!r} ({what}) from {where}?", abort=True)
        store.delete_run(run_id)
    console().print(f"Deleted run {run_id!r}: {what}.")
