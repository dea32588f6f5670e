"""A disk that fills up fails the write that did not fit, whole, and the store goes on after.

What an operator meets when a volume fills: the write that does not fit must fail with the
store's own error, leave nothing of itself behind (no events without their snapshot, no half
line in a JSONL log), leave everything acknowledged before it readable, and the next write
after space is freed must succeed without reopening the store.

SQLite is filled with ``PRAGMA max_page_count`` on every connection: SQLite then answers a
write that would grow the file past it exactly as it answers a full disk (``SQLITE_FULL``,
"database or disk is full"). A JSONL store is filled in a child process whose file size limit
(``RLIMIT_FSIZE``) is set just above the log's size, so its writes fail part way (``EFBIG``),
as they would on a full disk (``ENOSPC``), without touching the test process's own files.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import JSONLCheckpointer, SQLCheckpointer, StoreUnavailable
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.testing.samples import ev, st

PAYLOAD = "x" * 2000  # about half a page per event, so the file grows every few steps


def _step(run_id: str, number: int) -> tuple[list[Any], Any]:
    first = (number - 1) * 3 + 1
    events = [ev(run_id, seq, note=PAYLOAD) for seq in range(first, first + 3)]
    return events, st(run_id, first + 2, step=number, note=PAYLOAD)


def _fill(store: SQLCheckpointer, run_id: str) -> tuple[int, str]:
    """Save steps until one fails with ``StoreUnavailable``: how many did not, and its message."""
    for number in range(1, 10_000):
        try:
            store.save_events(*_step(run_id, number))
        except StoreUnavailable as exc:
            return number - 1, str(exc)
    raise AssertionError("the disk never filled")


def _check_run(store: SQLCheckpointer, run_id: str, steps: int) -> None:
    """The run holds exactly its first ``steps`` steps, each with its snapshot."""
    recovered = store.recover(run_id)
    if steps == 0:  # its first step did not fit: the run does not exist
        assert recovered is None
        assert store.list_events(run_id) == []
        return
    assert recovered is not None
    assert recovered.state is not None
    assert recovered.state.seq == steps * 3
    assert recovered.state.data["step"] == steps
    assert recovered.events == []
    assert [e.seq for e in store.list_events(run_id)] == list(range(1, steps * 3 + 1))


def _limited_engine(path: Path, limit: list[int]) -> sa.Engine:
    """An engine whose every new connection may grow the file only to ``limit[0]`` pages."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit[0]}")

    return engine


@pytest.mark.sqlite
@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "grouped"])
def test_a_full_sqlite_disk_fails_each_step_whole_and_writes_resume_when_space_returns(
    tmp_path: Path, grouped: bool
) -> None:
    path = tmp_path / "full.db"
    SQLCheckpointer(f"sqlite:///{path}").close()  # migrated while there is room
    with contextlib.closing(sqlite3.connect(path)) as raw:
        pages = int(raw.execute("PRAGMA page_count").fetchone()[0])
    limit = [pages + 48]
    engine = _limited_engine(path, limit)
    policy = GroupCommitPolicy(max_batch=8, max_wait=0.002) if grouped else False
    runs = [f"r{index}" for index in range(4)]
    with SQLCheckpointer(engine, group_commit=policy) as store:
        # Four writers fill the disk together (grouped: their steps share commits).
        with ThreadPoolExecutor(len(runs)) as pool:
            filled = dict(
                zip(runs, pool.map(lambda run_id: _fill(store, run_id), runs), strict=True)
            )
        for run_id, (steps, error) in filled.items():
            assert "database or disk is full" in error
            # Nothing of the failed step: its events and its snapshot went together or not
            # at all, and nothing of another writer's failed step either.
            _check_run(store, run_id, steps)
        assert sum(steps for steps, _ in filled.values()) > 0  # it filled part way
        # Still full: a step fails again, and again leaves nothing.
        first, (steps, _) = next(iter(filled.items()))
        with pytest.raises(StoreUnavailable):
            store.save_events(*_step(first, steps + 1))
        _check_run(store, first, steps)

        limit[0] = 1_000_000  # space is freed: connections opened from now on may grow
        engine.pool.dispose()
        for run_id, (steps, _) in filled.items():
            store.save_events(*_step(run_id, steps + 1))
            store.save_events(*_step(run_id, steps + 2))
            _check_run(store, run_id, steps + 2)
    engine.dispose()


_JSONL_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from purpose_agent import JSONLCheckpointer, PAEvent, RunState, StoreUnavailable
    from purpose_agent.testing.samples import ev, st

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    folder, payload = sys.argv[1], "x" * 2000
    store = JSONLCheckpointer(folder)
    store.save_event(ev("r", 1, note="before the limit"))
    log = next(p for p in __import__("pathlib").Path(folder).rglob("events.jsonl"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 20_000, resource.RLIM_INFINITY))
    acknowledged, error = 0, None
    for number in range(1, 10_000):
        first = (number - 1) * 3 + 2
        events = [ev("r", seq, note=payload) for seq in range(first, first + 3)]
        try:
            store.save_events(events, snapshot=st("r", first + 2, step=number, note=payload))
        except StoreUnavailable as exc:
            error = str(exc)
            break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        acknowledged = number
    print(json.dumps({"acknowledged": acknowledged, "error": error}))
    """
)


def test_a_jsonl_log_that_cannot_grow_fails_the_step_whole_and_keeps_no_partial_line(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "runs"
    child = subprocess.run(
        [sys.executable, "-c", _JSONL_CHILD, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    acknowledged = outcome["acknowledged"]
    assert "File too large" in (outcome["error"] or ""), outcome
    assert acknowledged > 0
    last = 1 + acknowledged * 3
    log = next(folder.rglob("events.jsonl"))
    assert log.read_bytes().endswith(b"\n")  # the failed write was cut back off
    with JSONLCheckpointer(folder) as store:  # a new process reads what was acknowledged
        recovered = store.recover("r")
        assert recovered is not None
        assert recovered.state is not None
        assert recovered.state.seq == last
        assert recovered.state.data["step"] == acknowledged
        assert [e.seq for e in store.list_events("r")] == list(range(1, last + 1))
        store.save_events([ev("r", last + 1, note="space is back")], snapshot=st("r", last + 1))
        assert store.recover("r").state.seq == last + 1  # type: ignore[union-attr]
