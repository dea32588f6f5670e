"""What a handle knows about a run's log: where each event's line starts, extended incrementally.

Reads and writes look events up by seq without reading the log again: the index is built once
per handle and then extended by reading only the bytes appended since, by this handle or by
anybody else.
"""

from __future__ import annotations

import bisect
import itertools
import os
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from purpose_agent.errors import CorruptRecord
from purpose_agent.records import decode_event_dict
from purpose_agent.runtime.events import PAEvent

from .files import pread_exact
from .lines import LONG_LINE, batch_parts, parse_line, record_key, seq_hint, stored_row
from .long_lines import LongLine, NotStreamed, Window, read_record
from .naming import EVENTS_FILE
from .torn import is_torn_write

TAIL = 32
_CHUNK = 1 << 20
_CACHED_LINES = 8
_generations = itertools.count()


@dataclass(eq=False)
class Index:
    """What this process knows about one run's log, extended by reading only new bytes.

    ``seqs`` and ``offsets`` are parallel and sorted by seq: the start of the line that holds
    each event, or, in a line longer than :data:`~.lines.LONG_LINE`, the start of the event's
    own record (see :mod:`.long_lines`). ``lines`` holds the start of every line in file
    order, so a line's end is the next line's start, and an offset that is not a line's start
    is a record's. ``tail`` is the last bytes indexed: if they changed, the file was
    replaced (a deleted run written again can reuse the inode and grow past the old size).
    ``keys`` maps each event key to its seq. ``log_id`` and ``floor`` come from the header of
    a compacted log: which rewrite it is, and the last seq the run had stored then.
    ``snap_offset`` and ``snap_end`` delimit the line of the latest snapshot in the log;
    ``snap_at`` is where its part after the events starts when that line is a long one.
    """

    identity: tuple[int, int] | None = None
    generation: int = field(default_factory=lambda: next(_generations))
    scanned: int = 0
    tail: bytes = b""
    seqs: array[int] = field(default_factory=lambda: array("q"))
    offsets: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    snap_seq: int = -1
    snap_offset: int = -1
    snap_end: int = -1
    snap_at: int = -1
    keys: dict[str, int] = field(default_factory=dict)
    log_id: str | None = None
    floor: int = 0

    @property
    def last_seq(self) -> int:
        """The highest seq the run has stored, compacted positions included."""
        return max(self.seqs[-1], self.floor) if self.seqs else self.floor

    def find(self, seq: int) -> int | None:
        """Return the offset of the line holding ``seq``, or ``None``."""
        i = bisect.bisect_left(self.seqs, seq)
        if i < len(self.seqs) and self.seqs[i] == seq:
            return self.offsets[i]
        return None

    def add_line(
        self,
        start: int,
        end: int,
        seqs: Iterable[int],
        snap_seq: int | None,
        keys: Iterable[tuple[str, int]] = (),
        *,
        starts: Sequence[int] | None = None,
        snap_at: int = -1,
    ) -> None:
        """Record a complete line from ``start`` to ``end`` (just past its newline).

        ``starts`` are where the records of the seqs start, for a long line; ``snap_at``
        where the part after its events starts, for a long line with a snapshot.
        """
        self.keys.update(keys)
        places = itertools.repeat(start) if starts is None else starts
        for seq, place in zip(seqs, places, strict=False):  # repeat() has no end
            if not self.seqs or seq > self.seqs[-1]:
                self.seqs.append(seq)
                self.offsets.append(place)
            else:
                i = bisect.bisect_left(self.seqs, seq)
                self.seqs.insert(i, seq)
                self.offsets.insert(i, place)
        # ">=": of two snapshots with one seq, the later line is the later write.
        if snap_seq is not None and snap_seq >= self.snap_seq:
            self.snap_seq, self.snap_offset, self.snap_end = snap_seq, start, end
            self.snap_at = snap_at
        self.lines.append(start)
        self.scanned = end


