"""The events a LangGraph checkpoint, pending write or deletion is stored as.

Event data holds JSON values only, so LangGraph's own values (channel values, messages,
``bytes``, ``datetime``) go through the saver's serializer (``serde.dumps_typed``) and are
kept as ``[type, base64 of the bytes]``: the store sees plain text, and loading calls
``serde.loads_typed`` on exactly the bytes the serializer produced.

Each ``put_writes`` is one event holding all of its writes (one row to insert, one key to
check), and each event carries a key the store keeps unique within its run, so that saving it
again (a retry after an ambiguous commit, a copy run twice) stores nothing new:

* a checkpoint: its id;
* a task's regular pending writes (``idx`` from 0): ``<task id>:<first idx>``. LangGraph keeps
  the first value of a regular write, as its own savers do: should the task write again with
  other values (it ran again), the second event is stored without a key (marked so, for
  copies) and its writes lose to the first ones when the writes are read;
* writes with a special one among them (an error, an interrupt, a resume value; negative
  ``idx``): no key, because LangGraph replaces a special write: a task resumed twice writes
  its interrupt again with another value, and the last one written wins when read;
* a deletion marker: ``deleted``;
* the marker that a pruned checkpoint's parent is gone: ``unparented``;
* the marker that a LangGraph run's writes to the checkpoint are withdrawn
  (``delete_for_runs``): ``retracted:<run id>``, or no key for a run id too long for one.

A task's writes hold the LangGraph run that wrote them (``run``, as a checkpoint does), so that
rolling a run back withdraws the writes it left on the checkpoints it started from.

In a run whose id is hashed (ids too long to spell out, see
:mod:`~purpose_agent.integrations.langgraph.runs`), every event also holds ``names``: the
thread and namespace of a checkpoint run, and the checkpoint id too in a writes run.
"""

from __future__ import annotations

import binascii
import functools
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from purpose_agent import CorruptRecord, EventKind, NewEvent, PAEvent
from purpose_agent.integrations.langgraph import runs
from purpose_agent.runtime.events import storable_lane

KEY = "langgraph"
CHECKPOINT = "checkpoint"
WRITES = "writes"
UNKEYED = "unkeyed"
DELETED = "deleted"
RETRACTED = "retracted"
UNPARENTED = "unparented"
NAMES = "names"
VALUES = "values"

CHECKPOINT_KIND = EventKind.STATE_CHANGE
WRITE_KIND = EventKind.CUSTOM
LANE = "lg"
DELETED_KEY = "deleted"
UNPARENTED_KEY = "unparented"
_MAX_KEY = 255


def dump(serde: SerializerProtocol, value: Any) -> list[str]:
    """A value as JSON-safe text: its serializer type and the base64 of its bytes."""
    kind, raw = serde.dumps_typed(value)
    return [kind, binascii.b2a_base64(raw, newline=False).decode("ascii")]


_INT64 = 2**63


def dump_value(serde: SerializerProtocol, value: Any) -> Any:
    """A channel's or write's value as stored: plain JSON if it is a plain scalar.

    Strings, 64-bit integers, finite floats, booleans and ``None`` (of exactly those types)
    come back from the store as they went in, so they are kept as themselves, readable in
    ``purpose-agent runs events`` and spared the serializer both ways, as LangGraph's
    ``PostgresSaver`` keeps them inline. Only under LangGraph's own ``JsonPlusSerializer``:
    any other serializer (an ``EncryptedSerializer``, say) gets every value, so that no
    value it was given to encrypt lies in the database as plain text. Anything else goes
    through :func:`dump`, whose ``[type, base64]`` list no scalar can be mistaken for.
    """
    kind = type(value)
    if type(serde) is JsonPlusSerializer and (
        value is None
        or kind is bool
        or (kind is int and -_INT64 <= value < _INT64)
        or (kind is float and math.isfinite(value))
        or (kind is str and _encodable(value))
    ):
        return value
    return dump(serde, value)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the serializer's to refuse or keep
        return False
    return True


