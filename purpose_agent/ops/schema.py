"""The schema of a SQL store, inspected and migrated with the revisions shipped in the package.

These are the operations behind ``purpose-agent db``. They open their own short-lived engine
rather than a store, because a store refuses to open on a schema it cannot use, and these are
exactly the cases where the schema must be looked at or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, column, func, inspect, pool, select, table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from purpose_agent.db import migrate
from purpose_agent.db.dialects import flavor_for
from purpose_agent.db.engine import make_engine, parse_url, read_only_reason, require_directory
from purpose_agent.errors import InvalidInput, SchemaNotCurrent, translated
from purpose_agent.stores.open import SEED_SQLITE_PREFIX, Target, TargetKind


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands.

    Attributes:
        url: The database, password hidden.
        current: The revision it is at; ``None`` when it was never migrated.
        head: The revision this version of the package needs.
        exists: ``False`` for a SQLite file that does not exist (nothing was created).
        seed_tables: Whether the seed's ``events`` and ``snapshots`` tables are there too.
        seed_source: The target that reads those tables (``seed-sqlite:PATH``), when they are
            in a SQLite file.
        missing: At the head revision, the tables, columns and indexes of its schema that
            are not there (dropped by hand); an upgrade makes them again.

    """

    url: str
    current: str | None
    head: str
    exists: bool = True
    seed_tables: bool = False
    seed_source: str | None = None
    missing: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """Whether this version knows the current revision (``False``: a newer version wrote it)."""
        return self.current is None or migrate.is_known_revision(self.current)

    @property
    def at_head(self) -> bool:
        """Whether the store can be used by this version as it is."""
        return self.current == self.head

    def to_dict(self) -> dict[str, Any]:
        """Return the status as JSON values."""
        return {
            "url": self.url,
            "current": self.current,
            "head": self.head,
            "at_head": self.at_head,
            "exists": self.exists,
            "seed_tables": self.seed_tables,
            "seed_source": self.seed_source,
            "known": self.known,
            "missing": list(self.missing),
        }


def _sql_target(url: str) -> Target:
    if "://" not in url:
        raise InvalidInput(f"{url!r} is not a database URL (db commands work on SQL stores)")
    return Target(TargetKind.SQL, url=parse_url(url))


def _engine(target: Target) -> Engine:
    assert target.url is not None  # a SQL target always has one
    # NullPool: these commands connect once or twice, and must not leave connections behind.
    return make_engine(target.url, poolclass=pool.NullPool)


def refusal_advice(engine: Engine) -> Callable[[BaseException], str | None]:
    """What to do about a refusal of the server's or the file's setup, for the error's message.

    A migration writes: a read-only server, database, role or file, or a user without the
    privilege to create tables, refuses it every time, which the driver's words alone do
    not say how to fix.
    """
    flavor = flavor_for(engine)

    def advise(exc: BaseException) -> str | None:
        if not isinstance(exc, DBAPIError):
            return None
        if flavor.is_read_only(exc):
            return read_only_reason(engine.url)
        return flavor.advice(exc)

    return advise


def _status(engine: Engine, target: Target) -> SchemaStatus:
    with engine.connect() as conn:
        current = migrate.current_revision(conn)
        tables = set(inspect(conn).get_table_names())
        head = migrate.head_revision()
        missing = tuple(migrate.schema_problems(conn)) if current == head else ()
    seed = tables >= migrate.SEED_TABLES
    file = target.sqlite_file
    source = f"{SEED_SQLITE_PREFIX}{file}" if seed and file is not None else None
    return SchemaStatus(str(target), current, head, True, seed, source, missing)


def schema_status(url: str) -> SchemaStatus:
    """Report the revision a database is at, without changing anything.

    Raises:
        InvalidInput: A malformed URL, or a SQLite path that is a directory.
        StoreUnavailable: The database cannot be reached.

    """
    target = _sql_target(url)
    file = target.sqlite_file
    if file is not None and file.is_dir():
        require_directory(file)  # names the directory the URL points at, not "no database"
    if file is not None and not file.is_file():
        return SchemaStatus(str(target), None, migrate.head_revision(), exists=False)
    engine = _engine(target)
    try:
        reading = "reading the schema revision"
        with translated(reading, str(target), SQLAlchemyError, advice=refusal_advice(engine)):
            return _status(engine, target)
    finally:
        engine.dispose()


def upgrade_schema(url: str, revision: str = "head") -> tuple[SchemaStatus, SchemaStatus]:
    """Upgrade a database (creating a SQLite file if needed) under the migration lock.

    Returns:
        The status before and after.

    Raises:
        InvalidInput: A malformed URL or an unknown revision.
        SchemaNotCurrent: A newer version of the package migrated the database.
        StoreUnavailable: The database cannot be reached.

    """
    return _migrate(url, revision, migrate.upgrade, "upgrading the schema")


# The revision that created the tables: a downgrade past it (to base) drops them, every run
# with them.
TABLES = "0001"
# The revision that added event keys and run groups: a downgrade past it drops both columns.
KEYS_AND_GROUPS = "0002"