class LineReader:
    """Decodes each log line once per read, however many of its events the read returns.

    Each record is handed out once and then dropped, so events returned to a caller never share
    a ``data`` dict with a cache, and a batch line of thousands of events is decoded once, not
    once per event. A long line's records are decoded one at a time instead, from a window on
    the line that moves along it as the read does, so that memory does not grow with the line.
    """

    def __init__(self) -> None:
        self._lines: OrderedDict[tuple[int, int], dict[int, dict[str, Any]]] = OrderedDict()
        self._window: tuple[tuple[int, int], Window] | None = None

    def record(self, run_id: str, fd: int, index: Index, seq: int, offset: int) -> dict[str, Any]:
        """Return the decoded record of ``seq``, from the line or the record at ``offset``."""
        key = (index.generation, offset)
        records = self._lines.get(key)
        if records is None or seq not in records:
            i = bisect.bisect_right(index.lines, offset)
            end = index.lines[i] if i < len(index.lines) else index.scanned
            if i and index.lines[i - 1] != offset:  # a record's start: a long line's event
                line_at = (index.generation, index.lines[i - 1])
                return self._long_record(run_id, fd, line_at, end, seq, offset)
            line = parse_line(run_id, pread_exact(run_id, fd, offset, end - offset), offset)
            records = {record["seq"]: record for record in line.records}
            self._lines[key] = records
            if len(self._lines) > _CACHED_LINES:
                self._lines.popitem(last=False)
        else:
            self._lines.move_to_end(key)
        record = records.pop(seq, None)
        if not records:
            self._lines.pop(key, None)
        if record is None:
            raise CorruptRecord(run_id, seq, f"the line at byte {offset} no longer holds this seq")
        return record

    def _long_record(
        self, run_id: str, fd: int, line: tuple[int, int], end: int, seq: int, offset: int
    ) -> dict[str, Any]:
        if self._window is None or self._window[0] != line:
            self._window = (line, Window(line[1], end - 1))
        try:
            return read_record(fd, self._window[1], offset, seq)
        except NotStreamed as exc:
            raise CorruptRecord(
                run_id, seq, f"the record at byte {offset} of {EVENTS_FILE} cannot be decoded"
            ) from exc

    def event(self, run_id: str, fd: int, index: Index, seq: int, offset: int) -> PAEvent:
        """Return the event ``seq``, from the line at ``offset``."""
        return self.keyed(run_id, fd, index, seq, offset)[0]

    def keyed(
        self, run_id: str, fd: int, index: Index, seq: int, offset: int
    ) -> tuple[PAEvent, str | None]:
        """Return the event ``seq`` and its key (``None`` for none), from the line at ``offset``."""
        record = self.record(run_id, fd, index, seq, offset)
        key = record_key(run_id, record)
        return decode_event_dict(run_id, record, seq), key


class Refreshed(NamedTuple):
    """An index brought up to date with a log."""

    current: Index
    size: int
    from_start: bool
    """Whether the index was built from the log's first byte (new, or the log was replaced)."""


def refreshed(run_id: str, index: Index, fd: int) -> Refreshed:
    """Bring an index up to date with the open log.

    Only bytes after the last indexed line are read. A log that shrank, was replaced or whose
    last indexed bytes changed is indexed again from the start. A last line without its
    newline that is the start of a write is one that crashed or is still in flight: it is left
    out (and the next writer cuts it off).

    Returns:
        The index (or its replacement), the log's size, and whether it was built from the start.

    Raises:
        CorruptRecord: A line cannot be decoded, or the last line lacks its newline and is not
            the start of a write.

    """
    info = os.fstat(fd)
    identity = (info.st_dev, info.st_ino)
    if (
        index.identity != identity
        or info.st_size < index.scanned
        or os.pread(fd, len(index.tail), index.scanned - len(index.tail)) != index.tail
    ):
        index = Index(identity=identity)
    from_start = index.scanned == 0
    if info.st_size > index.scanned:
        _scan(run_id, fd, index, info.st_size)
    return Refreshed(index, info.st_size, from_start)


