"""``purpose-agent db``: the schema of a SQL store, migrated with the revisions in the package.

An installed wheel carries its Alembic revisions, so a deployment migrates with this command
and no repository checkout. ``db check`` is for scripts and health checks: it exits 1 when the
schema is not the one this version needs, naming the command that fixes it.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy import pool
from sqlalchemy.exc import SQLAlchemyError

from purpose_agent.cli.app import on_interrupt, print_then_fail
from purpose_agent.cli.confirm import confirm
from purpose_agent.cli.options import (
    chosen_revision,
    json_option,
    resolve_url,
    revision_argument,
    sql_url_option,
    url_flag,
)
from purpose_agent.cli.output import console, emit_json, err_console, is_terminal
from purpose_agent.cli.progress import working
from purpose_agent.db.engine import in_memory_sqlite, make_engine, parse_url, shown_url
from purpose_agent.db.migrate import NEWER_COMMAND, UPGRADE_COMMAND, revisions_between
from purpose_agent.db.partitions import MAX_PARTITIONS, EventsLayout, partition_events
from purpose_agent.errors import (
    CheckpointError,
    InvalidInput,
    SchemaDamaged,
    SchemaNotCurrent,
    translated,
)
from purpose_agent.ops.schema import (
    SchemaStatus,
    downgrade_loss,
    downgrade_schema,
    refusal_advice,
    schema_status,
    upgrade_schema,
)
from purpose_agent.stores.open import parse_target, require_sqlite_directory


def sql_url(url: str | None) -> str:
    """The database a migrating command works on, refused early if it cannot be created.

    Raises:
        InvalidInput: A SQLite file whose directory does not exist.

    """
    resolved = resolve_url(url)
    if "://" in resolved:  # anything else is refused by the schema operations, with the reason
        refuse_in_memory(resolved)
        require_sqlite_directory(parse_target(resolved))
    return resolved


def refuse_in_memory(url: str) -> None:
    """Refuse an in-memory database, which a command would migrate (or read) and throw away.

    It reported "already at revision none" with status 0: nothing a later command could see.

    Raises:
        InvalidInput: ``url`` is an in-memory SQLite database.

    """
    parsed = parse_url(url)
    if in_memory_sqlite(parsed):
        raise InvalidInput(
            f"{shown_url(parsed)} is an in-memory database, which does not outlive the "
            "command; give a file (sqlite:///PATH) or a server URL"
        )


def _revision(status: SchemaStatus) -> str:
    if not status.exists:
        return "none (no database file)"
    if status.current is None:
        return "none (never migrated)"
    return status.current + (" (head)" if status.at_head else "")


def _seed_hint(status: SchemaStatus) -> str | None:
    if status.seed_source is None:
        return None
    return (
        "It also holds the seed's `events` and `snapshots` tables; move their runs into the "
        f"current schema with `purpose-agent copy {status.seed_source} {status.url}`."
    )


def _on_interrupt_of_migration(url: str, action: str, target: str) -> None:
    """Say where a stopped upgrade or downgrade leaves the schema (README, "Schema migrations").

    Both run every revision under the migration lock in one write transaction. Postgres and
    SQLite roll it back whole; MariaDB commits each schema change as it runs, and each step of
    a revision is skipped when what it makes (or removes) is already there (gone), so running
    the command again finishes the revision it stopped in.
    """
    backend = parse_url(url).get_backend_name() if "://" in url else None
    if backend in ("mysql", "mariadb"):
        on_interrupt(
            f"MariaDB commits each schema change as it runs, so the {action} may have "
            "stopped part-way through a revision; run the same command again to finish it "
            "(the steps already done are skipped)"
        )
    else:
        on_interrupt(
            f"the {action} is one transaction, rolled back when stopped: the schema is at "
            f"the revision it started from (or at {target}, if it had committed), never in "
            "between; run the same command again to finish it"
        )


@click.group()
def db() -> None:
    """Create, upgrade and inspect the schema of a SQL store."""


def _moved(before: SchemaStatus, after: SchemaStatus, steps: str) -> dict[str, Any]:
    """What ``--json`` prints for a migration: the revisions on each side and those moved over.

    ``steps`` names the list: ``applied`` (oldest first) for an upgrade, ``reverted`` (newest
    first, the order they ran in) for a downgrade.
    """
    upgraded = steps == "applied"
    low, high = (before, after) if upgraded else (after, before)
    moved = revisions_between(low.current, high.current)
    return {
        "url": after.url,
        "before": before.current,
        "after": after.current,
        "head": after.head,
        "at_head": after.at_head,
        steps: moved if upgraded else moved[::-1],
        **({"repaired": list(before.missing)} if upgraded else {}),
    }


@db.command()
@revision_argument(required=False)
@json_option
@sql_url_option
def upgrade(
    revision: str | None, revision_option: str | None, as_json: bool, url: str | None
) -> None:
    """Upgrade the schema to REVISION, by default head (creating tables and file if needed).

    A SQLite file is created when it does not exist; its directory must.
    """
    chosen = chosen_revision(revision, revision_option, "head")
    target = sql_url(url)
    _on_interrupt_of_migration(target, "upgrade", chosen)
    with working(_watched(as_json), f"upgrading {_shown(target)} to {chosen}"):
        before, after = upgrade_schema(target, chosen)
    if as_json:
        emit_json(_moved(before, after, "applied"))
        return
    out = console()
    if before.current == after.current and before.missing:
        made = ", ".join(before.missing)
        out.print(f"{after.url}: at revision {_revision(after)}; made again {made}")
    elif before.current == after.current:
        out.print(f"{after.url}: already at revision {_revision(after)}")
    else:
        out.print(f"{after.url}: upgraded from {_revision(before)} to {_revision(after)}")


@db.command()
@revision_argument(required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@sql_url_option
def downgrade(
    revision: str | None, revision_option: str | None, yes: bool, as_json: bool, url: str | None
) -> None:
    """Downgrade the schema to REVISION ('base' removes the tables and every run in them).

    The prompt counts what the downgrade destroys: the runs, events and snapshots of dropped
    tables, or the event keys and run groups of dropped columns.
    """
    chosen = chosen_revision(revision, revision_option, None)
    target = sql_url(url)
    _on_interrupt_of_migration(target, "downgrade", chosen)
    if not schema_status(target).exists:
        # Downgrading would create the file first, and report "from none to none".
        raise InvalidInput(f"no database at {target}: there is nothing to downgrade")
    # Counted before asking: the tables' runs, events and snapshots, or 0002's keys and groups.
    loss = downgrade_loss(target, chosen)
    if not yes:
        if loss is None:
            lost = "Data in dropped tables and columns is lost."
        elif loss.destroys:
            lost = f"It drops {loss} for good ({loss.consequence})."
        else:
            lost = "It drops no stored data."
        # With --json the question goes to standard error: standard output is the document.
        confirm(
            f"Downgrade {schema_status(target).url} to {chosen}? {lost}",
            doing="downgrade",
            err=as_json,
        )
    with working(_watched(as_json), f"downgrading {_shown(target)} to {chosen}"):
        before, after = downgrade_schema(target, chosen)
    if as_json:
        document = _moved(before, after, "reverted")
        document["dropped"] = None if loss is None else loss.to_dict()
        emit_json(document)
        return
    console().print(f"{after.url}: downgraded from {_revision(before)} to {_revision(after)}")
    if loss is not None and loss.destroys:
        err_console().print(f"note: dropped {loss} ({loss.consequence})", soft_wrap=True)


@db.command()
@json_option
@sql_url_option
def current(as_json: bool, url: str | None) -> None:
    """Show the revision the database is at and the one this version needs."""
    resolved = resolve_url(url)
    if "://" in resolved:
        refuse_in_memory(resolved)
    status = schema_status(resolved)
    if as_json:
        emit_json(status.to_dict())
        return
    out = console()
    out.print(f"{status.url}: at revision {_revision(status)}; this version needs {status.head}")
    if not status.known:
        out.print(f"A newer version of purpose-agent migrated it: `{NEWER_COMMAND}`.")
    if status.missing:
        command = UPGRADE_COMMAND + url_flag(url, status.url)
        out.print(f"It lacks {', '.join(status.missing)}: `{command}` makes them again.")
    hint = _seed_hint(status)
    if hint is not None:
        out.print(hint)


@db.command()
@json_option
@sql_url_option
def check(as_json: bool, url: str | None) -> None:
    """Exit 0 if the schema is the one this version needs, else 1 with the fix.

    With --json the status is printed either way, with the revisions an upgrade would apply.
    """
    status = schema_status(sql_url(url))
    problem: CheckpointError | None = None
    command: str | None = None
    if not status.exists:
        command = UPGRADE_COMMAND + url_flag(url, status.url)
        problem = InvalidInput(
            f"no database at {status.url}; `{command}` "
            "creates it at the revision this version needs"
        )
    elif not status.at_head:
        # A revision this version does not know was written by a newer version of the package.
        command = UPGRADE_COMMAND + url_flag(url, status.url) if status.known else NEWER_COMMAND
        problem = SchemaNotCurrent(status.current, status.head, command)
    elif status.missing:
        command = UPGRADE_COMMAND + url_flag(url, status.url)
        problem = SchemaDamaged(status.current, command, status.url, ", ".join(status.missing))
    if as_json:
        pending = revisions_between(status.current, status.head) if status.known else []
        document = {
            **status.to_dict(),
            "ok": problem is None,
            "pending": pending,
            "problem": None if problem is None else str(problem),
            "command": command,
        }
        print_then_fail(lambda: emit_json(document), problem)
    elif problem is not None:
        raise problem
    else:
        console().print(f"{status.url}: schema is at revision {status.head} (head)")


def _relayout(
    url: str | None, partitions: int, show: bool
) -> tuple[str, EventsLayout, EventsLayout]:
    shown = resolve_url(url)
    if "://" not in shown:
        raise InvalidInput(f"{shown!r} is not a database URL (db commands work on SQL stores)")
    refuse_in_memory(shown)
    # partition_events copies pa_events in one transaction (Postgres only: elsewhere it is
    # refused before anything is done).
    on_interrupt(
        "the change of layout is one transaction, rolled back when stopped: pa_events has "
        "the layout it had (or the new one, if it had committed), never a mix; run the same "
        "command again to finish it"
    )
    parsed = parse_url(shown)
    where = shown_url(parsed)
    engine = make_engine(parsed, poolclass=pool.NullPool)
    layout = f"{partitions} hash partitions" if partitions else "one table"
    try:
        with (
            working(show, f"rewriting pa_events on {where} as {layout}"),
            translated(
                "changing the layout of pa_events",
                where,
                SQLAlchemyError,
                advice=refusal_advice(engine),
            ),
        ):
            before, after = partition_events(engine, partitions)
    finally:
        engine.dispose()
    return where, before, after


def _watched(as_json: bool) -> bool:
    """Whether a person watches the command work: standard error a terminal, no ``--json``."""
    return not as_json and is_terminal(sys.stderr)


def _shown(url: str) -> str:
    return shown_url(parse_url(url))


def _print_layout(where: str, before: EventsLayout, after: EventsLayout, as_json: bool) -> None:
    if as_json:
        emit_json({"url": where, "before": before.to_dict(), "after": after.to_dict()})
    elif before == after:
        console().print(f"{where}: pa_events is already {after.describe()}")
    else:
        console().print(f"{where}: pa_events was {before.describe()}, now {after.describe()}")


@db.command()
@click.option(
    "--partitions",
    type=click.IntRange(1, MAX_PARTITIONS),
    required=True,
    help="How many hash partitions by run id.",
)
@json_option
@sql_url_option
def partition(partitions: int, as_json: bool, url: str | None) -> None:
    """Lay the event log out in hash partitions by run id (PostgreSQL).

    Rewrites pa_events in one transaction under the migration lock: writers wait until it
    commits. The layout stays across upgrades; `db unpartition` goes back to one table.
    """
    _print_layout(*_relayout(url, partitions, _watched(as_json)), as_json)


@db.command()
@json_option
@sql_url_option
def unpartition(as_json: bool, url: str | None) -> None:
    """Bring the event log back to one table, the default layout (PostgreSQL)."""
    _print_layout(*_relayout(url, 0, _watched(as_json)), as_json)
