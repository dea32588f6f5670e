"""Reading checkpoints back: one by id, the latest, and listings, each bounded by the store.

A checkpoint is found by its id with the store's key lookup, and the latest (or a page of a
listing) with a newest-first read of the namespace's checkpoint run, limited in the database.
Its pending writes are its own run, read whole: they are few (one event per ``put_writes``),
and they are all there however early or late LangGraph sent them. A listing reads the writes
of a whole page of checkpoints in one call when the store has ``events_of_runs``. "Newest" is
the order the checkpoints were saved in, which is LangGraph's id order: its ids grow with
time, and a thread's checkpoints are saved one after the other.

A checkpoint run holds checkpoints only, so these reads are plain newest-first ranges of the
primary key, with no kind filter: on Postgres without statistics yet (a new database) a filter
on ``kind`` made the planner read the whole run and sort it (4.8 ms at 2,000 checkpoints)
instead of walking the key backwards (0.03 ms). An event of any other kind, should someone
append one, is skipped here.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from purpose_agent import CorruptRecord, PAEvent
from purpose_agent.integrations.langgraph import calls, payloads, runs
from purpose_agent.integrations.langgraph.calls import Op, Stream

# Checkpoints read per query while listing (a limited listing reads no more than it needs).
PAGE = 64
_MAX_KEY = 255


def config_for(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    """The config that names one checkpoint."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


_FIELDS = ("config", "checkpoint", "metadata", "parent_config", "pending_writes")
# CheckpointTuple(...) without the named tuple's __new__ (a Python frame and keyword
# arguments per checkpoint read), as long as LangGraph's tuple has these fields in this order.
_checkpoint_tuple: Callable[[tuple[Any, ...]], CheckpointTuple] = (
    functools.partial(tuple.__new__, CheckpointTuple)
    if CheckpointTuple._fields == _FIELDS
    else lambda fields: CheckpointTuple(*fields)
)


def could_be_key(checkpoint_id: str) -> bool:
    """Whether an id could have been stored as a key (a longer one was refused by ``put``)."""
    return 0 < len(checkpoint_id) <= _MAX_KEY and "\x00" not in checkpoint_id


def where_of(run_id: str, event: PAEvent) -> runs.Checkpoints:
    """The thread and namespace of a checkpoint run, from its id or (hashed) from its event.

    Raises:
        CorruptRecord: A hashed run's event does not name them.
    """
    where = runs.parse(run_id)
    if where is None:
        thread_id, namespace = payloads.names_of(event, 2)
        where = runs.Checkpoints(thread_id, namespace)
    return where


def is_checkpoint(event: PAEvent) -> bool:
    """Whether an event of a checkpoint run is a checkpoint the saver stored."""
    return event.data.get(payloads.KEY) == payloads.CHECKPOINT


def _mapping(value: Any, event: PAEvent, part: str) -> Any:
    """A loaded checkpoint or metadata, which LangGraph always stores as a dict."""
    if not isinstance(value, dict):
        raise CorruptRecord(
            event.run_id, event.seq, f"a LangGraph {part} loads as {type(value).__name__}, not dict"
        )
    return value


def pending_writes(run_id: str) -> Op[payloads.Writes]:
    """The writes run's writes that count, and whether the checkpoint was deleted."""
    events = yield from calls.list_events(run_id)
    return payloads.writes(events)


