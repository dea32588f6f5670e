"""The in-memory store: the contract without durability, for tests and short-lived runs."""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from purpose_agent.appends import (
    check_expected,
    check_label,
    check_run_listing,
    drafts,
    place,
    run_filter,
    snapshot_row,
)
from purpose_agent.clock import stamp_ns
from purpose_agent.errors import SequenceConflict, StoreUnavailable
from purpose_agent.protocol import (
    ClosingContext,
    KeyedEvent,
    Recovery,
    keyed_rows,
    new_keyed_rows,
)
from purpose_agent.reads import event_window
from purpose_agent.records import (
    EventRow,
    StateRow,
    batch_snapshot_row,
    check_page,
    check_run_id,
    check_since,
    decode_event,
    decode_state,
    event_row,
    event_rows,
    state_row,
)
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState

_PAGE = 1000
_WHERE = "memory"  # the store in messages, as the target "memory" names it (stores/open.py)


@dataclass
class _Run:
    seqs: list[int] = field(default_factory=list)
    events: dict[int, EventRow] = field(default_factory=dict)
    snapshot: StateRow | None = None
    written_ns: int = 0
    last_seq: int = 0  # the highest seq ever stored: compaction does not lower it
    keys: dict[str, int] = field(default_factory=dict)
    key_of: dict[int, str] = field(default_factory=dict)  # the same keys, by seq
    group: str | None = None

    def add(self, row: EventRow, key: str | None = None) -> None:
        self.events[row.seq] = row
        if not self.seqs or row.seq > self.seqs[-1]:
            self.seqs.append(row.seq)
        else:
            bisect.insort(self.seqs, row.seq)
        self.last_seq = max(self.last_seq, row.seq)
        if key is not None:
            self.keys[key] = row.seq
            self.key_of[row.seq] = key


