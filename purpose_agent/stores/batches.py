"""Group commit on the SQL store: a batch of calls in shared statements, or one transaction.

The queue (:mod:`purpose_agent.db.group_commit`, :mod:`purpose_agent.db.task_group_commit`)
decides which calls share a commit; this module commits a batch and settles every call in it.
It tries the cheapest way first: a batch of saves in shared statements, then a batch of
one-statement appends in one pipeline, and only then one transaction with a savepoint per
call, so that a call at fault fails alone and never fails, loses or reorders another's data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from purpose_agent.appends import Placement, Undecided, place
from purpose_agent.clock import stamp_ns
from purpose_agent.db.aiosqlite_cursor import one_trip_transaction
from purpose_agent.db.dialects import Flavor
from purpose_agent.db.group_commit import Pending
from purpose_agent.db.queries import Appending, Queries, observed, run_sql
from purpose_agent.db.transactions import Transactions
from purpose_agent.errors import CheckpointError, StoreUnavailable
from purpose_agent.records import EventRow, StateRow


class BatchCommits:
    """The SQL store's side of group commit, and the shared-statement save it also uses alone.

    A part of :class:`~purpose_agent.stores.sql.SQLCheckpointer`, kept here because it is a
    concern of its own; it uses the store's engine, statements and transactions.
    """

    url: str
    _engine: Engine
    _flavor: Flavor
    _queries: Queries
    _units: Transactions
    _closed: bool
    # Whether saves run as one trip to the driver's thread (the async store on aiosqlite).
    _one_trip = False

    def _commit_many(self, batch: list[Pending]) -> None:
        """Run a batch in one transaction and settle every call.

        A batch of saves is first stored in shared statements (on Postgres one statement:
        one round trip and one commit for the whole batch). If a position is taken (a retry,
        a conflict), nothing of that attempt is stored and the batch runs again with each
        call in its own savepoint, so that the call at fault fails alone.

        Calls are ordered by run, stably, so that concurrent batches lock runs in one order
        and the calls of one run keep the order they arrived in.
        """
        ordered = sorted(batch, key=lambda call: call.run_key)
        committing = [False]
        try:
            if self._commit_saves(batch):
                for call in batch:
                    call.settle()
                return
            outcomes = self._commit_appends(ordered, committing)
            if outcomes is None:
                outcomes = self._commit_batch(ordered, committing)
        except CheckpointError as exc:  # the store was closed meanwhile
            for call in ordered:
                call.settle(error=exc)
            return
        except (SQLAlchemyError, self._engine.dialect.loaded_dbapi.Error) as exc:
            # Nothing of the batch is stored unless the failure came with the COMMIT: run
            # each call again on its own path, in order, unless it may be stored already
            # and is not safe to repeat.
            for call in ordered:
                if committing[0] and not call.repeatable and not self._flavor.ended_while_idle(exc):
                    lost = StoreUnavailable(
                        f"appending events failed on {self.url}: the connection was lost "
                        "while a grouped commit was sent, so it may or may not be stored; "
                        "read the run (or append with keys, which makes a retry safe) "
                        "before appending again"
                    )
                    lost.__cause__ = exc
                    call.settle(error=lost)
                    continue
                try:
                    call.settle(call.alone())
                except BaseException as error:  # noqa: BLE001 - handed to the caller
                    call.settle(error=error)
            return
        for call, (result, failure) in zip(ordered, outcomes, strict=True):
            call.settle(result, failure)

    def _commit_saves(self, batch: list[Pending]) -> bool:
        """Store a batch made only of saves in shared statements; whether it was stored.

        The result is what the saves would leave one after the other, in the order they
        arrived: every event, and per run the snapshot with the highest seq (of those with
        the same seq, the last). A taken position fails the statements before anything is
        stored; the batch is then not stored (``False``).
        """
        if any(call.saves is None for call in batch):
            return False
        if self._closed:
            raise StoreUnavailable(f"saving failed on {self.url}: the store is closed")
        rows: list[EventRow] = []
        snaps: dict[str, StateRow] = {}
        for call in batch:
            assert call.saves is not None
            call_rows, snap = call.saves
            rows.extend(call_rows)
            if snap is not None:
                kept = snaps.get(snap.run_id)
                if kept is None or kept.seq <= snap.seq:
                    snaps[snap.run_id] = snap
        try:
            self._save_many(rows, list(snaps.values()), stamp_ns())
        except IntegrityError as exc:
            if not self._flavor.is_unique_violation(exc):
                raise
            return False
        return True

    def _commit_appends(
        self, ordered: list[Pending], committing: list[bool]
    ) -> list[tuple[Any, BaseException | None]] | None:
        """Commit a batch of appends without a savepoint per call; ``None`` if it cannot be.

        On Postgres each append is one statement that, when the run's last seq is not the
        expected one, writes nothing and raises nothing: the batch's statements go in one
        pipeline inside one transaction, in the batch's order. An append whose expectation
        failed fails alone (the run's last seq at its turn is read in the same pipeline).
        On SQLite and MariaDB each append is its short transaction's two statements (see
        :meth:`_commit_short_appends`). Only what a transaction must decide (a key already
        stored, an expectation failed by an append with keys, which may be a retry) sends
        the batch back, rolled back, to the savepoint path (``None``).
        """
        if observed(self._engine) or any(call.appends is None for call in ordered):
            return None
        appends = [call.appends for call in ordered if call.appends is not None]
        queries = self._queries
        try:
            if queries.appends_in_one:
                with self._units.write() as conn:
                    answers = queries.appends_pipelined(conn, appends, stamp_ns())
                    outcomes = appended(appends, answers)
                    committing[0] = True
            elif queries.appends_in_short_transaction:
                outcomes = self._commit_short_appends(appends, committing)
            else:
                return None
        except IntegrityError as exc:
            if not self._flavor.is_unique_violation(exc):
                raise
            return None
        except DBAPIError as exc:
            if not self._flavor.is_out_of_range(exc):
                raise
            return None  # a run at its last seq: the savepoint path fails that append alone
        except Undecided:
            return None
        return outcomes

    def _commit_short_appends(
        self, appends: list[Appending], committing: list[bool]
    ) -> list[tuple[Any, BaseException | None]]:
        """Each append as the run row's upsert and the insert, one after the other, in one unit.

        The upsert returns the run's new last seq, so the events take the seqs below it
        without a read first: two statements per append, where a savepoint per call costs
        six (on aiosqlite, six trips to the driver's thread; on MariaDB, six round trips).
        An append whose expectation failed, or which would pass the last seq, has already
        moved its run's row, which only the savepoint path can take back: the batch goes
        there (``Undecided``), rolled back.

        Raises:
            Undecided: An append must fail alone.
            IntegrityError: A key is already stored.
        """
        queries = self._queries
        outcomes: list[tuple[Any, BaseException | None]] = []
        with self._write_unit() as conn:
            now = stamp_ns()
            for run_id, items, expected, group in appends:
                before = queries.advance_for_append(conn, run_id, len(items), group, now)
                before -= len(items)
                if expected not in (None, before):
                    raise Undecided
                try:
                    placed = place(run_id, items, before, {}, expected)
                except CheckpointError:
                    raise Undecided from None
                queries.insert_keyed(conn, placed.rows, placed.keys)
                outcomes.append((placed, None))
            committing[0] = True
        return outcomes

    def _commit_batch(
        self, ordered: list[Pending], committing: list[bool]
    ) -> list[tuple[Any, BaseException | None]]:
        if self._closed:
            raise StoreUnavailable(f"saving failed on {self.url}: the store is closed")
        outcomes: list[tuple[Any, BaseException | None]] = []
        with self._units.write() as conn:
            for call in ordered:
                run_sql(conn, "SAVEPOINT pa_call")
                try:
                    try:
                        result = call.inside(conn)
                    except IntegrityError as exc:
                        if call.on_conflict is None or not self._flavor.is_unique_violation(exc):
                            raise
                        run_sql(conn, "ROLLBACK TO SAVEPOINT pa_call")
                        result = call.on_conflict(conn)
                except CheckpointError as exc:
                    run_sql(conn, "ROLLBACK TO SAVEPOINT pa_call")
                    outcomes.append((None, exc))
                else:
                    outcomes.append((result, None))
                run_sql(conn, "RELEASE SAVEPOINT pa_call")
            committing[0] = True
        return outcomes

    def _save_many(self, rows: list[EventRow], snaps: list[StateRow], now: int) -> None:
        """Events and snapshots (one per run) in one unit: a statement where the backend can.

        On aiosqlite the transaction is one trip to the connection's thread.
        """
        queries = self._queries
        if queries.saves_in_one:
            with self._units.single_write() as conn:
                queries.save_many(conn, rows, snaps, now)
        elif self._units.holds_writer and not observed(self._engine):
            self._units.write_on_cursor(
                lambda cursor: queries.save_many_on_cursor(cursor, rows, snaps, now),
                "a save (BEGIN IMMEDIATE, INSERT INTO pa_events, pa_runs, pa_snapshots, COMMIT)",
            )
        else:
            with self._write_unit() as conn:
                queries.save_many(conn, rows, snaps, now)

    @contextlib.contextmanager
    def _write_unit(self) -> Iterator[Connection]:
        """A write transaction: on aiosqlite, one trip to its thread (``one_trip_transaction``)."""
        if self._one_trip:
            with (
                self._units.single_write() as conn,
                one_trip_transaction(conn, self._flavor.begin_sql),
            ):
                yield conn
        else:
            with self._units.write() as conn:
                yield conn


def appended(
    appends: list[tuple[str, Sequence[Any], int | None, str | None]],
    answers: list[tuple[list[int], int | None]],
) -> list[tuple[Any, BaseException | None]]:
    """Each pipelined append's placement or conflict; raises ``Undecided`` when unsure."""
    outcomes: list[tuple[Any, BaseException | None]] = []
    for (run_id, items, expected, _group), (seqs, last) in zip(appends, answers, strict=True):
        if seqs:
            rows = [item.at(run_id, seq) for item, seq in zip(items, seqs, strict=True)]
            outcomes.append((Placement(rows, [item.key for item in items], rows, seqs[-1]), None))
            continue
        if last is None or any(item.key is not None for item in items):
            raise Undecided  # a retry of a stored append, or a conflict: a transaction decides
        try:
            place(run_id, items, last, {}, expected)
        except CheckpointError as exc:
            outcomes.append((None, exc))
            continue
        raise Undecided  # the run came back to the expected seq meanwhile
    return outcomes
