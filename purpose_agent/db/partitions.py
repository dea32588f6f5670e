"""The layout of the event log on Postgres: one table, or hash partitions by run.

The default layout, which revisions 0001 to 0003 create, is one ``pa_events`` table. A
deployment whose log grows into the hundreds of millions of rows may opt into hash partitions
by ``run_id`` (Postgres declarative partitioning): every statement the store runs names one
run, so each touches one partition, and a partition can be vacuumed, reindexed or moved on its
own.

The layout is a property of a database, not a revision: it is changed by
``purpose-agent db partition --partitions N`` (or ``alembic -x events_partitions=N upgrade
head``), changed back by ``purpose-agent db unpartition`` (``-x events_partitions=0``), and
recorded where Postgres records it, in the catalog (``pg_partitioned_table``), which
:func:`events_layout` reads. Every revision keeps working on either layout:
``ALTER TABLE ... ADD COLUMN`` and ``CREATE INDEX`` on a partitioned table reach every
partition, and an index that is unique must include ``run_id``, which the store's do. A later
revision that rebuilds ``pa_events`` must read :func:`events_layout` and keep it.

The conversion runs in one transaction under the migration lock: it locks ``pa_events``
(writers and readers wait, then go on with the new table), builds the new table with the same
columns, copies every row, drops the old table, takes its name, and recreates its primary key
and indexes under their own names (``pk_pa_events``, ``uq_pa_events_run_id_key``), with the
owner and the privileges the old table had. A failure anywhere leaves the old table as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from purpose_agent.db.migrate import run_locked, upgrade_command
from purpose_agent.errors import InvalidInput

EVENTS_TABLE = "pa_events"
PARTITION_KEY = "run_id"
# More hash partitions than this costs planning time on every statement that is not pruned
# (listings, retention) and buys nothing on a single server.
MAX_PARTITIONS = 1024
# The name the new table is built under, until the old one is dropped.
_BUILDING = "pa_events_next"
# What Postgres raises for a unique index that leaves out the partition key.
_FEATURE_NOT_SUPPORTED = "0A000"
_ONLY = re.compile(r" ON ONLY ")
_HASH_BOUND = re.compile(r"modulus (?P<modulus>\d+), remainder (?P<remainder>\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class EventsLayout:
    """How ``pa_events`` is laid out in one database.

    Attributes:
        partitions: How many partitions the table has; 0 for the default, one table.
        key: The partition key as Postgres prints it (``HASH (run_id)``), ``None`` when the
            table is not partitioned.
        schema: The schema that holds the table.
        missing: The hash remainders no attached partition holds (one detached or dropped
            by hand): writes of a quarter of the run ids fail on a table of 4 missing one.

    """

    partitions: int
    key: str | None = None
    schema: str = "public"
    missing: tuple[int, ...] = ()

    @property
    def partitioned(self) -> bool:
        """Whether the table is partitioned (by any key)."""
        return self.key is not None

    @property
    def by_run(self) -> bool:
        """Whether the table is the store's partitioned layout: hash partitions by run id."""
        return self.key == f"HASH ({PARTITION_KEY})"

    def describe(self) -> str:
        """One line for a person: what the layout is."""
        if self.key is None:
            return "one table (the default layout)"
        if self.missing:
            gone = ", ".join(str(remainder) for remainder in self.missing)
            return f"{self.partitions} partitions, {self.key}, with none for remainder {gone}"
        return f"{self.partitions} partitions, {self.key}"

    def to_dict(self) -> dict[str, Any]:
        """The layout as JSON values."""
        return {
            "partitions": self.partitions,
            "key": self.key,
            "schema": self.schema,
            "by_run": self.by_run,
            "missing": list(self.missing),
        }


def _require_postgres(conn: Connection) -> None:
    if conn.dialect.name != "postgresql":
        raise InvalidInput(
            f"the partitioned layout of {EVENTS_TABLE} is for PostgreSQL only "
            f"(this database is {conn.dialect.name})"
        )


