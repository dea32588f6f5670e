"""A SQLite file that processes of several users open: what one leaves, the others are told."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from purpose_agent import EventKind, NewEvent, SQLCheckpointer, StoreUnavailable
from tests.users import NOBODY, run_as

pytestmark = pytest.mark.sqlite

OWNER = 65533  # any other user: root writes whatever the permissions
T = TypeVar("T")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder both users may write in (pytest's own temporary root is private)."""
    root = Path(tempfile.mkdtemp(prefix="pa-sqlite-users-"))
    root.chmod(0o777)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _as(uid: int, probe: Callable[[], T]) -> T:
    return run_as(uid, probe)


def _refusal(url: str) -> str:
    try:
        with SQLCheckpointer(url) as store:
            store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
    except StoreUnavailable as exc:
        return str(exc)
    return "the write went through"


def test_wal_files_a_read_only_user_left_are_named_when_the_owner_cannot_write(
    folder: Path,
) -> None:
    # A process that may only read the file (an operator's `purpose-agent runs list`, a
    # monitoring job) opening it while no writer has it open creates its -wal and -shm, as
    # its user, and leaves them. The owner's writes were then refused as "read-only for this
    # process (the file or its folder is not writable)", when both were.
    path = folder / "runs.db"
    url = f"sqlite:///{path}"

    def create() -> None:
        with SQLCheckpointer(url) as store:
            store.append("r", [NewEvent(kind=EventKind.CUSTOM)])

    def read() -> int:
        with SQLCheckpointer(url) as store:
            return len(store.list_events("r"))

    warm = folder / "warm.db"  # what the children run is imported here first
    with SQLCheckpointer(f"sqlite:///{warm}") as store:
        store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
    warm.unlink()
    _as(OWNER, create)
    if os.geteuid() == 0:
        assert _as(NOBODY, read) == 1
    else:  # one user: the read-only open as the file's mode makes it, then its files so
        path.chmod(0o444)
        assert read() == 1
        path.chmod(0o644)
        for left in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            left.chmod(0o444)
    message = _as(OWNER, lambda: _refusal(url))
    assert f"{path}-shm" in message
    assert "remove them once no process has the database open" in message
