"""The checkpointer protocol every store implements, and what recovery returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from purpose_agent.appends import check_label
from purpose_agent.errors import InvalidInput, SequenceConflict
from purpose_agent.records import EventRow, check_run_id, event_row
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState


class Recovery(NamedTuple):
    """What a crashed run resumes from: the latest snapshot and exactly the events after it.

    Attributes:
        state: The latest snapshot, or ``None`` if the run has events but no snapshot.
        events: The events with ``seq`` above ``state.seq`` (all events without a snapshot),
            in ascending ``seq``.

    """

    state: RunState | None
    events: list[PAEvent]

    @property
    def seq(self) -> int:
        """The last seq covered by the snapshot plus the events (0 for nothing)."""
        if self.events:
            return self.events[-1].seq
        return self.state.seq if self.state is not None else 0


class ClosingContext:
    """Makes a store a context manager that closes it on exit (every store has ``close()``)."""

    def close(self) -> None:
        """Release what the store holds; subclasses override it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class Checkpointer(Protocol):
    """Durable persistence for agent runs: an append-only event log plus state snapshots.

    Every implementation behaves the same; ``purpose_agent.testing`` holds the suite that
    checks it.
    """

    def save_event(self, event: PAEvent) -> None:
        """Append one event; durable when this returns.

        Raises:
            InvalidInput: The event cannot be stored exactly (nothing is written).
            SequenceConflict: ``(run_id, seq)`` holds a different event. An equal event is a
                no-op, so a retry after an ambiguous failure is safe.

        """
        ...

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Append a batch, and optionally a snapshot, all or nothing.

        The batch may span several runs. With ``snapshot`` the state after a step lands in the
        same transaction as the step's events.
        """
        ...

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Save a snapshot covering the run's events up to ``state.seq``.

        A snapshot with a lower ``seq`` than the stored one does not replace it; one with the
        same ``seq`` does.
        """
        ...

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``."""
        ...

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        """Return events with ``seq > since_seq`` in ascending ``seq``, at most ``limit``."""
        ...

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events with ``seq > since_seq`` in ascending ``seq``, page by page."""
        ...

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and the events after it, read consistently.

        Returns ``None`` if the run has neither events nor snapshots.
        """
        ...

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return the ids of runs with events or snapshots, most recently written first."""
        ...

    def delete_run(self, run_id: str) -> None:
        """Remove a run's events and snapshots."""
        ...

    def close(self) -> None:
        """Release connections and file handles."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BoundedReads(Protocol):
    """What the package's stores add to ``list_events``: reads bounded by the store.

    Not part of :class:`Checkpointer`, so that a store written against the protocol alone still
    satisfies it; the behaviour suite checks these reads on backends that declare
    ``Capability.BOUNDED_READS``.
    """

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
        """Events with ``since_seq < seq < before`` of the given kinds and lanes, at most ``limit``.

        Ascending seq, or descending (the newest of the window first) with ``newest_first``.
        """
        ...


class Appending(Protocol):
    """Appending without choosing positions, and events the caller names by key.

    The store gives each appended event its run's next ``seq`` in the statement that writes it,
    so a writer needs no read first and no retry loop. Two writers that both pass the same
    ``expected_last_seq`` cannot both succeed: exactly one gets ``SequenceConflict``.
    """

    def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """Append events at the run's next positions, all or nothing; durable when it returns.

        Args:
            run_id: The run.
            events: At least one event, in the order they take positions.
            expected_last_seq: When given, the append happens only if the run's last seq is
                this value (0 for a run with no events).
            snapshot: A state saved in the same transaction, covering the appended events: its
                ``seq`` is replaced by the last assigned seq.
            group: Puts the run in this group (see :class:`RunGroups`).

        Returns:
            The stored events, in the order given. An event whose key is already stored with
            the same kind, lane and data is not stored again: the stored event is returned
            (with its own seq and ts), and ``expected_last_seq`` is checked only if some event
            is new.

        Raises:
            InvalidInput: A value cannot be stored, no events were given, or the snapshot is
                of another run; nothing was written.
            SequenceConflict: The run's last seq is not ``expected_last_seq``, or a key is
                stored with a different kind, lane or data; nothing was written.

        """
        ...

    def last_seq(self, run_id: str) -> int:
        """The highest seq the run has stored an event at or a snapshot covers.

        Appends take the positions after it. It is kept when covered events are compacted,
        and a snapshot ahead of the events moves it (an event appended below a snapshot's seq
        would be hidden from ``recover()``). 0 for an unknown run.
        """
        ...

    def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """The run's event appended with ``key``, or ``None``."""
        ...


class KeyedEvent(NamedTuple):
    """A stored event with the key it was appended with.

    Attributes:
        event: The event, at its own seq.
        key: Its key (see :meth:`Appending.append`), or ``None`` for an event without one.

    """

    event: PAEvent
    key: str | None


