"""Schema versions, in one place: the revision found, the one needed, the command to move.

Alembic is driven from code. The revisions live in ``alembic/`` at the repository root and ship
in the wheel as ``purpose_agent/migrations``, so an installed package migrates without the
repository; every hint names ``purpose-agent db upgrade --url URL`` for the database at
hand, which works in both.

Alembic is imported only to migrate, or to name a revision this version does not need:
opening a store at the head revision reads the version table with one query and compares it
with :data:`HEAD`, then the catalog for the tables, columns and indexes of that revision
(:func:`schema_problems`: the version row alone does not say they are all still there).
Importing Alembic cost a sixth of a command's start (``purpose-agent runs list``: 1.00 s
with it, 0.85 s without).
"""

from __future__ import annotations

import asyncio
import functools
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    cast,
    column,
    func,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

from purpose_agent.db.engine import shown_url, synchronous_url
from purpose_agent.db.transactions import migration_lock
from purpose_agent.errors import (
    CheckpointError,
    SchemaDamaged,
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
        SchemaDamaged: If the database is at the head revision but lacks a table, column or
            index of it, and ``migrate`` is false (or the column lost held data).

    """
    head = head_revision()
    with engine.connect() as conn:
        found = current_revision(conn)
        if engine.dialect.name == "sqlite" and not allow_seed_tables:
            _refuse_seed_runs(conn, found, head)
        missing = schema_problems(conn) if found == head else []
    if found == head and not missing:
        return
    if not migrate and missing:
        raise damaged(engine, found, missing)
    if not migrate or (found is not None and not is_known_revision(found)):
        raise not_current(found, upgrade_command(engine.url))

    def work(conn: Connection) -> None:
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
        _pause(pause)
        pause = min(pause * 2, 1.0)


def _pause(seconds: float) -> None:
    """Wait between two tries for the tables' lock, without stopping an event loop.

    An ``AsyncSQLCheckpointer`` migrates in a greenlet on its loop's thread (each statement is
    awaited there): ``time.sleep`` stopped every task of the loop for as long.
    """
    if in_greenlet():
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def _upgrade(conn: Connection, revision: str) -> None:
    """Upgrade to ``revision``; at the head, make again what was dropped from its schema."""
    if current_revision(conn) != head_revision() or revision not in ("head", head_revision()):
        from alembic import command

        command.upgrade(alembic_config(connection=conn), revision)
    if current_revision(conn) == head_revision():
        repair(conn)


def schema_problems(conn: Connection) -> list[str]:
    """What the head revision's schema has that the database lacks, by name.

    The version table says which revision the tables are at, not that they are still there:
    a table, a column or an index dropped by hand goes unnoticed until a statement fails on
    it, or, for the key index, never (a retried keyed append appends a second event).

    Returns:
        ``table pa_runs``, ``column pa_events.key``, ``index NAME on TABLE``: empty when every
        table, column and index of the models is there.

    """
    from purpose_agent.db.models import Base

    catalog = _catalog(conn, [model.name for model in Base.metadata.sorted_tables])
    problems: list[str] = []
    for model in Base.metadata.sorted_tables:
        if model.name not in catalog:
            problems.append(f"table {model.name}")
            continue
        columns, indexes = catalog[model.name]
        problems += [
            f"column {model.name}.{wanted.name}"
            for wanted in model.columns
            if wanted.name not in columns
        ]
        problems += [
            f"index {wanted.name} on {model.name}"
            for wanted in sorted(model.indexes, key=lambda index: str(index.name))
            if wanted.name not in indexes
        ]
    return problems


# The columns and the indexes of the tables named :names that unqualified names resolve to,
# in one query: the inspector asked the catalog table by table, with statements
# compiled afresh for each new engine, which tripled the time a Postgres store took to open.
_CATALOG = {
    "postgresql": (
        # pg_class rather than information_schema, which took a third longer than the
        # rest of an open; a partitioned table is relkind 'p'. The tables the store's
        # statements find: the first on the search path (current_schema() is only the
        # first schema that exists, a "$user" schema without them, say).
        "SELECT t.relname, 'column', a.attname FROM pg_class t"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " WHERE pg_table_is_visible(t.oid) AND t.relkind IN ('r', 'p') AND t.relname IN :names"
        " UNION ALL SELECT t.relname, 'index', i.relname FROM pg_class t"
        " JOIN pg_index x ON x.indrelid = t.oid JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE pg_table_is_visible(t.oid) AND t.relkind IN ('r', 'p') AND t.relname IN :names"
    ),
    "mysql": (
        "SELECT table_name, 'column', column_name FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name IN :names"
        " UNION ALL SELECT table_name, 'index', index_name FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() AND table_name IN :names"
    ),
}
_CATALOG["mariadb"] = _CATALOG["mysql"]


def _catalog(conn: Connection, names: list[str]) -> dict[str, tuple[set[str], set[str]]]:
    """The columns and indexes of each of the tables ``names`` that exists, by table."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    query = _CATALOG.get(conn.dialect.name)
    if query is None:  # SQLite (and any other dialect): the inspector, cheap on a file
        inspector = inspect(conn)
        columns = inspector.get_multi_columns(filter_names=names)
        indexes = inspector.get_multi_indexes(filter_names=names)
        for (_, name), listed in columns.items():
            found[name] = (
                {str(column["name"]) for column in listed},
                {str(index["name"]) for index in indexes.get((None, name), [])},
            )
        return found
    statement = text(query).bindparams(bindparam("names", expanding=True))
    for name, kind, item in conn.execute(statement, {"names": names}):
        columns_of, indexes_of = found.setdefault(str(name), (set(), set()))
        (columns_of if kind == "column" else indexes_of).add(str(item))
    return found