def load_value(serde: SerializerProtocol, stored: Any, run_id: str, seq: int) -> Any:
    """The value :func:`dump_value` stored.

    Raises:
        CorruptRecord: As for :func:`load`, or a stored value that is neither a scalar
            nor ``[type, base64]``.
    """
    if type(stored) is list:
        return load(serde, stored, run_id, seq)
    if stored is None or type(stored) in _SCALARS:
        return stored
    raise CorruptRecord(run_id, seq, "a LangGraph value is not a scalar or [type, base64]")


_SCALARS = frozenset({bool, int, float, str})


def _stored_bytes(stored: Any, run_id: str, seq: int) -> tuple[str, bytes]:
    """The serializer type and bytes of a value as :func:`dump` stored it.

    Raises:
        CorruptRecord: The stored form is not ``[type, base64]``.
    """
    try:
        kind, text = stored
        # What base64.b64decode(text, validate=True) runs, without its wrapper.
        return kind, binascii.a2b_base64(text, strict_mode=True)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(run_id, seq, _NOT_STORED) from exc


_NOT_STORED = "a LangGraph value is not [type, base64]"


def load(serde: SerializerProtocol, stored: Any, run_id: str, seq: int) -> Any:
    """The value :func:`dump` stored.

    Raises:
        CorruptRecord: The stored form is not ``[type, base64]``, or the serializer cannot
            load it (an unknown type, bytes it cannot read); the driver's or serializer's
            error is the cause.
    """
    try:
        # _stored_bytes, written out: a checkpoint read loads three values or more.
        kind, text = stored
        typed = (kind, binascii.a2b_base64(text, strict_mode=True))
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(run_id, seq, _NOT_STORED) from exc
    try:
        return serde.loads_typed(typed)
    except Exception as exc:  # any serializer's failure, with its cause
        raise CorruptRecord(
            run_id, seq, f"the serializer cannot load a LangGraph value ({_said(exc)})"
        ) from exc


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def checkpoint_id(event: PAEvent) -> str:
    """A stored checkpoint's id.

    Raises:
        CorruptRecord: The event has no id a checkpoint could have (a damaged record).
    """
    found = event.data.get("id")
    if type(found) is not str:
        raise CorruptRecord(event.run_id, event.seq, "a LangGraph checkpoint has no id")
    return found


def checkpoint_parts(event: PAEvent) -> tuple[str, str | None, Any, Any]:
    """A stored checkpoint's id, parent id, and its checkpoint and metadata as stored.

    Raises:
        CorruptRecord: A part is missing or of the wrong type (a damaged record).
    """
    data = event.data
    parent = data.get("parent")
    if (
        "checkpoint" not in data
        or "metadata" not in data
        or not (parent is None or type(parent) is str)
    ):
        raise CorruptRecord(
            event.run_id, event.seq, "a LangGraph checkpoint lacks its parent, body or metadata"
        )
    return checkpoint_id(event), parent, data["checkpoint"], data["metadata"]


def checkpoint(
    checkpoint_id: str,
    parent_id: str | None,
    body: list[str],
    metadata: list[str],
    *,
    values: dict[str, Any] | None = None,
    step: Any = None,
    run_id: Any = None,
    names: tuple[str, ...] | None = None,
) -> NewEvent:
    """A checkpoint: its id, its parent's and its serialized parts, keyed by its id.

    ``values`` holds each channel's value serialized on its own (the body then has none): see
    :mod:`~purpose_agent.integrations.langgraph.channels`. Checkpoints stored before hold
    their values in the body.

    LangGraph's step (an ``int`` in its metadata) comes first in plain JSON, so that
    ``purpose-agent runs events`` shows where each checkpoint stands without decoding; the
    LangGraph run id (a ``str``) is kept plain too, and names the checkpoint's lane
    (:func:`lane_of_run`), so that ``delete_for_runs`` finds a run's checkpoints with a lane
    filter the database applies, without reading every checkpoint of the store.

    Raises:
        InvalidInput: The checkpoint id cannot be a key (empty, over 255 characters, NUL).
    """
    shown = {"step": step} if isinstance(step, int) and not isinstance(step, bool) else {}
    data: dict[str, Any] = {KEY: CHECKPOINT, **shown, "id": checkpoint_id, "parent": parent_id}
    if isinstance(run_id, str):
        data["run"] = run_id
    data |= {"checkpoint": body, "metadata": metadata}
    if values is not None:
        data[VALUES] = values
    _name(data, names)
    return NewEvent(kind=CHECKPOINT_KIND, lane_id=lane_of_run(run_id), data=data, key=checkpoint_id)


