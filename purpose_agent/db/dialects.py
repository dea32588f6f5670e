"""Every difference between the SQL backends, in one place: statement builders and error codes.

A :class:`Flavor` builds the statements that are spelled differently per backend (upserts, the
batched insert, the migration lock) and says what a driver error means (a taken key, a
deadlock worth retrying), decided by SQLSTATE or error code, never by message. It runs nothing:
statements are run by :mod:`purpose_agent.db.queries`, transactions are opened by
:mod:`purpose_agent.db.transactions`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Double,
    Engine,
    Executable,
    Insert,
    String,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from purpose_agent.db.models import EventRecord, RunRecord, SnapshotRecord
from purpose_agent.errors import InvalidInput

MIGRATION_LOCK_NAME = "purpose_agent.migrate"
MIGRATION_LOCK_KEY = zlib.crc32(MIGRATION_LOCK_NAME.encode())
EVENT_FIELDS = ("run_id", "seq", "kind", "ts", "lane_id", "data")
SNAPSHOT_FIELDS = ("run_id", "seq", "state", "written_ns")
RUN_FIELDS = ("run_id", "created_ns", "updated_ns", "last_seq")


class Flavor:
    """The generic behaviour; each backend overrides what it spells differently."""

    # Whether a batch of events and their run rows is one statement, so that it can run in
    # autocommit with no BEGIN/COMMIT round trips and still be atomic.
    one_statement_events: ClassVar[bool] = False
    # Connections run in autocommit: a driver in transaction mode would wrap each single
    # statement (reads, one-statement saves) in BEGIN ... COMMIT round trips. A write
    # transaction is opened with this statement and ended with COMMIT or ROLLBACK, on the same
    # kind of connection: nothing is switched per transaction, so a connection the server
    # dropped fails on a statement SQLAlchemy sees, never in a setting change.
    begin_sql: ClassVar[str] = "BEGIN"
    # Whether a long filter list is bound as one parameter (:meth:`in_list`). MariaDB's
    # drivers write the values into the statement's text themselves, so it has no limit
    # on parameters, and JSON_TABLE, its one-parameter form, sorts through a temporary
    # table (3 times slower for 70,000 lanes): it keeps a parameter per value.
    lists_in_one_parameter: ClassVar[bool] = True
    # Events compact deletes per transaction: a run of millions of events goes a chunk at a
    # time, so that no transaction grows by the size of the run (MariaDB's undo log and lock
    # memory, a replica's lag, SQLite's WAL). A server's other writers never wait for it:
    # chunks this big cost little more than one statement.
    compact_chunk: ClassVar[int] = 50_000
    # Seconds to wait between two transactions of work done in chunks (compacting a long
    # run), so that writers of other runs waiting for the database's write lock get it.
    chunk_pause: ClassVar[float] = 0.0

    # ``INSERT ... ON CONFLICT`` (SQLite and Postgres spell it alike); MariaDB overrides the
    # builders with ``ON DUPLICATE KEY UPDATE``.
    upsert_insert: Any = staticmethod(postgresql.insert)
    greatest: Any = staticmethod(func.greatest)

    # -- write times --------------------------------------------------------------------

    def write_time(self, given: Any, *, locked: bool = False) -> Any:
        """The write time a statement stores for a run (and its snapshot), in nanoseconds.

        ``given`` is the writer's own stamp (:func:`~purpose_agent.clock.stamp_ns`, bound as
        ``:now``): a file database has one host, and its stamps increase within a process
        even inside one clock tick. A server's writers run on many hosts whose clocks differ
        by seconds or hours; their stamps ordered ``list_runs`` and aged runs for retention
        by each host's clock, so a writer host behind lost live runs to a prune by age. A
        server's flavour reads the server's clock instead, where the statement writes the row:
        after any wait for the row's lock, so a write that waited is not stamped with the
        time before the wait either.

        Args:
            given: The writer's stamp, a parameter or a value.
            locked: Whether the time is read where the row is already locked (an update's
                assignment), so that it is read as the row is written. A new row's values
                read it once for the statement: its created and updated times are one, and
                the runs one statement creates share their time (and list by id), as they
                share a writer's stamp.

        """
        return given

    def clock(self) -> Executable | None:
        """A query for the present as :meth:`write_time` stamps it, where that is the server's.

        Ages (``older_than``) are counted back from it, so a pruning host's clock decides
        nothing. ``None`` where writes are stamped with the local clock.
        """
        return None

    # -- statements ---------------------------------------------------------------------

    def events_insert(self) -> Insert:
        """``INSERT`` one event (or, run as executemany, one per row)."""
        return insert(EventRecord).values({name: bindparam(name) for name in EVENT_FIELDS})

    def runs_upsert(self) -> Insert:
        """``INSERT`` a run row, or move its ``updated_ns`` and ``last_seq`` forward."""
        return self.runs_on_conflict(self.upsert_insert(RunRecord).values(self._run_values()))

    def _run_values(self) -> dict[str, Any]:
        """A new run row's values: the ``RUN_FIELDS`` parameters, at the write time."""
        values: dict[str, Any] = {name: bindparam(name) for name in RUN_FIELDS}
        for name in ("created_ns", "updated_ns"):
            values[name] = self.write_time(bindparam(name, type_=BigInteger))
        return values

    def runs_on_conflict(self, stmt: Any) -> Insert:
        """Add the run row's conflict clause to an ``INSERT`` into the runs table."""
        result: Insert = stmt.on_conflict_do_update(
            index_elements=[RunRecord.run_id],
            set_={
                # Read again in the update, after the row's lock: the inserted row's time was
                # read before any wait for it.
                "updated_ns": self.greatest(
                    RunRecord.updated_ns, self.write_time(stmt.excluded.updated_ns, locked=True)
                ),
                "last_seq": self.greatest(RunRecord.last_seq, stmt.excluded.last_seq),
            },
        )
        return result

    def run_ensure(self) -> Insert:
        """``INSERT`` a run row unless it exists, changing nothing in an existing one.

        An append runs it before locking the row, so that a new run has a row to lock.
        """
        stmt: Any = self.upsert_insert(RunRecord).values(self._run_values())
        result: Insert = stmt.on_conflict_do_nothing(index_elements=[RunRecord.run_id])
        return result

    def snapshot_upsert(self) -> Insert:
        """``INSERT`` a snapshot, or replace the stored one unless it has a higher ``seq``."""
        # Named parameters, not the columns' implicit ones: inside a WITH (Postgres saves a
        # snapshot and its run row in one statement) an INSERT without VALUES compiles to
        # anonymous parameters that the caller's names would not reach.
        stmt: Any = self.upsert_insert(SnapshotRecord).values(self._snapshot_values())
        return self.snapshot_on_conflict(stmt)

    def _snapshot_values(self) -> dict[str, Any]:
        """A snapshot row's values: the ``SNAPSHOT_FIELDS`` parameters, at the write time."""
        values: dict[str, Any] = {name: bindparam(name) for name in SNAPSHOT_FIELDS}
        values["written_ns"] = self.write_time(bindparam("written_ns", type_=BigInteger))
        return values

    @staticmethod
    def snapshot_on_conflict(stmt: Any) -> Insert:
        """Add the snapshot's conflict clause: replace the stored one unless its seq is higher."""
        result: Insert = stmt.on_conflict_do_update(
            index_elements=[SnapshotRecord.run_id],
            set_={
                "seq": stmt.excluded.seq,
                "state": stmt.excluded.state,
                "written_ns": stmt.excluded.written_ns,
            },
            where=SnapshotRecord.seq <= stmt.excluded.seq,
        )
        return result

    def events_and_runs(self, *, many: bool) -> Insert | None:
        """One statement inserting events and touching their runs, where the backend has one."""
        return None

    def snapshot_and_run(self) -> Insert | None:
        """One statement saving a snapshot and touching its run, where the backend has one."""
        return None

    def saves_in_one(self) -> Insert | None:
        """One statement storing the events and snapshots of many saves, where the backend has one.

        A group commit of saves runs it in autocommit: the whole batch is one round trip and
        one commit, however many calls it carries.
        """
        return None

    def append_in_one(self, expect: str, *, many: bool) -> Insert | None:
        """One statement appending events at a run's next seqs, where the backend has one.

        Args:
            expect: ``"any"`` (no expected last seq), ``"zero"`` (the run must have no
                events) or ``"match"`` (the run's last seq must be ``:expected``).
            many: Whether the events come as arrays (a batch) or as scalars (one event).

        """
        return None

    def append_advance(self, *, only_empty: bool = False) -> Insert:
        """Advance a run's row for an append of ``:n`` events, creating the row if needed.

        What an append through the locked row writes (``lock_run`` then ``advance_run``), in
        one statement: a new run's row is created at ``:now`` with last seq ``:n`` and group
        ``:new_group``; an existing run's last seq grows by ``:n`` (so it never goes down,
        whatever compaction or explicit seqs left), its write time becomes ``:now``, and its
        group becomes ``:new_group`` unless that is null. The caller adds ``RETURNING
        last_seq``: the events take the seqs up to it.

        Args:
            only_empty: Change an existing run only while its last seq is 0 (an append that
                expects an empty run); otherwise the statement changes nothing.

        """
        # Not named after columns: an UPDATE reserves those names for its SET clause.
        now = self.write_time(bindparam("now", type_=BigInteger))
        stmt: Any = self.upsert_insert(RunRecord).values(
            run_id=bindparam("the_run", type_=Text),
            created_ns=now,
            updated_ns=now,
            last_seq=bindparam("n", type_=BigInteger),
            group_id=bindparam("new_group", type_=Text),
        )
        result: Insert = stmt.on_conflict_do_update(
            index_elements=[RunRecord.run_id],
            set_={
                "last_seq": RunRecord.last_seq + stmt.excluded.last_seq,
                "updated_ns": self.greatest(
                    RunRecord.updated_ns, self.write_time(stmt.excluded.updated_ns, locked=True)
                ),
                "group_id": func.coalesce(stmt.excluded.group_id, RunRecord.group_id),
            },
            where=(RunRecord.last_seq == 0) if only_empty else None,
        )
        return result

    def one_of(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN (values)``, spelled the way the backend plans well."""
        result: ColumnElement[bool] = column.in_(values)
        return result

    def by_code_point(self, column: Any) -> Any:
        """A text column ordered and compared by code point, as Python orders strings.

        Ties of ``list_runs`` are ordered by run id, and ``delete_runs(keep_newest=...)``
        chooses among them in Python: the two must agree on which runs are the newest. SQLite
        (``BINARY``) and the store's MariaDB columns (``utf8mb4_nopad_bin``) already compare
        by code point.
        """
        return column

    def in_list(self, column: Any, name: str) -> ColumnElement[bool]:
        """``column`` is one of the values bound, all in one parameter, as ``name``.

        For a prepared statement filtering on a caller's list of any length (a read's lanes):
        its text is the same for 40 values or 100,000, so it is compiled once, and no
        backend's limit on a statement's parameters is reached (65,535 on Postgres, 32,766
        by default on SQLite). The parameter's value is :meth:`list_value` of the values.
        """
        raise NotImplementedError

    def list_value(self, values: Collection[str]) -> Any:
        """The value of an :meth:`in_list` parameter: a JSON array of the strings."""
        # Not ASCII-escaped: the values go as they are, with no surrogate pairs to decode.
        return json.dumps(list(values), ensure_ascii=False)

    def migration_lock(self) -> tuple[Executable, Executable | None] | None:
        """Statements that take and release the lock one migrating process holds.

        ``None`` where the write transaction itself serialises migrations (SQLite).
        """
        return None

    # -- errors -------------------------------------------------------------------------

    def in_transaction(self, driver_connection: Any) -> bool:
        """Whether the driver's connection is inside a transaction (so COMMIT has work)."""
        raise NotImplementedError

    def is_unique_violation(self, exc: DBAPIError) -> bool:
        """Whether the error is a primary-key or unique violation."""
        raise NotImplementedError

    # The largest message the server takes, where it is fixed and a payload could pass it.
    payload_limit: ClassVar[int | None] = None

    def payload_limit_query(self) -> Executable | None:
        """A query for the largest statement the server accepts, where the server sets it.

        MariaDB refuses a statement over its ``max_allowed_packet`` (16 MiB by default) and
        drops the connection. Postgres's limit is fixed (:attr:`payload_limit`); SQLite's
        (a billion bytes, or less where a program lowered it) is met as an error.
        """
        return None

    def payload_limit_text(self, limit: int) -> str:
        """What the server's limit on a statement is, and what to do about it."""
        return f"the server accepts values up to {limit:,} bytes; store less in one value"

    def sent_size(self, text: str) -> int:
        """The bytes of an ASCII JSON payload as the driver sends it (parameters apart)."""
        return len(text)

    def is_too_large(self, exc: DBAPIError) -> bool:
        """Whether the server refused a statement for its size (retrying cannot help)."""
        return False

    def is_unrepresentable(self, exc: DBAPIError) -> bool:
        """Whether a character of a value has no form in the database's own encoding.

        Every text the store sends is Unicode; a database kept in a narrower encoding
        (Postgres created with ``ENCODING 'LATIN1'``) cannot hold some run ids, lanes, keys
        or groups, and says so on every try: a value to refuse, not an outage.
        """
        return False

    def is_undecodable(self, exc: DBAPIError) -> bool:
        """Whether the driver could not decode a stored text value (damage, not an outage)."""
        return False

    def is_read_only(self, exc: DBAPIError) -> bool:
        """Whether the database refused a write because this process may only read it."""
        return False

    def advice(self, exc: DBAPIError) -> str | None:
        """What to do about an error that is the URL's or the server's setup, not an outage.

        The login refused, the database missing, a privilege lacking: the driver's message
        says what happened, this says how to fix it, since waiting will not.
        """
        return None

    def message(self, exc: DBAPIError) -> str:
        """The database's own words for an error, on one line, for a message of ours."""
        return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]

    def is_schema_missing(self, exc: DBAPIError) -> bool:
        """Whether a table the statement names does not exist.

        The store checked its schema when it opened: a table missing later was dropped under
        it (the database dropped and created again, a downgrade to base).
        """
        return False

    def is_damaged(self, exc: DBAPIError) -> bool:
        """Whether the database reports its own storage damaged (a page, an index).

        Such an error comes back on every try, so it is damage to report, not an outage to
        wait out.
        """
        return False

    def is_transient(self, exc: DBAPIError) -> bool:
        """Whether the error is a deadlock or serialization failure worth one more try."""
        return False

    def ended_while_idle(self, exc: BaseException) -> bool:
        """Whether the server ended the session while it was idle, before the statement came.

        Then nothing the statement would have done happened, though the connection was lost
        when it was sent: even an append without keys is safe to run again.
        """
        return False

    def is_out_of_range(self, exc: DBAPIError) -> bool:
        """Whether an integer went past its column's range (a run's last seq past 2**63 - 1).

        SQLite has no such error: its integer arithmetic overflows into a float instead.
        """
        return False


