"""Opening the store a command was pointed at, with errors that name the command's own fix."""

from __future__ import annotations

import click

from purpose_agent.cli.options import resolve_url, url_flag
from purpose_agent.db.migrate import UPGRADE_COMMAND, head_revision, not_current
from purpose_agent.errors import CheckpointError, SchemaDamaged, SchemaNotCurrent
from purpose_agent.ops.schema import schema_status
from purpose_agent.protocol import Checkpointer
from purpose_agent.stores.open import Target, TargetKind, open_store, parse_target


def open_url(url: str | None, *, create: bool, read_only: bool = False) -> Checkpointer:
    """Open the store of ``--url`` (or the default), as :func:`open_store` does.

    A schema that is behind is reported with the upgrade command *for this store*: with the
    same ``--url`` when one was given, so that the suggested command can be pasted as it is.

    Raises:
        SchemaNotCurrent: As :func:`open_store`, with the command completed.

    """
    target = parse_target(resolve_url(url))
    return open_target(target, given=url, create=create, read_only=read_only)


def open_target(
    target: Target, *, given: str | None, create: bool, read_only: bool = False
) -> Checkpointer:
    """Open a parsed target; see :func:`open_url`.

    A command that writes (``create``) migrates the database, as the library does by
    default; when that moves a database already at an older revision, it says so on standard
    error: an operator who downgraded to roll a deploy back must not see the schema move up
    again, under the old workers, without a word.
    """
    before = _revision_before(target) if create else None
    try:
        store = open_store(target, create=create, read_only=read_only)
    except SchemaNotCurrent as exc:
        command = UPGRADE_COMMAND + url_flag(given, str(target))
        if isinstance(exc, SchemaDamaged):
            raise SchemaDamaged(exc.found, command, exc.where, exc.missing) from exc
        raise not_current(exc.found, command) from exc
    if before is not None:
        click.echo(
            f"note: upgraded the schema of {target} from revision {before} to "
            f"{head_revision()} (head) before writing",
            err=True,
        )
    return store


def _revision_before(target: Target) -> str | None:
    """The revision of an existing SQL database that opening it would upgrade, else ``None``."""
    if target.kind is not TargetKind.SQL or target.url is None:
        return None
    try:
        status = schema_status(target.url.render_as_string(hide_password=False))
    except CheckpointError:
        return None  # opening the store reports it, as it would have without this look
    if not status.exists or status.current is None or status.at_head or not status.known:
        return None  # new, never migrated, current, or newer (refused when opened)
    return status.current
