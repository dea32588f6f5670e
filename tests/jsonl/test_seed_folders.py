"""Run folders the seed named after their raw ids, taken in by the JSONL store as it opens.

The seed wrote a run to ``base_dir/<run_id>/`` whatever the id; the store escapes upper case,
dots, spaces and non-ASCII, and hashes long names, so without this a seed run such as
``Run-1`` was not listed, read as empty, and a write to it started a second folder beside the
seed's: the seed's events were then lost to every read.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from purpose_agent import EventKind, JSONLCheckpointer, PAEvent, RunState
from purpose_agent.legacy.jsonl import SeedJSONLReader
from purpose_agent.stores.jsonl.naming import RUN_ID_FILE, dir_name

SEED_IDS = ["Run-1", "job.2024", "my run", "café", "y" * 230]


def _event(run_id: str, seq: int) -> PAEvent:
    return PAEvent(run_id=run_id, seq=seq, kind=EventKind.TOOL_CALL, ts=1.5, data={"n": seq})


def write_seed_run(base: Path, run_id: str, events: int = 2) -> None:
    """A run as the seed's JSONLCheckpointer wrote it: its raw id as the folder's name."""
    folder = base / run_id
    folder.mkdir(parents=True)
    with open(folder / "events.jsonl", "a") as log:
        for seq in range(1, events + 1):
            log.write(json.dumps(_event(run_id, seq).to_dict()) + "\n")
    state = RunState(run_id=run_id, seq=events, data={"seen": events})
    (folder / "snapshot.json").write_text(json.dumps(state.to_dict(), indent=2))


def test_seed_named_runs_are_read_and_continued_in_their_own_folder(tmp_path: Path) -> None:
    for run_id in SEED_IDS:
        write_seed_run(tmp_path, run_id)

    with JSONLCheckpointer(tmp_path) as store:
        assert sorted(store.list_runs()) == sorted(SEED_IDS)
        for run_id in SEED_IDS:
            assert store.list_events(run_id) == [_event(run_id, 1), _event(run_id, 2)]
            state = store.load_latest(run_id)
            assert state is not None
            assert state.data == {"seen": 2}
            store.save_event(_event(run_id, 3))
            recovery = store.recover(run_id)
            assert recovery is not None
            assert recovery.events == [_event(run_id, 3)]

    names = sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("."))
    assert names == sorted(dir_name(run_id) for run_id in SEED_IDS)
    assert (tmp_path / dir_name("y" * 230) / RUN_ID_FILE).read_text() == "y" * 230
    with JSONLCheckpointer(tmp_path) as again:
        assert again.list_events("Run-1") == [_event("Run-1", seq) for seq in (1, 2, 3)]


def test_a_seed_folder_beside_the_stores_own_folder_for_its_run_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with JSONLCheckpointer(tmp_path) as store:
        store.save_event(_event("Run-1", 1))
    write_seed_run(tmp_path, "Run-1", events=5)

    with caplog.at_level(logging.INFO), JSONLCheckpointer(tmp_path) as store:
        assert store.list_events("Run-1") == [_event("Run-1", 1)]
    assert (tmp_path / "Run-1" / "events.jsonl").read_text().count("\n") == 5
    assert "renamed" not in caplog.text
    with SeedJSONLReader(tmp_path) as reader:
        [(name, hint)] = reader.unread_runs()
    assert name == "Run-1"
    assert "'%52un-1'" in hint


def test_folders_that_are_not_seed_runs_are_not_touched(tmp_path: Path) -> None:
    (tmp_path / "Notes").mkdir()
    (tmp_path / "Notes" / "todo.txt").write_text("not a run")
    (tmp_path / "bad\x01name").mkdir()
    (tmp_path / "bad\x01name" / "events.jsonl").write_text("")
    (tmp_path / "Stray.json").write_text("{}")

    with JSONLCheckpointer(tmp_path) as store:
        assert store.list_runs() == []
    assert {"Notes", "bad\x01name", "Stray.json"} <= {path.name for path in tmp_path.iterdir()}


def test_a_read_only_view_and_a_store_told_not_to_leave_seed_folders_as_they_are(
    tmp_path: Path,
) -> None:
    write_seed_run(tmp_path, "Run-1")
    with SeedJSONLReader(tmp_path) as reader:
        assert reader.list_runs() == []
        assert [name for name, _ in reader.unread_runs()] == ["Run-1"]
    with JSONLCheckpointer(tmp_path, adopt_seed_folders=False) as store:
        assert store.list_runs() == []
    assert (tmp_path / "Run-1" / "events.jsonl").exists()


def test_stores_opening_at_once_take_in_each_seed_folder_once(tmp_path: Path) -> None:
    run_ids = [f"Run-{n}" for n in range(20)]
    for run_id in run_ids:
        write_seed_run(tmp_path, run_id, events=3)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            barrier.wait()
            with JSONLCheckpointer(tmp_path) as store:
                assert sorted(store.list_runs()) == sorted(run_ids)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with JSONLCheckpointer(tmp_path) as store:
        for run_id in run_ids:
            assert store.list_events(run_id) == [_event(run_id, seq) for seq in (1, 2, 3)]
