"""The log's line format: one line per write, so that a crash tears at most one line.

Each write is one line, and a batch is all or nothing because it is one line:

- ``{...}``: one event, as ``PAEvent.to_dict()``, with a ``"key"`` before ``"data"`` when it
  was appended with one;
- ``[{...}, ...]``: a batch of one run's events;
- ``{"events": [...], "snapshot": {...}}``: a batch saved together with the state after it.

A compacted log (see :mod:`.compaction`) starts with a header of the third form that carries
no events, the snapshot that covered the dropped ones, and
``"compacted": {"log": ID, "last_seq": N}``: ``ID`` names this rewrite of the log (a
``snapshot.json`` written before it names none or another, and is superseded by the header),
and ``N`` is the highest seq the run had stored, which the dropped lines no longer show.

The seed wrote one event per line with ``json.dumps``'s spacing; such lines read as they are.

A line longer than :data:`LONG_LINE` (one ``save_events`` call of thousands of events) is not
decoded whole: :mod:`.long_lines` reads it a record at a time, so that streaming a run saved
in one call holds a page of it, not all of it.

A crash in the middle of an append leaves a last line without its newline: a torn append, which
readers leave out and the next writer cuts off. Only the start of a line the store writes can be
one (see :mod:`.torn`); any other last line without a newline (a zero-filled tail, a complete
line whose newline was changed) is damage, and reported as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from purpose_agent.codec import decode, encode
from purpose_agent.errors import CorruptRecord, InvalidInput
from purpose_agent.records import EventRow, StateRow, decode_event_dict, event_row

from .naming import EVENTS_FILE

MAX_SEQ = 2**63
LONG_LINE = 1 << 20
"""Lines longer than this (in bytes) are indexed and read a record at a time: see
:mod:`.long_lines`."""
MAX_KEY_LENGTH = 255
_SEQ_IN_LINE = re.compile(rb'"seq"\s*:\s*(\d{1,19})')
_LOG_ID = re.compile(r"[0-9a-f]{32}")


class Compacted(NamedTuple):
    """The header of a compacted log: which rewrite it is, and the run's last seq then."""

    log_id: str
    last_seq: int


class Line(NamedTuple):
    """A decoded log line: its event records, the snapshot it carries, its compaction header."""

    records: list[dict[str, Any]]
    snapshot: dict[str, Any] | None
    compacted: Compacted | None = None


def seq_hint(line: bytes) -> int | None:
    """Return the first ``"seq": N`` visible in a line that cannot be decoded, to name it."""
    match = _SEQ_IN_LINE.search(line)
    return int(match.group(1)) if match else None


def _record_seq(run_id: str, record: object, hint: int | None) -> int:
    seq = record.get("seq") if isinstance(record, dict) else None
    if type(seq) is not int or not 1 <= seq < MAX_SEQ:
        shown = seq if type(seq) is int else hint
        raise CorruptRecord(run_id, shown, f"not an event with a valid seq: {record!r:.80}")
    return seq


def parse_line(run_id: str, line: bytes, offset: int) -> Line:
    """Decode one log line in any of its three forms (or the seed's).

    Args:
        run_id: The run, to name in errors.
        line: The line without its newline.
        offset: Where the line starts in the log, to name in errors.

    Returns:
        The line's records, each with a valid ``seq``, and its snapshot if it has one.

    Raises:
        CorruptRecord: The line is not one the store writes.

    """
    try:
        value = decode(line)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = f"the line at byte {offset} of {EVENTS_FILE} is not JSON: {exc}"
        raise CorruptRecord(run_id, seq_hint(line), detail) from exc
    snapshot = None
    compacted = None
    if isinstance(value, dict) and "events" in value:
        value, snapshot, compacted = batch_parts(run_id, value, offset, line)
    elif isinstance(value, dict):
        value = [value]
    elif not isinstance(value, list):
        raise CorruptRecord(run_id, None, f"the line at byte {offset} is not an event or a batch")
    for record in value:
        _record_seq(run_id, record, seq_hint(line))
    return Line(value, snapshot, compacted)