class InMemoryCheckpointer(ClosingContext):
    """Keeps runs in process memory; not durable across restarts.

    Values are stored in their encoded form, exactly as the durable stores keep them, so a
    caller that mutates an event after saving it does not change what was saved, and what
    passes here passes on the other backends.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()
        self._closed = False

    @contextlib.contextmanager
    def _serving(self, action: str) -> Iterator[None]:
        """Hold the store's lock for ``action``, refusing it once the store is closed.

        The check is made under the lock, so a call that races ``close()`` either completes
        before it or is refused, as on the SQL stores.
        """
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{action} failed on {_WHERE}: the store is closed")
            yield

    # -- writes ---------------------------------------------------------------------------

    def save_event(self, event: PAEvent) -> None:
        """Append one event. See :class:`~purpose_agent.protocol.Checkpointer`."""
        self._write("saving an event", [event_row(event)], None)

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Append a batch (and a snapshot) all or nothing."""
        rows = event_rows(events)
        snap = batch_snapshot_row(snapshot) if snapshot is not None else None
        self._write("saving events", rows, snap)

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Save a snapshot; a lower ``seq`` than the stored one is ignored."""
        self._write("saving a snapshot", [], state_row(run_id, state))

    def _write(self, action: str, rows: list[EventRow], snap: StateRow | None) -> None:
        with self._serving(action):
            new: list[EventRow] = []
            for row in rows:
                run = self._runs.get(row.run_id)
                stored = run.events.get(row.seq) if run is not None else None
                if stored is None:
                    new.append(row)
                elif not stored.same_event(row):
                    raise SequenceConflict(row.run_id, row.seq)
            stamp = stamp_ns()
            for row in new:
                run = self._runs.setdefault(row.run_id, _Run())
                run.add(row)
                run.written_ns = stamp
            if snap is not None:
                run = self._runs.setdefault(snap.run_id, _Run())
                if run.snapshot is None or snap.seq >= run.snapshot.seq:
                    run.snapshot = snap
                run.last_seq = max(run.last_seq, snap.seq)
                run.written_ns = stamp

    def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """Append at the run's next seqs. See :class:`~purpose_agent.protocol.Appending`."""
        check_run_id(run_id)
        expected = check_expected(expected_last_seq)
        items = drafts(run_id, events)
        group = check_label(group, "group") if group is not None else None
        with self._serving("appending events"):
            run = self._runs.get(run_id) or _Run()
            stored = {
                item.key: run.events[run.keys[item.key]]
                for item in items
                if item.key is not None and item.key in run.keys
            }
            placed = place(run_id, items, run.last_seq, stored, expected)
            snap = snapshot_row(run_id, snapshot, max(row.seq for row in placed.result))
            self._runs[run_id] = run
            for row, key in zip(placed.rows, placed.keys, strict=True):
                run.add(row, key)
            if snap is not None and (run.snapshot is None or snap.seq >= run.snapshot.seq):
                run.snapshot = snap
                run.last_seq = max(run.last_seq, snap.seq)
            if group is not None:
                run.group = group
            run.written_ns = stamp_ns()
        return [decode_event(*row) for row in placed.result]

    def last_seq(self, run_id: str) -> int:
        """The highest seq the run ever stored; 0 for an unknown run."""
        check_run_id(run_id)
        with self._serving("reading a run's last seq"):
            run = self._runs.get(run_id)
            return run.last_seq if run is not None else 0

    def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """The run's event appended with ``key``, or ``None``."""
        check_run_id(run_id)
        key = check_label(key, "key")
        with self._serving("reading an event by key"):
            run = self._runs.get(run_id)
            seq = run.keys.get(key) if run is not None else None
            row = run.events.get(seq) if run is not None and seq is not None else None
        return decode_event(*row) if row is not None else None

    def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """Store events at their own seqs with their keys, all or nothing.

        See :class:`~purpose_agent.protocol.KeyedEvents`.

        Raises:
            InvalidInput: A value cannot be stored, or an event is of another run.
            SequenceConflict: A seq holds another event, or the same with another key, or a
                key is stored at another seq; nothing was written.

        """
        rows = keyed_rows(run_id, events)
        snap = state_row(run_id, snapshot) if snapshot is not None else None
        group = check_label(group, "group") if group is not None else None
        with self._serving("saving keyed events"):
            run = self._runs.get(run_id)
            if run is None:
                new = rows
            else:
                stored = {
                    row.seq: (run.events[row.seq], run.key_of.get(row.seq))
                    for row, _ in rows
                    if row.seq in run.events
                }
                taken = {key: run.keys[key] for _, key in rows if key in run.keys}
                new = new_keyed_rows(run_id, rows, stored, taken)
            if not new and snap is None and (run is None or group is None):
                return  # nothing new: a repeat is a no-op, and a group alone makes no run
            run = self._runs.setdefault(run_id, _Run())
            for row, key in new:
                run.add(row, key)
            if snap is not None:
                if run.snapshot is None or snap.seq >= run.snapshot.seq:
                    run.snapshot = snap
                run.last_seq = max(run.last_seq, snap.seq)
            if group is not None:
                run.group = group
            if new or snap is not None or group is not None:
                run.written_ns = stamp_ns()

    # -- reads ----------------------------------------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the snapshot with the highest ``seq``, or ``None``."""
        check_run_id(run_id)
        with self._serving("loading a snapshot"):
            run = self._runs.get(run_id)
            snap = run.snapshot if run is not None else None
        return decode_state(run_id, snap.state, snap.seq) if snap is not None else None

    def _rows_after(self, run_id: str, since_seq: int, limit: int | None) -> list[EventRow]:
        with self._serving("reading events"):
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

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> Iterator[KeyedEvent]:
        """Stream events with ``seq > since_seq`` and their keys, a page at a time."""
        check_run_id(run_id)
        check_since(since_seq)
        return self._iter_keyed(run_id, since_seq)

    def _iter_keyed(self, run_id: str, since_seq: int) -> Iterator[KeyedEvent]:
        while True:
            with self._serving("reading events"):
                page = self._rows_after(run_id, since_seq, _PAGE)
                run = self._runs.get(run_id)
                keys = [run.key_of.get(row.seq) if run is not None else None for row in page]
            for row, key in zip(page, keys, strict=True):
                yield KeyedEvent(decode_event(*row), key)
            if len(page) < _PAGE:
                return
            since_seq = page[-1].seq

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and exactly the events after it."""
        check_run_id(run_id)
        with self._serving("recovering a run"):
            run = self._runs.get(run_id)
            if run is None:
                return None
            snap = run.snapshot
            rows = self._rows_after(run_id, snap.seq if snap is not None else 0, None)
        state = decode_state(run_id, snap.state, snap.seq) if snap is not None else None
        return Recovery(state, [decode_event(*row) for row in rows])

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Return run ids, most recently written first, of ``group`` and ``prefix`` if given."""
        limit, offset, group, prefix = check_run_listing(limit, offset, group, prefix)
        with self._serving("listing runs"):
            ordered = sorted(
                (
                    (run_id, run)
                    for run_id, run in self._runs.items()
                    if (group is None or run.group == group)
                    and (prefix is None or run_id.startswith(prefix))
                ),
                key=lambda item: (-item[1].written_ns, item[0]),
            )
        ids = [run_id for run_id, _ in ordered][offset:]
        return ids if limit is None else ids[:limit]

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Group names, the group with the most recently written run first."""
        limit, offset = check_page(limit, offset)
        with self._serving("listing groups"):
            latest: dict[str, int] = {}
            for run in self._runs.values():
                if run.group is not None:
                    latest[run.group] = max(latest.get(run.group, 0), run.written_ns)
        names = sorted(latest, key=lambda name: (-latest[name], name))[offset:]
        return names if limit is None else names[:limit]

    def run_group(self, run_id: str) -> str | None:
        """The run's group, or ``None``."""
        check_run_id(run_id)
        with self._serving("reading a run's group"):
            run = self._runs.get(run_id)
            return run.group if run is not None else None

    def compact(self, run_id: str) -> int:
        """Delete the events the run's latest snapshot covers; how many were deleted."""
        check_run_id(run_id)
        with self._serving("compacting a run"):
            run = self._runs.get(run_id)
            if run is None or run.snapshot is None:
                return 0
            cut = bisect.bisect_right(run.seqs, run.snapshot.seq)
            gone = run.seqs[:cut]
            del run.seqs[:cut]
            for seq in gone:
                del run.events[seq]
            run.keys = {key: seq for key, seq in run.keys.items() if seq in run.events}
            run.key_of = {seq: key for key, seq in run.keys.items()}
            return len(gone)

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
        """Delete the runs every given filter selects, at once; their ids, sorted.

        With ``whole_groups``, a run of a group goes only with every other run of its group.
        """
        chosen = run_filter(run_ids, group, prefix, older_than, keep_newest)
        with self._serving("deleting runs"):
            doomed = chosen.choose(
                [
                    (run_id, run.written_ns)
                    for run_id, run in self._runs.items()
                    if chosen.scoped(run_id, run.group)
                ]
            )
            if whole_groups:
                chosen_ids = set(doomed)
                spared = {
                    run.group
                    for run_id, run in self._runs.items()
                    if run.group is not None and run_id not in chosen_ids
                }
                doomed = [run_id for run_id in doomed if self._runs[run_id].group not in spared]
            for run_id in doomed:
                del self._runs[run_id]
        return doomed

    def delete_run(self, run_id: str) -> None:
        """Remove a run's events and snapshot."""
        check_run_id(run_id)
        with self._serving("deleting a run"):
            self._runs.pop(run_id, None)

    # -- counts kept from the seed --------------------------------------------------------

    @property
    def event_count(self) -> int:
        """Number of stored events across all runs."""
        with self._serving("counting events"):
            return sum(len(run.events) for run in self._runs.values())

    @property
    def snapshot_count(self) -> int:
        """Number of runs with a snapshot."""
        with self._serving("counting snapshots"):
            return sum(run.snapshot is not None for run in self._runs.values())

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Drop every run and refuse every later call; closing again does nothing.

        A closed store answers nothing, as the SQL stores do once their connections are gone,
        so that code which kept a handle it had closed fails at once instead of working on
        (or writing to) data nobody else will ever read.
        """
        with self._lock:
            self._closed = True
            self._runs = {}