def _lines(fd: int, start: int, size: int) -> Iterator[tuple[bytes | None, int, int, bool]]:
    """The lines from ``start`` to ``size``, read a chunk at a time.

    A line longer than :data:`~.lines.LONG_LINE` is not held: its bytes are passed over as
    they are read, and read again a record at a time (see :mod:`.long_lines`).

    Yields:
        Each line's bytes (without its newline; ``None`` for a long line that ends in one),
        its offset, where it stops (its newline, or the end of the file), and whether it ends
        in a newline (only the last may not).
    """
    pending = bytearray()
    base = position = start
    long_start = -1  # the start of a long line whose bytes so far were passed over
    while position < size:
        chunk = os.pread(fd, min(_CHUNK, size - position), position)
        if not chunk:
            break
        position += len(chunk)
        pending += chunk
        cut = 0
        while (newline := pending.find(b"\n", cut)) >= 0:
            line_start = long_start if long_start >= 0 else base + cut
            stop = base + newline
            if stop - line_start > LONG_LINE:
                yield None, line_start, stop, True
            else:
                yield bytes(pending[cut:newline]), line_start, stop, True
            long_start = -1
            cut = newline + 1
        del pending[:cut]
        base += cut
        if long_start < 0 and len(pending) > LONG_LINE:
            long_start = base
        if long_start >= 0:
            base += len(pending)
            pending.clear()
    if long_start >= 0:  # a torn append, or damage: the caller looks at all of it
        yield os.pread(fd, size - long_start, long_start), long_start, size, False
    elif pending:
        yield bytes(pending), base, size, False


def _scan(run_id: str, fd: int, index: Index, size: int) -> None:
    for line, start, stop, complete in _lines(fd, index.scanned, size):
        if complete:
            _index_line(run_id, fd, index, line, start, stop, size)
        elif line is not None and not is_torn_write(line):
            raise CorruptRecord(
                run_id,
                seq_hint(line),
                f"the last line of {EVENTS_FILE}, at byte {start}, has no newline and is not "
                f"the start of a write ({line[:40]!r}...): the file was damaged after it was "
                "written; restore it from a backup, or cut the line off by hand if it holds "
                "nothing needed",
            )
    if index.scanned:
        keep = min(TAIL, index.scanned)
        index.tail = os.pread(fd, keep, index.scanned - keep)


def _index_line(
    run_id: str, fd: int, index: Index, line: bytes | None, start: int, stop: int, size: int
) -> None:
    """Add the line from ``start`` to its newline at ``stop`` to the index, checking it.

    ``line`` is its bytes, or ``None`` for a long line, which is read a record at a time.
    """
    end = stop + 1
    if line is None:
        try:
            _index_long_line(run_id, fd, index, start, stop)
        except NotStreamed:
            line = pread_exact(run_id, fd, start, stop - start)
        else:
            return
    if not line.strip():
        index.scanned = end
        return
    try:
        parsed = parse_line(run_id, line, start)
    except CorruptRecord as exc:
        if exc.seq is not None:
            raise
        raise _located(run_id, fd, index, exc, end, size) from exc
    if parsed.compacted is not None:
        index.log_id, index.floor = parsed.compacted
    records = parsed.records
    seqs, _, keys = _new_records(
        run_id, fd, index, ((record, i) for i, record in enumerate(records)), records.__getitem__
    )
    snap_seq = parsed.snapshot["seq"] if parsed.snapshot is not None else None
    index.add_line(start, end, seqs, snap_seq, keys.items())


def _index_long_line(run_id: str, fd: int, index: Index, start: int, stop: int) -> None:
    """Index a long line a record at a time, holding none of them longer than it takes.

    Raises:
        NotStreamed: The line is not in a shape read so: it is to be decoded whole.

    """
    line = LongLine(fd, start, stop)
    seqs, starts, keys = _new_records(run_id, fd, index, line.records(), line.record_at)
    snap_seq = None
    if line.tail is not None:
        try:
            _, snapshot, compacted = batch_parts(run_id, {**line.tail, "events": []}, start, b"")
        except CorruptRecord as exc:  # decoded whole, the line reports its damage as usual
            raise NotStreamed(exc.detail) from exc
        if compacted is not None:
            index.log_id, index.floor = compacted
        snap_seq = snapshot["seq"]
    index.add_line(
        start, stop + 1, seqs, snap_seq, keys.items(), starts=starts, snap_at=line.tail_at
    )


