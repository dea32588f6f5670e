"""A SQLite file deleted or replaced under an open store: calls fail, none is lost.

A connection keeps the file it opened whatever happens to its path. Before the store watched
the path, every save after a cleanup deleted the file returned as if stored, into a file with
no name left (gone once the store closed), and after a restore was copied into place, saves
went to the old file while reads opened later saw the new one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from purpose_agent import AsyncSQLCheckpointer, PAEvent, RunState, SQLCheckpointer, StoreUnavailable
from purpose_agent.db import sqlite_file
from purpose_agent.testing.samples import ev, st

pytestmark = pytest.mark.sqlite


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _delete(path: Path, tmp_path: Path) -> None:
    _remove(path)


def _replace(path: Path, tmp_path: Path) -> None:
    """A restore: another store's file copied into place (a backup taken earlier)."""
    backup = tmp_path / "backup.db"
    with SQLCheckpointer(f"sqlite:///{backup}") as other:
        other.save_event(ev("restored", 1))
    _remove(path)
    shutil.copyfile(backup, path)


CHANGES = pytest.mark.parametrize("change", [_delete, _replace], ids=["deleted", "replaced"])


@pytest.fixture(autouse=True)
def every_read_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads check the file at most every 50 ms: here, on every read."""
    monkeypatch.setattr(sqlite_file, "READ_CHECK_SECONDS", 0.0)


@CHANGES
def test_writes_and_reads_after_the_file_changed_fail_and_nothing_is_lost(
    tmp_path: Path, change: Callable[[Path, Path], None]
) -> None:
    path = tmp_path / "runs.db"
    store = SQLCheckpointer(f"sqlite:///{path}")
    try:
        store.save_event(ev("r", 1))
        assert store.list_events("r") == [ev("r", 1)]  # the read connections are open too
        change(path, tmp_path)
        for call in (
            lambda: store.save_events([ev("r", 2)], snapshot=st("r", 2)),
            lambda: store.save_event(ev("r", 2)),
            lambda: store.save_snapshot("r", st("r", 1)),
            lambda: store.list_events("r"),
            lambda: store.recover("r"),
            store.list_runs,
        ):
            with pytest.raises(StoreUnavailable, match=r"was (deleted|replaced)"):
                call()
    finally:
        store.close()
    with SQLCheckpointer(f"sqlite:///{path}") as reopened:
        # Nothing a call acknowledged after the change is missing: none was acknowledged.
        assert reopened.list_events("r") == []
        reopened.save_event(ev("r", 1))  # the store opened again works on the new file
        assert reopened.list_events("r") == [ev("r", 1)]


@CHANGES
def test_the_async_store_refuses_calls_after_the_file_changed(
    tmp_path: Path, change: Callable[[Path, Path], None]
) -> None:
    path = tmp_path / "runs.db"

    async def main() -> None:
        async with AsyncSQLCheckpointer(f"sqlite:///{path}") as store:
            await store.save_event(ev("r", 1))
            change(path, tmp_path)
            event = PAEvent(run_id="r", seq=2, kind="custom", ts=1.0)
            with pytest.raises(StoreUnavailable, match=r"was (deleted|replaced)"):
                await store.save_events([event], snapshot=RunState(run_id="r", seq=2))
            with pytest.raises(StoreUnavailable, match=r"was (deleted|replaced)"):
                await store.list_events("r")

    asyncio.run(main())
    with SQLCheckpointer(f"sqlite:///{path}") as reopened:
        assert reopened.list_events("r") == []


def test_a_file_moved_back_in_place_is_the_store_s_again(tmp_path: Path) -> None:
    """The check is of the file's identity: a rename away and back changes nothing."""
    path = tmp_path / "runs.db"
    with SQLCheckpointer(f"sqlite:///{path}") as store:
        store.save_event(ev("r", 1))
        aside = tmp_path / "aside.db"
        os.rename(path, aside)
        with pytest.raises(StoreUnavailable, match="deleted or moved away"):
            store.save_event(ev("r", 2))
        os.rename(aside, path)
        store.save_event(ev("r", 2))
        assert [event.seq for event in store.list_events("r")] == [1, 2]
