"""The checkpointer protocol every store implements, and what recovery returns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from purpose_agent.runtime.events import EventKind, PAEvent
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
