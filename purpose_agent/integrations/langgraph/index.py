"""Where each live checkpoint and pending write of one run sits, rebuilt from its events.

The saver keeps one index per run it has touched and brings it up to date by reading only the
events after the last one it applied, so a read costs one query for the tail plus the events it
returns, and a write appends at the next seq. Writes by other processes arrive through the same
tail read; a position that no longer holds what the index expects (the run was deleted
elsewhere) makes the saver rebuild the index from the start.

A process that meets a long run for the first time would read every event of it; so the saver
also saves the index itself as the run's snapshot at seq 0 (:meth:`RunIndex.to_data`), and a
new index starts from it and reads only the events after the one it names. Seq 0 says that
the snapshot covers no event, so pruning covered events (``purpose-agent prune --covered``)
never removes a checkpoint, and ``recover()`` still returns every event.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from purpose_agent import PAEvent
from purpose_agent.integrations.langgraph import payloads


@dataclass
class CheckpointEntry:
    """A stored checkpoint: its position, parent and serialized metadata."""

    seq: int
    parent_id: str | None
    metadata: list[str]
    decoded: dict[str, Any] | None = None


@dataclass(frozen=True)
class WriteEntry:
    """A stored pending write: its position and LangGraph's ordering key."""

    seq: int
    task_id: str
    task_path: str
    idx: int

    def sort_key(self) -> tuple[str, str, int]:
        """LangGraph's ``writes_sort_key``: the order live execution applies writes in."""
        return (self.task_path, self.task_id, self.idx)


@dataclass
class RunIndex:
    """The live checkpoints of one run and the writes keyed to each checkpoint id."""

    last_seq: int = 0
    last_ts: float = 0.0
    checkpoints: dict[str, CheckpointEntry] = field(default_factory=dict)
    writes: dict[str, dict[tuple[str, int], WriteEntry]] = field(default_factory=dict)
    # The ids in ascending order, kept as checkpoints arrive (almost always at the end:
    # LangGraph's ids grow with time), so the latest and a newest-first listing cost no sort.
    _ordered: list[str] = field(default_factory=list)

    def apply(self, event: PAEvent) -> None:
        """Take one event of the run into account, in seq order."""
        data = event.data
        what = data.get(payloads.KEY)
        if what == payloads.CHECKPOINT:
            if data["id"] not in self.checkpoints:
                bisect.insort(self._ordered, data["id"])
            self.checkpoints[data["id"]] = CheckpointEntry(
                event.seq, data["parent"], data["metadata"]
            )
        elif what == payloads.WRITE:
            bucket = self.writes.setdefault(data["checkpoint"], {})
            key = (data["task"], data["idx"])
            # As LangGraph's own savers: a regular write is kept once (a retried task writes
            # the same thing again), a special one (error, interrupt, resume) is replaced.
            if key[1] < 0 or key not in bucket:
                bucket[key] = WriteEntry(event.seq, data["task"], data["path"], data["idx"])
        elif what == payloads.FORGET:
            for checkpoint_id in data["checkpoints"]:
                self.checkpoints.pop(checkpoint_id, None)
                self.writes.pop(checkpoint_id, None)
            self._ordered = sorted(self.checkpoints)
        if event.seq >= self.last_seq:
            self.last_seq, self.last_ts = event.seq, event.ts

    def latest(self) -> str | None:
        """The newest checkpoint id (LangGraph's ids sort by time), or ``None``."""
        return self._ordered[-1] if self._ordered else None

    def newest_first(self, before: str | None = None) -> Iterator[str]:
        """The live checkpoint ids, newest first; only those older than ``before`` if given."""
        end = len(self._ordered) if before is None else bisect.bisect_left(self._ordered, before)
        for position in range(end - 1, -1, -1):
            yield self._ordered[position]

    def writes_of(self, checkpoint_id: str) -> list[WriteEntry]:
        """The writes keyed to a checkpoint, in ``writes_sort_key`` order."""
        return sorted(self.writes.get(checkpoint_id, {}).values(), key=WriteEntry.sort_key)

    def has_write(self, checkpoint_id: str, task_id: str, idx: int) -> bool:
        """Whether a regular write with this key is already stored."""
        return (task_id, idx) in self.writes.get(checkpoint_id, {})

    def to_data(self) -> dict[str, Any]:
        """The index as JSON values, for a snapshot (the inverse of :meth:`from_data`).

        The last event's seq and time go with it, so that a reader can tell whether the run
        it finds is still the one the index describes (a run deleted and written again since
        has other events at those positions).
        """
        return {
            INDEX_KEY: INDEX_VERSION,
            "through": self.last_seq,
            "through_ts": self.last_ts,
            "checkpoints": {
                cid: [entry.seq, entry.parent_id, entry.metadata]
                for cid, entry in self.checkpoints.items()
            },
            "writes": {
                cid: [[w.seq, w.task_id, w.task_path, w.idx] for w in bucket.values()]
                for cid, bucket in self.writes.items()
            },
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunIndex | None:
        """The index a snapshot holds, or ``None`` if the snapshot is not one."""
        if data.get(INDEX_KEY) != INDEX_VERSION:
            return None
        index = cls(last_seq=data["through"], last_ts=data["through_ts"])
        for cid, (seq, parent_id, metadata) in data["checkpoints"].items():
            index.checkpoints[cid] = CheckpointEntry(seq, parent_id, metadata)
        index._ordered = sorted(index.checkpoints)
        for cid, writes in data["writes"].items():
            index.writes[cid] = {
                (task_id, idx): WriteEntry(seq, task_id, task_path, idx)
                for seq, task_id, task_path, idx in writes
            }
        return index


INDEX_KEY = "langgraph_index"
INDEX_VERSION = 1