@dataclass
class Reader:
    """Turns stored checkpoint events into LangGraph's tuples, reading their writes."""

    serde: SerializerProtocol

    def metadata(self, run_id: str, event: PAEvent) -> dict[str, Any]:
        """A checkpoint event's metadata, decoded."""
        _, _, _, stored = payloads.checkpoint_parts(event)
        found: dict[str, Any] = _mapping(
            payloads.load(self.serde, stored, run_id, event.seq), event, "metadata"
        )
        return found

    def checkpoint(self, run_id: str, event: PAEvent) -> dict[str, Any]:
        """A checkpoint event's checkpoint, decoded, with its channel values."""
        _, _, stored, _ = payloads.checkpoint_parts(event)
        return self._checkpoint(run_id, event, stored)

    def _checkpoint(self, run_id: str, event: PAEvent, stored: Any) -> dict[str, Any]:
        found: dict[str, Any] = _mapping(
            payloads.load(self.serde, stored, run_id, event.seq), event, "checkpoint"
        )
        values = payloads.stored_values(event)
        if values is not None:
            load, serde, seq = payloads.load_value, self.serde, event.seq
            found["channel_values"] = {
                channel: load(serde, value, run_id, seq) for channel, value in values.items()
            }
        return found

    def channel_values(self, run_id: str, event: PAEvent, wanted: set[str]) -> dict[str, Any]:
        """The values of the wanted channels a checkpoint holds, decoding only those.

        A checkpoint stored whole (before channels were stored one by one) is decoded whole.
        """
        values = payloads.stored_values(event)
        if values is None:
            held = self.checkpoint(run_id, event).get("channel_values")
            if not isinstance(held, Mapping):
                return {}
            return {channel: held[channel] for channel in wanted if channel in held}
        load, serde, seq = payloads.load_value, self.serde, event.seq
        return {
            channel: load(serde, values[channel], run_id, seq)
            for channel in wanted
            if channel in values
        }

    def checkpoint_tuple(
        self, where: runs.Checkpoints, event: PAEvent, writes_run: str, events: list[PAEvent]
    ) -> CheckpointTuple | None:
        """A checkpoint event and its writes run's events as LangGraph's tuple.

        Returns:
            The tuple, or ``None`` if the checkpoint was deleted.
        """
        serde, load_value = self.serde, payloads.load_value
        pending: list[tuple[str, str, Any]]
        one = payloads.one_task(events[0]) if len(events) == 1 else None
        if one is not None:
            # The usual writes run: one task's writes, in order, none withdrawn.
            task, seq, written = one
            pending = [
                (task, channel, load_value(serde, value, writes_run, seq))
                for channel, value in written
            ]
            unparented = False
        else:
            writes = payloads.writes(events)
            if writes.deleted:
                return None
            pending = [
                (write.task, write.channel, load_value(serde, write.value, writes_run, write.seq))
                for write in writes.pending
            ]
            unparented = writes.unparented
        thread_id, namespace = where
        checkpoint_id, parent, body, metadata = payloads.checkpoint_parts(event)
        run_id = runs.run_id_for(thread_id, namespace)
        return _checkpoint_tuple(
            (
                config_for(thread_id, namespace, checkpoint_id),
                cast("Checkpoint", self._checkpoint(run_id, event, body)),
                _mapping(payloads.load(serde, metadata, run_id, event.seq), event, "metadata"),
                config_for(thread_id, namespace, parent) if parent and not unparented else None,
                pending,
            )
        )

    def get_tuple(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> Op[CheckpointTuple | None]:
        """One checkpoint by id (one key lookup), or the namespace's latest live one.

        Either is two store calls, yielded directly (see :func:`calls.whole_run`).
        """
        where = runs.Checkpoints(thread_id, namespace)
        run_id = runs.run_id_for(thread_id, namespace)
        if checkpoint_id is not None:
            if not could_be_key(checkpoint_id):
                return None
            keyed: PAEvent | None = yield calls.Call("event_by_key", (run_id, checkpoint_id))
            if keyed is None:
                return None
            writes_run = runs.writes_run_for(thread_id, namespace, payloads.checkpoint_id(keyed))
            writes: list[PAEvent] = yield calls.whole_run(writes_run)
            return self.checkpoint_tuple(where, keyed, writes_run, writes)
        before: int | None = None
        limit = 1  # the latest is almost never deleted: read one, then pages
        while True:
            events: list[PAEvent] = yield calls.newest_events(run_id, limit, before)
            for event in events:
                if not is_checkpoint(event):
                    continue
                writes_run = runs.writes_run_for(
                    thread_id, namespace, payloads.checkpoint_id(event)
                )
                writes = yield calls.whole_run(writes_run)
                found = self.checkpoint_tuple(where, event, writes_run, writes)
                if found is not None:
                    return found
            if len(events) < limit:
                return None
            before, limit = events[-1].seq, PAGE

    def listing(
        self,
        run_ids: Op[list[str]] | list[str],
        *,
        only: str | None,
        before_id: str | None,
        wanted: Mapping[str, Any],
        limit: int | None,
        batched: bool = False,
    ) -> Stream:
        """Checkpoints of the given checkpoint runs, newest first across them (by id).

        Args:
            run_ids: The checkpoint runs, or the call that lists them.
            only: Only the checkpoint with this id.
            before_id: Only checkpoints with a smaller id.
            wanted: Metadata keys and the values they must equal.
            limit: At most this many.
            batched: The store has ``events_of_runs``: the writes of a page of
                checkpoints are read with it, in one call, when the page is read.
        """
        if not isinstance(run_ids, list):
            run_ids = yield from run_ids
        if limit is not None and limit <= 0:
            return
        page = PAGE if wanted or limit is None else min(limit, PAGE)
        cursors = yield from _cursors(run_ids, page, only, before_id, batched)
        merged = _Merge(cursors)
        left = limit
        while left is None or left > 0:
            if merged.used_up:
                yield from merged.refill()
            head = merged.pop()
            if head is None:
                return
            cursor, event = head
            if not is_checkpoint(event):
                continue
            where = cursor.where or where_of(cursor.run_id, event)
            checkpoint_id = payloads.checkpoint_id(event)
            if before_id is not None and not checkpoint_id < before_id:
                continue
            if wanted and not self._matches(cursor.run_id, event, wanted):
                continue
            writes_run = runs.writes_run_for(*where, checkpoint_id)
            read = cursor.writes
            if read is not None and writes_run in read:
                writes = read[writes_run]
            else:
                writes = yield calls.whole_run(writes_run)
            found = self.checkpoint_tuple(where, event, writes_run, writes)
            if found is None:
                continue
            yield found
            if left is not None:
                left -= 1

    def _matches(self, run_id: str, event: PAEvent, wanted: Mapping[str, Any]) -> bool:
        metadata = self.metadata(run_id, event)
        return all(metadata.get(key) == value for key, value in wanted.items())


def _cursors(
    run_ids: list[str], page: int, only: str | None, before_id: str | None, batched: bool
) -> Op[list[_Cursor]]:
    """A cursor on each checkpoint run, placed by ``only`` or ``before_id`` (key lookups)."""
    cursors: list[_Cursor] = []
    for run_id in sorted(run_ids):
        if not runs.is_checkpoints(run_id):
            continue
        cursor = _Cursor(run_id, runs.parse(run_id), page, batched=batched)
        if only is not None:
            cursor.done = True
            if could_be_key(only):
                event = yield from calls.event_by_key(run_id, only)
                cursor.events = [event] if event is not None else []
        elif before_id is not None and could_be_key(before_id):
            bound = yield from calls.event_by_key(run_id, before_id)
            cursor.before = bound.seq if bound is not None else None
        cursors.append(cursor)
    return cursors


@dataclass(frozen=True)
class _Newest:
    """Orders checkpoint ids newest first in a min-heap."""

    checkpoint_id: str

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, _Newest):
            return NotImplemented
        return self.checkpoint_id > other.checkpoint_id