class SQLiteFlavor(Flavor):
    """SQLite: writers take the lock with ``BEGIN IMMEDIATE``; everything runs in-process."""

    # A deferred transaction that reads and then writes can fail at once with "database is
    # locked" when another writer got in between; an immediate transaction waits for the lock
    # (up to the busy timeout) instead.
    begin_sql = "BEGIN IMMEDIATE"
    # One lock for every writer of the file, with no queue: a writer of another process
    # retries in its busy handler, at most 100 ms apart once it has waited a while, and
    # would never find the lock free if the chunks followed one another at once.
    chunk_pause = 0.1
    # Every other writer of the file waits while a chunk is deleted: about 0.1 s each.
    compact_chunk = 5000
    upsert_insert = staticmethod(sqlite.insert)
    greatest = staticmethod(func.max)  # SQLite's two-argument max() is GREATEST

    def in_transaction(self, driver_connection: Any) -> bool:  # noqa: D102
        return bool(driver_connection.in_transaction)

    def is_read_only(self, exc: DBAPIError) -> bool:  # noqa: D102
        code = getattr(exc.orig, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF == 8  # SQLITE_READONLY and its kinds

    def is_damaged(self, exc: DBAPIError) -> bool:  # noqa: D102
        code = getattr(exc.orig, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in (11, 26)  # SQLITE_CORRUPT, _NOTADB

    def advice(self, exc: DBAPIError) -> str | None:  # noqa: D102
        # Outside a run's read (opening the store, listing runs) damage has no run to name;
        # the file is the URL's, and no retry or wait changes what SQLite finds in it.
        code = getattr(exc.orig, "sqlite_errorcode", None)
        if not isinstance(code, int):
            return None
        if code & 0xFF == 26:  # SQLITE_NOTADB
            return (
                "the URL names a file that is not a SQLite database, or one whose first page is "
                "damaged: correct the URL, or restore the file from a backup"
            )
        if code & 0xFF == 11:  # SQLITE_CORRUPT
            return _DAMAGED_FILE
        return None

    def is_too_large(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlite_errorcode", None) == 18  # SQLITE_TOOBIG

    def is_schema_missing(self, exc: DBAPIError) -> bool:  # noqa: D102
        # SQLite has no code of its own for it (SQLITE_ERROR, 1, is any error of a statement):
        # its message is the one way to tell.
        return getattr(exc.orig, "sqlite_errorcode", None) == 1 and str(exc.orig).startswith(
            "no such table"
        )

    def payload_limit_text(self, limit: int) -> str:  # noqa: D102
        return (
            "SQLite refused a string over its length limit (SQLITE_LIMIT_LENGTH, a billion "
            "bytes unless lowered); store less in one value"
        )

    def is_undecodable(self, exc: DBAPIError) -> bool:  # noqa: D102
        # SQLite stores whatever bytes it is given in a TEXT column; the driver's UTF-8
        # decoding then fails in Python, the one OperationalError without a SQLite error code.
        return (
            type(exc.orig).__name__ == "OperationalError"
            and getattr(exc.orig, "sqlite_errorcode", None) is None
        )

    def in_list(self, column: Any, name: str) -> ColumnElement[bool]:
        """``column IN (SELECT value FROM json_each(:name))``, SQLite's JSON being built in."""
        listed = func.json_each(bindparam(name, type_=Text)).table_valued("value")
        result: ColumnElement[bool] = column.in_(select(listed.c.value))
        return result

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        # SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE
        return getattr(exc.orig, "sqlite_errorcode", None) in (1555, 2067)


class PostgresFlavor(Flavor):
    """Postgres: a batch and its run rows go in one statement, so one round trip per save."""

    upsert_insert = staticmethod(postgresql.insert)
    one_statement_events = True
    # Whatever default_transaction_isolation the database or role sets (an operator's
    # 'serializable'): the store's transactions lock the run's row and rely on READ
    # COMMITTED's re-read of a row another writer committed meanwhile, where REPEATABLE READ
    # and SERIALIZABLE fail with 40001 (see postgres_sessions, which pins the same for the
    # autocommit statements of a direct connection).
    begin_sql = "BEGIN ISOLATION LEVEL READ COMMITTED"

    def in_transaction(self, driver_connection: Any) -> bool:  # noqa: D102
        return int(driver_connection.info.transaction_status) != 0  # IDLE

    def write_time(self, given: Any, *, locked: bool = False) -> Any:  # noqa: D102
        # clock_timestamp() where the row is locked: the moment it is written, after any wait
        # for the lock, where now() is when the transaction began. statement_timestamp() for a
        # new row's values, read once however often they name it. To the microsecond, the
        # clocks' own resolution.
        clock = "clock_timestamp()" if locked else "statement_timestamp()"
        return literal_column(
            f"(CAST(EXTRACT(EPOCH FROM {clock}) * 1000000 AS BIGINT) * 1000)", BigInteger
        )

    def clock(self) -> Executable:  # noqa: D102
        return select(self.write_time(None, locked=True))

    def snapshot_and_run(self) -> Insert:
        """Upsert the snapshot and touch its run; both parts of the ``WITH`` always run."""
        snapshot = self.snapshot_upsert().cte("snapshot")
        now = self.write_time(bindparam("now", type_=BigInteger))
        touch = postgresql.insert(RunRecord).values(
            run_id=bindparam("snapshot_run_id"),
            created_ns=now,
            updated_ns=now,
            last_seq=bindparam("snapshot_seq", type_=BigInteger),
        )
        return self.runs_on_conflict(touch).add_cte(snapshot)

    def events_and_runs(self, *, many: bool) -> Insert:
        """Insert the events, then upsert their runs from what was inserted.

        One event takes plain scalar parameters: adapting six one-element arrays would cost the
        client more than the whole statement costs the server. A batch is ``unnest()`` over one
        array per column: the text is the same for 2 or 10,000 events, so it is compiled once,
        and the whole batch is one round trip.
        """
        events = self._many_events_insert() if many else self.events_insert()
        inserted = events.returning(EventRecord.run_id, EventRecord.seq).cte("inserted")
        now = self.write_time(bindparam("now", type_=BigInteger))
        touched = (
            select(inserted.c.run_id, now, now, func.max(inserted.c.seq))
            .group_by(inserted.c.run_id)
            .order_by(inserted.c.run_id)
        )
        return self.runs_on_conflict(
            postgresql.insert(RunRecord).from_select(
                ["run_id", "created_ns", "updated_ns", "last_seq"], touched
            )
        )

    def saves_in_one(self) -> Insert:
        """Insert events, upsert snapshots (one per run) and touch every run they write.

        Events and snapshots come as one array per column (``unnest()``), so the text is the
        same for any batch and the batch is one round trip. The parts run in the order a lone
        save takes its locks: the events (pulled by the run rows' upsert), the run rows in
        run id order, then the snapshots (an unreferenced part of a ``WITH`` runs last).
        """
        events = self._many_events_insert()
        inserted = events.returning(EventRecord.run_id, EventRecord.seq).cte("inserted")
        now = self.write_time(bindparam("now", type_=BigInteger))
        snapshots = (
            func.unnest(
                *(
                    cast(bindparam(f"snapshot_{name}"), ARRAY(kind))
                    for name, kind in (("run_id", Text), ("seq", BigInteger), ("state", Text))
                )
            )
            .table_valued("run_id", "seq", "state")
            .render_derived(name="snapshots")
        )
        stmt: Any = postgresql.insert(SnapshotRecord).from_select(
            ["run_id", "seq", "state", "written_ns"],
            select(snapshots.c.run_id, snapshots.c.seq, snapshots.c.state, now),
        )
        saved = self.snapshot_on_conflict(stmt).cte("snapshot")
        covered = (
            func.unnest(
                cast(bindparam("snapshot_run_id"), ARRAY(Text)),
                cast(bindparam("snapshot_seq"), ARRAY(BigInteger)),
            )
            .table_valued("run_id", "seq")
            .render_derived(name="covered")
        )
        written = union_all(
            select(inserted.c.run_id, inserted.c.seq), select(covered.c.run_id, covered.c.seq)
        ).subquery("written")
        touched = (
            select(written.c.run_id, now, now, func.max(written.c.seq))
            .group_by(written.c.run_id)
            .order_by(written.c.run_id)
        )
        runs = self.runs_on_conflict(
            postgresql.insert(RunRecord).from_select(
                ["run_id", "created_ns", "updated_ns", "last_seq"], touched
            )
        )
        return runs.add_cte(saved)

    def append_in_one(self, expect: str, *, many: bool) -> Insert:
        """Advance the run row and insert the events after it, in one statement.

        The run row's upsert (or update) locks the row and returns the new last seq; the
        events take the seqs below it, in the order given. When the expected last seq does
        not match, the row is not updated, nothing is returned and nothing is inserted. A
        key that is already stored fails the statement on the key's unique index; the store
        then decides in a transaction whether it is a retry.
        """
        count = bindparam("n", type_=BigInteger)
        now = self.write_time(bindparam("now", type_=BigInteger), locked=True)
        # Not named after columns: an UPDATE reserves those names for its SET clause.
        group = bindparam("new_group", type_=Text)
        run_id = bindparam("the_run", type_=Text)
        run: Any
        if expect == "match":
            run = (
                update(RunRecord)
                .where(
                    RunRecord.run_id == run_id,
                    RunRecord.last_seq == bindparam("expected", type_=BigInteger),
                )
                .values(
                    last_seq=RunRecord.last_seq + count,
                    updated_ns=self.greatest(RunRecord.updated_ns, now),
                    group_id=func.coalesce(group, RunRecord.group_id),
                )
            )
        else:
            run = self.append_advance(only_empty=expect == "zero")
        advanced = run.returning(RunRecord.last_seq).cte("run")
        if many:
            batch = (
                func.unnest(
                    *(
                        cast(bindparam(name), ARRAY(kind))
                        for name, kind in (
                            ("kind", Text),
                            ("ts", Double),
                            ("lane_id", Text),
                            ("data", Text),
                            ("key", Text),
                        )
                    )
                )
                .table_valued("kind", "ts", "lane_id", "data", "key", with_ordinality="ord")
                .render_derived(name="batch")
            )
            rows = select(
                run_id,
                advanced.c.last_seq - count + batch.c.ord,
                batch.c.kind,
                batch.c.ts,
                batch.c.lane_id,
                batch.c.data,
                batch.c.key,
            ).select_from(advanced.join(batch, true()))  # one run row: every event joins it
        else:
            rows = select(
                run_id,
                advanced.c.last_seq,
                bindparam("kind", type_=Text),
                bindparam("ts", type_=Double),
                bindparam("lane_id", type_=Text),
                bindparam("data", type_=Text),
                bindparam("key", type_=Text),
            ).select_from(advanced)
        return (
            insert(EventRecord).from_select([*EVENT_FIELDS, "key"], rows).returning(EventRecord.seq)
        )

    @staticmethod
    def _many_events_insert() -> Insert:
        columns = (
            ("run_id", Text),
            ("seq", BigInteger),
            ("kind", Text),
            ("ts", Double),
            ("lane_id", Text),
            ("data", Text),
        )
        source = (
            func.unnest(*(cast(bindparam(name), ARRAY(kind)) for name, kind in columns))
            .table_valued(*(name for name, _ in columns))
            .render_derived(name="batch")
        )
        return insert(EventRecord).from_select([name for name, _ in columns], select(*source.c))

    def by_code_point(self, column: Any) -> Any:
        """``column COLLATE "C"``, since a database's default collation may not be ``C``.

        ``en_US`` or an ICU collation orders ``'a'`` before ``'B'``, by letters.
        """
        return column.collate("C")

    def one_of(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """``column = ANY(:array)``: one parameter, however many values.

        Sessions on a direct connection force generic plans; a generic plan of an ``IN``
        list of hundreds of parameters scans the table and tests each row against the list
        (0.85 s against 17 ms for 500 run ids), while ``= ANY`` of one array is planned as
        an index lookup.
        """
        kind = column.type if not isinstance(column.type, String) else Text()
        result: ColumnElement[bool] = column == any_(
            bindparam(None, list(values), type_=ARRAY(kind))
        )
        return result

    def in_list(self, column: Any, name: str) -> ColumnElement[bool]:
        """``column = ANY(CAST(:name AS TEXT[]))``: one array parameter.

        Under the generic plans the store's sessions use, each row is compared with the
        values in turn, as with an ``IN`` list of one parameter each (70,000 lanes against a
        run's 2,000 events: 0.35 s).
        """
        result: ColumnElement[bool] = column == any_(cast(bindparam(name), ARRAY(Text)))
        return result

    def list_value(self, values: Collection[str]) -> Any:
        """The values as a list, which psycopg sends as one array."""
        return list(values)

    def migration_lock(self) -> tuple[Executable, Executable | None]:
        """A transaction-level advisory lock: released by the commit that ends the upgrade."""
        return select(func.pg_advisory_xact_lock(literal(MIGRATION_LOCK_KEY))), None

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) == "23505"

    def is_transient(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")

    def is_damaged(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) in ("XX001", "XX002")  # data, index corrupted

    def is_schema_missing(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) == "42P01"  # undefined_table

    # A message over 1 GB (MaxAllocSize) makes the server close the connection: the append
    # would be sent again and then reported as an outage.
    payload_limit = 0x3FFF_FFFF

    def payload_limit_text(self, limit: int) -> str:  # noqa: D102
        return f"Postgres takes a statement of up to {limit:,} bytes; store less in one value"

    def is_unrepresentable(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) == "22P05"  # untranslatable_character

    def ended_while_idle(self, exc: BaseException) -> bool:  # noqa: D102
        # idle_session_timeout: the server sends it, and closes the session, only while the
        # session is idle outside a transaction, so before the statement that meets it.
        return getattr(getattr(exc, "orig", exc), "sqlstate", None) == "57P05"

    def advice(self, exc: DBAPIError) -> str | None:  # noqa: D102
        # A refused connection carries no SQLSTATE in psycopg; libpq's message names the cause.
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if sqlstate == "08P01" and _STATEMENT_POOLING in str(exc.orig):
            return _NEEDS_TRANSACTIONS
        if sqlstate == "08P01" and _POOLER_WAIT in str(exc.orig):
            return _NO_SERVER_CONNECTION
        if sqlstate == "57014" and "statement timeout" not in str(exc.orig):
            return None  # cancelled by hand (pg_cancel_backend), not by the time limit
        if sqlstate in ("", "53300"):  # a refused connection, or too many connections
            said = str(exc.orig)
            limit = next((text for words, text in _PG_LIMITS if words in said), None)
            if limit is not None:
                return limit
        return _ADVICE.get(sqlstate)

    def is_out_of_range(self, exc: DBAPIError) -> bool:  # noqa: D102
        return getattr(exc.orig, "sqlstate", None) == "22003"  # numeric_value_out_of_range


class MariaDBFlavor(Flavor):
    """MariaDB (and MySQL-protocol servers): ``ON DUPLICATE KEY UPDATE`` upserts."""

    lists_in_one_parameter = False
    # Not BEGIN: under sql_mode=ORACLE (a server default some operators set) BEGIN opens a
    # PL/SQL block and a lone BEGIN is a syntax error, so no write could start.
    begin_sql = "START TRANSACTION"

    def in_transaction(self, driver_connection: Any) -> bool:  # noqa: D102
        return bool(driver_connection.server_status & 1)  # SERVER_STATUS_IN_TRANS

    def write_time(self, given: Any, *, locked: bool = False) -> Any:  # noqa: D102
        # UTC_TIMESTAMP(6), when the statement began: a new row's values read it once however
        # often they name it. Where the row is locked, plus the time since then (SYSDATE(6)
        # is the moment it is read, after any wait for the lock; a server started with
        # --sysdate-is-now adds nothing). Counted from UTC, not through UNIX_TIMESTAMP of a
        # local time: in a session time zone with daylight saving time, that is an hour off
        # in the hour repeated when clocks go back.
        since = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6))"
        if locked:
            since = f"{since} + TIMESTAMPDIFF(MICROSECOND, NOW(6), SYSDATE(6))"
        return literal_column(f"(({since}) * 1000)", BigInteger)

    def clock(self) -> Executable:  # noqa: D102
        return select(self.write_time(None, locked=True))

    def runs_upsert(self) -> Insert:  # noqa: D102
        stmt = mysql.insert(RunRecord).values(self._run_values())
        # The time is read again in the update, after the row's lock (see write_time).
        return stmt.on_duplicate_key_update(
            updated_ns=func.greatest(
                RunRecord.updated_ns, self.write_time(stmt.inserted.updated_ns, locked=True)
            ),
            last_seq=func.greatest(RunRecord.last_seq, stmt.inserted.last_seq),
        )

    def run_ensure(self) -> Insert:  # noqa: D102
        stmt = mysql.insert(RunRecord).values(self._run_values())
        # A no-op assignment, not INSERT IGNORE, which would turn other errors into warnings.
        return stmt.on_duplicate_key_update(last_seq=RunRecord.last_seq)

    def append_advance(self, *, only_empty: bool = False) -> Insert:  # noqa: D102
        if only_empty:
            raise NotImplementedError("an append expecting an empty run checks it in Python here")
        now = self.write_time(bindparam("now", type_=BigInteger))
        stmt = mysql.insert(RunRecord).values(
            run_id=bindparam("the_run", type_=Text),
            created_ns=now,
            updated_ns=now,
            last_seq=bindparam("n", type_=BigInteger),
            group_id=bindparam("new_group", type_=Text),
        )
        # No assignment reads a column another one sets, so their order does not matter.
        return stmt.on_duplicate_key_update(
            last_seq=RunRecord.last_seq + stmt.inserted.last_seq,
            updated_ns=func.greatest(
                RunRecord.updated_ns, self.write_time(stmt.inserted.updated_ns, locked=True)
            ),
            group_id=func.coalesce(stmt.inserted.group_id, RunRecord.group_id),
        )

    def snapshot_upsert(self) -> Insert:  # noqa: D102
        stmt = mysql.insert(SnapshotRecord).values(self._snapshot_values())
        newer = stmt.inserted.seq >= SnapshotRecord.seq
        # MariaDB applies the assignments left to right, each seeing the ones before it, so
        # seq, which the others compare against, is assigned last.
        return stmt.on_duplicate_key_update(
            [
                ("state", case((newer, stmt.inserted.state), else_=SnapshotRecord.state)),
                (
                    "written_ns",
                    case((newer, stmt.inserted.written_ns), else_=SnapshotRecord.written_ns),
                ),
                ("seq", case((newer, stmt.inserted.seq), else_=SnapshotRecord.seq)),
            ]
        )

    def migration_lock(self) -> tuple[Executable, Executable | None]:
        """A named lock of this database; DDL commits implicitly, so a transaction would not do.

        Lock names are the whole server's, while Postgres's advisory locks are each
        database's: the name carries the database's (hashed to fit the 64 characters a name
        may have), or a migration waiting on one database held every other database's
        migrations, and the stores opening on them, for as long as it waited.
        """
        name = "CONCAT(:name, ':', MD5(COALESCE(DATABASE(), '')))"
        bound = {"name": MIGRATION_LOCK_NAME}
        return (
            text(f"SELECT GET_LOCK({name}, 600)").bindparams(**bound),
            text(f"SELECT RELEASE_LOCK({name})").bindparams(**bound),
        )

    def is_unique_violation(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) == 1062

    def payload_limit_query(self) -> Executable:  # noqa: D102
        return text("SELECT @@max_allowed_packet")

    def payload_limit_text(self, limit: int) -> str:  # noqa: D102
        return (
            f"this MariaDB server accepts statements up to its max_allowed_packet of {limit:,} "
            "bytes; raise it (SET GLOBAL max_allowed_packet = ..., up to 1 GB) or store less "
            "in one value"
        )

    def sent_size(self, text: str) -> int:
        """The escaped size: PyMySQL and aiomysql write each value into the statement's text.

        They put a backslash before each backslash, quote and apostrophe (JSON text holds
        no raw control characters); under ``NO_BACKSLASH_ESCAPES`` they double only the
        apostrophes, which this bound covers too.
        """
        return len(text) + text.count("\\") + text.count('"') + text.count("'")

    def is_too_large(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) in (1153, 1301)  # packet too large, result too large

    def is_transient(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) in (1205, 1213)  # lock wait timeout, deadlock

    def message(self, exc: DBAPIError) -> str:
        """The server's message without the error number PyMySQL and aiomysql put first."""
        args: tuple[Any, ...] = getattr(exc.orig, "args", ())
        if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
            return args[1]
        return super().message(exc)

    def is_schema_missing(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) == 1146  # table doesn't exist

    def is_damaged(self, exc: DBAPIError) -> bool:  # noqa: D102
        # Index for table is corrupt; table is marked as crashed (and should be repaired).
        return _mysql_errno(exc) in (1034, 1194, 1195)

    def advice(self, exc: DBAPIError) -> str | None:  # noqa: D102
        errno = _mysql_errno(exc) or 0
        return _MYSQL_LIMITS.get(errno) or _ADVICE.get(_MYSQL_ADVICE.get(errno, ""))

    def is_out_of_range(self, exc: DBAPIError) -> bool:  # noqa: D102
        return _mysql_errno(exc) in (1264, 1690)  # out of range for the column, in arithmetic


_LOGIN = "the server refused the login: check the URL's user and password"
_DAMAGED_FILE = (
    "the SQLite file's own pages are damaged: `purpose-agent runs verify` lists what still "
    "reads; restore the file from a backup, or copy what reads into a new store "
    "(`purpose-agent copy`)"
)
_NO_DATABASE = (
    "the URL's database does not exist on the server: create it (CREATE DATABASE), and the "
    "store creates its tables in it"
)
_PRIVILEGE = (
    "the URL's user lacks a privilege on the store's tables: grant SELECT, INSERT, UPDATE and "
    "DELETE on them (and CREATE, ALTER, INDEX and DROP, for migrations), or connect as their "
    "owner"
)
# PgBouncer's refusal of BEGIN in statement pooling mode (as a protocol violation, 08P01).
_STATEMENT_POOLING = "statement pooling mode"
_NEEDS_TRANSACTIONS = (
    "the store's writes are transactions, which PgBouncer's statement pooling refuses: use "
    "pool_mode = transaction (or session) for this database"
)
# PgBouncer's answer to a client that waited past query_wait_timeout for a server connection.
_POOLER_WAIT = "query_wait_timeout"
_NO_SERVER_CONNECTION = (
    "PgBouncer had no server connection free for this client within its query_wait_timeout: "
    "its pool for this database and user (default_pool_size, 20 by default) is smaller than "
    "the connections its clients hold, and in session pooling each client connection holds a "
    "server connection for as long as it is open, idle in the store's pool too (each store "
    "opens up to 24: 8 kept, 16 more under load); use pool_mode = transaction, raise "
    "default_pool_size, or give each store a smaller pool "
    "(SQLCheckpointer(url, pool_size=4, max_overflow=4))"
)
_READ_ONLY = (
    "the server takes no writes in this session: it is a standby or read-only replica, or the "
    "database or role sets default_transaction_read_only (MariaDB: read_only); point the URL "
    "at the primary, or reset the setting"
)
_TIMED_OUT = (
    "a statement ran past the server's time limit (Postgres statement_timeout, MariaDB "
    "max_statement_time, set for the server, database or user), often waiting for a lock "
    "another session held; raise the limit for the store's user"
)
_LOCK_WAIT = (
    "a statement waited for a lock another session held past the server's limit (Postgres "
    "lock_timeout, MariaDB innodb_lock_wait_timeout, set for the server, database, user or "
    "in the URL); end the session holding it (a long or idle-in-transaction one: "
    "pg_stat_activity, SHOW PROCESSLIST), or raise the limit for the store's user"
)


def _connection_limit(limit: str, raise_it: str, *, pooler: bool = False) -> str:
    """What to do when a new connection is refused at ``limit``: fewer of them, or a higher one.

    Every process's store takes its share of the limit, and under load the most: a pool of 8
    and 16 more, so a few processes reach a limit sized for one.
    """
    pgbouncer = "put PgBouncer in front of the server (transaction pooling), " if pooler else ""
    return (
        f"{limit} is reached, counting every process's connections: each store opens up to 24 "
        "connections (8 kept, 16 more under load): give it a smaller pool "
        f"(SQLCheckpointer(url, pool_size=4, max_overflow=4)), {pgbouncer}or raise the limit "
        f"({raise_it})"
    )


_PG_MAX_CONNECTIONS = "max_connections, which takes a restart"
# libpq refuses a connection without a SQLSTATE (53300 on the server): its words name the limit.
_PG_LIMITS = (
    (
        "too many connections for role",
        _connection_limit(
            "the role's CONNECTION LIMIT", "ALTER ROLE ... CONNECTION LIMIT", pooler=True
        ),
    ),
    (
        "too many connections for database",
        _connection_limit(
            "the database's CONNECTION LIMIT", "ALTER DATABASE ... CONNECTION LIMIT", pooler=True
        ),
    ),
    (
        "remaining connection slots are reserved",
        _connection_limit(
            "the server's max_connections, less the slots it keeps for superusers,",
            _PG_MAX_CONNECTIONS,
            pooler=True,
        ),
    ),
    (
        "too many clients already",
        _connection_limit("the server's max_connections", _PG_MAX_CONNECTIONS, pooler=True),
    ),
)
# By SQLSTATE; MariaDB's error numbers are mapped to the same classes below.
_ADVICE = {
    "28000": _LOGIN,  # invalid authorization specification
    "28P01": _LOGIN,  # invalid password
    "3D000": _NO_DATABASE,  # invalid catalog name
    "42501": _PRIVILEGE,  # insufficient privilege
    "25006": _READ_ONLY,  # read-only SQL transaction
    "57014": _TIMED_OUT,  # query canceled (by statement_timeout: see PostgresFlavor.advice)
    "55P03": _LOCK_WAIT,  # lock not available (lock_timeout)
    "53300": _connection_limit(  # too many connections, in words libpq's refusal did not have
        "a connection limit of the server, database or role",
        "max_connections, or ALTER ROLE/DATABASE ... CONNECTION LIMIT",
        pooler=True,
    ),
}
_MYSQL_ADVICE = {
    1045: "28000",  # access denied for user
    1698: "28000",  # access denied for user (no password given, or its plugin refused it)
    1049: "3D000",  # unknown database
    1044: "42501",  # access denied for user to database
    1142: "42501",  # command denied to user for table
    1143: "42501",  # command denied to user for column
    1290: "25006",  # the server runs with an option that prevents the statement (--read-only)
    1792: "25006",  # cannot execute statement in a READ ONLY transaction
    1969: "57014",  # query execution was interrupted (max_statement_time exceeded)
    1205: "55P03",  # lock wait timeout exceeded (innodb_lock_wait_timeout)
}

# MariaDB's connection limits, whose SQLSTATEs (08004, 42000) stand for much else.
_MYSQL_LIMITS = {
    1040: _connection_limit("the server's max_connections", "max_connections"),
    1203: _connection_limit(  # the server's max_user_connections
        "the server's max_user_connections, for each user,",
        "max_user_connections, or ALTER USER ... WITH MAX_USER_CONNECTIONS",
    ),
    1226: _connection_limit(  # the user's own MAX_USER_CONNECTIONS
        "the user's MAX_USER_CONNECTIONS", "ALTER USER ... WITH MAX_USER_CONNECTIONS"
    ),
}


def _mysql_errno(exc: DBAPIError) -> int | None:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def flavor_for(engine: Engine) -> Flavor:
    """The statement builders and error classifier for an engine's backend.

    Raises:
        InvalidInput: For a backend the test matrix does not cover (an engine passed in).

    """
    name = engine.dialect.name
    if name == "sqlite":
        return SQLiteFlavor()
    if name == "postgresql":
        return PostgresFlavor()
    if name in ("mysql", "mariadb"):
        return MariaDBFlavor()
    raise InvalidInput(
        f"the store keeps runs in SQLite, PostgreSQL or MariaDB (MySQL), not {name}: "
        "give it an engine of one of those"
    )
