"""The schema of a SQL store, inspected and migrated with the revisions shipped in the package.

These are the operations behind ``purpose-agent db``. They open their own short-lived engine
rather than a store, because a store refuses to open on a schema it cannot use, and these are
exactly the cases where the schema must be looked at or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, column, func, inspect, pool, select, table
from sqlalchemy.exc import SQLAlchemyError

from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine, parse_url, require_directory
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

    """

    url: str
    current: str | None
    head: str
    exists: bool = True
    seed_tables: bool = False
    seed_source: str | None = None

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
        }


def _sql_target(url: str) -> Target:
    if "://" not in url:
        raise InvalidInput(f"{url!r} is not a database URL (db commands work on SQL stores)")
    return Target(TargetKind.SQL, url=parse_url(url))


def _engine(target: Target) -> Engine:
    assert target.url is not None  # a SQL target always has one
    # NullPool: these commands connect once or twice, and must not leave connections behind.
    return make_engine(target.url, poolclass=pool.NullPool)


def _status(engine: Engine, target: Target) -> SchemaStatus:
    with engine.connect() as conn:
        current = migrate.current_revision(conn)
        tables = set(inspect(conn).get_table_names())
    seed = tables >= migrate.SEED_TABLES
    file = target.sqlite_file
    source = f"{SEED_SQLITE_PREFIX}{file}" if seed and file is not None else None
    return SchemaStatus(str(target), current, migrate.head_revision(), True, seed, source)


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
        with translated("reading the schema revision", str(target), SQLAlchemyError):
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


# The revision that added event keys and run groups: a downgrade past it drops both columns.
KEYS_AND_GROUPS = "0002"


@dataclass(frozen=True)
class DowngradeLoss:
    """What a downgrade drops besides tables: the event keys and run groups revision 0002 added.

    Attributes:
        keys: Events that have a key.
        groups: Runs that are in a group.

    """

    keys: int
    groups: int

    def __str__(self) -> str:
        return (
            f"the keys of {self.keys:,} event{'s' * (self.keys != 1)} and the groups of "
            f"{self.groups:,} run{'s' * (self.groups != 1)}"
        )

    # What losing them means, once the schema is upgraded again.
    consequence = (
        "an upgrade brings the columns back empty: a retried keyed append appends again, "
        "event_by_key and LangGraph checkpoint ids find nothing, groups list no runs"
    )


def downgrade_loss(url: str, revision: str) -> DowngradeLoss | None:
    """The keys and groups a downgrade to ``revision`` would drop.

    Returns:
        ``None`` when it drops none, or when that cannot be told (the database cannot be
        reached, the revision is unknown): the downgrade itself then says why it fails.

    Raises:
        InvalidInput: A malformed URL.

    """
    from alembic.script.revision import RevisionError  # noqa: PLC0415 - to migrate only
    from alembic.util import CommandError  # noqa: PLC0415

    target = _sql_target(url)
    engine = _engine(target)
    try:
        status = _status(engine, target)
        if status.current is None or not status.known:
            return None
        scripts = migrate._scripts().iterate_revisions(status.current, revision)
        if KEYS_AND_GROUPS not in {script.revision for script in scripts}:
            return None
        # Quoted by the dialect: KEY is a reserved word on MariaDB.
        events = table("pa_events", column("key"))
        runs = table("pa_runs", column("group_id"))
        with engine.connect() as conn:
            keys = conn.execute(
                select(func.count()).select_from(events).where(events.c.key.is_not(None))
            ).scalar_one()
            groups = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.group_id.is_not(None))
            ).scalar_one()
    except (SQLAlchemyError, CommandError, RevisionError):
        return None
    finally:
        engine.dispose()
    if not keys and not groups:
        return None
    return DowngradeLoss(int(keys), int(groups))


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
        with translated(action, str(target), SQLAlchemyError):
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
