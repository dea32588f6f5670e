"""Schema versions, in one place: the revision found, the one needed, the command to move.

Alembic is driven from code. The revisions live in ``alembic/`` at the repository root and ship
in the wheel as ``purpose_agent/migrations``, so an installed package migrates without the
repository; every hint names ``purpose-agent db upgrade --url URL`` for the database at
hand, which works in both.

Alembic is imported only to migrate, or to name a revision this version does not need:
opening a store at the head revision reads the version table with one query and compares it
with :data:`HEAD`. Importing Alembic cost a sixth of a command's start (``purpose-agent runs
list``: 1.00 s with it, 0.85 s without).
"""

from __future__ import annotations

import functools
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, Engine, String, column, func, inspect, select, table, text
from sqlalchemy.exc import DBAPIError

from purpose_agent.db.engine import shown_url, synchronous_url
from purpose_agent.db.transactions import migration_lock
from purpose_agent.errors import (
    CheckpointError,
    SchemaNotCurrent,
    SchemaUnclear,
    SeedFormatDatabase,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# The revision this version of the package needs: the last of ``alembic/versions``, which
# tests/test_migrations.py checks. A new revision moves it.
HEAD = "0003"
VERSION_TABLE = "pa_alembic_version"
# The tables the seed's SQLiteCheckpointer created.
SEED_TABLES = frozenset(("events", "snapshots"))
UPGRADE_COMMAND = "purpose-agent db upgrade"
# What to run when the database was migrated by a newer version of the package.
NEWER_COMMAND = "pip install --upgrade purpose-agent"
# Postgres: how long one attempt of a migration waits for a table lock. A revision's DDL asks
# for ACCESS EXCLUSIVE; while it waits behind a long transaction (a pg_dump, a report, an
# idle-in-transaction session), every writer and reader of the table queues behind it. So an
# attempt gives up after this long, rolls back (letting the queue through) and tries again,
# for up to MIGRATION_WAIT seconds in all, as a MariaDB migration waits for its named lock.
MIGRATION_LOCK_TIMEOUT = 2.0
MIGRATION_WAIT = 600.0
_LOCK_NOT_AVAILABLE = "55P03"


def script_location() -> Path:
    """Where the revisions are: inside the installed package, else the repository checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise CheckpointError(f"the Alembic revisions are missing (looked in {here / 'migrations'})")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at the shipped revisions, with a connection or URL to use."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The shipped revisions, read once."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The revision this version of the package needs."""
    return HEAD


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at; ``None`` for a database never migrated.

    The version table's one row, read directly.

    Raises:
        SchemaUnclear: The table holds several rows (a branched history, which this package
            never writes, or rows added by hand): no revision can be trusted.
    """
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    query = select(column("version_num", String)).select_from(table(VERSION_TABLE))
    found = sorted(str(revision) for revision in conn.execute(query).scalars())
    if len(found) > 1:
        listed = ", ".join(found)
        delete = f"DELETE FROM {VERSION_TABLE} WHERE version_num <> '<that revision>'"
        raise SchemaUnclear(listed, head_revision(), delete)
    return found[0] if found else None


def is_known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of the revisions shipped with this version."""
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def revisions_between(lower: str | None, upper: str | None) -> list[str]:
    """The revisions above ``lower`` up to ``upper``, oldest first (``None``: no revision).

    What an upgrade from ``lower`` to ``upper`` applies, or, read backwards, what a
    downgrade from ``upper`` to ``lower`` reverts.
    """
    if upper is None or lower == upper:
        return []
    scripts = _scripts().iterate_revisions(upper, lower or "base")
    return [script.revision for script in reversed(list(scripts))]


def not_current(found: str | None, upgrade_command: str = UPGRADE_COMMAND) -> SchemaNotCurrent:
    """The error for a database at ``found``, naming the command that fixes it.

    Args:
        found: The revision the database is at (``None``: never migrated).
        upgrade_command: The upgrade command as the caller should type it (a CLI adds its
            ``--url``).

    Returns:
        ``SchemaNotCurrent`` naming ``pip install --upgrade purpose-agent`` when a newer
        version migrated the database, else the upgrade command.

    """
    if found is not None and not is_known_revision(found):
        return SchemaNotCurrent(found, head_revision(), NEWER_COMMAND)
    return SchemaNotCurrent(found, head_revision(), upgrade_command)


def upgrade_command(url: URL) -> str:
    """The command that upgrades the database at ``url``, as a POSIX shell takes it.

    Always with ``--url``: without it the command upgrades the database it finds itself
    (``PURPOSE_AGENT_DB_URL``, else ``sqlite:///purpose_agent.db``), which need not be the
    one a library caller opened. The password is hidden, and the URL quoted: a shell would
    take its ``&`` as the end of the command and expand a ``?``. An asyncio driver's URL (an
    async store's engine) is given its synchronous driver, the one the command takes.
    """
    url = synchronous_url(url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and url.query.get("mode") == "ro":
        # The read-only form the store opens an unwritable file with (engine.read_only_url):
        # the upgrade has to write, so it is given the file itself.
        url = url.set(database=database.removeprefix("file:"), query={})
    return f"{UPGRADE_COMMAND} --url {shlex.quote(shown_url(url))}"


def ensure_schema(engine: Engine, *, migrate: bool, allow_seed_tables: bool = False) -> None:
    """Make sure the database is at the head revision, upgrading it if allowed.

    Several processes may open a store on the same empty database at once: each checks,
    and those that need to upgrade take the backend's migration lock and check again, so one
    of them migrates and the others find the work done.

    Raises:
        SchemaNotCurrent: If the schema is behind and ``migrate`` is false (naming
            :func:`upgrade_command` for the engine's database), or the database was migrated
            by a newer version of the package.
        SeedFormatDatabase: If a SQLite file holds seed-era runs and none of the store's own
            (unless ``allow_seed_tables``: the import that moves them in place opens it so).

    """
    head = head_revision()
    with engine.connect() as conn:
        found = current_revision(conn)
        if engine.dialect.name == "sqlite" and not allow_seed_tables:
            _refuse_seed_runs(conn, found, head)
    if found == head:
        return
    if not migrate or (found is not None and not is_known_revision(found)):
        raise not_current(found, upgrade_command(engine.url))

    def work(conn: Connection) -> None:
        if current_revision(conn) != head:
            _upgrade(conn, "head")

    run_locked(engine, work)


def _refuse_seed_runs(conn: Connection, found: str | None, head: str) -> None:
    """Refuse a seed-era SQLite file whose runs this store would not show.

    Opening it would add the store's empty tables beside the seed's, and every run in it
    would silently disappear from ``list_runs``. Once the runs are imported (or if the
    store's own tables already hold data), the file opens as usual.
    """
    tables = set(inspect(conn).get_table_names())
    if not tables >= SEED_TABLES:
        return
    for name in ("pa_events", "pa_snapshots"):
        if name in tables and conn.execute(select(func.count()).select_from(table(name))).scalar():
            return
    seeded = sum(
        int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in SEED_TABLES
    )
    if not seeded:
        return
    path = conn.engine.url.database or ""
    source, target = shlex.quote(f"seed-sqlite:{path}"), shlex.quote(f"sqlite:///{path}")
    command = f"purpose-agent copy {source} {target}"
    raise SeedFormatDatabase(found, head, command)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision`` under the migration lock."""
    run_locked(engine, lambda conn: _upgrade(conn, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade to ``revision`` (``base`` removes the schema) under the migration lock."""
    from alembic import command

    run_locked(engine, lambda conn: command.downgrade(alembic_config(connection=conn), revision))


def run_locked(engine: Engine, work: Callable[[Connection], None]) -> None:
    """Run ``work`` under the migration lock; on Postgres, never queue the store's sessions.

    Raises:
        StoreUnavailable: Postgres: the tables stayed locked by another session for
            :data:`MIGRATION_WAIT` seconds (nothing was changed).
    """
    if engine.dialect.name != "postgresql":
        with migration_lock(engine) as conn:
            work(conn)
        return
    deadline = time.monotonic() + MIGRATION_WAIT
    pause = 0.05
    while True:
        try:
            with migration_lock(engine) as conn:
                # After the advisory lock: only the revisions' own lock waits are bounded.
                timeout_ms = int(MIGRATION_LOCK_TIMEOUT * 1000)
                conn.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
                work(conn)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            if time.monotonic() + pause > deadline:
                shown = shown_url(engine.url)
                raise StoreUnavailable(
                    f"migrating {shown} failed: another session held a lock on the store's "
                    f"tables for {MIGRATION_WAIT:.0f} s (a long transaction: pg_stat_activity "
                    "shows it); nothing was changed"
                ) from exc
        else:
            return
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection=conn), revision)
