"""Agent steps as the concurrency rows write them, and the checks on what a reader sees.

A step is what an agent commits after each unit of work: its events and, every other step,
the state after it, in one ``save_events(..., snapshot=...)``. Because every step has the
same shape, a reader can tell from what it sees alone whether it saw whole steps: the log
must run from seq 1 without a gap and end at a step boundary, and a recovery must be the
latest snapshot plus exactly the events after it.
"""

from __future__ import annotations

from collections.abc import Iterable

from purpose_agent import Checkpointer, PAEvent, Recovery, RunState
from purpose_agent.testing.samples import ev, st

EVENTS_PER_STEP = 3
SNAPSHOT_EVERY = 2


class TornRead(AssertionError):
    """A reader saw a gap, part of a step, or a snapshot that is not the latest."""


def step(run_id: str, number: int) -> tuple[list[PAEvent], RunState | None]:
    """The events of step ``number`` (from 1) and, every other step, the state after it.

    Args:
        run_id: The run.
        number: The step, counted from 1.

    Returns:
        The step's events and its snapshot, or ``None`` on steps that carry none.

    """
    first = (number - 1) * EVENTS_PER_STEP + 1
    events = [ev(run_id, seq, step=number) for seq in range(first, first + EVENTS_PER_STEP)]
    if number % SNAPSHOT_EVERY:
        return events, None
    return events, st(run_id, number * EVENTS_PER_STEP, step=number)


def write_step(store: Checkpointer, run_id: str, number: int) -> None:
    """Commit step ``number`` of ``run_id`` as one batch.

    Args:
        store: Where to write.
        run_id: The run.
        number: The step, counted from 1.

    """
    events, snapshot = step(run_id, number)
    store.save_events(events, snapshot=snapshot)


def steps_in_log(run_id: str, events: Iterable[PAEvent], since_seq: int = 0) -> int:
    """How many whole steps a log read from ``since_seq`` shows, failing on a torn read.

    The events are consumed one by one, so a stream is checked without being kept.

    Args:
        run_id: The run read.
        events: What the read returned.
        since_seq: The seq the read started after (a step boundary).

    Returns:
        The number of the last step in the log, counting steps before ``since_seq``.

    Raises:
        TornRead: The log has a gap, an event of another run, an event that is not the one
            its step wrote, or ends inside a step.

    """
    last = since_seq
    for event in events:
        expected = last + 1
        if event.run_id != run_id or event.seq != expected:
            raise TornRead(f"{run_id}: expected seq {expected}, read {event.run_id}/{event.seq}")
        number = (expected - 1) // EVENTS_PER_STEP + 1
        if event != step(run_id, number)[0][(expected - 1) % EVENTS_PER_STEP]:
            raise TornRead(f"{run_id}: seq {expected} is not what step {number} wrote: {event}")
        last = expected
    if last % EVENTS_PER_STEP:
        raise TornRead(f"{run_id}: the log ends at seq {last}, inside a step")
    return last // EVENTS_PER_STEP


def steps_in_recovery(run_id: str, recovery: Recovery | None) -> int:
    """How many steps a recovery covers, failing unless it is the latest snapshot and its tail.

    Args:
        run_id: The run recovered.
        recovery: What ``recover`` returned.

    Returns:
        The number of the last step the recovery covers (0 for an unknown run).

    Raises:
        TornRead: The tail has a gap or part of a step, or a later step's snapshot should
            have replaced the one returned.

    """
    if recovery is None:
        return 0
    state, events = recovery
    since = 0
    if state is not None:
        number = state.seq // EVENTS_PER_STEP
        if number < 1 or state != step(run_id, number)[1]:
            raise TornRead(f"{run_id}: recovered a state no step wrote: {state}")
        since = state.seq
    last = steps_in_log(run_id, events, since)
    newest_snapshot = last - last % SNAPSHOT_EVERY
    if newest_snapshot * EVENTS_PER_STEP != since:
        raise TornRead(
            f"{run_id}: recovery holds steps up to {last} but the snapshot at seq {since}, "
            f"not the one step {newest_snapshot} committed with its events"
        )
    return last
