"""Seed-era data read through read-only stores: every read works, every write is refused."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from purpose_agent import EventKind, InvalidInput, JSONLCheckpointer, PAEvent, RunState
from purpose_agent.legacy import LegacyReader, SeedJSONLReader, SeedSQLiteReader, StoreReadOnly
from purpose_agent.stores.open import open_store
from tests.test_cli_copy import _write_seed_sqlite
from tests.test_cli_support import invoke

pytestmark = pytest.mark.sqlite

_SEED_SNAPSHOT = {"run_id": "alpha", "status": "completed", "messages": ["hi"], "data": {"k": 1}}


def _seed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints"
    (folder / "alpha").mkdir(parents=True)
    event = PAEvent(run_id="alpha", seq=1, kind=EventKind.TOOL_CALL, ts=5.0, data={"i": 1})
    (folder / "alpha" / "events.jsonl").write_text(json.dumps(event.to_dict()) + "\n")
    (folder / "alpha" / "snapshot.json").write_text(json.dumps(_SEED_SNAPSHOT))
    return folder


def _writes(reader: LegacyReader) -> list[Callable[[], None]]:
    event = PAEvent(run_id="alpha", seq=9, kind=EventKind.CUSTOM)
    state = RunState(run_id="alpha", seq=9)
    return [
        lambda: reader.save_event(event),
        lambda: reader.save_events([event], snapshot=state),
        lambda: reader.save_snapshot("alpha", state),
        lambda: reader.delete_run("alpha"),
    ]


def _files(folder: Path) -> dict[str, bytes]:
    # Lock files are not data: a read that meets apparent damage re-checks under the run's lock.
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".locks" not in p.parts
    }


def test_seed_jsonl_reader_maps_seed_snapshots_and_refuses_every_write(tmp_path: Path) -> None:
    folder = _seed_folder(tmp_path)
    before = _files(folder)
    with open_store(f"jsonl:{folder}", create=False, read_only=True) as reader:
        assert isinstance(reader, SeedJSONLReader)
        state = reader.load_latest("alpha")
        assert state is not None
        assert (state.status.value, state.data) == (
            "finished",
            {"k": 1, "_seed": {"messages": ["hi"]}},
        )
        for write in _writes(reader):
            with pytest.raises(StoreReadOnly, match=f"jsonl:{folder} was opened read-only"):
                write()
    assert _files(folder) == before


def test_a_jsonl_folder_opened_for_writing_is_the_jsonl_store(tmp_path: Path) -> None:
    folder = _seed_folder(tmp_path)
    with open_store(f"jsonl:{folder}", create=False) as store:
        assert isinstance(store, JSONLCheckpointer)
        store.save_event(PAEvent(run_id="beta", seq=1, kind=EventKind.CUSTOM))
        assert store.list_runs()[0] == "beta"


def test_seed_sqlite_reader_refuses_every_write_and_names_the_copy_command(tmp_path: Path) -> None:
    seed = tmp_path / "seed.db"
    _write_seed_sqlite(seed, [("alpha", 1, "tool_call", {"i": 1})], {})
    with open_store(f"sqlite:///{seed}", create=False) as reader:
        assert isinstance(reader, SeedSQLiteReader)
        assert [e.seq for e in reader.list_events("alpha")] == [1]
        for write in _writes(reader):
            with pytest.raises(StoreReadOnly) as refused:
                write()
            assert isinstance(refused.value, InvalidInput)
            assert f"`purpose-agent copy seed-sqlite:{seed} DEST`" in str(refused.value)
    assert sqlite3.connect(seed).execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_runs_show_reads_a_seed_era_snapshot_in_a_jsonl_folder(tmp_path: Path) -> None:
    folder = _seed_folder(tmp_path)
    result = invoke("runs", "show", "alpha", "--json", "--url", f"jsonl:{folder}")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["status"] == "finished"
    assert shown["snapshot"]["data"]["_seed"] == {"messages": ["hi"]}
