"""Compaction: a run's log rewritten without the events its latest snapshot covers.

The new log is written whole to ``events.jsonl.tmp`` beside the old one, fsynced and renamed
over it: the rename is the compaction's commit, so a crash leaves the old log or the new one,
and ``recover()`` returns the same from either. The new log starts with a header line (see
:mod:`.lines`) that carries the covering snapshot and the run's last seq, which the dropped
lines no longer show; then come the remaining events' lines in their order, each copied byte
for byte, or, where a line also held covered events or a snapshot, written again with only the
remaining events (every snapshot the old log held is at most the header's). ``snapshot.json``,
which held the covering snapshot or an older one, names no rewrite of the log or an earlier
one: the header supersedes it, and it is removed once the new log is in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from purpose_agent.records import EventRow, StateRow

from .files import pread_exact
from .index import Index
from .lines import Compacted, encoded_line, header_bytes, parse_line, stored_row


def compacted_log(run_id: str, fd: int, index: Index, snapshot: StateRow) -> Iterator[bytes]:
    """Yield the lines of the run's log without the events ``snapshot`` covers.

    Args:
        run_id: The run.
        fd: Its log, open for reading; ``index`` is up to date with it.
        index: The log's index.
        snapshot: The run's best snapshot: the events up to its seq are dropped.

    Yields:
        The header, then each remaining line with its newline.

    Raises:
        CorruptRecord: A line cannot be decoded.

    """
    yield header_bytes(snapshot, Compacted(uuid.uuid4().hex, index.last_seq))
    covered = snapshot.seq
    starts = index.lines
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else index.scanned
        raw = pread_exact(run_id, fd, start, end - start)
        line = parse_line(run_id, raw, start)
        kept = [record for record in line.records if record["seq"] > covered]
        if line.snapshot is None and len(kept) == len(line.records):
            yield raw
        elif kept:
            rows: list[EventRow] = []
            keys: dict[int, str] = {}
            for record in kept:
                seq = record["seq"]
                rows.append(stored_row(run_id, record, seq))
                if "key" in record:
                    keys[seq] = record["key"]
            yield encoded_line(rows, None, keys).line
