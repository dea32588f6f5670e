"""Alembic environment for purpose_agent.

The connection comes from the caller when the package migrates from code (``config.attributes
["connection"]``, already holding the migration lock); an Engine there, or else a URL from
``-x url=...``, then ``PURPOSE_AGENT_DB_URL``, then the embedded default, is connected here
under the migration lock.

``-x events_partitions=N`` (or ``config.attributes["events_partitions"]``) lays ``pa_events``
out in N hash partitions by run id after the revisions ran, in the same transaction, on
Postgres; ``-x events_partitions=0`` brings back the default layout, one table. Without the
option the layout is left as it is: a partitioned database stays partitioned across upgrades
(see :mod:`purpose_agent.db.partitions`). Partitions are not part of the models, so
autogenerate leaves them out of its comparison.

Only the commands that write the schema (``upgrade``, ``downgrade``, ``stamp``) may create a
SQLite file: ``alembic current`` or ``check`` in the wrong folder would otherwise leave an
empty ``purpose_agent.db`` behind and report it as never migrated.
"""

from __future__ import annotations

import logging.config
import os
from collections.abc import Callable
from typing import TypeVar

from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, pool, text
from sqlalchemy.exc import SQLAlchemyError

from alembic import context
from purpose_agent.db.engine import DEFAULT_URL, URL_ENV, make_engine, parse_url, shown_url
from purpose_agent.db.migrate import (
    VERSION_TABLE,
    current_revision,
    head_revision,
    is_known_revision,
    not_current,
    repair,
    run_locked,
)
from purpose_agent.db.models import Base
from purpose_agent.db.partitions import EVENTS_TABLE, check_partitions, set_events_layout
from purpose_agent.errors import CheckpointError, unavailable
from purpose_agent.ops.schema import refusal_advice
from purpose_agent.stores.open import Target, TargetKind

T = TypeVar("T")

config = context.config
# An ini may hold only ``script_location`` (a deploy pointing plain ``alembic`` at the installed
# package); logging is configured only when the file has a logging section.
if (
    config.config_file_name is not None
    and config.attributes.get("connection") is None
    and config.file_config.has_section("formatters")
):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata
# The alembic commands that write the schema, and so may create the database file.
_WRITING_COMMANDS = frozenset(("upgrade", "downgrade", "stamp", "ensure_version"))


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get(URL_ENV)
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def _command() -> str | None:
    """The alembic command running (``current``, ``upgrade``...); ``None`` when run from code.

    alembic's command line keeps the function it calls in ``cmd_opts.cmd``; a program calling
    ``alembic.command`` itself has no command line, and is left to create what it opens.
    """
    chosen = getattr(config.cmd_opts, "cmd", None)
    if not chosen:
        return None
    name = getattr(chosen[0], "__name__", None)
    return name if isinstance(name, str) else None


def _refuse_missing_sqlite_file(url: str) -> None:
    """Refuse a read-only command on a SQLite file that does not exist, which would create it.

    Raises:
        CommandError: The command only reads, and the file is not there; alembic prints
            ``FAILED:`` and the message, and exits non-zero.

    """
    command = _command()
    if command is None or command in _WRITING_COMMANDS:
        return
    file = Target(TargetKind.SQL, url=parse_url(url)).sqlite_file
    if file is None or file.exists():
        return
    raise CommandError(
        f"no database at {file.absolute()}: `alembic {command}` reads a database and creates "
        "none; name the database with -x url=... or $PURPOSE_AGENT_DB_URL, or create this "
        "one with `alembic upgrade head`"
    )


def _events_partitions() -> int | None:
    """The layout asked for with ``-x events_partitions=N``, if any."""
    given = context.get_x_argument(as_dictionary=True).get("events_partitions")
    if given is None:
        given = config.attributes.get("events_partitions")
    if given is None:
        return None
    try:
        return check_partitions(int(given))
    except ValueError as exc:
        raise SystemExit(f"-x events_partitions={given}: {exc}") from None


