"""The store calls the saver makes, as values, so that one implementation serves both worlds.

Each saver operation is a generator that yields a :class:`Call` wherever it needs the store
and receives the result (or has the store's error thrown into it) in return. :func:`run`
answers the calls with a synchronous store, :func:`arun` awaits an asynchronous one (the
same method names, as ``AsyncSQLCheckpointer`` has them), so ``get_tuple`` and ``aget_tuple``
are one piece of code. Listing yields its results as well (:func:`stream`, :func:`astream`),
so it stays lazy in both worlds.

The helpers below (``append``, ``event_by_key``, ...) wrap each call with its types:
``found = yield from calls.event_by_key(run_id, key)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from langgraph.checkpoint.base import CheckpointTuple

from purpose_agent import CheckpointError, NewEvent, PAEvent, RunState

T = TypeVar("T")
_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


class Call(NamedTuple):
    """One store method to call, with its arguments (a tuple: one is built per store call)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = _NO_OPTIONS


Op = Generator[Call, Any, T]
"""An operation: yields calls, returns its result."""

Stream = Generator[Call | CheckpointTuple, Any, None]
"""A listing: yields calls and, between them, the checkpoints it found."""


# -- the calls, typed ---------------------------------------------------------------------


def append(
    run_id: str, events: list[NewEvent], *, group: str, expected_last_seq: int | None = None
) -> Op[list[PAEvent]]:
    """``store.append``: the events at the run's next seqs, the run in ``group``.

    With ``expected_last_seq``, only if the run's last seq is still that (``SequenceConflict``
    otherwise): what the caller read of the run is what it appends after.
    """
    options: dict[str, Any] = {"group": group}
    if expected_last_seq is not None:
        options["expected_last_seq"] = expected_last_seq
    stored: list[PAEvent] = yield Call("append", (run_id, events), options)
    return stored


def last_seq(run_id: str) -> Op[int]:
    """``store.last_seq``: read before the run's events, the seq to expect when appending."""
    seq: int = yield Call("last_seq", (run_id,))
    return seq


def event_by_key(run_id: str, key: str) -> Op[PAEvent | None]:
    """``store.event_by_key``."""
    found: PAEvent | None = yield Call("event_by_key", (run_id, key))
    return found


def list_events(
    run_id: str,
    since_seq: int = 0,
    limit: int | None = None,
    *,
    before: int | None = None,
    newest_first: bool = False,
    lanes: list[str] | None = None,
) -> Op[list[PAEvent]]:
    """``store.list_events`` with the bounds the database applies."""
    options: dict[str, Any] = {}
    if before is not None:
        options["before"] = before
    if newest_first:
        options["newest_first"] = True
    if lanes is not None:
        options["lanes"] = lanes
    events: list[PAEvent] = yield Call("list_events", (run_id, since_seq, limit), options)
    return events


def whole_run(run_id: str) -> Call:
    """``store.list_events(run_id)`` as a call to yield directly: ``list[PAEvent]`` comes back.

    This and :func:`newest_events` serve the reads of a checkpoint, which make two store
    calls each: yielding the call itself, rather than through a helper generator, spares a
    generator and a delegation per call.
    """
    return Call("list_events", (run_id,))


_NEWEST_FIRST: Mapping[str, Any] = MappingProxyType({"newest_first": True})


def newest_events(run_id: str, limit: int, before: int | None) -> Call:
    """``store.list_events`` newest first, below ``before``, as a call to yield directly."""
    if before is None:
        return Call("list_events", (run_id, 0, limit), _NEWEST_FIRST)
    return Call("list_events", (run_id, 0, limit), {"before": before, "newest_first": True})


def events_of_runs(run_ids: list[str]) -> Op[dict[str, list[PAEvent]]]:
    """``store.events_of_runs``: every event of each run, in one call."""
    found: dict[str, list[PAEvent]] = yield Call("events_of_runs", (run_ids,))
    return found


def list_runs(*, group: str | None = None, prefix: str | None = None) -> Op[list[str]]:
    """``store.list_runs`` of one group and prefix, every page."""
    run_ids: list[str] = yield Call("list_runs", (), {"group": group, "prefix": prefix})
    return run_ids


def save_snapshot(run_id: str, state: RunState) -> Op[None]:
    """``store.save_snapshot``."""
    yield Call("save_snapshot", (run_id, state))


def compact(run_id: str) -> Op[int]:
    """``store.compact``: drop the events the run's latest snapshot covers."""
    count: int = yield Call("compact", (run_id,))
    return count


def delete_runs(run_ids: list[str] | None = None, *, group: str | None = None) -> Op[list[str]]:
    """``store.delete_runs``, in one transaction."""
    deleted: list[str] = yield Call("delete_runs", (run_ids,), {"group": group})
    return deleted


# -- drivers ------------------------------------------------------------------------------


def run(store: Any, op: Op[T]) -> T:
    """Answer the operation's calls with a synchronous store; return its result.

    A store error is thrown into the operation, which may handle it; one it does not handle
    propagates from here.
    """
    try:
        call = next(op)
        while True:
            try:
                result = getattr(store, call.method)(*call.args, **call.kwargs)
            except CheckpointError as exc:
                call = op.throw(exc)
            else:
                call = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def arun(store: Any, op: Op[T]) -> T:
    """:func:`run` with an asynchronous store: each call is awaited."""
    try:
        call = next(op)
        while True:
            try:
                result = await getattr(store, call.method)(*call.args, **call.kwargs)
            except CheckpointError as exc:
                call = op.throw(exc)
            else:
                call = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def stream(store: Any, listing: Stream) -> Iterator[CheckpointTuple]:
    """The checkpoints a listing finds, its calls answered by a synchronous store."""
    # Closed when the consumer stops early, so that it never resumes half-way.
    with contextlib.closing(listing):
        result: Any = None
        while True:
            try:
                item = listing.send(result)
            except StopIteration:
                return
            if isinstance(item, Call):
                result = getattr(store, item.method)(*item.args, **item.kwargs)
            else:
                result = None
                yield item


async def astream(store: Any, listing: Stream) -> AsyncIterator[CheckpointTuple]:
    """:func:`stream` with an asynchronous store."""
    with contextlib.closing(listing):
        result: Any = None
        while True:
            try:
                item = listing.send(result)
            except StopIteration:
                return
            if isinstance(item, Call):
                result = await getattr(store, item.method)(*item.args, **item.kwargs)
            else:
                result = None
                yield item