@runtime_checkable
class KeyedEvents(Protocol):
    """Events read and written with their keys at their own seqs, and a run's group with them.

    What moving a run between stores needs beyond :class:`Checkpointer`: ``iter_events`` and
    ``save_events`` carry neither an event's key nor the run's group, so a copy made with them
    alone loses every lookup by key (``event_by_key``) and every listing by group. The
    package's stores implement it; a store written against :class:`Checkpointer` alone need not.
    """

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> Iterator[KeyedEvent]:
        """Stream the run's events with ``seq > since_seq`` and their keys, in ascending seq.

        Paged as :meth:`Checkpointer.iter_events` is: memory stays flat whatever the run's length.
        """
        ...

    def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """Store events of one run at their own seqs with their keys, all or nothing.

        As :meth:`Checkpointer.save_events`, with the keys: an event stored at its seq with the
        same content and the same key is a no-op, so a copy run again after an interruption
        stores nothing twice.

        Args:
            run_id: The run; every event must belong to it.
            events: The events and their keys (none is fine: the snapshot or group alone).
            snapshot: A state saved in the same transaction, as with ``save_events``.
            group: Puts the run in this group in the same transaction; ``None`` leaves the
                run's group as it is.

        Raises:
            InvalidInput: A value cannot be stored, an event belongs to another run, or the
                snapshot does; nothing was written.
            SequenceConflict: A seq holds a different event, or the same event with another
                key (or none), or a key is stored at another seq; nothing was written.

        """
        ...


def keyed_rows(run_id: str, events: Iterable[KeyedEvent]) -> list[tuple[EventRow, str | None]]:
    """Check and encode a batch of :meth:`KeyedEvents.save_keyed_events`, as every store does.

    Exact repeats inside the batch (same seq, event and key) are dropped.

    Args:
        run_id: The run the batch is saved under.
        events: ``(event, key)`` pairs.

    Returns:
        Each event's row and key, in the order given.

    Raises:
        InvalidRunId: ``run_id`` is not acceptable.
        InvalidInput: Not an iterable of ``(PAEvent, key)`` pairs, an event of another run, a
            key no store can keep, or one key given to two seqs.
        SequenceConflict: Two different events, or one event with two keys, at one seq.

    """
    check_run_id(run_id)
    if isinstance(events, KeyedEvent | PAEvent | str | bytes | dict):
        raise InvalidInput("save_keyed_events takes an iterable of (event, key), not one value")
    out: list[tuple[EventRow, str | None]] = []
    by_seq: dict[int, tuple[EventRow, str | None]] = {}
    seq_of_key: dict[str, int] = {}
    for item in events:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidInput(f"expected an (event, key) pair, got {type(item).__name__}")
        event, key = item
        row = event_row(event)
        if row.run_id != run_id:
            raise InvalidInput(
                f"an event of run {row.run_id!r} (seq {row.seq}) is in a batch of run {run_id!r}"
            )
        if key is not None:
            key = check_label(key, "key")
            if seq_of_key.setdefault(key, row.seq) != row.seq:
                raise InvalidInput(f"run {run_id!r}: key {key!r} is given to two events")
        previous = by_seq.get(row.seq)
        if previous is None:
            by_seq[row.seq] = (row, key)
            out.append((row, key))
        elif previous[1] != key or not previous[0].same_event(row):
            raise SequenceConflict(run_id, row.seq)
    return out


def new_keyed_rows(
    run_id: str,
    rows: Iterable[tuple[EventRow, str | None]],
    stored: Mapping[int, tuple[EventRow, str | None]],
    taken: Mapping[str, int],
) -> list[tuple[EventRow, str | None]]:
    """The rows of a keyed batch that are not stored yet; the rules every store applies.

    Args:
        run_id: The run.
        rows: The batch, as :func:`keyed_rows` returns it.
        stored: The run's stored rows and keys at the batch's seqs, by seq.
        taken: The seqs at which the run stores the batch's keys, by key.

    Raises:
        SequenceConflict: A seq holds another event, or the same event with another key, or a
            new event's key is stored at another seq.

    """
    new: list[tuple[EventRow, str | None]] = []
    for row, key in rows:
        old = stored.get(row.seq)
        if old is not None:
            if not old[0].same_event(row):
                raise SequenceConflict(run_id, row.seq)
            if old[1] != key:
                raise SequenceConflict(
                    run_id,
                    row.seq,
                    f"run {run_id!r} already has this event at seq {row.seq} with key "
                    f"{old[1]!r}, not {key!r}; nothing was written",
                )
            continue
        if key is not None and key in taken:
            raise SequenceConflict(
                run_id,
                row.seq,
                f"run {run_id!r} already has key {key!r} at seq {taken[key]}, not at seq "
                f"{row.seq}; nothing was written",
            )
        new.append((row, key))
    return new