def batch_parts(
    run_id: str, value: dict[str, Any], offset: int, line: bytes
) -> tuple[list[Any], dict[str, Any], Compacted | None]:
    """Check a batch saved with a snapshot; return its events, snapshot and compaction header.

    Raises:
        CorruptRecord: The batch is malformed (``line`` is searched for a seq to name).

    """
    compacted = None
    if "compacted" in value:
        compacted = _compacted(run_id, value["compacted"], offset)
    snapshot, events = value.get("snapshot"), value["events"]
    if not isinstance(snapshot, dict) or not isinstance(events, list):
        raise CorruptRecord(
            run_id, seq_hint(line), f"the batch at byte {offset} of {EVENTS_FILE} is malformed"
        )
    seq = snapshot.get("seq")
    if type(seq) is not int or not 0 <= seq < MAX_SEQ:
        raise CorruptRecord(run_id, None, f"the snapshot at byte {offset} has no valid seq")
    return events, snapshot, compacted


def _compacted(run_id: str, value: object, offset: int) -> Compacted:
    log_id = value.get("log") if isinstance(value, dict) else None
    last_seq = value.get("last_seq") if isinstance(value, dict) else None
    if (
        offset != 0
        or not isinstance(log_id, str)
        or not _LOG_ID.fullmatch(log_id)
        or type(last_seq) is not int
        or not 0 <= last_seq < MAX_SEQ
    ):
        raise CorruptRecord(
            run_id,
            None,
            f"the line at byte {offset} of {EVENTS_FILE} has a malformed compaction header "
            "(only a valid one, on the first line, is written)",
        )
    return Compacted(log_id, last_seq)


def record_key(run_id: str, record: dict[str, Any]) -> str | None:
    """Take the key out of a stored event record (which then decodes as a ``PAEvent``).

    Raises:
        CorruptRecord: The key is not one an append can store.

    """
    if "key" not in record:
        return None
    key = record.pop("key")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or "\x00" in key:
        raise CorruptRecord(run_id, record.get("seq"), f"the event's key is not valid: {key!r:.80}")
    return key


def stored_row(run_id: str, record: dict[str, Any], seq: int) -> EventRow:
    """Encode a stored event the way a new one is encoded, so the two compare exactly.

    The event's key, if it has one, is not part of the row (see :func:`record_key`).
    """
    if "key" in record:
        record = {name: value for name, value in record.items() if name != "key"}
    event = decode_event_dict(run_id, record, seq)
    try:
        return event_row(event)
    except InvalidInput as exc:
        raise CorruptRecord(run_id, seq, f"stored event is not storable as it is: {exc}") from exc


def _event_json(row: EventRow, key: str | None) -> str:
    fields: dict[str, Any] = {
        "run_id": row.run_id,
        "seq": row.seq,
        "kind": row.kind,
        "ts": row.ts,
        "lane_id": row.lane_id,
    }
    if key is not None:
        fields["key"] = key
    head = encode(fields)
    # row.data was encoded (and checked) by event_row; splicing it in saves encoding it twice.
    return f'{head[:-1]},"data":{row.data}}}'


class Encoded(NamedTuple):
    """A line to write, and where its parts start in it when it is a long one."""

    line: bytes
    starts: list[int] | None
    """Where each event's record starts, for a long line of several events; else ``None``."""
    tail_at: int
    """Where the snapshot's part starts, for a long line saved with one; else -1."""


def encoded_line(
    rows: list[EventRow], snapshot: StateRow | None, keys: Mapping[int, str] | None = None
) -> Encoded:
    """Return the one line that writes these events (of one run) and the state after them.

    Args:
        rows: The events.
        snapshot: The state saved with them, or ``None``.
        keys: The keys of the events appended with one, by seq.

    Returns:
        The line, with its newline, and where its parts start if it is longer than
        :data:`LONG_LINE` (the text is ASCII, so characters and bytes count alike).

    """
    events = [_event_json(row, keys.get(row.seq) if keys else None) for row in rows]
    if snapshot is not None:
        head = '{"events":['
        text = f'{head}{",".join(events)}],"snapshot":{snapshot.state}}}'
    elif len(events) == 1:
        return Encoded(f"{events[0]}\n".encode(), None, -1)
    else:
        head = "["
        text = f"[{','.join(events)}]"
    line = f"{text}\n".encode()
    if len(text) <= LONG_LINE:
        return Encoded(line, None, -1)
    starts: list[int] = []
    at = len(head)
    for event in events:
        starts.append(at)
        at += len(event) + 1  # and its comma, or the closing bracket
    tail_at = max(at, len(head) + 1) if snapshot is not None else -1
    return Encoded(line, starts, tail_at)


def header_bytes(snapshot: StateRow, compacted: Compacted) -> bytes:
    """Return the first line of a compacted log: the covering snapshot and the header."""
    mark = encode({"log": compacted.log_id, "last_seq": compacted.last_seq})
    return f'{{"events":[],"snapshot":{snapshot.state},"compacted":{mark}}}\n'.encode()