def lane_of_run(run_id: Any) -> str:
    """The lane of the checkpoints a LangGraph run makes: ``lg:<run id>``.

    A checkpoint with no run id, or one no lane can hold (over 252 characters, NUL, a lone
    surrogate), is in the plain ``lg`` lane, where checkpoints stored before runs had lanes
    are too; ``delete_for_runs`` reads that lane whole.
    """
    if not isinstance(run_id, str):
        return LANE
    lane = f"{LANE}:{run_id}"
    return lane if storable_lane(lane) else LANE


def stored_values(event: PAEvent) -> dict[str, Any] | None:
    """A checkpoint's channel values as stored one by one, or ``None`` if its body holds them.

    Raises:
        CorruptRecord: They are not a mapping of channel names (a damaged record).
    """
    values = event.data.get(VALUES)
    if values is None:
        return None
    if type(values) is not dict:
        raise CorruptRecord(event.run_id, event.seq, "a LangGraph checkpoint's values are damaged")
    return values


def writes_of(
    task_id: str,
    task_path: str,
    writes: list[tuple[int, str, Any]],
    *,
    keyed: bool = True,
    names: tuple[str, ...] | None = None,
    run_id: Any = None,
) -> NewEvent:
    """One task's pending writes ``(idx, channel, value)``; the checkpoint is their run.

    ``run_id`` is the LangGraph run that wrote them, kept when it is a ``str``.
    """
    data: dict[str, Any] = {
        KEY: WRITES,
        "task": task_id,
        "path": task_path,
        "writes": [list(write) for write in writes],
    }
    if not keyed:
        data[UNKEYED] = True
    if isinstance(run_id, str):
        data["run"] = run_id
    _name(data, names)
    key = writes_key(task_id, [idx for idx, _, _ in writes]) if keyed else None
    return NewEvent(kind=WRITE_KIND, lane_id=LANE, data=data, key=key)


def deleted(names: tuple[str, ...] | None = None) -> NewEvent:
    """The marker that removes a checkpoint from every read (``delete_for_runs``)."""
    data: dict[str, Any] = {KEY: DELETED}
    _name(data, names)
    return NewEvent(kind=WRITE_KIND, lane_id=LANE, data=data, key=DELETED_KEY)


def retracted(run_id: str, names: tuple[str, ...] | None = None) -> NewEvent:
    """The marker that withdraws every write a LangGraph run made to the checkpoint.

    Keyed by the run, so that rolling it back again stores nothing new.
    """
    data: dict[str, Any] = {KEY: RETRACTED, "run": run_id}
    _name(data, names)
    return NewEvent(kind=WRITE_KIND, lane_id=LANE, data=data, key=retracted_key(run_id))


def retracted_key(run_id: str) -> str | None:
    """The key of a run's retraction marker, ``None`` if no key can name the run."""
    key = f"{RETRACTED}:{run_id}"
    return key if len(key) <= _MAX_KEY and "\x00" not in key else None


def is_writes(event: PAEvent) -> bool:
    """Whether an event of a writes run is a task's writes."""
    return event.data.get(KEY) == WRITES


def is_retraction(event: PAEvent) -> bool:
    """Whether an event of a writes run withdraws a LangGraph run's writes."""
    return event.data.get(KEY) == RETRACTED


def writer_of(event: PAEvent) -> str | None:
    """The LangGraph run that wrote a task's writes, if it was recorded."""
    run = event.data.get("run")
    return run if type(run) is str else None


def unparented(names: tuple[str, ...] | None = None) -> NewEvent:
    """The marker that a pruned checkpoint's parent is gone: it reads with no parent."""
    data: dict[str, Any] = {KEY: UNPARENTED}
    _name(data, names)
    return NewEvent(kind=WRITE_KIND, lane_id=LANE, data=data, key=UNPARENTED_KEY)


def _name(data: dict[str, Any], names: tuple[str, ...] | None) -> None:
    if names is not None:
        data[NAMES] = list(names)


