"""What `purpose-agent runs` shows about runs: one line each, one run in detail, or groups.

On a SQL store the answers come from indexed queries on the runs table and the primary key,
so listing a page of runs or counting a run's events never loads the events themselves. On
other stores they come from the protocol: the snapshot, then the events streamed after it,
and the group from :class:`~purpose_agent.protocol.RunGroups` where the store keeps groups.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from purpose_agent.appends import check_label, check_prefix, check_run_listing
from purpose_agent.errors import CorruptRecord, InvalidInput
from purpose_agent.protocol import Checkpointer, RunGroups
from purpose_agent.records import check_run_id, decode_state
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.open import describe
from purpose_agent.stores.sql import SQLCheckpointer

UNREADABLE = "unreadable"
_NS = 1_000_000_000


@dataclass(frozen=True)
class RunSummary:
    """One run, as a listing shows it.

    Attributes:
        run_id: The run.
        group: Its group; ``None`` without one, or on a store that keeps no groups.
        status: The status in its snapshot; ``None`` without a snapshot, ``"unreadable"`` for a
            snapshot that cannot be decoded.
        last_seq: The highest seq written (events or snapshot).
        snapshot_seq: The seq the snapshot covers, ``None`` without one.
        updated_at: Unix seconds of the last write on a SQL store; elsewhere the time of the
            last event or of the snapshot.

    """

    run_id: str
    group: str | None
    status: str | None
    last_seq: int
    snapshot_seq: int | None
    updated_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON values."""
        return {
            "run_id": self.run_id,
            "group": self.group,
            "status": self.status,
            "last_seq": self.last_seq,
            "snapshot_seq": self.snapshot_seq,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class RunDetail:
    """One run in detail.

    Attributes:
        summary: The run's line in a listing.
        event_count: How many events are stored (fewer than ``last_seq`` after a prune).
        first_seq: The lowest stored event seq, ``None`` without events.
        kinds: How many stored events there are of each kind.
        state: The latest snapshot, ``None`` without one.

    """

    summary: RunSummary
    event_count: int
    first_seq: int | None
    kinds: dict[str, int] = field(default_factory=dict)
    state: RunState | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the detail as JSON values (the snapshot as ``RunState.to_dict()``)."""
        return {
            **self.summary.to_dict(),
            "events": {
                "count": self.event_count,
                "first_seq": self.first_seq,
                "kinds": self.kinds,
            },
            "snapshot": self.state.to_dict() if self.state is not None else None,
        }


def _status(run_id: str, state_text: str | None, seq: int | None) -> str | None:
    if state_text is None:
        return None
    try:
        return decode_state(run_id, state_text, seq).status.value
    except CorruptRecord:
        return UNREADABLE


def grouped(store: Checkpointer) -> RunGroups | None:
    """The store as :class:`~purpose_agent.protocol.RunGroups`, or ``None`` if it keeps none.

    Stores written against the base protocol, and the seed-era readers, have no groups: they
    list every run, each without a group.
    """
    if all(callable(getattr(store, name, None)) for name in ("list_groups", "run_group")):
        return cast("RunGroups", store)
    return None


def _groups_or_refuse(store: Checkpointer) -> RunGroups:
    groups = grouped(store)
    if groups is None:
        raise InvalidInput(
            f"{describe(store)} keeps no run groups, so it cannot be listed by group or id prefix "
            "(copy it into a SQL store with `purpose-agent copy`)"
        )
    return groups


def run_summaries(
    store: Checkpointer,
    limit: int | None,
    offset: int = 0,
    *,
    group: str | None = None,
    prefix: str | None = None,
) -> list[RunSummary]:
    """Summarise a page of runs, most recently written first.

    Args:
        store: The store.
        limit: At most this many runs; ``None`` for all.
        offset: Skip this many first (paging).
        group: Only runs of this group.
        prefix: Only runs whose id starts with this (exact, case-sensitive).

    Raises:
        InvalidInput: A negative ``limit`` or ``offset``, a malformed group or prefix, or a
            group or prefix on a store that keeps no groups.
        StoreUnavailable: The store cannot be read.

    """
    limit, offset, group, prefix = check_run_listing(limit, offset, group, prefix)
    if isinstance(store, SQLCheckpointer):
        return _sql_summaries(store, limit, offset, group, prefix)
    if group is None and prefix is None:
        run_ids = store.list_runs(limit, offset=offset)
    else:
        groups = _groups_or_refuse(store)
        run_ids = groups.list_runs(limit, offset=offset, group=group, prefix=prefix)
    return [_summary(store, run_id) for run_id in run_ids]


def run_ids(
    store: Checkpointer, *, group: str | None = None, prefix: str | None = None
) -> list[str]:
    """Every run id, most recently written first: of the group, or with the prefix, if given.

    Raises:
        InvalidInput: A malformed group or prefix, or either on a store that keeps no groups.
        StoreUnavailable: The store cannot be read.

    """
    if group is None and prefix is None:
        return store.list_runs()
    if group is not None:
        group = check_label(group, "group")
    if prefix is not None:
        prefix = check_prefix(prefix)
    return _groups_or_refuse(store).list_runs(None, group=group, prefix=prefix)


def _sql_summaries(
    store: SQLCheckpointer,
    limit: int | None,
    offset: int,
    group: str | None,
    prefix: str | None,
) -> list[RunSummary]:
    if limit == 0:
        return []
    with store.reading("listing runs") as conn:
        lines = store.queries.run_lines(conn, limit, offset, group=group, prefix=prefix)
    return [
        RunSummary(
            run_id=line.run_id,
            group=line.group,
            status=_status(line.run_id, line.state, line.snapshot_seq),
            last_seq=max(line.last_seq, line.snapshot_seq or 0),
            snapshot_seq=line.snapshot_seq,
            updated_at=line.updated_ns / _NS,
        )
        for line in lines
    ]


def _group_of(store: Checkpointer, run_id: str) -> str | None:
    groups = grouped(store)
    return groups.run_group(run_id) if groups is not None else None


def _summary(store: Checkpointer, run_id: str) -> RunSummary:
    status: str | None
    try:
        state = store.load_latest(run_id)
    except CorruptRecord:
        state, status = None, UNREADABLE
    else:
        status = state.status.value if state is not None else None
    snapshot_seq = state.seq if state is not None else None
    last_seq = snapshot_seq or 0
    updated_at = state.updated_at if state is not None else None
    for event in store.iter_events(run_id, last_seq):
        last_seq, updated_at = event.seq, event.ts
    return RunSummary(run_id, _group_of(store, run_id), status, last_seq, snapshot_seq, updated_at)


@dataclass(frozen=True)
class GroupSummary:
    """One group, as ``runs groups`` shows it.

    Attributes:
        group: The group's name.
        latest_run: Its most recently written run (``None`` if its runs went meanwhile).
        updated_at: Unix seconds of that run's last write, as :class:`RunSummary` gives it.

    """

    group: str
    latest_run: str | None
    updated_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON values."""
        return {"group": self.group, "latest_run": self.latest_run, "updated_at": self.updated_at}


def group_summaries(store: Checkpointer, limit: int | None, offset: int = 0) -> list[GroupSummary]:
    """Summarise a page of groups, the group with the most recently written run first.

    Args:
        store: The store.
        limit: At most this many groups; ``None`` for all.
        offset: Skip this many first (paging).

    Raises:
        InvalidInput: A negative ``limit`` or ``offset``, or a store that keeps no groups.
        StoreUnavailable: The store cannot be read.

    """
    groups = _groups_or_refuse(store)
    out = []
    for name in groups.list_groups(limit, offset=offset):
        # The group index (group, updated) answers each of these with one row.
        latest = run_summaries(store, 1, group=name)
        if latest:
            out.append(GroupSummary(name, latest[0].run_id, latest[0].updated_at))
        else:
            out.append(GroupSummary(name, None, None))
    return out


def run_detail(store: Checkpointer, run_id: str) -> RunDetail | None:
    """Describe one run, or return ``None`` if the store does not know it.

    Raises:
        InvalidRunId: A run id no store accepts.
        CorruptRecord: The snapshot cannot be decoded.
        StoreUnavailable: The store cannot be read.

    """
    check_run_id(run_id)
    if isinstance(store, SQLCheckpointer):
        return _sql_detail(store, run_id)
    state = store.load_latest(run_id)
    kinds: Counter[str] = Counter()
    first_seq: int | None = None
    last_seq = state.seq if state is not None else 0
    updated_at = state.updated_at if state is not None else None
    for event in store.iter_events(run_id):
        kinds[event.kind.value] += 1
        first_seq = event.seq if first_seq is None else first_seq
        last_seq, updated_at = max(last_seq, event.seq), event.ts
    if state is None and first_seq is None:
        return None
    summary = RunSummary(
        run_id,
        _group_of(store, run_id),
        state.status.value if state is not None else None,
        last_seq,
        state.seq if state is not None else None,
        updated_at,
    )
    return RunDetail(summary, kinds.total(), first_seq, dict(sorted(kinds.items())), state)


def _sql_detail(store: SQLCheckpointer, run_id: str) -> RunDetail | None:
    with store.reading("describing a run") as conn:
        run = store.queries.run_row(conn, run_id)
        kind_rows = store.queries.kind_counts(conn, run_id) if run is not None else []
    if run is None:
        return None
    last_seq, updated_ns = run
    state = store.load_latest(run_id)
    kinds = {row.kind: row.events for row in kind_rows}
    summary = RunSummary(
        run_id,
        store.run_group(run_id),
        state.status.value if state is not None else None,
        max(last_seq, state.seq if state is not None else 0),
        state.seq if state is not None else None,
        updated_ns / _NS,
    )
    first_seq = min((row.first_seq for row in kind_rows), default=None)
    return RunDetail(summary, sum(kinds.values()), first_seq, kinds, state)


def count_events(store: Checkpointer, run_id: str, since_seq: int = 0) -> int:
    """Count a run's events after ``since_seq``: an indexed query on SQL, a pass elsewhere.

    Raises:
        StoreUnavailable: The store cannot be read.

    """
    if isinstance(store, SQLCheckpointer):
        with store.reading("counting events") as conn:
            return store.queries.count_events(conn, run_id, since_seq)
    return sum(1 for _ in store.iter_events(run_id, since_seq))
