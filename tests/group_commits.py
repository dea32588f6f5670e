"""Values and faults the group commit tests share, for threads (sync) and for tasks (asyncio).

The asyncio store runs its batches through the sync store it wraps, so a fault put on that
store's batch is the fault both tests mean.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from purpose_agent import EventKind, PAEvent, RunState, SQLCheckpointer, StoreUnavailable
from purpose_agent.db.group_commit import Pending


def event(run_id: str, seq: int, **data: Any) -> PAEvent:
    return PAEvent(run_id=run_id, seq=seq, kind=EventKind.CUSTOM, ts=1.0, data=data)


def state(run_id: str, seq: int, **data: Any) -> RunState:
    return RunState(run_id=run_id, seq=seq, data=data)


def fail_every_batch(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch, committing: bool
) -> None:
    """Make every batch fail as a lost connection would, before or while it commits."""

    def fail(ordered: list[Pending], sent: list[bool]) -> Any:
        sent[0] = committing
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "_commit_batch", fail)


def check_only_unkeyed_appends_reported(results: list[Any]) -> None:
    """Of a batch lost while committing, with unkeyed appends at odd places and saves at even.

    Only unkeyed appends may be stored already, so only they are reported, never repeated.
    """
    grouped = [i for i, result in enumerate(results) if isinstance(result, StoreUnavailable)]
    assert grouped
    assert all(index % 2 for index in grouped)
    assert "may or may not be stored" in str(results[grouped[0]])
