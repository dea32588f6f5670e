"""Durable file writes: whole writes, fsync of files and of the directories that name them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from purpose_agent.errors import CorruptRecord

from .naming import EVENTS_FILE, SNAPSHOT_FILE

BINARY = getattr(os, "O_BINARY", 0)

FileIdentity = tuple[int, int, int]
"""A file's inode, size and modification time: which file it is, and which write it holds.

The store stamps every file it writes with a time no other write of this process shares (see
:func:`~purpose_agent.clock.stamp_ns`), so a file replaced by another write shows another
identity even where the new file reuses the old one's inode.
"""


def identity(info: os.stat_result) -> FileIdentity:
    """The :data:`FileIdentity` of a file from its ``stat``."""
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def file_identity(path: Path) -> FileIdentity | None:
    """The :data:`FileIdentity` of the file at ``path``; ``None`` if there is none."""
    try:
        return identity(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def pread_exact(run_id: str, fd: int, offset: int, size: int) -> bytes:
    """Read exactly ``size`` bytes of a run's log; a log that ends sooner is corrupt."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            raise CorruptRecord(run_id, None, f"{EVENTS_FILE} ends before byte {offset + size}")
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, however many calls the OS needs."""
    # One os.write normally takes the whole line; the loop only matters after a partial write
    # (a signal, a nearly full disk), and the run's lock keeps anybody from writing in between.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a create, rename or delete in ``path`` durable."""
    if os.name == "nt":  # directories cannot be opened there; NTFS journals renames itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes, stamp: int | None) -> None:
    """Write ``data`` to ``path`` durably, ready to be renamed over the real file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | BINARY, 0o644)
    try:
        write_all(fd, data)
        if stamp is not None:
            os.utime(path, ns=(stamp, stamp))
        os.fsync(fd)
    finally:
        os.close(fd)


def written_ns(run_dir: Path) -> int | None:
    """Return when a run was last written (its newest file), or ``None`` if it holds nothing."""
    stamps = []
    for name in (EVENTS_FILE, SNAPSHOT_FILE):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            info = (run_dir / name).stat()
            # An empty log is a write that was rolled back or never happened: no run yet.
            if info.st_size:
                stamps.append(info.st_mtime_ns)
    return max(stamps) if stamps else None


def undo_append(path: Path, start: int, existed: bool) -> bool:
    """Cut a line of a failed write back off, so that no part of the write stays behind.

    Returns whether that worked. It is best effort: the error that stopped the write is the one
    the caller needs to see.
    """
    try:
        if existed:
            os.truncate(path, start)
        else:
            os.unlink(path)
    except OSError:
        return False
    return True