def names_of(event: PAEvent, count: int) -> list[str]:
    """The names an event of a hashed run holds: thread, namespace (and checkpoint id).

    Raises:
        CorruptRecord: The event does not hold them (a damaged record).
    """
    found = event.data.get(NAMES)
    if type(found) is not list or len(found) != count or not all(type(n) is str for n in found):
        raise CorruptRecord(
            event.run_id, event.seq, "an event of a hashed LangGraph run does not name its thread"
        )
    return found


def writes_key(task_id: str, indexes: list[int]) -> str | None:
    """The key of a task's regular writes; ``None`` if any is special, or no key can name it."""
    if not indexes or min(indexes) < 0:
        return None
    key = f"{task_id}:{indexes[0]}"
    return key if len(key) <= _MAX_KEY and "\x00" not in key else None


def key_of(event: PAEvent) -> str | None:
    """The key an event of the saver's was appended with (they all follow from the data)."""
    data = event.data
    what = data.get(KEY)
    if what == CHECKPOINT:
        return checkpoint_id(event)
    if what == WRITES:
        if data.get(UNKEYED):
            return None
        pending = _pending_of(event)
        return writes_key(pending[0].task, [write.idx for write in pending]) if pending else None
    if what == RETRACTED:
        run = data.get("run")
        return retracted_key(run) if type(run) is str else None
    return _MARKER_KEYS.get(what) if type(what) is str else None


_MARKER_KEYS = {DELETED: DELETED_KEY, UNPARENTED: UNPARENTED_KEY}


def problem(event: PAEvent) -> str | None:
    """What is wrong with an event of the saver's runs, or ``None``; other runs' events pass.

    For ``purpose-agent runs verify``: the checks every read of the event makes, short of
    the serializer (which only the application has): a checkpoint's parts, a task's writes,
    each value stored as ``[type, base64]``, and the names in a hashed run.
    """
    if not event.run_id.startswith((runs.PREFIX, runs.WRITES_PREFIX)):
        return None
    what = event.data.get(KEY)
    try:
        if what == CHECKPOINT:
            _, _, body, metadata = checkpoint_parts(event)
            for stored in (body, metadata):
                _stored_bytes(stored, event.run_id, event.seq)
            for stored in (stored_values(event) or {}).values():
                _check_value(stored, event.run_id, event.seq)
        elif what == WRITES:
            for write in _pending_of(event):
                _check_value(write.value, event.run_id, event.seq)
        elif what == RETRACTED:
            _check_retraction(event)
        if what in (CHECKPOINT, WRITES, DELETED, UNPARENTED, RETRACTED) and runs.hashed(
            event.run_id
        ):
            names_of(event, 2 if runs.is_checkpoints(event.run_id) else 3)
    except CorruptRecord as exc:
        return exc.detail
    return None


def _check_retraction(event: PAEvent) -> None:
    if type(event.data.get("run")) is not str:
        raise CorruptRecord(event.run_id, event.seq, "a retraction names no LangGraph run")


def _check_value(stored: Any, run_id: str, seq: int) -> None:
    """What :func:`load_value` checks, short of the serializer."""
    if type(stored) is list:
        _stored_bytes(stored, run_id, seq)
    elif not (stored is None or type(stored) in _SCALARS):
        raise CorruptRecord(run_id, seq, "a LangGraph value is not a scalar or [type, base64]")


def copied(event: PAEvent, names: tuple[str, ...] | None = None) -> NewEvent:
    """The event to append elsewhere for a stored one, with its time and key.

    Args:
        event: The stored event.
        names: What the run it is copied to holds, if that run's id is hashed.
    """
    data = {key: value for key, value in event.data.items() if key != NAMES}
    _name(data, names)
    return NewEvent(
        kind=event.kind, ts=event.ts, lane_id=event.lane_id, data=data, key=key_of(event)
    )


class Pending(NamedTuple):
    """One pending write as stored: LangGraph's ordering keys, its channel and stored value."""

    path: str
    task: str
    idx: int
    channel: str
    value: Any
    seq: int


# Pending(...) without the named tuple's __new__, a Python frame per write read.
_pending = functools.partial(tuple.__new__, Pending)


