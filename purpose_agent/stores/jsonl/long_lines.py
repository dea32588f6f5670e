"""Long lines, read a record at a time through a window on the log.

One write is one line however many events it holds (see :mod:`.lines`), so a run saved by one
``save_events`` call is one line, of millions of events perhaps. Decoding such a line whole
holds all of them at once, which ``iter_events`` must not. A line longer than
:data:`~.lines.LONG_LINE` is therefore indexed a record at a time: the index keeps where each
of its events' records starts (not where the line does), and a read decodes that record alone,
from a window of the file. Shorter lines are decoded whole, which is faster when a read wants
most of a line.

Both ways read the same text with the same scanner (:data:`purpose_agent.codec.scan_once`), so
values come back exactly alike. A long line in any shape but the two the store writes for many
events (``[{...}, ...]`` and ``{"events": [...], "snapshot": {...}}``, with or without the
seed's spacing), or with any byte that is not ASCII (the store writes none), raises
:class:`NotStreamed`: the caller decodes it whole, which also reports damage the way it does for
every other line.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

from purpose_agent.codec import on_fresh_stack, scan_once

from .lines import MAX_SEQ

WINDOW = 1 << 18
"""The most of a line a window holds, unless one record is longer."""
_FIRST = 1 << 13
_SPACE = frozenset(" \t\r\n")


class NotStreamed(Exception):
    """A long line that cannot be read a record at a time; it is decoded whole instead."""


def _scan(text: str, at: int) -> tuple[Any, int]:
    try:
        try:
            return scan_once(text, at)
        except RecursionError:
            return on_fresh_stack(scan_once, text, at)
    except (StopIteration, ValueError, RecursionError) as exc:
        raise NotStreamed(f"no JSON value at {at}") from exc


class Window:
    """Part of one line's text, kept between reads and moved along as they go.

    The log only grows and a replaced log gets a new index, so the text stays valid for as
    long as the index that located the line; the file descriptor is passed to each call, since
    every read opens the log again. A window that moves forward doubles, up to
    :data:`WINDOW`, so that reading a line through costs few reads; one that moves back
    starts small again, so that looking up one record costs a small read.
    """

    def __init__(self, start: int, stop: int) -> None:
        """A window on the line from ``start`` to ``stop``, where its newline is."""
        self.stop = stop
        self.base = start
        self.text = ""
        self._size = _FIRST // 2

    def _move(self, fd: int, at: int) -> None:
        forward = at >= self.base + len(self.text)
        self._size = min(WINDOW, 2 * self._size) if forward else _FIRST
        self._fill(fd, at, self._size)

    def _fill(self, fd: int, at: int, size: int) -> None:
        size = max(0, min(size, self.stop - at))
        data = os.pread(fd, size, at)
        if len(data) != size or not data.isascii():
            raise NotStreamed(f"{size} bytes at {at} are not ASCII text")
        self.base, self.text = at, data.decode("ascii")

    def char(self, fd: int, at: int) -> str:
        """Return the character at ``at`` (``""`` at the end of the line)."""
        if at >= self.stop:
            return ""
        if not self.base <= at < self.base + len(self.text):
            self._move(fd, at)
        return self.text[at - self.base]

    def skip_space(self, fd: int, at: int) -> int:
        """Return where the first character that is not JSON whitespace is, from ``at`` on."""
        while at < self.stop and self.char(fd, at) in _SPACE:
            at += 1
        return at

    def expect(self, fd: int, at: int, char: str) -> int:
        """Return where the text after ``char`` (and the whitespace after it) starts."""
        at = self.skip_space(fd, at)
        if self.char(fd, at) != char:
            raise NotStreamed(f"no {char!r} at {at}")
        return self.skip_space(fd, at + 1)

    def value(self, fd: int, at: int) -> tuple[Any, int]:
        """Decode the JSON value that starts at ``at``; return it and where it ends.

        A value that runs past the window is read again with a window twice as long.
        """
        if not self.base <= at < self.base + len(self.text):
            self._move(fd, at)
        while True:
            text_end = self.base + len(self.text)
            try:
                value, end = _scan(self.text, at - self.base)
            except NotStreamed:
                if text_end == self.stop:
                    raise
            else:
                # A number that ends where the window does may go on past it.
                if self.base + end < text_end or text_end == self.stop:
                    return value, self.base + end
            self._size = max(self._size, 2 * (text_end - at))
            self._fill(fd, at, self._size)


def _is_record(value: object) -> bool:
    seq = value.get("seq") if isinstance(value, dict) else None
    return type(seq) is int and 1 <= seq < MAX_SEQ


class LongLine:
    """One long line read a record at a time.

    :meth:`records` yields its event records; once it is exhausted, ``tail`` holds the rest of
    a batch saved with a snapshot, as a dict (``{"snapshot": ..., "compacted": ...}``), and
    ``tail_at`` where that rest starts.
    """

    def __init__(self, fd: int, start: int, stop: int) -> None:
        """The line from ``start`` to ``stop``, where its newline is, in the open log ``fd``."""
        self.fd = fd
        self.start = start
        self.window = Window(start, stop)
        self.tail: dict[str, Any] | None = None
        self.tail_at = -1

    def records(self) -> Iterator[tuple[dict[str, Any], int]]:
        """Yield each event record with where it starts.

        Raises:
            NotStreamed: The line is not in a shape this reads; decode it whole.

        """
        fd, window = self.fd, self.window
        at = window.skip_space(fd, self.start)
        if window.char(fd, at) == "[":
            at = yield from self._array(at)
            if window.skip_space(fd, at) != window.stop:
                raise NotStreamed("text after the batch")
            return
        at = window.expect(fd, at, "{")
        name, at = window.value(fd, at)
        if name != "events":
            raise NotStreamed("the line is not a batch")  # one event, or a hand-made line
        at = yield from self._array(window.expect(fd, at, ":"))
        self.tail_at = at
        self.tail = read_tail(fd, at, window.stop)

    def _array(self, at: int) -> Generator[tuple[dict[str, Any], int], None, int]:
        """Yield the records of the array that starts at ``at``; return where it ends."""
        fd, window = self.fd, self.window
        at = window.expect(fd, at, "[")
        if window.char(fd, at) == "]":
            return at + 1
        while True:
            record, end = window.value(fd, at)
            if not _is_record(record):
                raise NotStreamed(f"no event record at {at}")
            yield record, at
            at = window.skip_space(fd, end)
            if window.char(fd, at) == "]":
                return at + 1
            at = window.expect(fd, at, ",")

    def record_at(self, at: int) -> dict[str, Any]:
        """Decode the record that starts at ``at`` again."""
        record, _ = self.window.value(self.fd, at)
        assert isinstance(record, dict)
        return record


def read_record(fd: int, window: Window, at: int, seq: int) -> dict[str, Any]:
    """Decode the record of ``seq`` that starts at ``at`` in the window's line.

    Raises:
        NotStreamed: There is no such record there.

    """
    record, _ = window.value(fd, at)
    if not isinstance(record, dict) or record.get("seq") != seq:
        raise NotStreamed(f"the record at byte {at} is not the event at seq {seq}")
    return record


def read_tail(fd: int, at: int, stop: int) -> dict[str, Any]:
    """Decode what follows the events of a batch saved with a snapshot, from ``at`` to ``stop``.

    That is ``,"snapshot":{...}}`` (and a compacted log's header), read as the object
    ``{"snapshot":{...}}``.

    Raises:
        NotStreamed: It is not that, or it names the events again.

    """
    data = os.pread(fd, stop - at, at)
    if len(data) != stop - at or not data.isascii():
        raise NotStreamed(f"{stop - at} bytes at {at} are not ASCII text")
    text = data.decode("ascii").strip(" \t\r\n")
    if text == "}":
        raise NotStreamed("a batch without its snapshot")
    if not text.startswith(","):
        raise NotStreamed(f"no ',' at {at}")
    value, end = _scan("{" + text[1:], 0)
    if end != len(text) or not isinstance(value, dict) or "events" in value:
        raise NotStreamed(f"the rest of the batch at {at} is not its snapshot")
    return value