def events_layout(conn: Connection) -> EventsLayout | None:
    """The layout of ``pa_events`` in the database ``conn`` is connected to.

    Args:
        conn: A connection to a Postgres database.

    Returns:
        The layout, or ``None`` when the database has no ``pa_events`` table.

    Raises:
        InvalidInput: The database is not Postgres.

    """
    _require_postgres(conn)
    row = conn.execute(
        text(
            "SELECT c.oid, n.nspname, pg_get_partkeydef(c.oid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(:name)"
        ),
        {"name": EVENTS_TABLE},
    ).first()
    if row is None:
        return None
    oid, schema, key = row
    if key is None:
        return EventsLayout(0, None, schema)
    # The partitions' bounds, not their count: a partition detached or dropped by hand
    # leaves the others at their modulus, with its remainder held by none.
    bounds = conn.execute(
        text(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = :oid"
        ),
        {"oid": oid},
    ).scalars()
    held: set[int] = set()
    modulus = 0
    for bound in bounds:
        found = _HASH_BOUND.search(bound or "")
        if found is None:
            return EventsLayout(len(held), key, schema)  # not the store's hash layout
        modulus = max(modulus, int(found["modulus"]))
        held.add(int(found["remainder"]))
    missing = tuple(sorted(set(range(modulus)) - held))
    return EventsLayout(modulus, key, schema, missing)


def check_partitions(partitions: int) -> int:
    """Refuse a partition count the layout cannot have.

    Args:
        partitions: The number asked for; 0 means the default layout (one table).

    Returns:
        ``partitions``.

    Raises:
        InvalidInput: Below 0 or above :data:`MAX_PARTITIONS`.

    """
    if not 0 <= partitions <= MAX_PARTITIONS:
        raise InvalidInput(
            f"partitions must be between 1 and {MAX_PARTITIONS} (0: one table), not {partitions}"
        )
    return partitions


def set_events_layout(conn: Connection, partitions: int) -> tuple[EventsLayout, EventsLayout]:
    """Lay ``pa_events`` out in ``partitions`` hash partitions by run id (0: one table).

    Runs on the caller's connection, inside its transaction, which should hold the migration
    lock (:func:`partition_events` and ``alembic/env.py`` take it). Nothing happens when the
    table already has the layout asked for.

    Args:
        conn: A connection to a Postgres database, in a transaction.
        partitions: How many partitions; 0 for the default layout.

    Returns:
        The layout before and after.

    Raises:
        InvalidInput: Not Postgres, no ``pa_events`` table yet (upgrade the schema first), a
            partition count out of range, or a foreign key on the table (which the copy
            would not carry over).

    """
    check_partitions(partitions)
    before = events_layout(conn)
    if before is None:
        raise InvalidInput(
            f"there is no {EVENTS_TABLE} table to lay out: run "
            f"`{upgrade_command(conn.engine.url)}` first"
        )
    if before.missing:
        gone = ", ".join(f"{EVENTS_TABLE}_p{remainder}" for remainder in before.missing)
        raise InvalidInput(
            f"{EVENTS_TABLE} has {before.partitions} hash partitions but none holds remainder"
            f" {', '.join(map(str, before.missing))} (detached or dropped by hand): writes of"
            f" the run ids that hash there fail, and a change of layout would leave their"
            f" rows out; attach the partition back (usually {gone}) first"
        )
    wanted_key = f"HASH ({PARTITION_KEY})" if partitions else None
    if before.key == wanted_key and before.partitions == partitions:
        return before, before
    table = _Table(conn, before.schema)
    table.lock()
    table.refuse_what_would_be_lost(partitions)
    table.rebuild(partitions)
    after = events_layout(conn)
    assert after is not None  # the table was just rebuilt under its own name
    return before, after


