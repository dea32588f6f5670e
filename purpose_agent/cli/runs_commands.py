"""``purpose-agent runs``: list, show, page through, verify and delete runs, and list groups.

Listings are paged (``--limit``/``--offset`` for runs and groups, ``--since``/``--limit``
for events), so a store with millions of events is never loaded at once; ``runs events
--all`` streams a whole log page by page. ``--json`` prints one JSON document, except for
``runs events``, which prints JSON Lines (one event per line) so that a script can stream it.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
from rich.table import Table

from purpose_agent.cli.app import on_interrupt
from purpose_agent.cli.confirm import confirm
from purpose_agent.cli.options import Duration, json_option, selection_options, url_option
from purpose_agent.cli.output import (
    age,
    console,
    count,
    emit_json,
    emit_json_line,
    is_terminal,
    json_text,
    one_line,
    printable,
    selection_text,
    when,
)
from purpose_agent.cli.progress import working
from purpose_agent.cli.stores import open_url
from purpose_agent.cli.tables import Listing
from purpose_agent.cli.verify import verify
from purpose_agent.errors import InvalidInput
from purpose_agent.ops.prune import clock_of, delete_selected, selected, selection
from purpose_agent.ops.summaries import (
    GroupSummary,
    RunSummary,
    group_summaries,
    run_detail,
    run_summaries,
)
from purpose_agent.protocol import Checkpointer
from purpose_agent.stores.open import describe

_DATA_WIDTH = 60
F = TypeVar("F", bound=Callable[..., Any])


def _unknown(run_id: str, where: str) -> InvalidInput:
    return InvalidInput(f"no run {run_id!r} in {where}")


@click.group()
def runs() -> None:
    """List, inspect, page through, verify and delete runs, and list run groups."""


def _page_options(what: str) -> Callable[[F], F]:
    """``--limit`` and ``--offset``, for listings paged newest first."""

    def add(function: F) -> F:
        with_offset = click.option(
            "--offset",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help=f"{what} to skip: where the previous page said more start "
            "(next_offset in --json).",
        )(function)
        return click.option(
            "--limit",
            # 0 would print an empty page as if the store were empty ("No runs in ...").
            type=click.IntRange(min=1),
            default=50,
            show_default=True,
            help=f"{what} per page, most recently written first.",
        )(with_offset)

    return add


# `runs list`: the run id, which every other command takes, is kept; the snapshot goes first.
_RUNS = Listing(
    columns={
        "run id": {"overflow": "fold"},
        "group": {"overflow": "fold"},
        "status": {},
        "last seq": {"justify": "right"},
        "snapshot": {"justify": "right"},
        "updated (UTC)": {"no_wrap": True},
    },
    given_up=("snapshot", "status", "last seq", "updated (UTC)", "group"),
    kept="run id",
)
# `runs groups`: the group, which `--group` takes, is kept; the time goes before the run id.
_GROUPS = Listing(
    columns={
        "group": {"overflow": "fold"},
        "latest run": {"overflow": "fold"},
        "updated (UTC)": {"no_wrap": True},
    },
    given_up=("updated (UTC)", "latest run"),
    kept="group",
)


@runs.command("list")
@_page_options("Runs")
@selection_options("List only runs")
@json_option
@url_option
def list_runs(
    limit: int,
    offset: int,
    group: str | None,
    prefix: str | None,
    as_json: bool,
    url: str | None,
) -> None:
    """List runs, most recently written first."""
    with open_url(url, create=False, read_only=True) as store:
        summaries = run_summaries(store, limit, offset, group=group, prefix=prefix)
        where = describe(store)
    _print_page(
        "runs",
        _RUNS,
        summaries,
        lambda summary: {
            "run id": summary.run_id,
            "group": summary.group or "-",
            "status": summary.status or "-",
            "last seq": str(summary.last_seq),
            "snapshot": "-" if summary.snapshot_seq is None else str(summary.snapshot_seq),
            "updated (UTC)": when(summary.updated_at),
        },
        where=where,
        offset=offset,
        limit=limit,
        as_json=as_json,
        group=group,
        prefix=prefix,
    )


@runs.command("groups")
@_page_options("Groups")
@json_option
@url_option
def list_groups(limit: int, offset: int, as_json: bool, url: str | None) -> None:
    """List run groups, the most recently written first.

    A group is as recent as its most recently written run, which is shown beside it.
    """
    with open_url(url, create=False, read_only=True) as store:
        groups = group_summaries(store, limit, offset)
        where = describe(store)
    _print_page(
        "groups",
        _GROUPS,
        groups,
        lambda summary: {
            "group": summary.group,
            "latest run": summary.latest_run or "-",
            "updated (UTC)": when(summary.updated_at),
        },
        where=where,
        offset=offset,
        limit=limit,
        as_json=as_json,
    )


_Listed = TypeVar("_Listed", RunSummary, GroupSummary)


def _print_page(
    noun: str,
    listing: Listing,
    page: list[_Listed],
    row: Callable[[_Listed], dict[str, str]],
    *,
    where: str,
    offset: int,
    limit: int,
    as_json: bool,
    **selected: str | None,
) -> None:
    """Print one page of a listing: a table and where the next page starts, or JSON.

    A full page says there may be more; ``selected`` (``group`` and ``prefix`` for runs) is
    echoed in the JSON and named in the table's title.
    """
    more = len(page) == limit
    if as_json:
        emit_json(
            {
                "store": where,
                **selected,
                "offset": offset,
                "limit": limit,
                "next_offset": offset + len(page) if more else None,
                noun: [item.to_dict() for item in page],
            }
        )
        return
    out = console()
    scope = selection_text(selected.get("group"), selected.get("prefix"))
    if not page:
        out.print(f"No {noun}{scope} in {where}" + (f" at offset {offset}." if offset else "."))
        return
    title = f"{noun.capitalize()}{scope} in {where}"
    out.print(listing.table(title, [row(item) for item in page], out.width))
    if more:
        out.print(f"More {noun}: --offset {offset + len(page)}")


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
    table.add_row("group", summary.group or "-")
    table.add_row("status", summary.status or "- (no snapshot)")
    table.add_row("last seq", str(summary.last_seq))
    table.add_row(
        "snapshot seq", "-" if summary.snapshot_seq is None else str(summary.snapshot_seq)
    )
    first = "-" if detail.first_seq is None else str(detail.first_seq)
    table.add_row("events stored", f"{detail.event_count} (from seq {first})")
    for kind, events in detail.kinds.items():
        table.add_row(f"  {kind}", str(events))
    table.add_row("updated (UTC)", when(summary.updated_at))
    out.print(table)
    if detail.state is not None:
        out.print("State data:")
        # Printed line by line: the console escapes every control character, the newlines
        # of the indentation too. json.dumps escapes C0 characters inside strings and keys
        # but not C1 ones (ensure_ascii=False), which the console then escapes; the only raw
        # "\n" are the indentation's (splitlines would also split at a stored NEL or U+2028).
        for line in json_text(detail.state.data, indent=2).split("\n"):
            out.print(line)


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
        if first is None and _unknown_run(store, run_id, since):
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
                # json.dumps escapes C0 characters but not C1 ones (U+009B is a terminal's CSI),
                # nor NEL, which one_line would turn into a space: all written as escapes.
                data = one_line(printable(json_text(event.data)))
                if len(data) > _DATA_WIDTH:
                    data = data[: _DATA_WIDTH - 3] + "..."
                click.echo(
                    f"{event.seq:>8}  {event.kind.value:<15} {printable(event.lane_id):<8} "
                    f"{when(event.ts):<24}  {data}"
                )
            shown += 1
            last_seq = event.seq
        if shown == 0 and not as_json:
            click.echo(f"No events after seq {since} in run {run_id!r}.")


def _unknown_run(store: Checkpointer, run_id: str, since: int) -> bool:
    """Whether a run with no events after ``since`` is unknown to the store.

    Past the end of a known run the page is empty too: a poll with ``--since`` on a mistyped
    run id must fail as the first page does, not report no new events forever.
    """
    if store.load_latest(run_id) is not None:
        return False
    return since == 0 or not store.list_events(run_id, 0, 1)


@runs.command("delete")
@click.argument("run_id", required=False)
@selection_options("Delete the runs")
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    metavar="AGE",
    help="Delete the runs not written for longer than AGE (30d, 12h, 90m, 2w...).",
)
@click.option(
    "--keep-newest",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Delete all runs but the N most recently written (of the group or prefix).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
def delete_run(
    run_id: str | None,
    group: str | None,
    prefix: str | None,
    older_than: timedelta | None,
    keep_newest: int | None,
    yes: bool,
    url: str | None,
) -> None:
    """Delete one run, or every run some filters select.

    A run goes with its events and snapshot. With filters instead of RUN_ID, the runs that
    match all of them are deleted in one transaction: all of them or none.
    """
    on_interrupt(
        "the deletion is one transaction: either every run it chose is gone or none is; "
        "`purpose-agent runs list` shows which"
    )
    filters = (group, prefix, older_than, keep_newest)
    if run_id is not None and filters != (None,) * 4:
        raise click.UsageError(
            "give RUN_ID or --group/--prefix/--older-than/--keep-newest, not both"
        )
    if run_id is None:
        if filters == (None,) * 4:
            raise click.UsageError(
                "say which runs: RUN_ID, or --group, --prefix, --older-than, --keep-newest"
            )
        _delete_selected(group, prefix, older_than, keep_newest, yes, url)
        return
    with open_url(url, create=False) as store:
        where = describe(store)
        detail = run_detail(store, run_id)
        if detail is None:
            raise _unknown(run_id, where)
        what = f"{detail.event_count} events" + (
            " and its snapshot" if detail.state is not None else ""
        )
        if not yes:
            confirm(f"Delete run {run_id!r} ({what}) from {where}?", doing="delete")
        with working(is_terminal(sys.stderr), f"deleting run {run_id!r} ({what})"):
            store.delete_run(run_id)
    console().print(f"Deleted run {run_id!r}: {what}.")


def _delete_selected(
    group: str | None,
    prefix: str | None,
    older_than: timedelta | None,
    keep_newest: int | None,
    yes: bool,
    url: str | None,
) -> None:
    """Delete the runs the options select: counted first, then one ``delete_runs`` call."""
    rules = [selection_text(group, prefix).strip()]
    if keep_newest is not None:
        rules.append(f"beyond the newest {keep_newest:,}")
    if older_than is not None:
        rules.append(f"not written for {age(older_than)}")
    what = " ".join(rule for rule in rules if rule)
    # The age becomes one moment, so that the count asked about is of the runs deleted; the
    # filters are checked before the store is opened.
    chosen = selection(group=group, prefix=prefix, older_than=older_than, keep_newest=keep_newest)
    with open_url(url, create=False) as store:
        if older_than is not None:  # counted back from the clock the store stamps writes with
            chosen = selection(
                group=group,
                prefix=prefix,
                older_than=older_than,
                keep_newest=keep_newest,
                now_ns=clock_of(store),
            )
        where = describe(store)
        if not yes:
            planned = selected(store, chosen)
            if not planned:
                console().print(f"No runs {what} in {where}.")
                return
            confirm(
                f"Delete {count(len(planned), 'run')} {what} "
                f"({count(sum(planned.values()), 'event')}) from {where}?",
                doing="delete",
            )
        with working(is_terminal(sys.stderr), f"deleting the runs {what}"):
            deleted, events = delete_selected(store, chosen)
    console().print(
        f"Deleted {count(len(deleted), 'run')} {what} ({count(events, 'event')}) from {where}."
    )


runs.add_command(verify)
