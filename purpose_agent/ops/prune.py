"""Removing what a SQL store no longer needs: events a snapshot covers, and old runs.

Recovery reads a run's snapshot and the events after it, so the events at or below the
snapshot's ``seq`` are history, not state: removing them keeps ``recover()`` exact and shrinks
the log. Runs not written for longer than a given age can go entirely.

Deletes run in small transactions (one run, or one range of a run's positions, at a time), so
pruning a large store holds no long lock and can be interrupted and run again at any point.
A run written again after the age check is left alone: its row is deleted only while it is
still old, in the same transaction as its events and snapshot.

After a prune, ``list_events(run_id)`` starts after the snapshot, and an event re-sent for a
pruned position is stored again instead of being recognised as a retry.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, select

from purpose_agent.db.dialects import dialect_for
from purpose_agent.db.models import EventRecord, RunRecord, SnapshotRecord
from purpose_agent.errors import InvalidInput
from purpose_agent.ops.sql_errors import sql_errors
from purpose_agent.stores.sql import SQLCheckpointer

_PAGE = 500
# Positions deleted per transaction when pruning one run's covered events.
_RANGE = 10_000


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed, or would remove on a dry run.

    Attributes:
        covered_events: Events at or below their run's snapshot seq.
        covered_runs: Runs those events belong to.
        old_runs: Runs not written since the cutoff.
        old_run_events: The events of those runs.
        dry_run: Whether nothing was deleted.

    """

    covered_events: int = 0
    covered_runs: int = 0
    old_runs: int = 0
    old_run_events: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON values."""
        return {
            "dry_run": self.dry_run,
            "covered_events": self.covered_events,
            "covered_runs": self.covered_runs,
            "old_runs": self.old_runs,
            "old_run_events": self.old_run_events,
        }


def prune(
    store: SQLCheckpointer,
    *,
    covered: bool = False,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    now_ns: int | None = None,
) -> PruneResult:
    """Delete covered events and old runs (old runs first, so nothing is counted twice).

    Args:
        store: The SQL store.
        covered: Delete events at or below their run's snapshot seq.
        older_than: Delete runs whose last write is older than this.
        dry_run: Count only.
        now_ns: The present, in nanoseconds (tests pin it); defaults to the clock.

    Returns:
        The counts.

    Raises:
        InvalidInput: Neither ``covered`` nor ``older_than``, or a negative age.
        StoreUnavailable: The database cannot be reached.

    """
    if not covered and older_than is None:
        raise InvalidInput("nothing to prune: ask for covered events, old runs, or both")
    if older_than is not None and older_than < timedelta(0):
        raise InvalidInput(f"the age must not be negative, got {older_than}")
    cutoff = None
    if older_than is not None:
        now = time.time_ns() if now_ns is None else now_ns
        cutoff = now - int(older_than.total_seconds() * 1_000_000_000)
    engine = store.engine
    writer = _Writer(engine)
    old_runs = old_events = covered_runs = covered_events = 0
    with sql_errors("pruning", store.url):
        if cutoff is not None:
            old_runs, old_events = _count_old(engine, cutoff)
            if not dry_run:
                old_runs, old_events = _delete_old(engine, writer, cutoff)
        if covered:
            covered_runs, covered_events = _count_covered(engine, cutoff)
            if not dry_run:
                covered_runs, covered_events = _delete_covered(engine, writer)
    return PruneResult(covered_events, covered_runs, old_runs, old_events, dry_run)


class _Writer:
    """Write transactions the way the store opens them (BEGIN IMMEDIATE on SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = dialect_for(engine)

    def begin(self) -> AbstractContextManager[Connection]:
        return self._dialect.write_transaction(self._engine)


def _count_old(engine: Engine, cutoff: int) -> tuple[int, int]:
    runs = select(func.count()).select_from(RunRecord).where(RunRecord.updated_ns < cutoff)
    events = (
        select(func.count())
        .select_from(EventRecord)
        .join(RunRecord, RunRecord.run_id == EventRecord.run_id)
        .where(RunRecord.updated_ns < cutoff)
    )
    with engine.connect() as conn:
        return int(conn.execute(runs).scalar_one()), int(conn.execute(events).scalar_one())


def _delete_old(engine: Engine, writer: _Writer, cutoff: int) -> tuple[int, int]:
    runs = events = 0
    after = ""
    while True:
        page_stmt = (
            select(RunRecord.run_id)
            .where(RunRecord.updated_ns < cutoff, RunRecord.run_id > after)
            .order_by(RunRecord.run_id)
            .limit(_PAGE)
        )
        with engine.connect() as conn:
            page = list(conn.execute(page_stmt).scalars())
        for run_id in page:
            with writer.begin() as conn:
                gone = conn.execute(
                    delete(RunRecord).where(
                        RunRecord.run_id == run_id, RunRecord.updated_ns < cutoff
                    )
                )
                if gone.rowcount != 1:
                    continue  # written since the page was read: no longer old
                events += _rowcount(conn, delete(EventRecord).where(EventRecord.run_id == run_id))
                conn.execute(delete(SnapshotRecord).where(SnapshotRecord.run_id == run_id))
                runs += 1
        if len(page) < _PAGE:
            return runs, events
        after = page[-1]


def _rowcount(conn: Connection, stmt: Any) -> int:
    return int(conn.execute(stmt).rowcount)


def _covered_join(cutoff: int | None) -> Any:
    stmt = (
        select(EventRecord.run_id)
        .join(SnapshotRecord, SnapshotRecord.run_id == EventRecord.run_id)
        .where(EventRecord.seq <= SnapshotRecord.seq)
    )
    if cutoff is not None:
        # On a dry run the old runs are still there; they would be gone before this step.
        stmt = stmt.join(RunRecord, RunRecord.run_id == EventRecord.run_id).where(
            RunRecord.updated_ns >= cutoff
        )
    return stmt.subquery()


def _count_covered(engine: Engine, cutoff: int | None) -> tuple[int, int]:
    covered = _covered_join(cutoff)
    stmt = select(func.count(func.distinct(covered.c.run_id)), func.count())
    with engine.connect() as conn:
        runs, events = conn.execute(stmt).one()
    return int(runs), int(events)


def _delete_covered(engine: Engine, writer: _Writer) -> tuple[int, int]:
    runs = events = 0
    after = ""
    while True:
        page_stmt = (
            select(SnapshotRecord.run_id, SnapshotRecord.seq)
            .where(SnapshotRecord.run_id > after)
            .order_by(SnapshotRecord.run_id)
            .limit(_PAGE)
        )
        with engine.connect() as conn:
            page = list(conn.execute(page_stmt))
        for run_id, snap_seq in page:
            # Snapshots only move forward, so what this seq covers stays covered.
            deleted = _delete_run_range(writer, run_id, snap_seq)
            if deleted:
                runs += 1
                events += deleted
        if len(page) < _PAGE:
            return runs, events
        after = page[-1][0]


def _delete_run_range(writer: _Writer, run_id: str, upto: int) -> int:
    deleted = 0
    low = -1
    while low < upto:
        # The seq _RANGE positions on bounds this transaction; seqs may be sparse, so the
        # bound is looked up rather than computed.
        bound_stmt = (
            select(EventRecord.seq)
            .where(EventRecord.run_id == run_id, EventRecord.seq > low, EventRecord.seq <= upto)
            .order_by(EventRecord.seq)
            .offset(_RANGE - 1)
            .limit(1)
        )
        with writer.begin() as conn:
            bound = conn.execute(bound_stmt).scalar()
            high = upto if bound is None else int(bound)
            deleted += _rowcount(
                conn,
                delete(EventRecord).where(
                    and_(
                        EventRecord.run_id == run_id,
                        EventRecord.seq > low,
                        EventRecord.seq <= high,
                    )
                ),
            )
        low = high
    return deleted


def require_sql(store: object, where: str) -> SQLCheckpointer:
    """Return the store if it is a SQL store, else explain that pruning needs one.

    Raises:
        InvalidInput: For any other kind of store.

    """
    if not isinstance(store, SQLCheckpointer):
        raise InvalidInput(
            f"prune works on SQL stores; {where} is not one (copy it into one with "
            "`purpose-agent copy`)"
        )
    return store
