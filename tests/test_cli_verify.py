"""`purpose-agent runs verify`: every damaged record named, the rest read, exit 1 on damage.

Which damage each backend reports, and how, is ``tests/test_damage.py``'s; here the command
runs on SQL stores and on a JSONL folder, whose reads fail differently (a damaged line stops
the reads of its run there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import CorruptRecord, EventKind, NewEvent, PAEvent, RunState
from purpose_agent.ops.verify import VerifyProgress, verify_runs
from purpose_agent.stores.open import open_store
from tests.sqlite_pages import ruin_page
from tests.test_cli_support import STORES, invoke, make_store_url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request, tmp_path, request.param)


def _fill(url: str) -> None:
    """Runs a and b of group g (3 and 2,500 events, with snapshots), and run c of no group."""
    with open_store(url) as store:
        for run_id, events in (("a", 3), ("b", 2_500)):
            store.save_keyed_events(
                run_id,
                [
                    (PAEvent(run_id=run_id, seq=i, kind=EventKind.TOOL_CALL, data={"i": i}), None)
                    for i in range(1, events + 1)
                ],
                snapshot=RunState(run_id=run_id, seq=events),
                group="g",
            )
        store.save_event(PAEvent(run_id="c", seq=1, kind=EventKind.MESSAGE))


def _damage(url: str, statement: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        assert conn.exec_driver_sql(statement).rowcount == 1
    engine.dispose()


def test_a_store_with_nothing_damaged_exits_0_and_says_what_it_read(store_url: str) -> None:
    _fill(store_url)
    result = invoke("runs", "verify", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert ": 2,504 events and 2 snapshots read back; nothing is damaged." in result.stdout
    assert "Read 3 runs in" in result.stdout


def test_each_damaged_record_is_listed_and_the_exit_status_is_1(store_url: str) -> None:
    _fill(store_url)
    _damage(store_url, "UPDATE pa_events SET data = '{x' WHERE run_id = 'b' AND seq = 7")
    _damage(store_url, "UPDATE pa_events SET kind = 'nope' WHERE run_id = 'b' AND seq = 1999")
    _damage(store_url, "UPDATE pa_snapshots SET state = '[1' WHERE run_id = 'a'")
    result = invoke("runs", "verify", "--url", store_url)
    assert result.exit_code == 1, result.output
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    assert [row[:3] for row in rows] == [
        ["b", "event", "7"],
        ["b", "event", "1999"],
        ["a", "snapshot", "3"],
    ]
    assert "not JSON" in rows[0][3]
    assert "unknown event kind 'nope'" in rows[1][3]
    assert "2,502 events and 1 snapshot read back; 3 damaged records in 2 runs." in result.stdout
    assert result.stderr == "error: 3 damaged records in 2 runs of 3\n"


def test_json_report_and_a_group_narrow_the_read(store_url: str) -> None:
    _fill(store_url)
    _damage(store_url, "UPDATE pa_events SET data = '[]' WHERE run_id = 'c' AND seq = 1")
    result = invoke("runs", "verify", "--group", "g", "--json", "--url", store_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["runs"], report["events"], report["damaged"]) == (
        True,
        2,
        2_503,
        [],
    )
    result = invoke("runs", "verify", "--prefix", "c", "--json", "--url", store_url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["damaged"] == [
        {
            "run_id": "c",
            "record": "event",
            "seq": 1,
            "detail": report["damaged"][0]["detail"],
        }
    ]
    assert "not an object" in report["damaged"][0]["detail"]


def test_a_damaged_jsonl_line_is_named_once_and_the_other_runs_are_read(tmp_path: Path) -> None:
    url = f"jsonl:{tmp_path / 'runs'}"
    with open_store(url) as store:
        for run_id in ("a", "b"):
            for seq in range(1, 6):
                store.save_event(
                    PAEvent(run_id=run_id, seq=seq, kind=EventKind.TOOL_CALL, data={"i": seq})
                )
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=3))
    log = tmp_path / "runs" / "a" / "events.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"i":2}', b'"i":#}'))
    result = invoke("runs", "verify", "--json", "--url", url)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    # The snapshot of run a is checked against its log, so it fails on the same line: one record.
    assert [(d["run_id"], d["record"], d["seq"]) for d in report["damaged"]] == [("a", "event", 2)]
    assert (report["runs"], report["snapshots"]) == (2, 1)
    assert report["events"] >= 5  # run b's; a JSONL run is not read past a damaged line


def test_progress_is_told_after_each_run(store_url: str) -> None:
    _fill(store_url)
    seen: list[VerifyProgress] = []
    with open_store(store_url) as store:
        report = verify_runs(store, progress=seen.append)
    assert [(step.runs_done, step.runs_total) for step in seen] == [(1, 3), (2, 3), (3, 3)]
    assert [step.run_id for step in seen] == ["c", "b", "a"]  # most recently written first
    assert seen[-1].events_done == report.events == 2_504


def test_the_progress_bar_shown_on_a_terminal_leaves_the_report_as_it_is(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store_url)
    plain = invoke("runs", "verify", "--url", store_url)

    class Terminal:
        stderr = type("Stderr", (), {"isatty": staticmethod(lambda: True)})()

    monkeypatch.setattr("purpose_agent.cli.verify.sys", Terminal)
    moves: list[tuple[int, int]] = []
    original = verify_runs

    def watched(*args: Any, **kwargs: Any) -> Any:
        progress = args[2]
        assert progress is not None  # the bar's callback, given because stderr is a terminal

        def both(step: VerifyProgress) -> None:
            moves.append((step.runs_done, step.runs_total))
            progress(step)

        return original(args[0], args[1], both)

    monkeypatch.setattr("purpose_agent.cli.verify.verify_runs", watched)
    shown = invoke("runs", "verify", "--url", store_url)
    assert shown.exit_code == plain.exit_code == 0
    assert shown.stdout == plain.stdout
    assert moves == [(1, 3), (2, 3), (3, 3)]


def test_a_store_written_compacted_and_pruned_meanwhile_reads_as_undamaged(store_url: str) -> None:
    """Writers append, compact and delete runs while ``verify`` reads: nothing is damaged."""
    import threading

    _fill(store_url)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(store: Any, index: int) -> None:
        try:
            step = 0
            while not stop.is_set():
                step += 1
                run_id = f"live-{index}-{step % 5}"
                events = [PAEvent(run_id=run_id, seq=1, kind=EventKind.MESSAGE)]
                store.save_events(events, snapshot=RunState(run_id=run_id, seq=1))
                store.append(run_id, [NewEvent(kind=EventKind.TOOL_CALL, data={"s": step})])
                store.compact(run_id)
                if step % 3 == 0:
                    store.delete_run(run_id)
        except BaseException as exc:  # reported below
            failures.append(exc)

    with open_store(store_url) as store:
        writers = [threading.Thread(target=write, args=(store, i)) for i in range(2)]
        for writer in writers:
            writer.start()
        try:
            reports = [verify_runs(store) for _ in range(5)]
        finally:
            stop.set()
            for writer in writers:
                writer.join(30)
    assert not failures, failures
    for report in reports:
        assert report.damaged == []
        assert report.events >= 2_504  # the filled runs, never touched by the writers


def test_a_damaged_page_of_an_index_no_run_read_uses_is_found_in_a_sqlite_file(
    tmp_path: Path,
) -> None:
    """Reading every run back goes through the primary key only: a page of the event-key
    index overwritten by bit rot passed as "nothing is damaged", to break a later lookup."""
    path = tmp_path / "rot.db"
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        for n in range(20):
            store.append(f"run-{n}", [NewEvent(kind=EventKind.CUSTOM, key=f"k{n}")])
    sound = invoke("runs", "verify", "--url", url)
    assert sound.exit_code == 0, sound.stdout
    ruin_page(path, "SELECT rootpage FROM sqlite_master WHERE name = 'uq_pa_events_run_id_key'")

    result = invoke("runs", "verify", "--json", "--url", url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["events"] == 20
    assert report["damaged_runs"] == 0
    assert [damage["record"] for damage in report["damaged"]][:1] == ["file"]
    assert all(
        damage["detail"].startswith("SQLite's quick_check: ") for damage in report["damaged"]
    )
    shown = invoke("runs", "verify", "--url", url)
    assert "The SQLite file's own pages are damaged" in shown.stdout


def _sqlite_with_a_damaged_page(tmp_path: Path, table: str) -> tuple[str, list[str]]:
    """A SQLite store of 30 runs with one leaf page of ``table`` overwritten (the middle one)."""
    path = tmp_path / "damaged.db"
    url = f"sqlite:///{path}"
    run_ids = [f"run-{n:02}" for n in range(30)]
    with open_store(url) as store:
        for run_id in run_ids:
            store.save_events(
                [
                    PAEvent(run_id=run_id, seq=i, kind=EventKind.TOOL_CALL, data={"x": "y" * 200})
                    for i in range(1, 41)
                ]
            )
    ruin_page(
        path,
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
        table,
    )
    return url, run_ids


def test_runs_on_a_damaged_sqlite_page_are_reported_and_the_others_read(tmp_path: Path) -> None:
    """A damaged page stopped the whole verification with one StoreUnavailable line."""
    url, run_ids = _sqlite_with_a_damaged_page(tmp_path, "pa_events")
    result = invoke("runs", "verify", "--json", "--url", url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["runs"] == len(run_ids)
    damaged = {d["run_id"] for d in report["damaged"] if d["record"] == "event"}
    assert damaged
    assert damaged < set(run_ids)
    assert report["events"] >= 40 * (len(run_ids) - len(damaged))
    assert any(d["record"] == "file" for d in report["damaged"])
    with open_store(url, create=False) as store:
        for run_id in run_ids:
            if run_id in damaged:
                with pytest.raises(CorruptRecord, match="storage damaged"):
                    store.list_events(run_id)
            else:
                assert len(store.list_events(run_id)) == 40


def test_a_damaged_page_of_the_runs_table_still_gives_the_page_checks_report(
    tmp_path: Path,
) -> None:
    url, _ = _sqlite_with_a_damaged_page(tmp_path, "pa_runs")
    result = invoke("runs", "verify", "--json", "--url", url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    details = [d["detail"] for d in report["damaged"]]
    assert details[0].startswith("SQLite's quick_check: ")
    assert details[-1].startswith("the runs cannot be listed: ")


def test_runs_whose_row_is_missing_or_behind_their_events_are_reported_and_read(
    store_url: str,
) -> None:
    """Listings and retention go by the runs' rows: a run whose row was lost (the events table
    restored alone, a manual fix) passed as "nothing is damaged" and was never read."""
    _fill(store_url)
    with open_store(store_url) as store:
        store.save_snapshot("d", RunState(run_id="d", seq=0))
    _damage(store_url, "DELETE FROM pa_runs WHERE run_id = 'a'")
    _damage(store_url, "DELETE FROM pa_runs WHERE run_id = 'd'")
    _damage(store_url, "UPDATE pa_runs SET last_seq = 7 WHERE run_id = 'b'")

    result = invoke("runs", "verify", "--json", "--url", store_url)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["runs"] == 4  # b and c, listed; a and d, found by their rows' absence
    assert report["events"] == 2_504
    damaged = {(d["run_id"], d["record"]): d["detail"] for d in report["damaged"]}
    assert set(damaged) == {("a", "run"), ("b", "run"), ("d", "run")}
    assert "stores events up to seq 3 but has no run row" in damaged["a", "run"]
    assert "stores a snapshot but has no run row" in damaged["d", "run"]
    assert "last seq is 7 but it stores events up to seq 2500" in damaged["b", "run"]

    only_b = invoke("runs", "verify", "--group", "g", "--json", "--url", store_url)
    assert [(d["run_id"], d["record"]) for d in json.loads(only_b.stdout)["damaged"]] == [
        ("b", "run")
    ]

    with open_store(store_url) as store:  # what the detail promises repairs each
        store.append("a", [NewEvent(kind=EventKind.CUSTOM)])
        store.append("b", [NewEvent(kind=EventKind.CUSTOM)])
        store.delete_run("d")
    repaired = invoke("runs", "verify", "--url", store_url)
    assert repaired.exit_code == 0, repaired.output
