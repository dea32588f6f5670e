"""The in-memory store: the contract without durability, for tests and short-lived runs."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from purpose_agent.clock import stamp_ns
from purpose_agent.errors import SequenceConflict
from purpose_agent.protocol import ClosingContext, Recovery
from purpose_agent.reads import event_window
from purpose_agent.records import (
    EventRow,
    StateRow,
    check_limit,
    check_run_id,
    check_since,
    decode_event,
    decode_state,
    event_row,
    event_rows,
    state_row,
)
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState

_PAGE = 1000


@dataclass
class _Run:
    seqs: list[int] = field(default_factory=list)
    events: dict[int, EventRow] = field(default_factory=dict)
    snapshot: StateRow | None = None
    written_ns: int = 0


class InMemoryCheckpointer(ClosingContext):
    """Keeps runs in process memory; not durable across restarts.

    Values are stored in their encoded form, exactly as the durable stores keep them, so a
    caller that mutates an event after saving it does not change what was saved, and what
    passes here passes on the other backends.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()

    # -- writes ---------------------------------------------------------------------------

    def save_event(self, event: PAEvent) -> None:
        """Append one event. See :class:`~purpose_agent.protocol.Checkpointer`."""
        self._write([event_row(event)], None)

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Append a batch (and a snapshot) all or nothing."""
        rows = event_rows(events)
        snap = state_row(snapshot.run_id, snapshot) if snapshot is not None else None
        self._write(rows, snap)

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Save a snapshot; a lower ``seq`` than the stored one is ignored."""
        self._write([], state_row(run_id, state))

    def _write(self, rows: list[EventRow], snap: StateRow | None) -> None:
        with self._lock:
            new: list[EventRow] = []
            for row in rows:
                run = self._runs.get(row.run_id)
                stored = run.events.get(row.seq) if run is not None else None
                if stored is None:
                    new.append(row)
                elif stored != row:
                    raise SequenceConflict(row.run_id, row.seq)
            stamp = stamp_ns()
            for row in new:
                run = self._runs.setdefault(row.run_id, _Run())
                run.events[row.seq] = row
                if not run.seqs or row.seq > run.seqs[-1]:
                    run.seqs.append(row.seq)
                else:
                    bisect.insort(run.seqs, row.seq)
                run.written_ns = stamp
            if snap is not None:
                run = self._runs.setdefault(snap.run_id, _Run())
                if run.snapshot is None or snap.seq >= run.snapshot.seq:
                    run.snapshot = snap
                run.written_ns = stamp

    # -- reads ----------------------------------------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``."""
        check_run_id(run_id)
        with self._lock:
            run = self._runs.get(run_id)
            snap = run.snapshot if run is not None else None
        return decode_state(run_id, snap.state, snap.seq) if snap is not None else None

    def _rows_after(self, run_id: str, since_seq: int, limit: int | None) -> list[EventRow]:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return []
            start = bisect.bisect_right(run.seqs, since_seq)
            stop = len(run.seqs) if limit is None else start + limit
            return [run.events[seq] for seq in run.seqs[start:stop]]

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

        The keyword arguments bound the read further (see :mod:`purpose_agent.reads`).
        """
        check_run_id(run_id)
        window = event_window(since_seq, limit, before, newest_first, kinds, lanes)
        if window.empty:
            return []
        if window.plain:
            return [decode_event(*row) for row in self._rows_after(run_id, since_seq, limit)]
        return window.select(self._iter(run_id, since_seq))

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events with ``seq > since_seq``, a page at a time."""
        check_run_id(run_id)
        check_since(since_seq)
        return self._iter(run_id, since_seq)

    def _iter(self, run_id: str, since_seq: int) -> Iterator[PAEvent]:
        while True:
            page = self._rows_after(run_id, since_seq, _PAGE)
            for row in page:
                yield decode_event(*row)
            if len(page) < _PAGE:
                return
            since_seq = page[-1].seq

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and exactly the events after it."""
        check_run_id(run_id)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            snap = run.snapshot
            rows = self._rows_after(run_id, snap.seq if snap is not None else 0, None)
        state = decode_state(run_id, snap.state, snap.seq) if snap is not None else None
        return Recovery(state, [decode_event(*row) for row in rows])

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return run ids, most recently written first."""
        check_limit(limit)
        check_limit(offset, "offset")
        with self._lock:
            ordered = sorted(self._runs.items(), key=lambda item: item[1].written_ns, reverse=True)
        ids = [run_id for run_id, _ in ordered][offset:]
        return ids if limit is None else ids[:limit]

    def delete_run(self, run_id: str) -> None:
        """Remove a run's events and snapshot."""
        check_run_id(run_id)
        with self._lock:
            self._runs.pop(run_id, None)

    # -- counts kept from the seed --------------------------------------------------------

    @property
    def event_count(self) -> int:
        """Number of stored events across all runs."""
        with self._lock:
            return sum(len(run.events) for run in self._runs.values())

    @property
    def snapshot_count(self) -> int:
        """Number of runs with a snapshot."""
        with self._lock:
            return sum(run.snapshot is not None for run in self._runs.values())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release; kept for the protocol."""