def _partitions_of_events(connection: Connection) -> set[str]:
    if connection.dialect.name != "postgresql":
        return set()
    found = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:name)"
        ),
        {"name": EVENTS_TABLE},
    )
    return set(found.scalars())


def _configure(connection: Connection) -> None:
    partitions = _partitions_of_events(connection)

    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        # The partitions of pa_events belong to its layout, not to the models.
        return not (type_ == "table" and name in partitions)

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        include_name=include_name,
    )


def _refuse_newer_revision(connection: Connection) -> None:
    """Refuse to move a schema a newer release wrote, saying so as the store does.

    Alembic's own answer was "Can't locate revision identified by '0099'". ``stamp`` goes on:
    ``alembic stamp head --purge`` is how an operator who knows better takes the schema back.

    Raises:
        CommandError: ``upgrade`` or ``downgrade`` of a database at a revision this release
            does not have; alembic prints ``FAILED:`` and the message.
    """
    if _command() not in ("upgrade", "downgrade"):
        return
    found = current_revision(connection)
    if found is not None and not is_known_revision(found):
        raise CommandError(str(not_current(found)))


def _run(connection: Connection) -> None:
    _configure(connection)
    _refuse_newer_revision(connection)
    partitions = _events_partitions()
    if partitions is not None and connection.dialect.name != "postgresql":
        if partitions:
            # Refused before any revision runs: SQLite's and MariaDB's upgrades would have
            # committed by the time the layout was refused.
            raise SystemExit(
                f"-x events_partitions={partitions}: the partitioned layout of {EVENTS_TABLE}"
                f" is for PostgreSQL only (this database is {connection.dialect.name})"
            )
        partitions = None  # one table: the only layout there is
    with context.begin_transaction():
        context.run_migrations()
        if _command() == "upgrade" and current_revision(connection) == head_revision():
            # As `purpose-agent db upgrade`: what was dropped from the head schema is made
            # again (the package's own upgrades do this in migrate._upgrade).
            repair(connection)
        if partitions is not None:
            set_events_layout(connection, partitions)


def run_migrations_offline() -> None:
    if _events_partitions() is not None:
        # The change of layout reads the catalog: it needs a database, not a script.
        raise SystemExit("-x events_partitions needs a database connection (not --sql)")
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    # An Engine handed in (pytest-alembic does this) is used as is; otherwise one is built.
    if isinstance(given, Engine):
        engine = given
    else:
        url = _url()
        _refuse_missing_sqlite_file(url)
        engine = _said_in_one_line(lambda: make_engine(url, poolclass=pool.NullPool), url)
    try:
        # As the package's own upgrades: on Postgres a revision waits for a table lock a
        # little at a time, never queueing the store's writers behind a long transaction.
        _said_in_one_line(lambda: run_locked(engine, _run), engine.url, engine)
    finally:
        if engine is not given:
            engine.dispose()


def _said_in_one_line(work: Callable[[], T], url: str | URL, engine: Engine | None = None) -> T:
    """Run ``work``; from alembic's command line, its failure is one ``FAILED:`` line.

    The driver's error (a login refused, a server down, a read-only database) reached the
    terminal as a stack trace; it is worded as ``purpose-agent db upgrade`` words it, with
    the password hidden and what to do. Called from code, errors go through unchanged.

    Raises:
        CommandError: From the command line, for an error of the database or of the package.
    """
    try:
        return work()
    except (SQLAlchemyError, CheckpointError) as exc:
        command = _command()
        if command is None:
            raise
        where = shown_url(parse_url(url) if isinstance(url, str) else url)
        if isinstance(exc, SQLAlchemyError):
            advice = None if engine is None else refusal_advice(engine)(exc)
            exc = unavailable(f"alembic {command}", where, exc, advice)
        raise CommandError(str(exc)) from exc


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
