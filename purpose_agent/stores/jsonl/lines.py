"""The log's line format: one line per write, so that a crash tears at most one line.

Each write is one line, and a batch is all or nothing because it is one line:

- ``{...}``: one event, as ``PAEvent.to_dict()``;
- ``[{...}, ...]``: a batch of one run's events;
- ``{"events": [...], "snapshot": {...}}``: a batch saved together with the state after it.

The seed wrote one event per line with ``json.dumps``'s spacing; such lines read as they are.

A crash in the middle of an append leaves a last line without its newline: a torn append, which
readers leave out and the next writer cuts off. Only the start of a line the store writes can be
one (see :mod:`.torn`); any other last line without a newline (a zero-filled tail, a complete
line whose newline was changed) is damage, and reported as such.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from purpose_agent.codec import decode, encode
from purpose_agent.errors import CorruptRecord, InvalidInput
from purpose_agent.records import EventRow, StateRow, decode_event_dict, event_row

from .naming import EVENTS_FILE

MAX_SEQ = 2**63
_SEQ_IN_LINE = re.compile(rb'"seq"\s*:\s*(\d{1,19})')


class Line(NamedTuple):
    """A decoded log line: its event records, and the snapshot it carries if any."""

    records: list[dict[str, Any]]
    snapshot: dict[str, Any] | None


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
    if isinstance(value, dict) and "events" in value:
        snapshot, value = value.get("snapshot"), value["events"]
        if not isinstance(snapshot, dict) or not isinstance(value, list):
            raise CorruptRecord(
                run_id, seq_hint(line), f"the batch at byte {offset} of {EVENTS_FILE} is malformed"
            )
        seq = snapshot.get("seq")
        if type(seq) is not int or not 0 <= seq < MAX_SEQ:
            raise CorruptRecord(run_id, None, f"the snapshot at byte {offset} has no valid seq")
    elif isinstance(value, dict):
        value = [value]
    elif not isinstance(value, list):
        raise CorruptRecord(run_id, None, f"the line at byte {offset} is not an event or a batch")
    for record in value:
        _record_seq(run_id, record, seq_hint(line))
    return Line(value, snapshot)


def stored_row(run_id: str, record: dict[str, Any], seq: int) -> EventRow:
    """Encode a stored event the way a new one is encoded, so the two compare exactly."""
    event = decode_event_dict(run_id, record, seq)
    try:
        return event_row(event)
    except InvalidInput as exc:
        raise CorruptRecord(run_id, seq, f"stored event is not storable as it is: {exc}") from exc


def _event_json(row: EventRow) -> str:
    head = encode(
        {
            "run_id": row.run_id,
            "seq": row.seq,
            "kind": row.kind,
            "ts": row.ts,
            "lane_id": row.lane_id,
        }
    )
    # row.data was encoded (and checked) by event_row; splicing it in saves encoding it twice.
    return f'{head[:-1]},"data":{row.data}}}'


def line_bytes(rows: list[EventRow], snapshot: StateRow | None) -> bytes:
    """Return the one line that writes these events (of one run) and the state after them."""
    events = [_event_json(row) for row in rows]
    if snapshot is not None:
        text = f'{{"events":[{",".join(events)}],"snapshot":{snapshot.state}}}'
    elif len(events) == 1:
        text = events[0]
    else:
        text = f"[{','.join(events)}]"
    return f"{text}\n".encode()