def _new_records(
    run_id: str,
    fd: int,
    index: Index,
    records: Iterable[tuple[dict[str, Any], int]],
    earlier_in_line: Callable[[int], dict[str, Any]],
) -> tuple[array[int], array[int], dict[str, int]]:
    """Check a line's records against each other and the index.

    Args:
        run_id: The run.
        fd: The open log.
        index: The index, up to date with the lines before this one.
        records: Each record, with where to find it again by ``earlier_in_line``.
        earlier_in_line: Returns a record of this line again.

    Returns:
        The seqs not stored before (a seq written again must hold the same event), where each
        is found, and the keys among them.

    Raises:
        CorruptRecord: Two different events at one seq, or two events with one key.

    """
    seqs: array[int] = array("q")
    places: array[int] = array("q")
    keys: dict[str, int] = {}
    # Where each of this line's seqs is, made only once they stop going up: a batch in seq
    # order, which is every batch the store writes, tells each seq is new by looking at one.
    seen: dict[int, int] | None = None
    reader = LineReader()
    for record, place in records:
        seq: int = record["seq"]
        if seen is None and seqs and seq <= seqs[-1]:
            seen = dict(zip(seqs, places, strict=True))
        here = seen.get(seq) if seen is not None else None
        earlier = earlier_in_line(here) if here is not None else None
        if earlier is None and (offset := index.find(seq)) is not None:
            earlier = reader.record(run_id, fd, index, seq, offset)
        if earlier is None:
            seqs.append(seq)
            places.append(place)
            if seen is not None:
                seen[seq] = place
            key = record.get("key")
            if key is not None:
                record_key(run_id, dict(record))
                if index.keys.get(key, seq) != seq or key in keys:
                    raise CorruptRecord(
                        run_id, seq, f"the log holds two events with the key {key!r:.80}"
                    )
                keys[key] = seq
        elif stored_row(run_id, earlier, seq) != stored_row(run_id, record, seq) or earlier.get(
            "key"
        ) != record.get("key"):
            # Only a log written by hand (or by the seed, which never checked) gets here.
            raise CorruptRecord(run_id, seq, "the log holds two different events at this seq")
    return seqs, places, keys


def _located(
    run_id: str, fd: int, index: Index, exc: CorruptRecord, end: int, size: int
) -> CorruptRecord:
    """The error of a line that shows no seq, naming what the lines around it tell for sure.

    Seqs are the caller's, so only a log that goes up line by line says anything: there, a
    line after the one holding seq ``a`` and before the one holding seq ``b`` held seqs in
    between, and every line other than a compacted log's header holds at least one. When the
    unreadable lines from this one on up to ``b`` are as many as the seqs in between, each held
    exactly one, and this one's seq is known; otherwise the message names the range. A log that
    does not go up around the line (a seq written out of order) gets neither: nothing about it
    would be certain.
    """
    offsets = index.offsets
    if any(offsets[i] > offsets[i + 1] for i in range(len(offsets) - 1)):
        return exc  # an earlier line went back: the log is not in seq order
    if index.seqs:
        after = index.seqs[-1]
    else:  # the first events: past a compacted log's header, above the snapshot it holds
        after = max(index.snap_seq, 0) if index.log_id is not None else 0
    unreadable, before = _next_readable(run_id, fd, end, size)
    if before is not None and before <= after:
        return exc  # the next line goes back
    if before is None:
        if not after:
            return exc  # nothing readable on either side
        where = f"after seq {after}"
    elif after:
        where = f"between seq {after} and seq {before}"
    else:
        where = f"before seq {before}"
    if before is not None and before - after - 1 == unreadable + 1:
        seq = after + 1
        more = f", the first of {unreadable + 1} unreadable lines there" if unreadable else ""
        detail = f"{exc.detail}; it lies {where}{more}, so it held seq {seq}"
        return CorruptRecord(run_id, seq, detail)
    return CorruptRecord(run_id, None, f"{exc.detail}; it lies {where}")


def _next_readable(run_id: str, fd: int, start: int, size: int) -> tuple[int, int | None]:
    """Look past an unreadable line that ends at ``start`` for the next line holding events.

    Returns:
        How many unreadable lines come first, and the lowest seq of that line (``None`` when
        no complete line holding events follows).

    """
    unreadable = 0
    for read, line_start, stop, complete in _lines(fd, start, size):
        line = read if read is not None else pread_exact(run_id, fd, line_start, stop - line_start)
        if not complete or not line.strip():
            continue
        try:
            records = parse_line(run_id, line, line_start).records
        except CorruptRecord:
            unreadable += 1
            continue
        if records:
            return unreadable, min(record["seq"] for record in records)
    return unreadable, None