def damaged(engine: Engine, found: str | None, missing: list[str]) -> SchemaDamaged:
    """The error for a schema at ``found`` that lacks ``missing``, naming the upgrade."""
    return SchemaDamaged(
        found, upgrade_command(engine.url), shown_url(engine.url), ", ".join(missing)
    )


def repair(conn: Connection) -> list[str]:
    """Make again the tables, columns and indexes of the head schema that are missing.

    A missing table is created empty, but ``pa_runs`` is filled again from the events and
    snapshots (its run groups are lost with it); a missing column that may hold NULL is
    added empty, and an index is built from the rows. A column every row needs a value in
    cannot be made again.

    Returns:
        What was made (as :func:`schema_problems` named it).

    Raises:
        SchemaDamaged: A missing column that cannot be NULL: the data it held is gone, and
            the database has to be restored from a backup.

    """
    from purpose_agent.db.models import Base

    problems = schema_problems(conn)
    if not problems:
        return []
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    tables = [model for model in Base.metadata.sorted_tables if model.name not in present]
    for model in Base.metadata.sorted_tables:
        if model in tables:
            continue
        columns = {found["name"] for found in inspector.get_columns(model.name)}
        lost = [wanted for wanted in model.columns if wanted.name not in columns]
        needed = [wanted.name for wanted in lost if not wanted.nullable]
        if needed:
            shown = ", ".join(f"column {model.name}.{name}" for name in needed)
            backup = f"restore {shown_url(conn.engine.url)} from a backup"
            raise SchemaDamaged(current_revision(conn), backup, shown_url(conn.engine.url), shown)
        quoted = conn.dialect.identifier_preparer.format_table(model)
        for wanted in lost:
            spec = CreateColumn(wanted).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {quoted} ADD {spec}"))
        indexes = {found["name"] for found in inspector.get_indexes(model.name)}
        for index in model.indexes:
            if index.name not in indexes:
                index.create(conn)
    Base.metadata.create_all(conn, tables=[model for model in tables if model.name != RUNS])
    if RUNS in {model.name for model in tables}:
        _remake_runs(conn)
    return problems


RUNS = "pa_runs"
# pa_runs is made and filled under this name, then renamed: MariaDB commits a CREATE TABLE
# as it runs, and a repair stopped before the rows were in left an empty pa_runs that the
# next upgrade took for whole (every run gone from list_runs, appends back at seq 1).
RUNS_STAGING = "pa_runs_rebuilt"


def _remake_runs(conn: Connection) -> None:
    """Make ``pa_runs`` again, filled from the events and snapshots, in one visible step."""
    from purpose_agent.db.models import Base

    runs = Base.metadata.tables[RUNS]
    staging = Table(
        RUNS_STAGING,
        MetaData(),
        *(Column(c.name, c.type, nullable=c.nullable, autoincrement=False) for c in runs.columns),
        # Named as the model's: the old key went with the dropped table.
        PrimaryKeyConstraint(*runs.primary_key.columns.keys(), name=f"pk_{RUNS}"),
        **runs.dialect_kwargs,
    )
    staging.drop(conn, checkfirst=True)  # left by a repair stopped before the rename
    staging.create(conn)
    _refill_runs(conn, staging)
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(text(f"ALTER TABLE {quote(RUNS_STAGING)} RENAME TO {quote(RUNS)}"))
    for index in runs.indexes:  # after the rename, so that they carry the model's names
        index.create(conn)


def _refill_runs(conn: Connection, runs: Table) -> None:
    """Give each run with events or a snapshot its ``pa_runs`` row again (without a group).

    ``last_seq`` is the highest seq stored, events' or snapshot's (appends continue after
    it); the times are the first and last event's, else the snapshot's.
    """
    from purpose_agent.db.models import Base

    events, snapshots = Base.metadata.tables["pa_events"], Base.metadata.tables["pa_snapshots"]
    ns = 1_000_000_000
    from_events = select(
        events.c.run_id,
        cast(func.min(events.c.ts) * ns, BigInteger),
        cast(func.max(events.c.ts) * ns, BigInteger),
        func.max(events.c.seq),
    ).group_by(events.c.run_id)
    columns = ["run_id", "created_ns", "updated_ns", "last_seq"]
    conn.execute(runs.insert().from_select(columns, from_events))
    listed = select(runs.c.run_id).where(runs.c.run_id == snapshots.c.run_id).exists()
    from_snapshots = select(
        snapshots.c.run_id, snapshots.c.written_ns, snapshots.c.written_ns, snapshots.c.seq
    ).where(~listed)
    conn.execute(runs.insert().from_select(columns, from_snapshots))
    ahead = select(snapshots.c.seq).where(snapshots.c.run_id == runs.c.run_id).scalar_subquery()
    conn.execute(runs.update().where(runs.c.last_seq < ahead).values(last_seq=ahead))