class Writes(NamedTuple):
    """A checkpoint's pending writes as stored, in LangGraph's order.

    Attributes:
        deleted: Whether the checkpoint was deleted (``delete_for_runs``).
        pending: The writes that count, ordered as LangGraph applies them
            (``task_path``, ``task_id``, ``idx``).
        unparented: Whether its parent was pruned away (it reads with no parent).
    """

    deleted: bool
    pending: list[Pending]
    unparented: bool = False


def writes(events: Iterable[PAEvent]) -> Writes:
    """Which of a writes run's writes count: the first of a regular write, the last of a special.

    The writes of a LangGraph run rolled back (``delete_for_runs``) do not count, wherever
    its retraction marker stands: a write the run made after it is withdrawn too.

    Args:
        events: The run's events, in ascending seq.
    """
    events = events if isinstance(events, list) else list(events)
    if len(events) < 2:
        # Every read of a checkpoint asks this of its writes run, which mostly holds one
        # task's writes or nothing.
        return _writes_of_one(events[0]) if events else Writes(False, [])
    return _writes_of_many(events)


def one_task(event: PAEvent) -> tuple[str, int, list[tuple[str, Any]]] | None:
    """The writes of a writes run holding this one event, if it is the usual case.

    That is one task's writes at ascending ``idx`` (LangGraph's 0, 1, 2...), which are then
    the run's writes as :func:`writes` orders them: returned as the task, the event's seq and
    each write's channel and stored value, without building a :class:`Pending` for each.
    ``None`` for anything else (a marker, writes out of order, a damaged event): those are
    :func:`writes`'s to read, or to refuse.
    """
    data = event.data
    if data.get(KEY) != WRITES:
        return None
    task, entries = data.get("task"), data.get("writes")
    if type(task) is not str or type(data.get("path")) is not str or type(entries) is not list:
        return None
    found = []
    last: float = -math.inf
    for entry in entries:
        if type(entry) is not list or len(entry) != 3:
            return None
        idx, channel, value = entry
        if type(idx) is not int or type(channel) is not str or not last < idx:
            return None
        last = idx
        found.append((channel, value))
    return task, event.seq, found


def _writes_of_many(events: list[PAEvent]) -> Writes:
    gone = orphan = False
    kept: dict[tuple[str, int], Pending] = {}
    withdrawn = {event.data.get("run") for event in events if event.data.get(KEY) == RETRACTED}
    for event in events:
        data = event.data
        what = data.get(KEY)
        if what == DELETED:
            gone = True
        elif what == WRITES:
            if withdrawn and data.get("run") in withdrawn:
                continue
            for write in _pending_of(event):
                key = (write.task, write.idx)
                if write.idx < 0 or key not in kept:
                    kept[key] = write
        elif what == UNPARENTED:
            orphan = True
    pending = sorted(kept.values()) if len(kept) > 1 else list(kept.values())
    return Writes(gone, pending, orphan)


def _writes_of_one(event: PAEvent) -> Writes:
    """:func:`writes` of a run of one event, whose writes nothing can withdraw."""
    what = event.data.get(KEY)
    if what != WRITES:
        return Writes(what == DELETED, [], what == UNPARENTED)
    pending = _pending_of(event)
    # One task's writes at LangGraph's idx 0, 1, 2...: in order already, none repeated.
    for n in range(1, len(pending)):
        if not pending[n - 1].idx < pending[n].idx:
            return _writes_of_many([event])
    return Writes(False, pending)


def _pending_of(event: PAEvent) -> list[Pending]:
    """One writes event's writes.

    Raises:
        CorruptRecord: The event is not a task's ``[idx, channel, value]`` writes.
    """
    data = event.data
    task, path, entries = data.get("task"), data.get("path"), data.get("writes")
    if type(task) is not str or type(path) is not str or type(entries) is not list:
        raise _damaged_writes(event)
    found = []
    for entry in entries:
        if not (
            type(entry) is list
            and len(entry) == 3
            and type(entry[0]) is int
            and type(entry[1]) is str
        ):
            raise _damaged_writes(event)
        found.append(_pending((path, task, entry[0], entry[1], entry[2], event.seq)))
    return found


def _damaged_writes(event: PAEvent) -> CorruptRecord:
    return CorruptRecord(
        event.run_id, event.seq, "LangGraph writes are not a task's [idx, channel, value] list"
    )