def partition_events(engine: Engine, partitions: int) -> tuple[EventsLayout, EventsLayout]:
    """Change the layout of ``pa_events`` under the migration lock, in one transaction.

    Args:
        engine: An engine on a Postgres database at revision 0001 or later.
        partitions: How many hash partitions by run id; 0 for the default layout.

    Returns:
        The layout before and after.

    Raises:
        InvalidInput: See :func:`set_events_layout`; also a constraint or index the other
            layout cannot have (a unique index without ``run_id`` on a partitioned table).

    """
    check_partitions(partitions)
    if engine.dialect.name != "postgresql":
        raise InvalidInput(
            f"the partitioned layout of {EVENTS_TABLE} is for PostgreSQL only "
            f"(this database is {engine.dialect.name})"
        )
    layouts: list[tuple[EventsLayout, EventsLayout]] = []
    try:
        # As a migration: the table lock is waited for a little at a time, so a long
        # transaction holds up the conversion, not every writer queued behind its lock.
        run_locked(engine, lambda conn: layouts.append(set_events_layout(conn, partitions)))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _FEATURE_NOT_SUPPORTED:
            raise InvalidInput(
                f"{EVENTS_TABLE} cannot take this layout, nothing was changed: {exc.orig}"
            ) from exc
        raise
    return layouts[-1]


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


