"""The SQL store: SQLite, Postgres and MariaDB through SQLAlchemy.

The ORM models define the schema; the hot paths run Core statements on the mapped tables,
built once per store, because per-object ``Session.add`` costs half the throughput on Postgres
and most of it on SQLite. One engine per store; each call takes a connection for one unit of
work. No lock is held around queries: the database's own keys and transactions arbitrate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import operator
import os
import shlex
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from purpose_agent.appends import (
    Draft,
    Placement,
    Undecided,
    check_expected,
    check_label,
    check_run_listing,
    cutoff_ns,
    drafts,
    place,
    run_filter,
    snapshot_row,
)
from purpose_agent.clock import stamp_ns
from purpose_agent.db.aiosqlite_cursor import one_trip, run_in_thread
from purpose_agent.db.cursor import run_calls
from purpose_agent.db.dialects import flavor_for
from purpose_agent.db.engine import (
    DEFAULT_URL,
    SEED_DEFAULT_FILE,
    Durability,
    UrlLike,
    adopt_sqlite,
    check_memory_engine,
    default_url,
    make_engine,
    parse_url,
    pool_sizing,
    read_only_reason,
    shown_url,
)
from purpose_agent.db.forks import keep_apart, locked_advice
from purpose_agent.db.group_commit import GroupCommit, GroupCommitPolicy, Pending, handed_over
from purpose_agent.db.held_reads import HeldReads
from purpose_agent.db.migrate import ensure_schema, head_revision, upgrade_command
from purpose_agent.db.queries import LOOKUP_CHUNK, RUNS_PER_READ, Queries, observed
from purpose_agent.db.replicas import Replicas, run_ids_of
from purpose_agent.db.sqlite_file import WatchedFile
from purpose_agent.db.transactions import HeldWriter, Transactions
from purpose_agent.errors import (
    CheckpointError,
    CorruptRecord,
    InvalidInput,
    SchemaMissing,
    SeedDefaultDatabase,
    SequenceConflict,
    StoreUnavailable,
    translated,
    unavailable,
)
from purpose_agent.legacy.sqlite import SeedSQLiteReader, is_seed_sqlite
from purpose_agent.protocol import (
    ClosingContext,
    KeyedEvent,
    Recovery,
    keyed_rows,
    new_keyed_rows,
)
from purpose_agent.reads import event_window
from purpose_agent.records import (
    PAUSE_FROM,
    EventRow,
    StateRow,
    batch_snapshot_row,
    check_limit,
    check_page,
    check_run_id,
    check_since,
    decode_events,
    decode_state,
    event_row,
    event_rows,
    gc_paused,
    state_row,
)
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.batches import BatchCommits

T = TypeVar("T")

_ATTEMPTS = 3
_DECODE_CHUNK = 50


def commits_of(store: SQLCheckpointer) -> Callable[[list[Pending]], None]:
    """``store._commit_many`` for the store's group commit, without keeping the store alive.

    The group commit is the store's own: a bound method there would make a reference cycle
    (store -> queue -> store), so a store dropped without ``close()`` would keep its engine,
    and every connection it opened, until the garbage collector's next full pass (hundreds
    of SQLite connections, or tens of server connections, in a process opening a store per
    request). A batch runs inside one of the store's calls, so the store is alive then.
    """
    method = weakref.WeakMethod(store._commit_many)

    def commit_many(batch: list[Pending]) -> None:
        bound = method()
        if bound is None:  # cannot happen while a call of the store runs; must not raise
            for call in batch:
                call.settle(error=StoreUnavailable("the store was garbage collected"))
            return
        bound(batch)

    return commit_many


class SQLCheckpointer(BatchCommits, ClosingContext):
    """A checkpointer on a SQL database: SQLite (the embedded default), Postgres or MariaDB.

    Args:
        url_or_engine: A SQLAlchemy URL (``sqlite:///runs.db``,
            ``postgresql+psycopg://user@host/db``, ``mariadb+pymysql://...``), the path of a
            SQLite file (``pathlib.Path``), or an existing ``Engine``, which is used as is and
            not disposed by :meth:`close`. Defaults to
            ``PURPOSE_AGENT_DB_URL``, else ``sqlite:///purpose_agent.db``.
        migrate: Upgrade the schema to the revision this version needs (safe when several
            processes start at once). When false, only check, raising ``SchemaNotCurrent``.
        durability: ``"full"`` (default): a returned save survives a power cut. ``"normal"``:
            it survives a process crash; a power cut may lose the last commits (SQLite
            ``synchronous=NORMAL``, Postgres ``synchronous_commit=off``). Ignored for an
            ``Engine`` passed in.
        busy_timeout: Seconds a SQLite writer waits for another before failing.
        page_size: Events fetched per query by :meth:`iter_events`.
        allow_seed_tables: Open a SQLite file that holds runs in the seed's format beside
            the store's own tables. Without it such a file is refused with the command that
            imports its runs (``SeedFormatDatabase``), so that they are never hidden.
        group_commit: Let writes that arrive while another commit is in flight share the
            next commit (see :mod:`purpose_agent.db.group_commit`): ``True`` for the default
            policy, or a :class:`GroupCommitPolicy`. Each call is still committed when it
            returns, and a lone writer commits at once.
        read_url: Postgres streaming replicas (one URL or a list) to serve ``list_events``,
            ``iter_events``, ``recover``, ``load_latest``, ``list_runs``, ``list_groups`` and
            ``run_group``. A read follows this store's own writes: a run it wrote is read
            from the primary until a replica has replayed past that write. A replica that
            fails is skipped for a second; reads then go to the primary. Replicas are never
            migrated or checked. Writes, ``last_seq`` and ``event_by_key`` (which appends
            rely on) always use the primary.
        pool_size: Connections the store keeps open to a server or SQLite file (default
            8), in each process; replicas get the same. Not for an ``Engine`` passed in,
            whose pool is its own.
        max_overflow: Connections it opens beyond ``pool_size`` under load (default 16;
            32 on a SQLite file), closed once idle. Together they bound what one process
            takes of a server's or a role's connection limit.

    Raises:
        InvalidInput: A malformed URL, a driver that is not installed, or pool sizes out of
            range or given with an ``Engine`` or an in-memory SQLite database.
        SchemaNotCurrent: The schema is behind and ``migrate`` is false, or it is newer than
            this version of the package; ``SeedFormatDatabase`` (a subclass) for a SQLite
            file with seed-era runs.
        StoreUnavailable: The database cannot be reached.

    """

    def __init__(
        self,
        url_or_engine: UrlLike | Engine | None = None,
        *,
        migrate: bool = True,
        durability: Durability = "full",
        busy_timeout: float = 60.0,
        page_size: int = 1000,
        allow_seed_tables: bool = False,
        group_commit: GroupCommitPolicy | bool = False,
        read_url: str | URL | Sequence[str | URL] | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
    ) -> None:
        check_limit(page_size, "page_size")
        self._page_size = max(page_size, 1)
        if isinstance(url_or_engine, Engine):
            sizing = pool_sizing(None, pool_size, max_overflow)
            self._engine = url_or_engine
            self._owns_engine = False
            if url_or_engine.dialect.name == "sqlite":
                check_memory_engine(url_or_engine)
                # Without WAL and a busy timeout, a second writer fails at once with
                # "database is locked": the store's settings apply to an engine passed in too.
                adopt_sqlite(url_or_engine, durability=durability, busy_timeout=busy_timeout)
        else:
            url = url_or_engine if url_or_engine is not None else default_url()
            sizing = pool_sizing(parse_url(url), pool_size, max_overflow)
            self._engine = make_engine(
                url, durability=durability, busy_timeout=busy_timeout, **sizing
            )
            self._owns_engine = True
        keep_apart(self._engine)
        # The URL as given (a read-only SQLite file is opened through a URI the caller never
        # wrote), with the password hidden.
        shown = url_or_engine.url if isinstance(url_or_engine, Engine) else parse_url(url)
        self.url = self._shown_url(shown)
        flavor = flavor_for(self._engine)
        self._flavor = flavor
        self._queries = Queries(self._engine, flavor)
        # A SQLite file this store opened is written on one held connection (see Transactions).
        writer = None
        if self._owns_engine and _sqlite_file(self._engine):
            writer = HeldWriter(self._engine, busy_timeout)
        self._units = Transactions(
            self._engine, flavor, owns_engine=self._owns_engine, writer=writer
        )
        self._payload_limit: int | None = None
        self._closed = False
        self._replicas: Replicas | None = None
        self._held: HeldReads | None = None
        self._watched: WatchedFile | None = None
        policy = GroupCommitPolicy() if group_commit is True else group_commit or None
        self._commits = GroupCommit(policy, commits_of(self)) if policy else None
        try:
            self._call(
                "opening the store",
                lambda: ensure_schema(
                    self._engine, migrate=migrate, allow_seed_tables=allow_seed_tables
                ),
            )
            self._payload_limit = self._call("opening the store", self._read_payload_limit)
            if read_url is not None:
                self._replicas = Replicas(read_url, primary=self._engine, sizing=sizing)
            if _sqlite_file(self._engine):
                self._watched = WatchedFile(str(self._engine.url.database), self.url)
                self._watched.remember()
                self._watched.watch(self._engine)
                if writer is not None:
                    writer.watched = self._watched
            if self._owns_engine and _sqlite_file(self._engine):
                self._held = HeldReads(self._engine, busy_timeout, writer, self._watched)
        except BaseException:
            self.close()
            raise

    def _shown_url(self, url: URL) -> str:
        """The URL errors and ``repr`` name: the caller's, password hidden."""
        return shown_url(url)

    # -- error handling -------------------------------------------------------------------

    def _call(
        self,
        action: str,
        operation: Callable[[], T],
        run_id: str | None = None,
        committing: Callable[[], bool] | None = None,
        writes: Collection[str] = (),
    ) -> T:
        """Run one unit of work, translating driver errors and retrying what is safe to retry.

        A lost connection (server restarted, connection killed) invalidates the pool, so one
        more try runs on a fresh connection: the caller sees an error only if the database is
        still away. Retrying a write is safe: an identical event is a no-op, and a snapshot
        upsert is idempotent. Deadlocks and serialization failures are retried too.

        An append without keys is not idempotent: ``committing`` says whether its COMMIT was
        sent, and a connection lost after that is reported, not retried, because the
        append may have been stored. ``writes`` names the runs a save touches: a stored row of
        theirs that the driver cannot decode (met when a retry is compared with it) is then
        reported as the ``CorruptRecord`` it is.
        """
        if self._closed:
            # An in-memory database would otherwise come back empty ("no such table").
            raise StoreUnavailable(f"{action} failed on {self.url}: the store is closed")
        for attempt in range(_ATTEMPTS):
            try:
                return operation()
            except CheckpointError:
                raise
            except DBAPIError as exc:
                refusal = self._refusal(action, exc, run_id, writes) or self._missing(exc)
                if refusal is not None:
                    raise refusal from exc
                transient = self._flavor.is_transient(exc)
                if (
                    exc.connection_invalidated
                    and committing is not None
                    and committing()
                    and not self._flavor.ended_while_idle(exc)
                ):
                    raise StoreUnavailable(
                        f"{action} failed on {self.url}: the connection was lost while the "
                        "transaction committed, so it may or may not be stored; read the run "
                        "(or append with keys, which makes a retry safe) before appending again"
                    ) from exc
                retry = exc.connection_invalidated or transient
                if retry and attempt + 1 < _ATTEMPTS:
                    continue
                advice = self._flavor.advice(exc) or locked_advice(self._engine, exc)
                raise unavailable(action, self.url, exc, advice) from exc
            except SQLAlchemyError as exc:
                raise unavailable(action, self.url, exc) from exc
            except self._engine.dialect.loaded_dbapi.Error as exc:
                # Raised by the driver outside a statement (a connection being set up or
                # reset): the connection may be broken, so the pool is refreshed and the
                # work tried again, as for a lost connection.
                if attempt + 1 < _ATTEMPTS:
                    self._engine.pool.dispose()
                    continue
                raise unavailable(action, self.url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _missing(self, exc: DBAPIError) -> SchemaMissing | None:
        """The tables dropped under the open store, if that is what the error says."""
        if not self._flavor.is_schema_missing(exc):
            return None
        command = upgrade_command(self._engine.url)
        return SchemaMissing(head_revision(), command, self.url, self._flavor.message(exc))

    def _refusal(
        self, action: str, exc: DBAPIError, run_id: str | None, writes: Collection[str] = ()
    ) -> CheckpointError | None:
        """The error a driver error stands for when trying again cannot help; else ``None``."""
        runs = [run_id] if run_id is not None else sorted(writes)
        if runs and self._flavor.is_undecodable(exc):
            return self._undecodable(runs)
        if run_id is not None and self._flavor.is_damaged(exc):
            return CorruptRecord(
                run_id,
                None,
                f"the database reports its storage damaged where the run is kept ({exc.orig}); "
                "`purpose-agent runs verify` lists every damaged record",
            )
        if self._flavor.is_read_only(exc):
            return StoreUnavailable(
                f"{action} failed on {self.url}: {read_only_reason(self._engine.url)}"
            )
        if self._flavor.is_too_large(exc):
            return InvalidInput(
                f"{action} failed on {self.url}: the database refused a value over its size "
                f"limit: {self._flavor.payload_limit_text(self._payload_limit or 0)}"
            )
        if self._flavor.is_unrepresentable(exc):
            return InvalidInput(
                f"{action} failed on {self.url}: {exc.orig}; the database keeps text in an "
                "encoding that cannot hold every character of a run id, lane, key or group: "
                "give the store a database created with ENCODING 'UTF8'"
            )
        return None

    def _read(
        self,
        action: str,
        fetch: Callable[[Transactions, Queries], T],
        run_id: str | None,
    ) -> T:
        """A read, on a replica that has this store's writes to the run if there is one.

        Args:
            action: What is being done, for an error's message.
            fetch: The read, given the units and statements of the database it runs on.
            run_id: The run read (whose writes a replica must have), ``None`` for all runs.
        """
        if self._replicas is not None and not self._closed:
            served, result = self._replicas.read(run_id, fetch)
            if served:
                return result  # type: ignore[return-value]
        return self._call(action, lambda: fetch(self._units, self._queries), run_id)

    def _query(
        self,
        action: str,
        read: Callable[[Connection | HeldReads, Queries], T],
        run_id: str | None,
        *,
        replicas: bool = True,
    ) -> T:
        """A read of one statement, on the connection that serves it at the least cost.

        This thread's held SQLite connection (see :mod:`purpose_agent.db.held_reads`) while
        nothing watches the engine's statements; otherwise a replica that has this store's
        writes to the run (as :meth:`_read`), or a pooled connection. Driver errors are
        translated, and a lost connection retried, by :meth:`_call` on every path.

        Args:
            action: What is being done, for an error's message.
            read: The statement, given the connection and the statements of its database.
            run_id: The run read, ``None`` for a read across runs.
            replicas: Whether a replica may serve it (not for reads that appends rely on).
        """
        held = self._held
        if held is not None and not observed(self._engine):
            # Connections are held only on a SQLite file, which never has replicas.
            queries = self._queries
            return self._call(action, lambda: read(held, queries), run_id)
        if replicas:
            return self._read(action, functools.partial(_pooled, read), run_id)
        return self._call(action, lambda: _pooled(read, self._units, self._queries), run_id)

    def _rows(
        self,
        action: str,
        read: Callable[[Connection | HeldReads, Queries], list[Any]],
        run_id: str | None,
        limit: int | None,
    ) -> list[Any]:
        """The rows of a read of at most ``limit``, the collector paused for a long one."""
        if limit is not None and limit < PAUSE_FROM:
            return self._query(action, read, run_id)
        with gc_paused():  # the driver's row tuples are acyclic too; see decode_events
            return self._query(action, read, run_id)

    def _run_rows(
        self,
        action: str,
        read: Callable[..., list[Any]],
        run_id: str,
        limit: int | None,
        *args: Any,
        replicas: bool = True,
    ) -> list[Any]:
        """:meth:`_rows` of one run, read by ``read(queries, conn, run_id, *args)``.

        ``read`` is a :class:`Queries` method, taken unbound so that a replica's statements
        can serve it too. The same checks and error handling as :meth:`_rows`, for the
        smallest reads (a run's newest event, a run of one event, an event by key), which
        SQLite answers in about 5 us: on the held connections the statement runs with no
        closure or frame of the store's between :meth:`_call` and it, which cost about as
        much again.
        """
        held = self._held
        if held is None or observed(self._engine):
            if replicas:
                return self._rows(
                    action, lambda conn, queries: read(queries, conn, run_id, *args), run_id, limit
                )
            return self._query(
                action,
                lambda conn, queries: read(queries, conn, run_id, *args),
                run_id,
                replicas=False,
            )
        # Connections are held only on a SQLite file, which never has replicas.
        fetch = functools.partial(read, self._queries, held, run_id, *args)
        if limit is not None and limit < PAUSE_FROM:
            return self._call(action, fetch, run_id)
        with gc_paused():  # as in _rows
            return self._call(action, fetch, run_id)

    def _undecodable(self, run_ids: Sequence[str]) -> CorruptRecord:
        """Name the record whose text the driver could not decode (not UTF-8) of these runs."""
        with self._units.single() as conn:
            for run_id in run_ids:
                seq, column = self._queries.undecodable(conn, run_id)
                if seq is not None:
                    break
        return CorruptRecord(run_id, seq, f"column {column} holds bytes that are not UTF-8 text")

    def _read_payload_limit(self) -> int | None:
        query = self._flavor.payload_limit_query()
        if query is None:
            return self._flavor.payload_limit
        with self._units.single() as conn:
            return int(conn.execute(query).scalar_one())

    def _check_sizes(
        self, rows: list[EventRow], snap: StateRow | None, *, appended: bool = False
    ) -> None:
        """Refuse a payload the server would refuse, before sending it (and dropping a link).

        ``appended``: the rows' seqs are not chosen yet (an append), so the message names
        the event by its place in the call instead.
        """
        limit = self._payload_limit
        if limit is None:
            return
        # Payloads are ASCII JSON, so characters are bytes; the rest of a row and the
        # statement around it take well under 4 KiB. A driver that writes each value into the
        # statement's text escapes its quotes and backslashes, so what goes on the wire is up
        # to twice the JSON's size (a string of quotes: 4 bytes each); only a payload over
        # half the room is measured.
        room = limit - 4096
        sent_size = self._flavor.sent_size
        for number, row in enumerate(rows, 1):
            if 2 * len(row.data) > room and sent_size(row.data) > room:
                where = (
                    f"run {row.run_id!r}, event {number} of {len(rows)} appended"
                    if appended
                    else f"run {row.run_id!r}, seq {row.seq}"
                )
                raise InvalidInput(self._too_large(f"{where}: event data", row.data, limit))
        if snap is not None and 2 * len(snap.state) > room and sent_size(snap.state) > room:
            raise InvalidInput(
                self._too_large(
                    f"run {snap.run_id!r}: the snapshot at seq {snap.seq}", snap.state, limit
                )
            )

    def _too_large(self, what: str, text: str, limit: int) -> str:
        size, sent = len(text), self._flavor.sent_size(text)
        escaped = f" ({sent:,} bytes once escaped into the statement)" if sent != size else ""
        return (
            f"{what} is {size:,} bytes of JSON{escaped}; {self._flavor.payload_limit_text(limit)}"
        )

    def reading(self, action: str) -> contextlib.AbstractContextManager[Connection]:
        """A connection for maintenance reads, with driver errors translated.

        Args:
            action: What is being done, for an error's message ("listing runs").

        Returns:
            A context manager giving an autocommit connection.

        """
        return _translated(self._units.single(), action, self.url)

    def writing(self, action: str) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction for maintenance, opened the way the store opens its own.

        Args:
            action: What is being done, for an error's message ("pruning").

        Returns:
            A context manager giving a connection in a transaction that commits on success.

        """
        return _translated(self._units.write(), action, self.url)

    @property
    def queries(self) -> Queries:
        """The statements of this store, for maintenance that runs them in its own units."""
        return self._queries

    # -- writes ---------------------------------------------------------------------------

    def save_event(self, event: PAEvent) -> None:
        """Append one event; committed when this returns.

        Raises:
            InvalidInput: The event cannot be stored exactly; nothing was written.
            SequenceConflict: ``(run_id, seq)`` holds a different event.
            StoreUnavailable: The database cannot be reached.

        """
        rows = [event_row(event)]
        self._check_sizes(rows, None)
        self._save("saving an event", rows, None)

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Append a batch, and optionally the snapshot after it, in one transaction.

        Raises:
            InvalidInput: An event or the snapshot cannot be stored; nothing was written.
            SequenceConflict: A position holds a different event; nothing was written.
            StoreUnavailable: The database cannot be reached.

        """
        rows = event_rows(events)
        snap = batch_snapshot_row(snapshot) if snapshot is not None else None
        self._check_sizes(rows, snap)
        if rows or snap is not None:
            self._save("saving events", rows, snap)

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Save a snapshot; one with a lower ``seq`` than the stored one is ignored.

        Raises:
            InvalidInput: ``state.run_id`` differs from ``run_id`` or a value cannot be stored.
            StoreUnavailable: The database cannot be reached.

        """
        snap = state_row(run_id, state)
        self._check_sizes([], snap)
        self._save("saving a snapshot", [], snap)

    def _save(self, action: str, rows: list[EventRow], snap: StateRow | None) -> None:
        if self._replicas is not None:
            with self._replicas.writing(run_ids_of(rows, snap)):
                self._save_now(action, rows, snap)
            return
        self._save_now(action, rows, snap)

    def _save_now(self, action: str, rows: list[EventRow], snap: StateRow | None) -> None:
        gathered = handed_over.get()
        if gathered is not None:
            gathered.append(self._save_call(action, rows, snap))
            return
        if self._commits is None:
            self._call(action, lambda: self._write(rows, snap), writes=run_ids_of(rows, snap))
            return
        self._commits.submit(self._save_call(action, rows, snap))

    def _save_call(self, action: str, rows: list[EventRow], snap: StateRow | None) -> Pending:
        """A save as a call that can commit alone or in a batch with others."""
        now = stamp_ns()
        first = rows[0].run_id if rows else snap.run_id if snap is not None else ""
        return Pending(
            alone=lambda: self._call(
                action, lambda: self._write(rows, snap), writes=run_ids_of(rows, snap)
            ),
            inside=lambda conn: self._write_in(conn, rows, snap, now),
            on_conflict=lambda conn: self._write_in(conn, self._new_rows(conn, rows), snap, now),
            run_key=first,
            repeatable=True,
            saves=(rows, snap),
        )

    def _write(self, rows: list[EventRow], snap: StateRow | None) -> None:
        now = stamp_ns()
        queries = self._queries
        try:
            if not rows and snap is not None and queries.one_statement_snapshot:
                with self._units.single_write() as conn:
                    queries.save_snapshot_alone(conn, snap, now)
                return
            if snap is None and self._flavor.one_statement_events:
                with self._units.single_write() as conn:
                    queries.insert_events(conn, rows, now)
                return
            self._save_many(rows, [snap] if snap is not None else [], now)
        except IntegrityError as exc:
            if not self._flavor.is_unique_violation(exc):
                raise
        else:
            return
        # A position was taken: find out whether by the same event (a retry) or another.
        for attempt in range(_ATTEMPTS):
            try:
                with self._units.write() as conn:
                    self._write_in(conn, self._new_rows(conn, rows), snap, now)
            except IntegrityError as exc:
                # Another writer took a position between the check and the insert.
                if not self._flavor.is_unique_violation(exc) or attempt + 1 == _ATTEMPTS:
                    raise
            else:
                return

    def _write_in(
        self, conn: Connection, rows: list[EventRow], snap: StateRow | None, now: int
    ) -> None:
        # Every write transaction locks a run's row before its snapshot row. A step and an
        # identical retry of an earlier step (whose events are all stored, so it writes only
        # the snapshot) would otherwise take the two locks in opposite orders and deadlock.
        if rows:
            self._queries.insert_events(conn, rows, now)
        if snap is not None:
            self._queries.touch_runs(conn, {snap.run_id: snap.seq}, now)
            self._queries.upsert_snapshot(conn, snap, now)

    def _new_rows(self, conn: Connection, rows: list[EventRow]) -> list[EventRow]:
        """The rows not stored yet; raises SequenceConflict if one is stored differently."""
        by_run: dict[str, list[EventRow]] = {}
        for row in rows:
            by_run.setdefault(row.run_id, []).append(row)
        stored: dict[tuple[str, int], EventRow] = {}
        for run_id, run_rows in by_run.items():
            run_seqs = sorted(row.seq for row in run_rows)
            for start in range(0, len(run_seqs), LOOKUP_CHUNK):
                seqs = run_seqs[start : start + LOOKUP_CHUNK]
                for found in self._queries.stored_events(conn, run_id, seqs):
                    stored[(run_id, found.seq)] = found
        new = []
        for row in rows:
            old = stored.get((row.run_id, row.seq))
            if old is None:
                new.append(row)
            elif not old.same_event(row):
                raise SequenceConflict(row.run_id, row.seq)
        return new

    # -- appends ---------------------------------------------------------------------------

    def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """Append events at the run's next seqs, all or nothing; committed when this returns.

        The run's row is locked for the transaction: appends to one run are serialised by
        the database, and each takes its seqs from the last seq the previous one wrote, so
        no caller reads first and none retries.

        See :class:`~purpose_agent.protocol.Appending` for the arguments.

        Raises:
            InvalidInput: A value cannot be stored, or no events were given.
            SequenceConflict: The run's last seq is not ``expected_last_seq``, or a key is
                stored with other content; nothing was written.
            StoreUnavailable: The database cannot be reached, or the connection was lost
                while committing an append without keys (it may be stored).

        """
        check_run_id(run_id)
        expected = check_expected(expected_last_seq)
        items = drafts(run_id, events)
        if group is not None:
            group = check_label(group, "group")
        if snapshot is not None:
            snapshot_row(run_id, snapshot, 0)  # refuse a bad snapshot before writing
        self._check_sizes([item.at(run_id, 1) for item in items], None, appended=True)
        # A retry is safe until COMMIT is sent; with every event keyed, even after that.
        sent = [False]
        keyed = all(item.key is not None for item in items)

        def alone() -> Placement:
            return self._call(
                "appending events",
                lambda: self._append(run_id, items, expected, snapshot, group, sent),
                run_id,
                committing=None if keyed else lambda: sent[0],
            )

        if self._replicas is not None:
            with self._replicas.writing([run_id]):
                placed = self._place(alone, run_id, items, expected, snapshot, group, keyed)
        else:
            placed = self._place(alone, run_id, items, expected, snapshot, group, keyed)
        return decode_events(run_id, [row[1:] for row in placed.result])

    def _place(
        self,
        alone: Callable[[], Placement],
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        snapshot: RunState | None,
        group: str | None,
        keyed: bool,
    ) -> Placement:
        if self._commits is None:
            placed = alone()
        else:
            now = stamp_ns()
            placed = self._commits.submit(
                Pending(
                    alone=alone,
                    inside=lambda conn: self._append_in(
                        conn, run_id, items, expected, snapshot, group, now
                    ),
                    on_conflict=None,
                    run_key=run_id,
                    repeatable=keyed,
                    appends=(run_id, items, expected, group) if snapshot is None else None,
                )
            )
        return placed

    def _append(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        snapshot: RunState | None,
        group: str | None,
        sent: list[bool],
    ) -> Placement:
        now = stamp_ns()
        queries = self._queries
        if snapshot is None and queries.appends_in_one:
            placed = self._append_in_one(run_id, items, expected, group, now, sent)
            if placed is not None:
                return placed
            sent[0] = False  # nothing was stored: the transaction below starts afresh
        elif snapshot is None and queries.appends_in_short_transaction:
            placed = self._append_short(run_id, items, expected, group, now, sent)
            if placed is not None:
                return placed
            sent[0] = False  # nothing was stored: the transaction below starts afresh
        try:
            with self._write_unit() as conn:
                placed = self._append_in(conn, run_id, items, expected, snapshot, group, now)
                sent[0] = True
        except IntegrityError as exc:
            # Under the run's lock, a seq already taken means the run row is behind its
            # events: caught up, the append takes the seqs after them.
            if not self._flavor.is_unique_violation(exc) or sent[0]:
                raise
            with self._write_unit() as conn:
                if not queries.catch_up_run(conn, run_id, now):
                    raise
            with self._write_unit() as conn:
                placed = self._append_in(conn, run_id, items, expected, snapshot, group, now)
                sent[0] = True
        return placed

    def _append_in(
        self,
        conn: Connection,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        snapshot: RunState | None,
        group: str | None,
        now: int,
    ) -> Placement:
        """An append inside a write transaction: lock the run's row, place, insert."""
        queries = self._queries
        last = queries.lock_run(conn, run_id, now)
        keys = [item.key for item in items if item.key is not None]
        stored = queries.events_by_keys(conn, run_id, keys) if keys else {}
        placed = place(run_id, items, last, stored, expected)
        snap = snapshot_row(run_id, snapshot, max(row.seq for row in placed.result))
        if placed.rows:
            queries.insert_keyed(conn, placed.rows, placed.keys)
        if placed.rows or snap is not None or group is not None:
            queries.advance_run(conn, run_id, placed.last_seq, now, group)
        if snap is not None:
            self._check_sizes([], snap)
            queries.upsert_snapshot(conn, snap, now)
        return placed

    def _append_in_one(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
        sent: list[bool],
    ) -> Placement | None:
        """The append as one statement; ``None`` when only a transaction can decide.

        That is when a key is already stored (a retry, or a conflict), or when the expected
        last seq did not match and some event has a key (a retry of an append that
        succeeded is not a conflict).
        """
        sent[0] = True
        try:
            with self._units.single_write() as conn:
                seqs = self._queries.append_in_one(conn, run_id, items, expected, group, now)
        except IntegrityError as exc:
            if not self._flavor.is_unique_violation(exc):
                raise
            return None
        except DBAPIError as exc:
            if self._flavor.is_out_of_range(exc):
                return None  # the run is at its last seq: the transaction refuses the append
            if self._flavor.is_transient(exc):
                # A statement outside a transaction runs at the database's or role's default
                # isolation, which a pooler keeps the store from pinning: under REPEATABLE
                # READ or SERIALIZABLE, a writer of the same run makes it fail (40001) with
                # nothing stored. The transaction reads the row again at READ COMMITTED.
                return None
            raise
        if not seqs:
            if any(item.key is not None for item in items):
                return None
            with self._units.single() as conn:
                last = self._queries.last_seq(conn, run_id)
            place(run_id, items, last, {}, expected)  # raises the conflict
            return None  # the run changed back meanwhile: let the transaction decide
        rows = [item.at(run_id, seq) for item, seq in zip(items, seqs, strict=True)]
        return Placement(rows, [item.key for item in items], rows, seqs[-1])

    def _append_short(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
        sent: list[bool],
    ) -> Placement | None:
        """The append as a short transaction; ``None`` when only the full one can decide.

        The run row's upsert takes the run's write lock and returns its new last seq; the
        events take the seqs below it, with no read before: ``BEGIN``, the upsert, the insert,
        ``COMMIT``. A failed expectation is seen in the returned seq and rolls everything
        back. As for the one-statement append, the full transaction decides when a key is
        already stored (a retry, or a conflict), or when the expected last seq did not match
        and some event has a key (a retry of an append that succeeded is not a conflict).
        """
        try:
            placed = None
            if self._one_trip:
                placed = self._append_short_in_thread(run_id, items, expected, group, now, sent)
            elif self._units.holds_writer and not observed(self._engine):
                placed = self._append_short_on_cursor(run_id, items, expected, group, now, sent)
            if placed is None:
                with self._write_unit() as conn:
                    placed = self._append_short_in(conn, run_id, items, expected, group, now)
                    sent[0] = True
        except IntegrityError as exc:
            if not self._flavor.is_unique_violation(exc):
                raise
            return None
        except DBAPIError as exc:
            if not self._flavor.is_out_of_range(exc):
                raise
            return None  # the run is at its last seq: the transaction refuses the append
        except Undecided:
            return None
        return placed

    def _append_short_in(
        self,
        conn: Connection,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
    ) -> Placement:
        """The short append's statements, inside its write transaction.

        Raises:
            SequenceConflict: The expected last seq did not match (no event has a key).
            InvalidInput: The run has no seq left.
            Undecided: The expected last seq did not match and some event has a key.
            IntegrityError: A key is already stored.

        """
        queries = self._queries
        last = queries.advance_for_append(conn, run_id, len(items), group, now)
        placed = _placed_below(run_id, items, last, expected)
        queries.insert_keyed(conn, placed.rows, placed.keys)
        return placed

    def _append_short_on_cursor(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
        sent: list[bool],
    ) -> Placement:
        """The short transaction in one call on the held SQLite connection's driver cursor.

        See :meth:`~purpose_agent.db.transactions.Transactions.write_on_cursor`.

        Raises:
            As :meth:`_append_short_in`, and the driver's errors as any statement's.
        """
        sql, statements = self._short_append_statements(run_id, items, expected, group, now, sent)
        return self._units.write_on_cursor(statements, sql)

    def _short_append_statements(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
        sent: list[bool],
    ) -> tuple[str, Callable[[Any], Placement]]:
        """The short append's statements on a SQLite driver connection or cursor.

        ``BEGIN`` and ``COMMIT`` are the caller's (one call on the held connection's cursor,
        or one trip to aiosqlite's thread).

        Returns:
            The advance's SQL (named in a driver error), and the statements.
        """
        advance, insert_call = self._queries.short_append_calls(run_id, len(items), group, now)

        def statements(target: Any) -> Placement:
            found = target.execute(*advance)
            last = found.fetchall()[0][0]
            if found is not target:  # a connection's execute opens a cursor of its own
                found.close()
            placed = _placed_below(run_id, items, int(last), expected)
            run_calls(target, insert_call(placed.rows, placed.keys))
            sent[0] = True
            return placed

        return advance[0], statements

    def _append_short_in_thread(
        self,
        run_id: str,
        items: Sequence[Draft],
        expected: int | None,
        group: str | None,
        now: int,
        sent: list[bool],
    ) -> Placement | None:
        """The short transaction as one trip to aiosqlite's thread; ``None`` if it cannot be.

        Its statements one by one would cost a trip for ``BEGIN`` and the upsert, whose
        answer the insert needs, and another for the insert and ``COMMIT``: each trip wakes
        the driver's thread and the event loop, which costs more than the SQL. It cannot be
        while something watches the engine's statements (they must be seen one by one).

        Raises:
            As :meth:`_append_short_in`, and the driver's errors as any statement's.
        """
        with self._units.single_write() as conn:
            if not one_trip(conn):
                return None
            sql, statements = self._short_append_statements(
                run_id, items, expected, group, now, sent
            )
            begin = self._flavor.begin_sql

            def work(raw: Any) -> Placement:
                raw.execute(begin).close()
                try:
                    placed = statements(raw)
                    raw.execute("COMMIT").close()
                except BaseException:
                    # The first error matters: a connection that cannot roll back is rolled
                    # back when it returns to the pool (a transaction is still open on it).
                    with contextlib.suppress(Exception):
                        if raw.in_transaction:
                            raw.execute("ROLLBACK").close()
                    raise
                return placed

            return run_in_thread(conn, sql, work)

    def last_seq(self, run_id: str) -> int:
        """The highest seq the run ever stored (compaction does not lower it); 0 if unknown.

        Raises:
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)

        def read() -> int:
            with self._units.single() as conn:
                return self._queries.last_seq(conn, run_id)

        return self._call("reading a run's last seq", read, run_id)

    def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """The run's event appended with ``key``, or ``None`` (one index lookup).

        Raises:
            CorruptRecord: The stored event cannot be decoded.
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)
        key = check_label(key, "key")

        rows = self._run_rows(
            "reading an event by key", Queries.event_by_key, run_id, 1, key, replicas=False
        )
        return decode_events(run_id, rows)[0] if rows else None

    # -- reads ----------------------------------------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``.

        Raises:
            CorruptRecord: The stored snapshot cannot be decoded.
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)

        found = self._query(
            "loading a snapshot", lambda conn, queries: queries.snapshot(conn, run_id), run_id
        )
        return decode_state(run_id, found[1], found[0]) if found is not None else None

    def _fetch_rows(self, run_id: str, since_seq: int, limit: int | None) -> list[Any]:
        return self._rows(
            "reading events",
            lambda conn, queries: queries.events_after(conn, run_id, since_seq, limit),
            run_id,
            limit,
        )

    def list_events(
        self,
        run_id: str,
        since_seq: int = 0,
        limit: int | None = None,
        *,
        before: int | None = None,
        newest_first: bool = False,
        kinds: Iterable[EventKind | str] | None = None,
        lanes: Iterable[str] | None = None,
    ) -> list[PAEvent]:
        """Return events with ``seq > since_seq`` in ascending ``seq``, at most ``limit``.

        The keyword arguments bound the read further, in the one query the database runs: a
        range of the primary key, read forwards or backwards, filtered by kind and lane.

        Args:
            run_id: The run.
            since_seq: Only events with a larger seq.
            limit: At most this many events; ``None`` for all.
            before: Only events with a smaller seq.
            newest_first: Descending seq; with ``limit``, the newest events of the window.
            kinds: Only events of these kinds.
            lanes: Only events in these lanes.

        Raises:
            InvalidInput: An argument of the wrong type or out of range.
            CorruptRecord: A stored event cannot be decoded.
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)
        window = event_window(since_seq, limit, before, newest_first, kinds, lanes)
        if window.empty:
            return []
        if window.plain:
            since, limit = window.since_seq, window.limit
            rows = self._run_rows(
                "reading events", Queries.events_after, run_id, limit, since, limit
            )
        else:
            rows = self._run_rows("reading events", Queries.events_in, run_id, window.limit, window)
        return decode_events(run_id, rows)

    def events_of_runs(self, run_ids: Iterable[str]) -> dict[str, list[PAEvent]]:
        """Every event of each of many small runs, in one statement per 64 runs.

        For callers that keep many short runs side by side (the LangGraph saver keeps a
        checkpoint's pending writes as one): a page of them costs one read, not one each.

        Args:
            run_ids: The runs.

        Returns:
            Each run's events in ascending seq (an empty list for a run with none).

        Raises:
            InvalidInput: A run id is not valid.
            CorruptRecord: A stored event cannot be decoded.
            StoreUnavailable: The database cannot be reached.
        """
        wanted = sorted({check_run_id(run_id) for run_id in run_ids})
        found: dict[str, list[PAEvent]] = {run_id: [] for run_id in wanted}
        for start in range(0, len(wanted), RUNS_PER_READ):
            chunk = wanted[start : start + RUNS_PER_READ]

            try:
                rows = self._rows(
                    "reading events",
                    functools.partial(_events_of_runs, chunk),
                    chunk[0] if len(chunk) == 1 else None,
                    None,
                )
            except StoreUnavailable:
                if len(chunk) == 1:
                    raise
                # A text the driver cannot decode fails the whole statement without naming
                # its run: the runs are read one by one, so that the damaged one raises
                # CorruptRecord with its run and seq (and a database still away, this).
                rows = []
                for run_id in chunk:
                    rows += self._rows(
                        "reading events", functools.partial(_events_of_runs, [run_id]), run_id, None
                    )
            for run_id, events in itertools.groupby(rows, key=operator.itemgetter(0)):
                found[run_id] = decode_events(run_id, [row[1:] for row in events])
        return found

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events with ``seq > since_seq``, one page per query (keyset paging).

        No transaction or cursor stays open between pages, so a long replay holds no locks
        and memory stays flat whatever the length of the run.
        """
        check_run_id(run_id)
        since_seq = check_since(since_seq)
        return self._iterate(run_id, since_seq)

    def _iterate(self, run_id: str, since_seq: int) -> Iterator[PAEvent]:
        while True:
            rows = self._fetch_rows(run_id, since_seq, self._page_size)
            # A page is decoded a few dozen rows at a time, as the caller reads: the events
            # the caller has finished with are freed before the rest are built.
            for start in range(0, len(rows), _DECODE_CHUNK):
                with gc_paused():
                    events = decode_events(run_id, rows[start : start + _DECODE_CHUNK])
                yield from events
            if len(rows) < self._page_size:
                return
            since_seq = rows[-1][0]

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and exactly the events after it, read in one statement.

        Raises:
            CorruptRecord: A stored record cannot be decoded.
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)

        rows = self._rows(
            "recovering a run",
            lambda conn, queries: queries.recovery_rows(conn, run_id),
            run_id,
            None,
        )
        if not rows:
            return None
        state = None
        if rows[0][1] is None:  # the snapshot: events always have a kind
            state = decode_state(run_id, rows[0][4], rows[0][0])
            rows = rows[1:]
        return Recovery(state, decode_events(run_id, rows))

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Return run ids, most recently written first.

        Args:
            limit: At most this many; ``None`` for all.
            offset: Skip this many first (paging).
            group: Only runs of this group.
            prefix: Only runs whose id starts with this (exact, case-sensitive).

        Raises:
            StoreUnavailable: The database cannot be reached.

        """
        limit, offset, group, prefix = check_run_listing(limit, offset, group, prefix)
        if limit == 0:
            return []

        def fetch(units: Transactions, queries: Queries) -> list[str]:
            with units.single() as conn:
                return queries.run_ids(conn, limit, offset, group, prefix)

        return self._read("listing runs", fetch, None)

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Group names, the group with the most recently written run first.

        Raises:
            StoreUnavailable: The database cannot be reached.

        """
        limit, offset = check_page(limit, offset)
        if limit == 0:
            return []

        def fetch(units: Transactions, queries: Queries) -> list[str]:
            with units.single() as conn:
                return queries.group_names(conn, limit, offset)

        return self._read("listing groups", fetch, None)

    def run_group(self, run_id: str) -> str | None:
        """The run's group, or ``None`` (no group, or an unknown run).

        Raises:
            StoreUnavailable: The database cannot be reached.

        """
        check_run_id(run_id)

        def fetch(units: Transactions, queries: Queries) -> str | None:
            with units.single() as conn:
                return queries.run_group(conn, run_id)

        return self._read("reading a run's group", fetch, run_id)

    # -- retention ------------------------------------------------------------------------

    def compact(self, run_id: str) -> int:
        """Delete the run's events its latest snapshot covers, oldest first, a chunk at a time.

        Each chunk of events is a transaction of its own, so compacting a run of millions
        of events never holds SQLite's write lock (which every other run's writers wait on)
        for long, nor makes one transaction the size of the run. Each chunk reads the
        snapshot's seq again, and every state between two chunks recovers the same.
        ``recover()`` returns the same afterwards, and ``last_seq`` keeps counting the
        deleted positions. The keys of deleted events are forgotten.

        Returns:
            How many events were deleted.

        Raises:
            StoreUnavailable: The database cannot be reached (the chunks deleted before
                stay deleted: calling again finishes the work).

        """
        check_run_id(run_id)
        deleted, after = self._compact_chunk(run_id, None)
        while after is not None:
            time.sleep(self._flavor.chunk_pause)
            count, after = self._compact_chunk(run_id, after)
            deleted += count
        return deleted

    def _compact_chunk(self, run_id: str, after: int | None) -> tuple[int, int | None]:
        """One transaction of :meth:`compact`: see :meth:`Queries.compact`."""

        def remove() -> tuple[int, int | None]:
            with self._units.write() as conn:
                return self._queries.compact(conn, run_id, after)

        if self._replicas is not None:
            with self._replicas.writing([run_id]):
                return self._call("compacting a run", remove, run_id)
        return self._call("compacting a run", remove, run_id)

    def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
        whole_groups: bool = False,
    ) -> list[str]:
        """Delete every run the filters select, in one transaction.

        The selected runs' rows are locked while they are chosen, so a run written again
        meanwhile is judged by its new write time. With ``whole_groups`` the rows of every
        run of their groups are locked too, and a group is spared if any of them is not
        selected: a writer that goes on with a group either commits first (and keeps the
        group whole) or waits for the delete (and starts the group afresh). On a database
        server an age counts back from the server's clock, which stamped the writes (see
        :meth:`clock_ns`). See :class:`~purpose_agent.protocol.Retention` for the filters.

        Returns:
            The deleted run ids, sorted.

        Raises:
            InvalidInput: No filter was given.
            StoreUnavailable: The database cannot be reached.

        """
        chosen = run_filter(run_ids, group, prefix, older_than, keep_newest)
        ids = sorted(chosen.run_ids) if chosen.run_ids is not None else None

        def remove() -> list[str]:
            with self._units.write() as conn:
                aged = chosen
                if isinstance(older_than, timedelta):
                    now = self._queries.clock_ns(conn)
                    if now is not None:  # the server stamped the runs: its clock ages them
                        aged = dataclasses.replace(chosen, cutoff_ns=cutoff_ns(older_than, now))
                # Without keep_newest the age alone decides: only old runs are locked, so
                # that live writers of the other runs do not wait for the whole delete.
                cutoff = aged.cutoff_ns if aged.keep_newest is None else None
                scoped = self._queries.scoped_runs(
                    conn, ids, aged.group, aged.prefix, written_before=cutoff
                )
                doomed = aged.choose(scoped)
                if whole_groups:
                    doomed = _in_whole_groups(self._queries.group_members(conn, doomed), doomed)
                self._queries.delete_runs(conn, doomed)
            return doomed

        if self._replicas is not None:
            with self._replicas.writing(None):
                return self._call("deleting runs", remove)
        return self._call("deleting runs", remove)

    def delete_run(self, run_id: str) -> None:
        """Remove a run's events, snapshot and run row.

        The events the snapshot covers go first, a chunk per transaction as :meth:`compact`
        deletes them (the run recovers the same meanwhile); the rest of the events, the
        snapshot and the run row then go in one transaction. A run with millions of events
        and a recent snapshot so never holds SQLite's write lock, which the writers of every
        other run wait on, for seconds.

        Raises:
            StoreUnavailable: The database cannot be reached (the covered events deleted
                before stay deleted; the run recovers the same, and calling again finishes).

        """
        self.compact(run_id)
        self._delete_rest(run_id)

    def _delete_rest(self, run_id: str) -> None:
        """What :meth:`delete_run` deletes in one transaction: events, snapshot and row."""

        def remove() -> None:
            with self._units.write() as conn:
                self._queries.delete_run(conn, run_id)

        if self._replicas is not None:
            with self._replicas.writing([run_id]):
                self._call("deleting a run", remove)
            return
        self._call("deleting a run", remove)

    def upgrade_schema(self) -> None:
        """Bring the schema to the revision this version needs, now.

        Opening the store did so (or, with ``migrate=False``, checked); this is for a database
        changed since: moved back by ``purpose-agent db downgrade``, or with a table, column or
        index dropped by hand. Safe when several processes call it at once: one migrates, the
        others find the work done.

        Raises:
            SchemaNotCurrent: The database was migrated by a newer version of the package.
            StoreUnavailable: The database cannot be reached.

        """
        self._call("upgrading the schema", lambda: ensure_schema(self._engine, migrate=True))

    def clock_ns(self) -> int:
        """The present as this store stamps writes, in nanoseconds.

        The database server's clock on a server (writes are stamped with it, whichever host
        they come from), this process's on SQLite. Retention by age counts back from it.

        Raises:
            StoreUnavailable: The database cannot be reached.

        """
        if self._flavor.clock() is None:
            return time.time_ns()

        def read() -> int:
            with self._units.single() as conn:
                now = self._queries.clock_ns(conn)
            assert now is not None  # a flavour with a clock query
            return now

        return self._call("reading the clock", read)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine this store uses."""
        return self._engine

    def close(self) -> None:
        """Release the store's connections (the engine is kept if it was passed in)."""
        self._closed = True
        if self._watched is not None:
            self._watched.unwatch()
        if self._replicas is not None:
            self._replicas.close()
        if self._held is not None:
            self._held.close()
        self._units.close()
        if self._owns_engine:
            self._engine.dispose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- events with their keys, for copies ---------------------------------------------------

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> Iterator[KeyedEvent]:
        """Stream events with ``seq > since_seq`` and their keys, one page per query.

        As :meth:`iter_events`; see :class:`~purpose_agent.protocol.KeyedEvents`.

        Raises:
            InvalidRunId: At once, for a bad run id.
            CorruptRecord: A stored event cannot be decoded (while iterating).
            StoreUnavailable: The database cannot be reached (while iterating).

        """
        check_run_id(run_id)
        since_seq = check_since(since_seq)
        return self._iterate_keyed(run_id, since_seq)

    def _iterate_keyed(self, run_id: str, since_seq: int) -> Iterator[KeyedEvent]:
        while True:
            page = self._keyed_events_page(run_id, since_seq, self._page_size)
            yield from page
            if len(page) < self._page_size:
                return
            since_seq = page[-1].event.seq

    def _keyed_events_page(self, run_id: str, since_seq: int, limit: int) -> list[KeyedEvent]:
        def fetch(conn: Connection | HeldReads, queries: Queries) -> list[Any]:
            return queries.keyed_events_after(conn, run_id, since_seq, limit)

        rows = self._rows("reading events", fetch, run_id, limit)
        events = decode_events(run_id, [row[:5] for row in rows])
        return [KeyedEvent(event, row[5]) for event, row in zip(events, rows, strict=True)]

    def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """Store events of one run at their own seqs with their keys, in one transaction.

        The run's row is locked first, as an append locks it, so that the check of what is
        stored and the insert see no append in between. See
        :class:`~purpose_agent.protocol.KeyedEvents` for the arguments.

        Raises:
            InvalidInput: A value cannot be stored, or an event is of another run.
            SequenceConflict: A seq holds another event, or the same with another key, or a
                key is stored at another seq; nothing was written.
            StoreUnavailable: The database cannot be reached.

        """
        pairs = keyed_rows(run_id, events)
        snap = state_row(run_id, snapshot) if snapshot is not None else None
        if group is not None:
            group = check_label(group, "group")
        self._check_sizes([row for row, _ in pairs], snap)

        def write() -> None:
            checked = False
            for attempt in range(_ATTEMPTS):
                try:
                    with self._units.write() as conn:
                        self._save_keyed_in(conn, run_id, pairs, snap, group, stamp_ns(), checked)
                except IntegrityError as exc:
                    # A key stored at another seq, or a position a writer without the run's
                    # lock (save_events) took meanwhile: read what is stored, and decide.
                    if not self._flavor.is_unique_violation(exc) or attempt + 1 == _ATTEMPTS:
                        raise
                    checked = True
                else:
                    return

        if self._replicas is not None:
            with self._replicas.writing([run_id]):
                self._call("saving keyed events", write, run_id)
            return
        self._call("saving keyed events", write, run_id)

    def _save_keyed_in(
        self,
        conn: Connection,
        run_id: str,
        pairs: list[tuple[EventRow, str | None]],
        snap: StateRow | None,
        group: str | None,
        now: int,
        checked: bool,
    ) -> None:
        """Write a keyed batch in a write transaction, the run's row locked first.

        A batch wholly past the run's last seq (a copy's next batch) is inserted without
        reading: no event can be stored at its positions, and a key stored at another seq
        fails the insert, which is then repeated ``checked``, reading what is stored first.
        """
        queries = self._queries
        if not pairs and snap is None:
            if group is not None:
                queries.regroup_run(conn, run_id, group, now)  # a group alone makes no run
            return
        last = queries.lock_run(conn, run_id, now)
        seqs = sorted(row.seq for row, _ in pairs)
        if checked or (seqs and seqs[0] <= last):
            stored: dict[int, tuple[EventRow, str | None]] = {}
            for start in range(0, len(seqs), LOOKUP_CHUNK):
                chunk = seqs[start : start + LOOKUP_CHUNK]
                stored.update(queries.stored_keyed(conn, run_id, chunk))
            keys = [key for _, key in pairs if key is not None]
            found = queries.events_by_keys(conn, run_id, keys) if keys else {}
            taken = {key: row.seq for key, row in found.items()}
            new = new_keyed_rows(run_id, pairs, stored, taken)
        else:
            new = pairs
        if new:
            rows = [row for row, _ in new]
            if any(key is not None for _, key in new):
                queries.insert_keyed(conn, rows, [key for _, key in new])
            else:
                queries.insert_events(conn, rows, now)  # a batch without keys: one statement
        if new or snap is not None or group is not None:
            covered = snap.seq if snap is not None else 0
            last = max(last, covered, *(row.seq for row, _ in new))
            queries.advance_run(conn, run_id, last, now, group)
        if snap is not None:
            queries.upsert_snapshot(conn, snap, now)


