"""The stored form of events and snapshots: checked on the way in, decoded on the way out.

Every backend goes through these functions, so "what is saved is what is loaded" and "bad input
is refused before anything is written" mean the same thing everywhere.
"""

from __future__ import annotations

import contextlib
import gc
import math
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from purpose_agent.codec import decode, encode
from purpose_agent.codec import scan_once as _scan
from purpose_agent.errors import CorruptRecord, InvalidInput, InvalidRunId, SequenceConflict
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus

MAX_RUN_ID_LENGTH = 255
_KINDS = {kind.value: kind for kind in EventKind}
_STATUSES = {status.value: status for status in RunStatus}


def check_run_id(run_id: object) -> str:
    """Refuse run ids that are empty, too long, or could name a path outside one run.

    Args:
        run_id: The value to check.

    Returns:
        The run id, unchanged.

    Raises:
        InvalidRunId: If the run id is not acceptable on every backend.

    """
    if type(run_id) is not str:
        raise InvalidRunId(f"run id must be a str, not {type(run_id).__name__}")
    if not run_id:
        raise InvalidRunId("run id must not be empty")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise InvalidRunId(
            f"run id is {len(run_id)} characters long; the limit is {MAX_RUN_ID_LENGTH}"
        )
    if run_id in (".", ".."):
        raise InvalidRunId(f"run id must not be {run_id!r}")
    if not run_id.isprintable() or "/" in run_id or "\\" in run_id:
        for char in run_id:
            if char in "/\\":
                raise InvalidRunId(f"run id {run_id!r} contains {char!r}")
            category = unicodedata.category(char)
            if category == "Cc":
                raise InvalidRunId(f"run id {run_id!r} contains a control character")
            if category == "Cs":
                raise InvalidRunId(f"run id {run_id!r} contains a lone surrogate")
    return run_id


# Run ids already checked: a run writes many events, and checking the id each time costs as
# much as encoding a small payload. Only valid str ids enter; the set is bounded.
_checked_run_ids: set[str] = set()
_CHECKED_LIMIT = 65_536


def _remember_run_id(run_id: str) -> None:
    if len(_checked_run_ids) >= _CHECKED_LIMIT:
        _checked_run_ids.clear()
    _checked_run_ids.add(run_id)