def _counted(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' * (number != 1)}"


@dataclass(frozen=True)
class DowngradeLoss:
    """What a downgrade destroys: the whole tables (revision 0001), or 0002's keys and groups.

    Attributes:
        tables: Whether the store's tables are dropped, and every run in them.
        runs: Runs in the dropped tables.
        events: Events in the dropped tables.
        snapshots: Snapshots in the dropped tables.
        keys: Events that have a key (dropped with the column, the tables kept).
        groups: Runs that are in a group (dropped with the column, the tables kept).

    """

    tables: bool = False
    runs: int = 0
    events: int = 0
    snapshots: int = 0
    keys: int = 0
    groups: int = 0

    @property
    def destroys(self) -> bool:
        """Whether anything stored is lost (dropping empty tables or columns loses nothing)."""
        return bool(self.runs or self.events or self.snapshots or self.keys or self.groups)

    def __str__(self) -> str:
        if self.tables:
            return (
                f"the store's tables with {_counted(self.runs, 'run')}, "
                f"{_counted(self.events, 'event')} and {_counted(self.snapshots, 'snapshot')}"
            )
        return (
            f"the keys of {_counted(self.keys, 'event')} and the groups of "
            f"{_counted(self.groups, 'run')}"
        )

    @property
    def consequence(self) -> str:
        """What losing it means, once the schema is upgraded again."""
        if self.tables:
            return (
                "an upgrade creates them empty; `purpose-agent copy` the runs to another store "
                "first to keep them"
            )
        return (
            "an upgrade brings the columns back empty: a retried keyed append appends again, "
            "event_by_key and LangGraph checkpoint ids find nothing, groups list no runs"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the counts as JSON values."""
        return {
            "tables": self.tables,
            "runs": self.runs,
            "events": self.events,
            "snapshots": self.snapshots,
            "event_keys": self.keys,
            "run_groups": self.groups,
        }


def _count(conn: Connection, name: str, where: Any = None) -> int:
    query = select(func.count()).select_from(table(name))
    if where is not None:
        query = query.where(where)
    return int(conn.execute(query).scalar_one())


def downgrade_loss(url: str, revision: str) -> DowngradeLoss | None:
    """What a downgrade to ``revision`` would destroy, counted.

    Returns:
        The counts (all zero when it drops nothing that holds data); ``None`` when that cannot
        be told (the database cannot be reached, the revision is unknown): the downgrade
        itself then says why it fails.

    Raises:
        InvalidInput: A malformed URL.

    """
    from alembic.script.revision import RevisionError  # noqa: PLC0415 - to migrate only
    from alembic.util import CommandError  # noqa: PLC0415

    target = _sql_target(url)
    engine = _engine(target)
    try:
        status = _status(engine, target)
        if not status.known:
            return None
        if status.current is None:
            return DowngradeLoss()
        scripts = migrate._scripts().iterate_revisions(status.current, revision)
        reverted = {script.revision for script in scripts}
        with engine.connect() as conn:
            if TABLES in reverted:
                return DowngradeLoss(
                    tables=True,
                    runs=_count(conn, "pa_runs"),
                    events=_count(conn, "pa_events"),
                    snapshots=_count(conn, "pa_snapshots"),
                )
            if KEYS_AND_GROUPS not in reverted:
                return DowngradeLoss()
            # Quoted by the dialect: KEY is a reserved word on MariaDB.
            return DowngradeLoss(
                keys=_count(conn, "pa_events", column("key", String).is_not(None)),
                groups=_count(conn, "pa_runs", column("group_id", String).is_not(None)),
            )
    except (SQLAlchemyError, CommandError, RevisionError):
        return None
    finally:
        engine.dispose()


def downgrade_schema(url: str, revision: str) -> tuple[SchemaStatus, SchemaStatus]:
    """Downgrade a database to ``revision`` (``base`` removes the package's tables and data).

    Returns:
        The status before and after.

    Raises:
        InvalidInput: A malformed URL or an unknown revision.
        SchemaNotCurrent: A newer version of the package migrated the database.
        StoreUnavailable: The database cannot be reached.

    """
    return _migrate(url, revision, migrate.downgrade, "downgrading the schema")


def _migrate(
    url: str, revision: str, step: Callable[[Engine, str], None], action: str
) -> tuple[SchemaStatus, SchemaStatus]:
    from alembic.util import CommandError  # noqa: PLC0415 - imported to migrate only

    target = _sql_target(url)
    engine = _engine(target)
    try:
        with translated(action, str(target), SQLAlchemyError, advice=refusal_advice(engine)):
            before = _status(engine, target)
            if not before.known:
                # Written by a newer version: Alembic cannot place its revision to move from.
                raise SchemaNotCurrent(before.current, before.head, migrate.NEWER_COMMAND)
            try:
                step(engine, revision)
            except CommandError as exc:
                raise InvalidInput(f"cannot move to revision {revision!r}: {exc}") from exc
            return before, _status(engine, target)
    finally:
        engine.dispose()
