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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from purpose_agent.errors import InvalidInput
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
    old_runs = old_events = covered_runs = covered_events = 0
    if cutoff is not None:
        with store.reading("counting old runs") as conn:
            old_runs, old_events = store.queries.count_old(conn, cutoff)
        if not dry_run:
            old_runs, old_events = _delete_old(store, cutoff)
    if covered:
        with store.reading("counting covered events") as conn:
            covered_runs, covered_events = store.queries.count_covered(conn, cutoff)
        if not dry_run:
            covered_runs, covered_events = _delete_covered(store)
    return PruneResult(covered_events, covered_runs, old_runs, old_events, dry_run)


def _delete_old(store: SQLCheckpointer, cutoff: int) -> tuple[int, int]:
    runs = events = 0
    after = ""
    while True:
        with store.reading("listing old runs") as conn:
            page = store.queries.old_runs_page(conn, cutoff, after, _PAGE)
        for run_id in page:
            with store.writing("pruning an old run") as conn:
                deleted = store.queries.delete_old_run(conn, run_id, cutoff)
            if deleted is not None:
                runs += 1
                events += deleted
        if len(page) < _PAGE:
            return runs, events
        after = page[-1]


def _delete_covered(store: SQLCheckpointer) -> tuple[int, int]:
    runs = events = 0
    after = ""
    while True:
        with store.reading("listing snapshots") as conn:
            page = store.queries.snapshots_page(conn, after, _PAGE)
        for run_id, snap_seq in page:
            # Snapshots only move forward, so what this seq covers stays covered.
            deleted = _delete_run_range(store, run_id, snap_seq)
            if deleted:
                runs += 1
                events += deleted
        if len(page) < _PAGE:
            return runs, events
        after = page[-1][0]


def _delete_run_range(store: SQLCheckpointer, run_id: str, upto: int) -> int:
    deleted = 0
    low = -1
    while low < upto:
        with store.writing("pruning covered events") as conn:
            bound = store.queries.range_bound(conn, run_id, low, upto, _RANGE)
            high = upto if bound is None else bound
            deleted += store.queries.delete_range(conn, run_id, low, high)
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
