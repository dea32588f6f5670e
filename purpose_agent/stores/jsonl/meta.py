"""``meta.json``: the group a run belongs to, kept beside its log.

The file holds ``{"group": NAME}``; a run that was never given a group has none. It is replaced
whole, by renaming a fsynced temporary file over it, so a crash leaves the old group or the new
one. An append that sets a group writes this file first, under the run's lock, and then its
line: a crash between the two leaves the run in its new group without that append (a retry of
the append completes it), and a run that holds nothing else is unknown, so its group is not
reported. A file that cannot be read is damage, reported as ``CorruptRecord``.
"""

from __future__ import annotations

import os
from pathlib import Path

from purpose_agent.appends import check_label
from purpose_agent.codec import decode, encode
from purpose_agent.errors import CorruptRecord, InvalidInput

from .files import fsync_dir, write_temp
from .naming import META_FILE, META_TEMP


def read_group(run_id: str, run_dir: Path) -> str | None:
    """Return the group ``meta.json`` names, or ``None`` if the run has no such file.

    Raises:
        CorruptRecord: The file exists but does not name a valid group.
        OSError: The file cannot be read.

    """
    path = run_dir / META_FILE
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        record = decode(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(
            run_id, None, f"{path} is not JSON ({exc}); restore it from a backup or remove it"
        ) from exc
    group = record.get("group") if isinstance(record, dict) else None
    try:
        return check_label(group, "group")
    except InvalidInput as exc:
        raise CorruptRecord(
            run_id, None, f"{path} names no valid group; restore it from a backup or remove it"
        ) from exc


def write_group(run_dir: Path, group: str | None) -> None:
    """Put the run in ``group`` durably, or out of any group for ``None``."""
    path = run_dir / META_FILE
    if group is None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
    else:
        temp = run_dir / META_TEMP
        write_temp(temp, f"{encode({'group': group})}\n".encode(), None)
        os.replace(temp, path)
    fsync_dir(run_dir)