class _Table:
    """The statements of one conversion of ``pa_events``, on the caller's transaction."""

    def __init__(self, conn: Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.name = self.qualified(EVENTS_TABLE)

    def qualified(self, name: str) -> str:
        return f"{_quote(self.conn, self.schema)}.{_quote(self.conn, name)}"

    def run(self, sql: str, **values: Any) -> Any:
        return self.conn.execute(text(sql), values)

    def lock(self) -> None:
        # Taken first, so that no write lands in the old table after the copy has read it.
        self.run(f"LOCK TABLE {self.name} IN ACCESS EXCLUSIVE MODE")

    def refuse_what_would_be_lost(self, partitions: int) -> None:
        """Refuse what the rebuilt table would not have, rather than drop it without a word.

        The new table copies the columns, defaults, constraints, indexes, owner and grants;
        not foreign keys, triggers, row-level security and its policies, publications
        (logical replication would stop), storage options, or the views that read it. A
        table named like a partition of the new layout (a partition detached by hand) would
        fail the rename after the whole copy.
        """
        found = {
            "foreign keys": self.names(
                "SELECT conname FROM pg_constraint WHERE contype = 'f'"
                " AND (conrelid = CAST(:t AS regclass) OR confrelid = CAST(:t AS regclass))"
            ),
            "triggers": self.names(
                "SELECT tgname FROM pg_trigger"
                " WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
            ),
            "row-level security policies": self.names(
                "SELECT polname FROM pg_policy WHERE polrelid = CAST(:t AS regclass)"
                " UNION ALL SELECT '(row-level security enabled)' FROM pg_class"
                " WHERE oid = CAST(:t AS regclass) AND relrowsecurity"
            ),
            "publications": self.names(
                "SELECT p.pubname FROM pg_publication_rel r"
                " JOIN pg_publication p ON p.oid = r.prpubid"
                " WHERE r.prrelid = CAST(:t AS regclass)"
            ),
            "storage options": self.names(
                "SELECT unnest(reloptions) FROM pg_class WHERE oid = CAST(:t AS regclass)"
            ),
            "views": self.names(
                "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d"
                " JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class"
                " WHERE d.refobjid = CAST(:t AS regclass) AND v.oid <> d.refobjid"
            ),
        }
        lost = "; ".join(f"{what} {names}" for what, names in found.items() if names)
        if lost:
            raise InvalidInput(
                f"{EVENTS_TABLE} has {lost}, which a change of layout would drop; drop them"
                " first, and make them again on the new layout"
            )
        taken = self.names(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = CAST(:schema AS regnamespace)"
            " AND c.relname = ANY(:names) AND NOT EXISTS (SELECT 1 FROM pg_inherits i"
            "  WHERE i.inhrelid = c.oid AND i.inhparent = CAST(:t AS regclass))",
            schema=self.schema,
            names=[f"{EVENTS_TABLE}_p{remainder}" for remainder in range(partitions)],
        )
        if taken:
            raise InvalidInput(
                f"tables {taken} are not partitions of {EVENTS_TABLE} but have the names its"
                " new partitions take (a partition detached by hand?); rename or drop them first"
            )

    def names(self, sql: str, **values: Any) -> list[str]:
        return sorted(str(name) for name in self.run(sql, t=self.name, **values).scalars())

    def rebuild(self, partitions: int) -> None:
        columns = list(
            self.run(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass)"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                t=self.name,
            ).scalars()
        )
        # Primary key and unique constraints, then the indexes that back no constraint: both
        # are recreated on the new table under the same names, once the old one is dropped.
        constraints = self.run(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u', 'x')"
            " ORDER BY contype, conname",
            t=self.name,
        ).all()
        indexes = self.run(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = CAST(:t AS regclass) AND NOT EXISTS ("
            "  SELECT 1 FROM pg_constraint k"
            "  WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)"
            " ORDER BY c.relname",
            t=self.name,
        ).scalars()
        index_sql = [_ONLY.sub(" ON ", definition) for definition in indexes]
        owner, grants = self.run(
            "SELECT pg_get_userbyid(c.relowner),"
            " ARRAY(SELECT format('GRANT %s ON %s TO %s%s', a.privilege_type, c.oid::regclass,"
            "   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee))"
            "   END, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)"
            "   FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner)"
            " FROM pg_class c WHERE c.oid = CAST(:t AS regclass)",
            t=self.name,
        ).one()
        building = self.qualified(_BUILDING)
        partition_by = f" PARTITION BY HASH ({_quote(self.conn, PARTITION_KEY)})"
        self.run(
            f"CREATE TABLE {building} (LIKE {self.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            f" INCLUDING STORAGE INCLUDING COMMENTS){partition_by if partitions else ''}"
        )
        for remainder in range(partitions):
            self.run(
                f"CREATE TABLE {self.qualified(f'{_BUILDING}_p{remainder}')}"
                f" PARTITION OF {building}"
                f" FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
            )
        listed = ", ".join(_quote(self.conn, column) for column in columns)
        self.run(f"INSERT INTO {building} ({listed}) SELECT {listed} FROM {self.name}")
        self.run(f"DROP TABLE {self.name}")
        self.run(f"ALTER TABLE {building} RENAME TO {_quote(self.conn, EVENTS_TABLE)}")
        for remainder in range(partitions):
            self.run(
                f"ALTER TABLE {self.qualified(f'{_BUILDING}_p{remainder}')}"
                f" RENAME TO {_quote(self.conn, f'{EVENTS_TABLE}_p{remainder}')}"
            )
        for name, definition in constraints:
            self.run(
                f"ALTER TABLE {self.name} ADD CONSTRAINT {_quote(self.conn, name)} {definition}"
            )
        for definition in index_sql:
            self.run(definition)
        self._keep_access(owner, grants, partitions)
        # The planner's statistics went with the old table; without them the first queries
        # on a big log would be planned as if it were empty.
        self.run(f"ANALYZE {self.name}")

    def _keep_access(self, owner: str, grants: list[str], partitions: int) -> None:
        tables = [self.name] + [
            self.qualified(f"{EVENTS_TABLE}_p{remainder}") for remainder in range(partitions)
        ]
        current = self.run("SELECT current_user").scalar_one()
        if owner != current:
            for name in tables:
                self.run(f"ALTER TABLE {name} OWNER TO {_quote(self.conn, owner)}")
        for grant in grants:
            self.run(grant)
