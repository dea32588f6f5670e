"""The stored form of events and snapshots: one mapper from a value to its row and back.

Every backend goes through these functions, so "what is saved is what is loaded" and "bad input
is refused before anything is written" mean the same thing everywhere. The rules themselves live
on the values' fields (:mod:`purpose_agent.runtime.events`); here they are applied again to the
value a store is handed, whatever way it was built, and to the columns a store reads back,
which a database can hand back damaged.
"""

from __future__ import annotations

import gc
import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pydantic import ValidationError

from purpose_agent.codec import decode, encode, on_fresh_stack, scan_once
from purpose_agent.errors import CorruptRecord, InvalidInput, SequenceConflict
from purpose_agent.runtime.events import (
    MAX_RUN_ID_LENGTH,
    SEQ_LIMIT,
    CheckedFields,
    EventKind,
    PAEvent,
    Value,
    check_run_id,
    refusal,
)
from purpose_agent.runtime.state import RunState, RunStatus

__all__ = [
    "BOUND",
    "MAX_RUN_ID_LENGTH",
    "PAUSE_FROM",
    "EventRow",
    "StateRow",
    "check_limit",
    "check_run_id",
    "check_since",
    "decode_event",
    "decode_event_dict",
    "decode_events",
    "decode_state",
    "event_row",
    "event_rows",
    "gc_paused",
    "same_data",
    "state_row",
]

_KINDS = {kind.value: kind for kind in EventKind}
_STATUSES = {status.value: status for status in RunStatus}


# No seq, and no count of events or runs, reaches this: a bound past it is as good as none,
# and the databases' 64-bit integers (SQLite's driver refuses larger ones outright) can hold it.
BOUND = SEQ_LIMIT - 1