class SQLiteCheckpointer(SQLCheckpointer):
    """The seed's name and constructor: :class:`SQLCheckpointer` on a SQLite file.

    Without a path it opens what a store opens without a URL: ``PURPOSE_AGENT_DB_URL`` when
    it is set (so code written against the seed follows a deployment's setting, even to a
    server), else ``purpose_agent.db`` in the working directory.

    Args:
        db_path: Path of the database file, created if missing.
        **options: As for :class:`SQLCheckpointer`.

    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None, **options: Any) -> None:
        if db_path is None:
            url = parse_url(default_url())
            sqlite = url.get_backend_name() == "sqlite"
            self.db_path = (url.database or "") if sqlite else url.render_as_string()
            if sqlite and url == parse_url(DEFAULT_URL):
                _refuse_seed_default(self.db_path)
        else:
            self.db_path = os.fspath(db_path)
            url = URL.create("sqlite", database=self.db_path)
        super().__init__(url, **options)


def _refuse_seed_default(default_file: str) -> None:
    """Refuse to start an empty default store beside the seed's default file with runs in it.

    Raises:
        SeedDefaultDatabase: The default file does not exist and the seed's holds runs.
    """
    seed = Path(SEED_DEFAULT_FILE)
    if Path(default_file).exists() or not seed.is_file() or not is_seed_sqlite(seed):
        return
    with SeedSQLiteReader(seed) as reader:
        if not reader.list_runs(limit=1):
            return
    source = shlex.quote(f"seed-sqlite:{SEED_DEFAULT_FILE}")
    command = f"purpose-agent copy {source} {shlex.quote(f'sqlite:///{default_file}')}"
    raise SeedDefaultDatabase(SEED_DEFAULT_FILE, default_file, command)


@contextlib.contextmanager
def _translated(
    opening: contextlib.AbstractContextManager[Connection], action: str, where: str
) -> Iterator[Connection]:
    with translated(action, where, SQLAlchemyError), opening as conn:
        yield conn


def _placed_below(
    run_id: str, items: Sequence[Draft], last: int, expected: int | None
) -> Placement:
    """The seqs of a short append, below the run's new last seq its upsert returned.

    Raises:
        SequenceConflict: The expected last seq did not match (no event has a key).
        InvalidInput: The run has no seq left.
        Undecided: The expected last seq did not match and some event has a key.
    """
    before = last - len(items)
    if expected not in (None, before) and any(item.key is not None for item in items):
        raise Undecided
    return place(run_id, items, before, {}, expected)


def _in_whole_groups(members: Sequence[tuple[str, str]], doomed: list[str]) -> list[str]:
    """The doomed runs whose groups are doomed whole: ``members`` are the groups' runs."""
    chosen = set(doomed)
    group_of = dict(members)
    spared = {group for run_id, group in members if run_id not in chosen}
    return [run_id for run_id in doomed if group_of.get(run_id) not in spared]


def _sqlite_file(engine: Engine) -> bool:
    """Whether the engine opens a SQLite file (not a shared in-memory database)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


def _events_of_runs(
    run_ids: list[str], conn: Connection | HeldReads, queries: Queries
) -> list[Any]:
    return queries.events_of_runs(conn, run_ids)


def _pooled(
    read: Callable[[Connection | HeldReads, Queries], T], units: Transactions, queries: Queries
) -> T:
    """Run a read on a connection of ``units``' pool (the primary's or a replica's)."""
    with units.single() as conn:
        return read(conn, queries)