class RunGroups(Protocol):
    """Runs kept together (a conversation's runs, say), listed and deleted as one."""

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Run ids, most recently written first, only of ``group`` and starting with ``prefix``."""
        ...

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Group names, the group with the most recently written run first."""
        ...

    def run_group(self, run_id: str) -> str | None:
        """The run's group, or ``None`` (no group, or an unknown run)."""
        ...


class Retention(Protocol):
    """Removing what is no longer needed."""

    def compact(self, run_id: str) -> int:
        """Delete the run's events its latest snapshot covers; returns how many were deleted.

        ``recover()`` returns the same afterwards, and at every moment while it runs (a SQL
        store deletes a few thousand events per transaction, oldest first); ``list_events``
        starts after the snapshot, and ``last_seq`` still counts the deleted positions, so
        appends never reuse them.
        """
        ...

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
        """Delete every run that matches all the filters given, in one transaction.

        Args:
            run_ids: Only these runs.
            group: Only runs of this group.
            prefix: Only runs whose id starts with this.
            older_than: Only runs last written before this time, or this long ago.
            keep_newest: Keep this many runs, the most recently written of those that
                ``run_ids``, ``group`` and ``prefix`` select, whatever their age.
            whole_groups: Delete a run of a group only with every other run of its group:
                if one of them is not selected (by the filters, or because it was written
                since it was chosen, or made meanwhile), none of the group's runs is
                deleted. Checked as the runs are deleted, so that a group a writer goes on
                with (a LangGraph thread) is never left with some of its runs.

        Returns:
            The ids of the deleted runs, sorted.

        Raises:
            InvalidInput: No filter was given (deleting every run takes ``prefix=""``).

        """
        ...


@runtime_checkable
class AsyncCheckpointer(Protocol):
    """The asyncio form of :class:`Checkpointer`: the same methods, awaited, the same behaviour.

    ``AsyncSQLCheckpointer`` implements it on asyncio drivers; the behaviour suite runs it
    through ``purpose_agent.testing.BlockingAdapter``.
    """

    async def save_event(self, event: PAEvent) -> None:
        """See :meth:`Checkpointer.save_event`."""
        ...

    async def save_events(
        self, events: Iterable[PAEvent], snapshot: RunState | None = None
    ) -> None:
        """See :meth:`Checkpointer.save_events`."""
        ...

    async def save_snapshot(self, run_id: str, state: RunState) -> None:
        """See :meth:`Checkpointer.save_snapshot`."""
        ...

    async def load_latest(self, run_id: str) -> RunState | None:
        """See :meth:`Checkpointer.load_latest`."""
        ...

    async def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        """See :meth:`Checkpointer.list_events`."""
        ...

    def iter_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[PAEvent]:
        """See :meth:`Checkpointer.iter_events`; iterated with ``async for``."""
        ...

    async def recover(self, run_id: str) -> Recovery | None:
        """See :meth:`Checkpointer.recover`."""
        ...

    async def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """See :meth:`Checkpointer.list_runs`."""
        ...

    async def delete_run(self, run_id: str) -> None:
        """See :meth:`Checkpointer.delete_run`."""
        ...

    async def close(self) -> None:
        """See :meth:`Checkpointer.close`."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncAppending(Protocol):
    """The asyncio form of :class:`Appending`."""

    async def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """See :meth:`Appending.append`."""
        ...

    async def last_seq(self, run_id: str) -> int:
        """See :meth:`Appending.last_seq`."""
        ...

    async def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """See :meth:`Appending.event_by_key`."""
        ...


class AsyncKeyedEvents(Protocol):
    """The asyncio form of :class:`KeyedEvents`."""

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[KeyedEvent]:
        """See :meth:`KeyedEvents.iter_keyed_events`; iterated with ``async for``."""
        ...

    async def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """See :meth:`KeyedEvents.save_keyed_events`."""
        ...


class AsyncRunGroups(Protocol):
    """The asyncio form of :class:`RunGroups`."""

    async def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """See :meth:`RunGroups.list_runs`."""
        ...

    async def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """See :meth:`RunGroups.list_groups`."""
        ...

    async def run_group(self, run_id: str) -> str | None:
        """See :meth:`RunGroups.run_group`."""
        ...


class AsyncRetention(Protocol):
    """The asyncio form of :class:`Retention`."""

    async def compact(self, run_id: str) -> int:
        """See :meth:`Retention.compact`."""
        ...

    async def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
        whole_groups: bool = False,
    ) -> list[str]:
        """See :meth:`Retention.delete_runs`."""
        ...