def _check_count(value: object, what: str) -> int:
    if type(value) is not int:
        raise InvalidInput(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidInput(f"{what} must be >= 0, got {value}")
    return min(value, BOUND)


def check_since(since_seq: object, limit: object = None) -> int:
    """Check the paging arguments of ``list_events`` and ``iter_events``.

    Returns:
        ``since_seq`` within ``-BOUND..BOUND``, which selects the same events: every seq
        is in ``1..BOUND`` (a negative one still reads a damaged row below 1, to report it).

    Raises:
        InvalidInput: If ``since_seq`` is not an int or ``limit`` is negative.

    """
    if type(since_seq) is not int:
        raise InvalidInput(f"since_seq must be an int, not {type(since_seq).__name__}")
    check_limit(limit)
    return min(max(since_seq, -BOUND), BOUND)


def check_limit(limit: object, what: str = "limit") -> int | None:
    """Check an optional ``limit`` or ``offset`` argument.

    Returns:
        The argument, at most ``BOUND`` (which no count reaches).

    Raises:
        InvalidInput: If it is not ``None`` or an int >= 0.

    """
    if limit is None:
        return None
    return _check_count(limit, what)


def check_page(limit: object, offset: object) -> tuple[int | None, int]:
    """Check the ``limit`` and ``offset`` of a paged listing.

    Returns:
        The limit (``None`` for all) and the offset (0 for ``None``).

    Raises:
        InvalidInput: If either is not ``None`` or an int >= 0.

    """
    return check_limit(limit), check_limit(offset, "offset") or 0


class EventRow(NamedTuple):
    """An event checked and encoded for storage: the columns of one row."""

    run_id: str
    seq: int
    kind: str
    ts: float
    lane_id: str
    data: str

    def same_event(self, other: EventRow) -> bool:
        """Whether ``other`` is this stored event as ``PAEvent`` compares them (``==``): a retry.

        Rows with the same text are; otherwise every column but the payload must match and
        the payloads hold equal values (:func:`same_data`).

        Raises:
            CorruptRecord: If they differ and this row does not decode: a damaged row is
                reported as damage, not as another writer's event (``SequenceConflict``).

        """
        if self == other or (self[:5] == other[:5] and same_data(self.data, other.data)):
            return True
        self.check_decodes()
        return False

    def check_decodes(self) -> None:
        """Check that this stored row decodes to an event, as a read of it would.

        Raises:
            CorruptRecord: If it does not, naming the run and seq.

        """
        _checked_event(self.run_id, self.seq, self.kind, self.ts, self.lane_id, self.data)


def same_data(stored: str, given: str) -> bool:
    """Whether two encoded payloads hold equal (``==``) values.

    Equal text is the common case (a retry of the very same call). Otherwise the values are
    compared as the caller's events compare: a retry rebuilt with its keys in another order,
    ``1.0`` for ``1`` or ``-0.0`` for ``0.0`` is the same event, whose stored form is kept.
    Text that does not decode is never equal to anything.
    """
    if stored == given:
        return True
    try:
        old, new = decode(stored), decode(given)
    except ValueError:
        return False
    try:
        return bool(old == new)
    except RecursionError:  # deep values, compared from deep in the caller's stack
        return bool(on_fresh_stack(operator.eq, old, new))


class StateRow(NamedTuple):
    """A snapshot checked and encoded for storage."""

    run_id: str
    seq: int
    state: str


_check_event = PAEvent.__pydantic_validator__.validate_python
_check_state = RunState.__pydantic_validator__.validate_python


def _recheck(model: type[Value], fields: dict[str, Any]) -> dict[str, Any]:
    """Apply a value's own rules to fields that bypassed them (see ``CheckedFields``).

    Raises:
        InvalidInput: As the value's constructor would (an ``InvalidValue``).

    """
    try:
        checked: dict[str, Any] = model.__pydantic_validator__.validate_python(fields).__dict__
    except ValidationError as exc:
        raise refusal(model, exc) from None
    for name in model._enum_fields:
        if type(fields[name]) is not type(checked[name]):
            # A value that was built holds a member; a bare string would be stored as the
            # member and come back as something else.
            raise InvalidInput(f"{model.__name__}.{name} must be a member, not {fields[name]!r}")
    return checked


def event_row(event: object) -> EventRow:
    """Check every field of an event against the event's own rules and encode it for storage.

    The fields are checked again even for an event that was validated when it was built: a
    caller may have changed them since, or built the event with ``model_construct``.

    Raises:
        InvalidInput: If the value is not a ``PAEvent`` or any field cannot be stored exactly.
        InvalidRunId: If the run id is not acceptable.

    """
    if not isinstance(event, PAEvent):
        raise InvalidInput(f"expected a PAEvent, got {type(event).__name__}")
    fields = event.__dict__
    if type(fields) is not CheckedFields:
        fields = _recheck(PAEvent, fields)
    try:
        data = encode(fields["data"])
    except InvalidInput as exc:
        # The message names the run and seq only when there is an error to report.
        raise InvalidInput(f"run {fields['run_id']!r}, seq {fields['seq']}: {exc}") from exc
    return EventRow(
        fields["run_id"], fields["seq"], fields["kind"].value, fields["ts"], fields["lane_id"], data
    )


def event_rows(events: Iterable[PAEvent]) -> list[EventRow]:
    """Check and encode a batch, dropping exact duplicates inside it.

    Raises:
        InvalidInput: As :func:`event_row`, or if the batch is not an iterable of events.
        SequenceConflict: If the batch holds two different events at one position.

    """
    if isinstance(events, PAEvent | str | bytes | dict):
        raise InvalidInput("save_events takes an iterable of PAEvent, not a single value")
    try:
        each = iter(events)
    except TypeError:
        raise InvalidInput(
            f"save_events takes an iterable of PAEvent, not {type(events).__name__}"
        ) from None
    rows: list[EventRow] = []
    seen: dict[tuple[str, int], EventRow] = {}
    for event in each:
        row = event_row(event)
        key = (row.run_id, row.seq)
        previous = seen.get(key)
        if previous is None:
            seen[key] = row
            rows.append(row)
        elif not previous.same_event(row):
            raise SequenceConflict(row.run_id, row.seq)
    return rows


def state_row(run_id: object, state: object) -> StateRow:
    """Check a snapshot against the state's own rules and encode it for storage.

    Raises:
        InvalidInput: If ``state`` is not a ``RunState``, its ``run_id`` differs from
            ``run_id``, or a field cannot be stored exactly.
        InvalidRunId: If the run id is not acceptable.

    """
    run_id = check_run_id(run_id)
    if not isinstance(state, RunState):
        raise InvalidInput(f"expected a RunState, got {type(state).__name__}")
    fields = state.__dict__
    if type(fields) is not CheckedFields:
        fields = _recheck(RunState, fields)
    if fields["run_id"] != run_id:
        raise InvalidInput(
            f"state.run_id {fields['run_id']!r} does not match the run id {run_id!r} it is "
            "saved under"
        )
    record = {**fields, "status": fields["status"].value}
    return StateRow(run_id, fields["seq"], encode(record, f"state of run {run_id!r}"))


def batch_snapshot_row(snapshot: object) -> StateRow:
    """Check and encode the snapshot a batch commits with, saved under its own run id.

    Raises:
        InvalidInput: As :func:`state_row`; a value that is not a ``RunState`` is refused
            before its fields are read.
    """
    if not isinstance(snapshot, RunState):
        raise InvalidInput(f"the snapshot must be a RunState, got {type(snapshot).__name__}")
    return state_row(snapshot.run_id, snapshot)


def _problem(exc: ValidationError) -> str:
    """The error pydantic reports, in one line: each field and what is wrong with it."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']} "
        f"(got {detail['input']!r:.80})"
        for detail in exc.errors()
    )


def _checked_event(
    run_id: str, seq: object, kind: object, ts: object, lane_id: object, data: object
) -> PAEvent:
    """Rebuild an event from its columns through the event's own rules.

    The careful path, taken by any row the trusted path in :func:`_decode_rows` does not
    recognise as one the store wrote: it either builds the event or says what is wrong.
    """
    where = seq if type(seq) is int else None
    try:
        payload = decode(data)  # type: ignore[arg-type]
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptRecord(run_id, where, f"event data is not JSON: {exc}") from exc
    if type(payload) is not dict:
        raise CorruptRecord(
            run_id, where, f"event data is a {type(payload).__name__}, not an object"
        )
    if not isinstance(kind, str) or kind not in _KINDS:
        raise CorruptRecord(run_id, where, f"unknown event kind {kind!r}")
    fields = {"run_id": run_id, "seq": seq, "kind": kind, "ts": ts, "lane_id": lane_id}
    try:
        event: PAEvent = _check_event({**fields, "data": payload})
    except ValidationError as exc:
        raise CorruptRecord(run_id, where, f"not a valid event: {_problem(exc)}") from exc
    return event


_new_event = object.__new__
_set_slot = object.__setattr__
_EVENT_FIELDS = frozenset(PAEvent.model_fields)
# Lanes seen valid: a run uses a handful, and checking one costs more than decoding a row.
_known_lanes: set[str] = {"main"}
_LANES_LIMIT = 4_096
_MAX_LANE = 255


def _plain_lane(lane_id: object) -> bool:
    """Whether a lane is short ASCII text without NUL: valid, and cheap to tell.

    Past :data:`_LANES_LIMIT` lanes the set above stops growing (a store whose lanes name
    other things, a LangGraph checkpoint's run, can have millions), and every row in a lane
    outside it went through the event's full validation, several times the cost of the row.
    """
    return (
        type(lane_id) is str
        and lane_id.isascii()
        and len(lane_id) <= _MAX_LANE
        and "\x00" not in lane_id
    )


def _decode_rows(run_id: str, rows: Iterable[Sequence[Any]]) -> list[PAEvent]:
    """The one trusted decode path: ``(seq, kind, ts, lane_id, data)`` rows to events.

    A row whose columns have exactly the types the store writes, a known kind and lane, a
    position from 1 and a finite time is assembled directly, as ``model_construct`` would,
    without its per-call field bookkeeping, which costs more than decoding the row: reading
    events back is the hot path of recovery. Any other row goes through the event's own rules
    (:func:`_checked_event`), which build it or raise ``CorruptRecord``.
    """
    if not _TRUSTED:  # pragma: no cover - see the self-check below
        return [_checked_event(run_id, *row) for row in rows]
    scan, kinds, lanes, new, set_slot = scan_once, _KINDS, _known_lanes, _new_event, _set_slot
    fields = _EVENT_FIELDS
    events: list[PAEvent] = []
    append = events.append
    for row in rows:
        seq, kind, ts, lane_id, data = row
        try:
            payload, end = scan(data, 0)
            event_kind = kinds[kind]
        except (StopIteration, KeyError, ValueError, TypeError, RecursionError):
            event_kind = None
        if (
            event_kind is None
            or end != len(data)
            or type(payload) is not dict
            or type(seq) is not int
            or seq < 1
            or type(ts) is not float
            or ts - ts != 0.0  # NaN and infinities
            or (lane_id not in lanes and not _plain_lane(lane_id))
        ):
            event = _checked_event(run_id, seq, kind, ts, lane_id, data)
            if len(lanes) < _LANES_LIMIT:
                lanes.add(event.lane_id)
            append(event)
            continue
        event = new(PAEvent)
        set_slot(
            event,
            "__dict__",
            {
                "run_id": run_id,
                "seq": seq,
                "kind": event_kind,
                "ts": ts,
                "lane_id": lane_id,
                "data": payload,
            },
        )
        set_slot(event, "__pydantic_fields_set__", set(fields))
        set_slot(event, "__pydantic_extra__", None)
        set_slot(event, "__pydantic_private__", None)
        append(event)
    return events


# Should a pydantic release change how models keep their fields, every row takes the careful
# path rather than build events that are subtly different from validated ones.
_TRUSTED = True
_SAMPLE = (7, "custom", 1.5, "main", '{"k":[1]}')
_TRUSTED = all(
    repr(trusted) == repr(checked) and trusted == checked
    for trusted, checked in zip(
        _decode_rows("r", [_SAMPLE]), [_checked_event("r", *_SAMPLE)], strict=True
    )
)


def decode_event(
    run_id: str, seq: int, kind: str, ts: float, lane_id: str, data: str | bytes
) -> PAEvent:
    """Rebuild an event from its stored columns.

    Raises:
        CorruptRecord: If a column is damaged: the payload is not a JSON object, the kind is
            unknown, or a field breaks the event's rules.

    """
    return _decode_rows(run_id, ((seq, kind, ts, lane_id, data),))[0]


# Rows decoded without pausing the collector: a few hundred allocations at most, so at most
# one young-generation pass, which costs less than the pause itself.
PAUSE_FROM = 64


def decode_events(run_id: str, rows: Iterable[Sequence[Any]]) -> list[PAEvent]:
    """Rebuild many events from ``(seq, kind, ts, lane_id, data)`` rows.

    The cyclic garbage collector is paused for the loop when there are many rows (or an
    unknown number). Each event is four new containers (the model, its field dict, its field
    set, its payload), none of them part of a cycle; left running, the collector rescans the
    growing list every few hundred allocations, which measured as more than half the time of
    reading a long run.

    Raises:
        CorruptRecord: If a row cannot be decoded.
    """
    if type(rows) is list and len(rows) < PAUSE_FROM:
        return _decode_rows(run_id, rows)
    with gc_paused():
        return _decode_rows(run_id, rows)


class gc_paused:  # noqa: N801 - used as a function: ``with gc_paused():``
    """Pause the cyclic garbage collector while many acyclic objects are built.

    Nested and concurrent uses are safe: only the outermost pause that found the collector
    running turns it back on. A class rather than a generator-based context manager: reads
    of a few rows take it on every call, and a generator's frame and wrapper cost several
    times the pause itself.
    """

    __slots__ = ("_collecting",)

    def __enter__(self) -> None:
        self._collecting = collecting = gc.isenabled()
        if collecting:
            gc.disable()

    def __exit__(self, *_exc: object) -> None:
        if self._collecting:
            gc.enable()


def decode_event_dict(run_id: str, record: Any, seq_hint: int | None = None) -> PAEvent:
    """Rebuild an event from a decoded ``to_dict()`` mapping (the JSONL line format).

    Raises:
        CorruptRecord: If the mapping is not a valid event of ``run_id``.

    """
    seq = record.get("seq") if isinstance(record, dict) else None
    seq = seq if type(seq) is int else seq_hint
    try:
        event: PAEvent = _check_event(record)
    except ValidationError as exc:
        raise CorruptRecord(run_id, seq, f"not a valid event: {_problem(exc)}") from exc
    if event.run_id != run_id:
        raise CorruptRecord(run_id, seq, f"event belongs to run {event.run_id!r}")
    return event


def decode_state(run_id: str, text: str | bytes | Any, seq: object = None) -> RunState:
    """Rebuild a snapshot from its stored JSON text (or an already decoded mapping).

    Args:
        run_id: The run the snapshot was read for.
        text: The stored JSON text, or the mapping decoded from it.
        seq: The ``seq`` the store keeps beside the snapshot (a SQL column, an index), if
            any. Stores select the events after a snapshot by it, so it must agree with the
            state's own ``seq``: events would otherwise be replayed twice or skipped.

    Raises:
        CorruptRecord: If the text is not a valid state of ``run_id``, or ``seq`` disagrees
            with it.

    """
    where = seq if type(seq) is int else None
    try:
        record = decode(text) if isinstance(text, str | bytes) else text
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(run_id, where, f"snapshot is not JSON: {exc}") from exc
    if type(record) is not dict:
        raise CorruptRecord(run_id, where, f"snapshot is not a state object: {str(record)[:80]!r}")
    try:
        state: RunState = _check_state(record)
    except ValidationError as exc:
        raise CorruptRecord(
            run_id, where, f"snapshot is not a valid state: {_problem(exc)}"
        ) from exc
    if state.run_id != run_id:
        raise CorruptRecord(run_id, state.seq, f"snapshot belongs to run {state.run_id!r}")
    if seq is not None and (type(seq) is not int or seq != state.seq):
        raise CorruptRecord(
            run_id,
            state.seq,
            f"the snapshot covers events up to seq {state.seq}, but the store records it "
            f"as covering up to {seq!r}",
        )
    return state