def _utf8(text: str) -> bool:
    # A lone surrogate cannot be sent to a database as text; JSON payloads escape it instead.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_int(value: object, what: str, minimum: int) -> int:
    if type(value) is not int:
        raise InvalidInput(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise InvalidInput(f"{what} must be >= {minimum}, got {value}")
    if value >= 2**63:
        raise InvalidInput(f"{what} must be below 2**63, got {value}")
    return value


def _check_float(value: object, what: str) -> float:
    if type(value) is not float and type(value) is not int:
        raise InvalidInput(f"{what} must be a float, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{what} must be finite, got {number!r}")
    return number


def check_since(since_seq: object, limit: object = None) -> None:
    """Check the paging arguments of ``list_events`` and ``iter_events``.

    Raises:
        InvalidInput: If ``since_seq`` is not an int or ``limit`` is negative.

    """
    if type(since_seq) is not int:
        raise InvalidInput(f"since_seq must be an int, not {type(since_seq).__name__}")
    if limit is not None:
        _check_int(limit, "limit", 0)


def check_limit(limit: object, what: str = "limit") -> None:
    """Check an optional ``limit`` or ``offset`` argument.

    Raises:
        InvalidInput: If it is not ``None`` or an int >= 0.

    """
    if limit is not None:
        _check_int(limit, what, 0)


class EventRow(NamedTuple):
    """An event checked and encoded for storage: the columns of one row."""

    run_id: str
    seq: int
    kind: str
    ts: float
    lane_id: str
    data: str

    def as_params(self) -> dict[str, Any]:
        """The row as bind parameters for an ``INSERT``."""
        return self._asdict()

    def same_as(self, other: EventRow) -> bool:
        """Whether two rows hold the same event (retrying an identical save is a no-op)."""
        return self == other


class StateRow(NamedTuple):
    """A snapshot checked and encoded for storage."""

    run_id: str
    seq: int
    state: str


def event_row(event: object) -> EventRow:
    """Check every field of an event and encode it for storage.

    Raises:
        InvalidInput: If the value is not a ``PAEvent`` or any field cannot be stored exactly.
        InvalidRunId: If the run id is not acceptable.

    """
    if not isinstance(event, PAEvent):
        raise InvalidInput(f"expected a PAEvent, got {type(event).__name__}")
    run_id = event.run_id
    if type(run_id) is not str or run_id not in _checked_run_ids:
        _remember_run_id(check_run_id(run_id))
    seq = event.seq
    if type(seq) is not int or not 1 <= seq < 2**63:
        _check_int(seq, "event seq", 1)
    kind = event.kind
    if not isinstance(kind, EventKind):
        raise InvalidInput(f"event kind must be an EventKind, not {kind!r}")
    lane_id = event.lane_id
    if type(lane_id) is not str:
        raise InvalidInput(f"lane_id must be a str, not {type(lane_id).__name__}")
    if "\x00" in lane_id or len(lane_id) > MAX_RUN_ID_LENGTH or not _utf8(lane_id):
        raise InvalidInput("lane_id must be at most 255 characters of UTF-8 text without NUL")
    ts = event.ts
    if type(ts) is not float or not math.isfinite(ts):
        ts = _check_float(ts, "event ts")
    if not isinstance(event.data, dict):
        raise InvalidInput(f"event data must be a dict, not {type(event.data).__name__}")
    try:
        data = encode(event.data)
    except InvalidInput as exc:
        # The message names the run and seq only when there is an error to report.
        raise InvalidInput(f"run {run_id!r}, seq {seq}: {exc}") from exc.__cause__
    return EventRow(run_id, seq, kind.value, ts, lane_id, data)


def event_rows(events: Iterable[PAEvent]) -> list[EventRow]:
    """Check and encode a batch, dropping exact duplicates inside it.

    Raises:
        InvalidInput: As :func:`event_row`, or if the batch is not an iterable of events.
        SequenceConflict: If the batch holds two different events at one position.

    """
    if isinstance(events, PAEvent | str | bytes | dict):
        raise InvalidInput("save_events takes an iterable of PAEvent, not a single value")
    rows: list[EventRow] = []
    seen: dict[tuple[str, int], EventRow] = {}
    for event in events:
        row = event_row(event)
        key = (row.run_id, row.seq)
        previous = seen.get(key)
        if previous is None:
            seen[key] = row
            rows.append(row)
        elif previous != row:
            raise SequenceConflict(row.run_id, row.seq)
    return rows


def state_row(run_id: object, state: object) -> StateRow:
    """Check a snapshot and encode it for storage.

    Raises:
        InvalidInput: If ``state`` is not a ``RunState``, its ``run_id`` differs from
            ``run_id``, or a field cannot be stored exactly.
        InvalidRunId: If the run id is not acceptable.

    """
    run_id = check_run_id(run_id)
    if not isinstance(state, RunState):
        raise InvalidInput(f"expected a RunState, got {type(state).__name__}")
    if state.run_id != run_id:
        raise InvalidInput(
            f"state.run_id {state.run_id!r} does not match the run id {run_id!r} it is saved under"
        )
    seq = _check_int(state.seq, "state seq", 0)
    if not isinstance(state.status, RunStatus):
        raise InvalidInput(f"state status must be a RunStatus, not {state.status!r}")
    _check_float(state.created_at, "state created_at")
    _check_float(state.updated_at, "state updated_at")
    if not isinstance(state.data, dict):
        raise InvalidInput(f"state data must be a dict, not {type(state.data).__name__}")
    text = encode(state.to_dict(), f"state of run {run_id!r}")
    return StateRow(run_id, seq, text)


_new_object = object.__new__
_set_slot = object.__setattr__
_EVENT_FIELDS = frozenset(PAEvent.model_fields)


def _assemble_event(
    run_id: str, seq: int, kind: EventKind, ts: float, lane_id: str, data: dict[str, Any]
) -> PAEvent:
    # What PAEvent.model_construct does, without its per-call field bookkeeping, which costs
    # more than decoding the row: reading events back is the hot path of recovery.
    event = _new_object(PAEvent)
    _set_slot(
        event,
        "__dict__",
        {"run_id": run_id, "seq": seq, "kind": kind, "ts": ts, "lane_id": lane_id, "data": data},
    )
    _set_slot(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    _set_slot(event, "__pydantic_extra__", None)
    _set_slot(event, "__pydantic_private__", None)
    return event


def _assemble_checked(
    run_id: str, seq: int, kind: EventKind, ts: float, lane_id: str, data: dict[str, Any]
) -> PAEvent:
    return PAEvent.model_construct(
        run_id=run_id, seq=seq, kind=kind, ts=ts, lane_id=lane_id, data=data
    )


# Should a pydantic release change how models store their fields, fall back to the public
# constructor rather than build events that are subtly different.
_SAMPLE = ("r", 1, EventKind.CUSTOM, 1.5, "main", {"k": [1]})
if _assemble_event(*_SAMPLE) != _assemble_checked(*_SAMPLE) or repr(
    _assemble_event(*_SAMPLE)
) != repr(_assemble_checked(*_SAMPLE)):  # pragma: no cover
    _assemble_event = _assemble_checked


def decode_event(
    run_id: str, seq: int, kind: str, ts: float, lane_id: str, data: str | bytes
) -> PAEvent:
    """Rebuild an event from its stored columns.

    The columns were checked when they were written; here the payload is decoded and the kind
    looked up, and the event is assembled without a second full validation pass.

    Raises:
        CorruptRecord: If the payload is not a JSON object or the kind is unknown.

    """
    try:
        payload = decode(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(run_id, seq, f"event data is not JSON: {exc}") from exc
    if type(payload) is not dict:
        raise CorruptRecord(run_id, seq, f"event data is a {type(payload).__name__}, not an object")
    event_kind = _KINDS.get(kind)
    if event_kind is None:
        raise CorruptRecord(run_id, seq, f"unknown event kind {kind!r}")
    return _assemble_event(run_id, seq, event_kind, float(ts), lane_id, payload)


def decode_events(run_id: str, rows: Iterable[Sequence[Any]]) -> list[PAEvent]:
    """Rebuild many events from ``(seq, kind, ts, lane_id, data)`` rows.

    The same as :func:`decode_event` per row, with the common case inlined: this loop is
    what ``list_events``, ``iter_events`` and ``recover`` spend their time in. A row the fast
    path cannot take goes through :func:`decode_event`, which raises the precise
    ``CorruptRecord``.

    The cyclic garbage collector is paused for the loop. Each event is four new containers
    (the model, its field dict, its field set, its payload), none of them part of a cycle;
    left running, the collector rescans the growing list every few hundred allocations, which
    measured as more than half the time of reading a long run.

    Raises:
        CorruptRecord: If a row cannot be decoded.
    """
    with gc_paused():
        return _decode_rows(run_id, rows)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many acyclic objects are built.

    Nested and concurrent uses are safe: only the outermost pause that found the collector
    running turns it back on.
    """
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _decode_rows(run_id: str, rows: Iterable[Sequence[Any]]) -> list[PAEvent]:
    if _assemble_event is _assemble_checked:  # pragma: no cover - see _SAMPLE above
        return [decode_event(run_id, *row) for row in rows]
    scan, kinds, new, set_slot, fields = _scan, _KINDS, _new_object, _set_slot, _EVENT_FIELDS
    events: list[PAEvent] = []
    append = events.append
    for row in rows:
        seq, kind, ts, lane_id, data = row
        try:
            payload, end = scan(data, 0)
            event_kind = kinds[kind]
        except (StopIteration, KeyError, ValueError, TypeError, RecursionError):
            append(decode_event(run_id, *row))
            continue
        if end != len(data) or type(payload) is not dict:
            append(decode_event(run_id, *row))
            continue
        event = new(PAEvent)
        set_slot(
            event,
            "__dict__",
            {
                "run_id": run_id,
                "seq": seq,
                "kind": event_kind,
                "ts": ts if type(ts) is float else float(ts),
                "lane_id": lane_id,
                "data": payload,
            },
        )
        set_slot(event, "__pydantic_fields_set__", set(fields))
        set_slot(event, "__pydantic_extra__", None)
        set_slot(event, "__pydantic_private__", None)
        append(event)
    return events


def decode_event_dict(run_id: str, record: Any, seq_hint: int | None = None) -> PAEvent:
    """Rebuild an event from a decoded ``to_dict()`` mapping (the JSONL line format).

    Raises:
        CorruptRecord: If the mapping is not a valid event of ``run_id``.

    """
    seq = record.get("seq") if isinstance(record, dict) else None
    seq = seq if type(seq) is int else seq_hint
    try:
        event = PAEvent.model_validate(record)
    except ValueError as exc:
        raise CorruptRecord(run_id, seq, f"not a valid event: {exc}") from exc
    if event.run_id != run_id:
        raise CorruptRecord(run_id, seq, f"event belongs to run {event.run_id!r}")
    return event


def decode_state(run_id: str, text: str | bytes | Any, seq: int | None = None) -> RunState:
    """Rebuild a snapshot from its stored JSON text (or an already decoded mapping).

    Raises:
        CorruptRecord: If the text is not a valid state of ``run_id``.

    """
    try:
        record = decode(text) if isinstance(text, str | bytes) else text
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(run_id, seq, f"snapshot is not JSON: {exc}") from exc
    status = _STATUSES.get(str(record.get("status"))) if type(record) is dict else None
    if status is None:
        raise CorruptRecord(run_id, seq, f"snapshot is not a state object: {str(record)[:80]!r}")
    try:
        state = RunState.model_validate({**record, "status": status})
    except ValueError as exc:
        raise CorruptRecord(run_id, seq, f"snapshot is not a valid state: {exc}") from exc
    if state.run_id != run_id:
        raise CorruptRecord(run_id, state.seq, f"snapshot belongs to run {state.run_id!r}")
    return state
