"""`purpose-agent copy`: every run between any two stores, resumable and verified."""

from __future__ import annotations

import itertools
import json
import sqlite3
import tracemalloc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from purpose_agent import (
    Checkpointer,
    EventKind,
    InMemoryCheckpointer,
    JSONLCheckpointer,
    NewEvent,
    PAEvent,
    Recovery,
    RunState,
    SQLiteCheckpointer,
)
from purpose_agent.errors import SeedDefaultDatabase, SeedFormatDatabase
from purpose_agent.ops.copy import GROUP_DROPPED, KEYS_DROPPED, CopyProgress, copy_runs
from purpose_agent.protocol import KeyedEvent
from purpose_agent.stores.open import open_store
from tests.test_cli_support import STORES, invoke, make_store_url

# The seed's SQLite schema, as its SQLiteCheckpointer created it.
SEED_DDL = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
        ts REAL NOT NULL, kind TEXT NOT NULL, lane_id TEXT DEFAULT 'main', data TEXT NOT NULL,
        created_at REAL DEFAULT (strftime('%s','now')))""",
    """CREATE TABLE snapshots (
        run_id TEXT PRIMARY KEY, state TEXT NOT NULL,
        updated_at REAL DEFAULT (strftime('%s','now')))""",
    "CREATE INDEX idx_events_run ON events(run_id, seq)",
)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request, tmp_path, request.param)


def _event(run_id: str, seq: int, **data: object) -> PAEvent:
    return PAEvent(run_id=run_id, seq=seq, kind=EventKind.TOOL_RESULT, ts=1000.0 + seq, data=data)


def _fill(url: str, runs: int = 3, events: int = 120) -> None:
    with open_store(url) as store:
        for r in range(runs):
            run_id = f"run-{r}"
            store.save_events(
                [_event(run_id, seq, n=seq, big=2**70) for seq in range(1, events + 1)]
            )
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=events // 2, data={"r": r}))


def _contents(url: str) -> dict[str, tuple[object, list[PAEvent]]]:
    with open_store(url, create=False) as store:
        return {
            run_id: (store.load_latest(run_id), list(store.iter_events(run_id)))
            for run_id in store.list_runs()
        }


def _write_seed_sqlite(path: Path, rows: list[tuple[str, int, str, dict]], snapshots: dict) -> None:
    conn = sqlite3.connect(path)
    for statement in SEED_DDL:
        conn.execute(statement)
    for run_id, seq, kind, data in rows:
        event = {
            "run_id": run_id,
            "seq": seq,
            "kind": kind,
            "ts": 5.0 + seq,
            "lane_id": "main",
            "data": data,
        }
        conn.execute(
            "INSERT INTO events (run_id, seq, ts, kind, lane_id, data) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, seq, 5.0 + seq, kind, "main", json.dumps(event)),
        )
    for run_id, state in snapshots.items():
        conn.execute(
            "INSERT INTO snapshots (run_id, state) VALUES (?, ?)", (run_id, json.dumps(state))
        )
    conn.commit()
    conn.close()


@pytest.mark.sqlite
@pytest.mark.postgres
def test_copy_moves_every_run_between_sqlite_and_postgres(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sqlite_url = make_store_url(request, tmp_path, "sqlite")
    postgres_url = make_store_url(request, tmp_path, "postgres")
    _fill(sqlite_url)
    there = invoke("copy", sqlite_url, postgres_url, "--batch-size", "50")
    assert there.exit_code == 0, there.output
    assert "3 of 3" in there.stdout
    assert "360" in there.stdout
    assert "Verified: every run's event count, snapshot and group match the source." in there.stdout
    assert _contents(postgres_url) == _contents(sqlite_url)

    back = tmp_path / "back.db"
    result = invoke("copy", postgres_url, f"sqlite:///{back}", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["runs_copied"], report["events"], report["snapshots"]) == (3, 360, 3)
    assert _contents(f"sqlite:///{back}") == _contents(sqlite_url)
    # The destination lists runs in the source's order (most recently written first).
    with open_store(f"sqlite:///{back}", create=False) as copied:
        assert copied.list_runs() == ["run-2", "run-1", "run-0"]


def test_copy_interrupted_and_run_again_duplicates_nothing(store_url: str, tmp_path: Path) -> None:
    source = f"jsonl:{tmp_path / 'source'}"
    _fill(source, runs=2, events=300)
    with _copy_interrupted(source, store_url) as writer:
        # Two batches of the first run were committed, its snapshot not yet.
        assert len(writer.list_events("run-0")) == 200
        assert writer.load_latest("run-0") is None

    _copy_again(source, store_url)
    assert _contents(store_url) == _contents(source)
    with open_store(store_url, create=False) as writer:
        assert [e.seq for e in writer.iter_events("run-0")] == list(range(1, 301))


@contextmanager
def _copy_interrupted(source: str, dest: str) -> Iterator[Any]:
    """Copy in batches of 100 and stop with Ctrl-C after the second; the destination store."""
    calls = 0

    def interrupt(_: CopyProgress) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    with open_store(source, create=False) as reader, open_store(dest) as writer:
        with pytest.raises(KeyboardInterrupt):
            copy_runs(reader, writer, interrupt, batch_size=100)
        yield writer


def _copy_again(source: str, dest: str) -> None:
    """Run the interrupted copy again, from the command line."""
    again = invoke("copy", source, dest, "--batch-size", "100")
    assert again.exit_code == 0, again.output


def test_copy_streams_in_batches(tmp_path: Path) -> None:
    seen: list[CopyProgress] = []
    with open_store("memory:") as source, open_store(f"jsonl:{tmp_path / 'dest'}") as dest:
        source.save_events([_event("long", seq) for seq in range(1, 1001)])
        report = copy_runs(source, dest, seen.append, batch_size=100)
    assert report.ok
    # One progress report per batch of 100 written, and one at the end of the run.
    assert [p.events_done for p in seen] == [*range(100, 1001, 100), 1000]


@pytest.mark.sqlite
def test_copy_memory_stays_flat_whatever_the_length_of_a_run(tmp_path: Path) -> None:
    payload = "x" * 200
    with open_store(f"sqlite:///{tmp_path / 'source.db'}") as source:
        for start in range(1, 12_001, 4_000):
            source.save_events(
                [_event("long", seq, payload=payload) for seq in range(start, start + 4_000)]
            )
        with open_store(f"sqlite:///{tmp_path / 'dest.db'}") as dest:
            tracemalloc.start()
            try:
                report = copy_runs(source, dest, batch_size=500)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert report.ok
    assert report.events == 12_000
    # The run's events take about 23 MB as objects; the copy holds one batch of 500 at a time.
    assert peak < 10_000_000


@pytest.mark.sqlite
def test_copy_reads_a_seed_era_jsonl_folder(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for run_id in ("alpha", "beta"):
        (folder / run_id).mkdir(parents=True)
        with open(folder / run_id / "events.jsonl", "w") as log:
            for seq in range(1, 11):
                log.write(json.dumps(_event(run_id, seq, n=seq).to_dict()) + "\n")
    # A seed-era snapshot: no seq, a status of its own, a field RunState does not have.
    (folder / "alpha" / "snapshot.json").write_text(
        json.dumps(
            {"run_id": "alpha", "status": "completed", "messages": ["hi"], "data": {"k": 1}},
            indent=2,
        )
    )
    dest = f"sqlite:///{tmp_path / 'new.db'}"
    result = invoke("copy", f"jsonl:{folder}", dest)
    assert result.exit_code == 0, result.output
    assert "2 of 2" in result.stdout
    # One snapshot, each note counted once (the copy reads a snapshot again to see it stayed).
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "1 x snapshot without a valid seq: taken as 0, so recovery replays every event" in lines
    assert "1 x snapshot fields messages kept under data['_seed']" in lines
    with open_store(dest, create=False) as store:
        state = store.load_latest("alpha")
        assert state is not None
        assert (state.seq, state.status.value) == (0, "finished")
        assert state.data == {"k": 1, "_seed": {"messages": ["hi"]}}
        assert store.list_events("beta") == [_event("beta", seq, n=seq) for seq in range(1, 11)]


def test_copy_reports_seed_folders_the_jsonl_store_does_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for run_id in ("plain", "Run.A"):
        (folder / run_id).mkdir(parents=True)
        (folder / run_id / "events.jsonl").write_text(
            json.dumps(_event(run_id, 1).to_dict()) + "\n"
        )
        (folder / run_id / "snapshot.json").write_text(
            json.dumps({"run_id": run_id, "status": "done"})
        )
    dest = f"jsonl:{tmp_path / 'dest'}"
    result = invoke("copy", f"jsonl:{folder}", dest)
    assert result.exit_code == 1
    assert "1 of 2" in result.stdout
    expected = "FAILED 'Run.A': folder 'Run.A' is not read by the JSONL store; open the folder"
    assert f"{expected} once with JSONLCheckpointer, which renames it to '%52un%2E%41'" in (
        " ".join(result.stdout.split())
    )
    assert (folder / "Run.A").is_dir()  # the copy's source is only read

    JSONLCheckpointer(folder).close()
    assert sorted(path.name for path in folder.iterdir() if path.name[0] != ".") == [
        "%52un%2E%41",
        "plain",
    ]
    again = invoke("copy", f"jsonl:{folder}", dest)
    assert again.exit_code == 0, again.output
    with open_store(dest, create=False) as store:
        assert sorted(store.list_runs()) == ["Run.A", "plain"]
        state = store.load_latest("Run.A")
        assert state is not None
        assert state.status.value == "finished"


@pytest.mark.sqlite
def test_copy_reads_a_seed_era_sqlite_file_into_any_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.db"
    rows = [("one", seq, "tool_call", {"i": seq}) for seq in range(1, 6)]
    rows.append(("one", 3, "tool_call", {"i": 3}))  # the seed had no unique key: a retry
    rows += [("two", 1, "planning", {"p": 1})]  # a kind this package does not know
    _write_seed_sqlite(
        seed, rows, {"one": {"run_id": "one", "seq": 4, "status": "running", "data": {"x": 1}}}
    )

    listed = invoke("runs", "list", "--json", "--url", f"sqlite:///{seed}")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["store"] == f"seed-sqlite:{seed}"

    dest = f"sqlite:///{tmp_path / 'new.db'}"
    result = invoke("copy", f"sqlite:///{seed}", dest)
    assert result.exit_code == 0, result.output
    assert "event kind 'planning' unknown: stored as 'custom'" in result.stdout
    with open_store(dest, create=False) as store:
        assert [e.seq for e in store.list_events("one")] == [1, 2, 3, 4, 5]
        assert store.load_latest("one") == RunState(
            run_id="one", seq=4, status="running", data={"x": 1}, created_at=0.0, updated_at=0.0
        )
        (planning,) = store.list_events("two")
        assert (planning.kind, planning.data) == (
            EventKind.CUSTOM,
            {"p": 1, "seed_kind": "planning"},
        )
    # The seed file is untouched: still a seed file, read-only.
    assert sqlite3.connect(seed).execute("SELECT count(*) FROM events").fetchone() == (7,)
    refused = invoke("runs", "delete", "one", "--yes", "--url", f"seed-sqlite:{seed}")
    assert refused.exit_code == 1
    assert "read-only" in refused.stderr


@pytest.mark.sqlite
def test_copy_into_a_seed_era_file_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    seed = tmp_path / "seed.db"
    _write_seed_sqlite(seed, [("old", 1, "tool_call", {})], {})
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_store(source) as store:
        for run_id in ("a", "b", "c"):
            store.save_event(PAEvent(run_id=run_id, seq=1, kind=EventKind.CUSTOM))
    result = invoke("copy", source, f"seed-sqlite:{seed}")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "read-only" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    # An empty source too: nothing to copy is no reason to report a copy into it.
    empty = invoke("copy", "memory:", f"seed-sqlite:{seed}")
    assert empty.exit_code == 1
    assert "read-only" in empty.stderr


@pytest.mark.sqlite
def test_copy_reports_runs_it_cannot_copy_and_exits_non_zero(tmp_path: Path) -> None:
    seed = tmp_path / "seed.db"
    rows = [
        ("fine", 1, "tool_call", {}),
        ("clash", 1, "tool_call", {"v": 1}),
        ("clash", 1, "tool_call", {"v": 2}),
    ]
    _write_seed_sqlite(seed, rows, {})
    dest = f"sqlite:///{tmp_path / 'new.db'}"
    result = invoke("copy", f"seed-sqlite:{seed}", dest, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["runs_copied"] == 1
    assert [p["run_id"] for p in report["problems"]] == ["clash"]
    assert "already has a different event at seq 1" in report["problems"][0]["message"]
    assert result.stderr.strip() == "error: 1 of 2 runs were not copied completely"


def test_copy_verifies_counts_and_fails_on_a_mismatch(store_url: str, tmp_path: Path) -> None:
    source = f"jsonl:{tmp_path / 'source'}"
    _fill(source, runs=1, events=10)
    with open_store(store_url) as dest:
        dest.save_event(_event("run-0", 11, n=11))  # the destination already holds more
    result = invoke("copy", source, store_url)
    assert result.exit_code == 1
    assert "the source has 5 events after seq 5, the destination 6 after the copy" in result.stdout


def test_copy_of_a_run_compacted_while_it_is_copied_carries_the_newer_snapshot(
    store_url: str, tmp_path: Path
) -> None:
    """The source's agent moves on and a prune compacts the run after the copy's first batch.

    The copy had read the older snapshot; its stream then found only what the compaction
    left, and it reported success with the destination holding the older state.
    """
    source = f"jsonl:{tmp_path / 'source'}"
    _fill(source, runs=1, events=250)  # snapshot at 125
    with open_store(source, create=False) as reader, open_store(store_url) as writer:

        def live(progress: CopyProgress) -> None:
            if progress.events_done == 100 and reader.load_latest("run-0").seq == 125:
                reader.save_events(
                    [_event("run-0", seq, n=seq) for seq in range(251, 301)],
                    snapshot=RunState(run_id="run-0", seq=300, data={"moved": "on"}),
                )
                assert reader.compact("run-0") == 300

        report = copy_runs(reader, writer, live, batch_size=100)
        assert report.ok, report.problems
        copied = writer.recover("run-0")
        assert copied is not None
        assert copied.state is not None
        assert (copied.state.seq, copied.state.data, copied.events) == (300, {"moved": "on"}, [])
        assert copied == reader.recover("run-0")


def test_copy_run_again_after_the_source_was_pruned_verifies(
    store_url: str, tmp_path: Path
) -> None:
    source = f"jsonl:{tmp_path / 'source'}"
    _fill(source, runs=2, events=10)  # snapshots at 5
    assert invoke("copy", source, store_url).exit_code == 0
    assert invoke("prune", "--covered", "--url", source).exit_code == 0
    with open_store(source, create=False) as reader:
        assert [e.seq for e in reader.list_events("run-0")] == list(range(6, 11))
    again = invoke("copy", source, store_url)
    assert again.exit_code == 0, again.output
    with open_store(source, create=False) as reader, open_store(store_url) as writer:
        for run_id in ("run-0", "run-1"):
            assert writer.recover(run_id) == reader.recover(run_id)


def test_copy_refuses_to_copy_a_store_onto_itself(store_url: str) -> None:
    result = invoke("copy", store_url, store_url)
    assert result.exit_code == 1
    assert "source and destination are the same store" in result.stderr


def test_copy_recognises_one_folder_under_two_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    result = invoke("copy", "jsonl:./runs", f"jsonl:{tmp_path / 'runs'}")
    assert result.exit_code == 1
    assert "source and destination are the same store" in result.stderr


@pytest.mark.sqlite
def test_copy_upgrades_a_seed_sqlite_file_in_place(tmp_path: Path) -> None:
    seed = tmp_path / "seed.db"
    _write_seed_sqlite(seed, [("one", seq, "tool_call", {"i": seq}) for seq in (1, 2)], {})
    result = invoke("copy", f"seed-sqlite:{seed}", f"sqlite:///{seed}")
    assert result.exit_code == 0, result.output
    with open_store(f"sqlite:///{seed}", create=False) as store:
        assert [e.data for e in store.list_events("one")] == [{"i": 1}, {"i": 2}]
    tables = {row[0] for row in sqlite3.connect(seed).execute("SELECT name FROM sqlite_master")}
    assert {"events", "snapshots", "pa_events", "pa_snapshots", "pa_runs"} <= tables


def test_the_seeds_default_file_with_runs_is_not_passed_over_by_a_new_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PURPOSE_AGENT_DB_URL", raising=False)
    seed = tmp_path / "purpose_agent_checkpoints.db"
    _write_seed_sqlite(seed, [], {})
    SQLiteCheckpointer().close()  # the seed's file holds no runs: nothing to pass over
    (tmp_path / "purpose_agent.db").unlink()
    seed.unlink()
    _write_seed_sqlite(seed, [("one", seq, "tool_call", {"i": seq}) for seq in (1, 2)], {})

    with pytest.raises(SeedDefaultDatabase) as caught:
        SQLiteCheckpointer()
    command = (
        "purpose-agent copy seed-sqlite:purpose_agent_checkpoints.db sqlite:///purpose_agent.db"
    )
    assert f"import them with `{command}`" in str(caught.value)
    assert not (tmp_path / "purpose_agent.db").exists()
    with pytest.raises(SeedFormatDatabase):  # a path given opens that file: the seed's format
        SQLiteCheckpointer(seed.name)

    result = invoke(*command.split()[1:])
    assert result.exit_code == 0, result.output
    with SQLiteCheckpointer() as store:
        assert [e.data for e in store.list_events("one")] == [{"i": 1}, {"i": 2}]


# -- keys and groups ----------------------------------------------------------------------------


def _fill_keyed(store: Any, big: int = 250) -> None:
    """Runs with keyed and unkeyed events, in groups and not, with and without snapshots."""
    store.append(
        "big",
        [
            NewEvent(kind=EventKind.TOOL_CALL, data={"i": i}, key=f"call-{i}" if i % 2 else None)
            for i in range(big)
        ],
        group="conversation-2",
    )
    for turn in range(3):
        store.append(
            "chat-a",
            [
                NewEvent(kind=EventKind.MESSAGE, data={"turn": turn}, key=f"msg-{turn}"),
                NewEvent(kind=EventKind.MODEL_RESPONSE, data={"text": f"reply {turn}"}),
            ],
            group="conversation-1",
            snapshot=RunState(run_id="chat-a", data={"turns": turn + 1}),
        )
    store.append("chat-b", [NewEvent(kind=EventKind.CUSTOM, key="only")], group="conversation-1")
    store.save_events([_event("plain", seq, n=seq) for seq in range(1, 6)])


def _keyed_contents(store: Any) -> dict[str, object]:
    """Everything a copy must carry: runs in order, events with keys, snapshots and groups."""
    runs = store.list_runs()
    return {
        "runs": runs,
        "events": {run_id: list(store.iter_keyed_events(run_id)) for run_id in runs},
        "snapshots": {run_id: store.load_latest(run_id) for run_id in runs},
        "groups": {run_id: store.run_group(run_id) for run_id in runs},
        "by_group": {group: store.list_runs(group=group) for group in store.list_groups()},
    }


def _assert_keys_found(store: Any, contents: dict[str, Any]) -> None:
    keyed = 0
    for run_id, items in contents["events"].items():
        for item in items:
            if item.key is not None:
                assert store.event_by_key(run_id, item.key) == item.event
                keyed += 1
    assert keyed > 0


@pytest.mark.sqlite
@pytest.mark.postgres
@pytest.mark.mariadb
def test_copy_keeps_keys_and_groups_from_sqlite_to_postgres_to_mariadb_and_back(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    first = make_store_url(request, tmp_path, "sqlite")
    with open_store(first) as store:
        _fill_keyed(store)
        expected = _keyed_contents(store)
    assert expected["by_group"] == {
        "conversation-2": ["big"],
        "conversation-1": ["chat-b", "chat-a"],
    }
    hops = [
        first,
        make_store_url(request, tmp_path, "postgres"),
        make_store_url(request, tmp_path, "mariadb"),
        f"sqlite:///{tmp_path / 'back.db'}",
    ]
    for source, dest in itertools.pairwise(hops):
        result = invoke("copy", source, dest, "--batch-size", "100")
        assert result.exit_code == 0, result.output
        assert "Verified: every run's event count, snapshot and group match" in result.stdout
        with open_store(dest, create=False) as copied:
            assert _keyed_contents(copied) == expected
            _assert_keys_found(copied, expected)


def test_copy_keeps_keys_and_groups_between_memory_and_jsonl(tmp_path: Path) -> None:
    memory = InMemoryCheckpointer()
    _fill_keyed(memory)
    expected = _keyed_contents(memory)
    with open_store(f"jsonl:{tmp_path / 'files'}") as files:
        report = copy_runs(memory, files, batch_size=64)
        assert report.ok, report.problems
        assert report.notes == {}
        assert _keyed_contents(files) == expected
        _assert_keys_found(files, expected)
        back = InMemoryCheckpointer()
        assert copy_runs(files, back, batch_size=64).ok
    assert _keyed_contents(back) == expected
    _assert_keys_found(back, expected)

    # A JSONL folder on the command line is read through its seed-era view: the keys stay.
    result = invoke("copy", f"jsonl:{tmp_path / 'files'}", f"jsonl:{tmp_path / 'again'}")
    assert result.exit_code == 0, result.output
    with open_store(f"jsonl:{tmp_path / 'again'}", create=False) as again:
        assert _keyed_contents(again) == expected


def test_copy_interrupted_and_run_again_keeps_keys_and_groups(
    store_url: str, tmp_path: Path
) -> None:
    source = f"jsonl:{tmp_path / 'source'}"
    with open_store(source) as store:
        _fill_keyed(store, big=300)
        expected = _keyed_contents(store)
    with _copy_interrupted(source, store_url) as writer:
        # The oldest run is copied first: two of its three batches are in, with their keys.
        assert writer.list_runs() == ["big"]
        partial = list(writer.iter_keyed_events("big"))
        assert partial == expected["events"]["big"][:200]
        assert writer.event_by_key("big", "call-199") == partial[199].event
        assert writer.event_by_key("big", "call-201") is None
        assert writer.run_group("big") == "conversation-2"

    _copy_again(source, store_url)
    with open_store(store_url, create=False) as copied:
        assert _keyed_contents(copied) == expected
        _assert_keys_found(copied, expected)


def test_copy_reports_a_stored_event_under_another_key_as_a_conflict(
    store_url: str, tmp_path: Path
) -> None:
    source = f"jsonl:{tmp_path / 'source'}"
    with open_store(source) as store:
        (event,) = store.append("run", [NewEvent(kind=EventKind.CUSTOM, key="mine", ts=1.0)])
        store.append("other", [NewEvent(kind=EventKind.CUSTOM, key="fine")])
    with open_store(store_url) as dest:
        dest.save_keyed_events("run", [KeyedEvent(event, "theirs")])
    result = invoke("copy", source, store_url, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["runs_copied"] == 1
    assert report["problems"] == [
        {
            "run_id": "run",
            "message": "run 'run' already has this event at seq 1 with key 'theirs', not "
            "'mine'; nothing was written",
        }
    ]


class _BaseOnly:
    """A store written against the Checkpointer protocol alone: no keys, no groups."""

    def __init__(self) -> None:
        self._inner = InMemoryCheckpointer()

    def save_event(self, event: PAEvent) -> None:
        self._inner.save_event(event)

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        self._inner.save_events(events, snapshot)

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        self._inner.save_snapshot(run_id, state)

    def load_latest(self, run_id: str) -> RunState | None:
        return self._inner.load_latest(run_id)

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        return self._inner.list_events(run_id, since_seq, limit)

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        return self._inner.iter_events(run_id, since_seq)

    def recover(self, run_id: str) -> Recovery | None:
        return self._inner.recover(run_id)

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        return self._inner.list_runs(limit, offset=offset)

    def delete_run(self, run_id: str) -> None:
        self._inner.delete_run(run_id)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _BaseOnly:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def test_copy_to_and_from_a_store_without_keys_copies_the_events_and_counts_what_it_drops() -> None:
    keyed = InMemoryCheckpointer()
    _fill_keyed(keyed, big=10)
    expected = _keyed_contents(keyed)
    plain = _BaseOnly()
    assert isinstance(plain, Checkpointer)
    report = copy_runs(keyed, plain, batch_size=4)
    assert report.ok, report.problems
    # Keys: 3 in chat-a, 1 in chat-b, 5 in big; groups: chat-a, chat-b and big.
    assert report.notes == {KEYS_DROPPED: 9, GROUP_DROPPED: 3}
    assert plain.list_runs() == expected["runs"]
    for run_id, items in expected["events"].items():
        assert plain.list_events(run_id) == [item.event for item in items]

    back = InMemoryCheckpointer()
    report = copy_runs(plain, back, batch_size=4)
    assert report.ok, report.problems
    assert report.notes == {}
    assert all(item.key is None for item in back.iter_keyed_events("big"))
    assert back.list_groups() == []


# -- a LangGraph thread -------------------------------------------------------------------------


def _saver_history(saver: Any, thread_ids: list[str], checkpoint_ids: list[str]) -> object:
    """What a LangGraph saver answers about threads: each checkpoint by id, and the listings."""
    config = {"configurable": {"checkpoint_ns": ""}}
    by_id = [
        saver.get_tuple(
            {"configurable": {**config["configurable"], "thread_id": thread, "checkpoint_id": cid}}
        )
        for thread, cid in zip(thread_ids, checkpoint_ids, strict=True)
    ]
    assert all(found is not None for found in by_id)
    listings = {
        thread: list(saver.list({"configurable": {"thread_id": thread}}))
        for thread in sorted(set(thread_ids))
    }
    latest = {
        thread: saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
        for thread in sorted(set(thread_ids))
    }
    return by_id, listings, latest


def test_copy_of_a_langgraph_thread_answers_by_checkpoint_id_and_lists_the_same(
    store_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("langgraph.checkpoint.base")
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    from purpose_agent.integrations.langgraph import PurposeAgentSaver

    threads: list[str] = []
    ids: list[str] = []
    source = f"jsonl:{tmp_path / 'source'}"
    with open_store(source) as store:
        saver = PurposeAgentSaver(store)
        for thread in ("t-1", "t-2"):
            parent: str | None = None
            for step in range(4):
                checkpoint = empty_checkpoint()
                checkpoint["id"] = str(uuid6())
                checkpoint["channel_values"] = {"step": step, "thread": thread}
                checkpoint["channel_versions"] = {"step": step + 1, "thread": 1}
                configurable = {"thread_id": thread, "checkpoint_ns": ""}
                if parent is not None:
                    configurable["checkpoint_id"] = parent
                saved = saver.put(
                    {"configurable": configurable},
                    checkpoint,
                    {"source": "loop", "step": step},
                    {},
                )
                saver.put_writes(saved, [("step", step), ("log", f"{thread}:{step}")], "task-1")
                threads.append(thread)
                ids.append(str(checkpoint["id"]))
                parent = ids[-1]
        expected = _saver_history(saver, threads, ids)

    there = invoke("copy", source, store_url, "--batch-size", "3")
    assert there.exit_code == 0, there.output
    with open_store(store_url, create=False) as copied:
        assert _saver_history(PurposeAgentSaver(copied), threads, ids) == expected

    back = f"jsonl:{tmp_path / 'back'}"
    result = invoke("copy", store_url, back)
    assert result.exit_code == 0, result.output
    with open_store(back, create=False) as copied_back:
        assert _saver_history(PurposeAgentSaver(copied_back), threads, ids) == expected


@pytest.mark.parametrize("dest", ["memory:", "sqlite://", "sqlite:///:memory:"])
def test_copy_into_an_in_memory_store_is_refused(tmp_path: Path, dest: str) -> None:
    """The copy was verified and reported with status 0, then gone with the process."""
    source = f"jsonl:{tmp_path / 'source'}"
    _fill(source, runs=1, events=2)
    result = invoke("copy", source, dest)
    assert result.exit_code == 1
    (said,) = result.stderr.splitlines()
    assert said.startswith("error: the destination ")
    assert "is an in-memory store, which does not outlive the command" in said
    assert result.stdout == ""
