"""Opening the store a command was pointed at, with errors that name the command's own fix."""

from __future__ import annotations

from purpose_agent.cli.options import resolve_url, url_flag
from purpose_agent.db.migrate import UPGRADE_COMMAND, not_current
from purpose_agent.errors import SchemaNotCurrent
from purpose_agent.protocol import Checkpointer
from purpose_agent.stores.open import Target, open_store, parse_target


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
    """Open a parsed target; see :func:`open_url`."""
    try:
        return open_store(target, create=create, read_only=read_only)
    except SchemaNotCurrent as exc:
        raise not_current(exc.found, UPGRADE_COMMAND + url_flag(given, str(target))) from exc