@dataclass
class _Cursor:
    """One checkpoint run read newest first, a page at a time."""

    run_id: str
    where: runs.Checkpoints | None  # None for a hashed run: each event names it
    page: int
    before: int | None = None
    events: list[PAEvent] = field(default_factory=list)
    done: bool = False
    batched: bool = False
    writes: dict[str, list[PAEvent]] | None = None

    def fill(self) -> Op[None]:
        """Read the next page once the current one is used up (with its writes, if batched)."""
        if self.events or self.done:
            return
        events: list[PAEvent] = yield calls.newest_events(self.run_id, self.page, self.before)
        self.events = events
        self.done = len(events) < self.page
        if events:
            self.before = events[-1].seq
        self.page = PAGE
        if self.batched and len(events) > 1:
            self.writes = yield from calls.events_of_runs(
                [
                    runs.writes_run_for(
                        *(self.where or where_of(self.run_id, event)),
                        payloads.checkpoint_id(event),
                    )
                    for event in events
                    if is_checkpoint(event)
                ]
            )


class _Merge:
    """Several cursors merged newest first by checkpoint id (LangGraph's listing order)."""

    def __init__(self, cursors: list[_Cursor]) -> None:
        self._cursors = cursors
        # One cursor (a namespace named, the usual listing) needs no heap: its own order.
        self._alone = cursors[0] if len(cursors) == 1 else None
        self._heads: list[tuple[_Newest, int]] = []
        # Cursors whose page is used up are read again only when the next checkpoint is
        # needed, so a listing that stops at its limit reads no page it does not use.
        self._empty = list(range(len(cursors)))

    @property
    def used_up(self) -> bool:
        """Whether a cursor must read its next page (:meth:`refill`) before :meth:`pop`."""
        return bool(self._empty)

    def refill(self) -> Op[None]:
        """Read the next page of each cursor whose page is used up."""
        for position in self._empty:
            yield from self._cursors[position].fill()
            self._push(position)
        self._empty = []

    def pop(self) -> tuple[_Cursor, PAEvent] | None:
        """The newest checkpoint not yet taken, with its cursor; ``None`` when none is left."""
        alone = self._alone
        if alone is not None:
            if not alone.events:
                return None
            event = alone.events.pop(0)
            if not alone.events:
                self._empty = [0]
            return alone, event
        if not self._heads:
            return None
        _, position = heapq.heappop(self._heads)
        cursor = self._cursors[position]
        event = cursor.events.pop(0)
        if cursor.events:
            self._push(position)
        else:
            self._empty = [position]
        return cursor, event

    def _push(self, position: int) -> None:
        events = self._cursors[position].events
        if events and self._alone is None:
            heapq.heappush(self._heads, (_Newest(payloads.checkpoint_id(events[0])), position))
