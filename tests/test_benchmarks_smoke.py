"""The benchmark script runs end to end at tiny sizes, so that it cannot rot.

Timings are never asserted: only that every case ran and produced every figure, positive.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

EXPECTED_CASES = {
    "append_single",
    "append_batch_100",
    "append_batch_1000",
    "snapshot_1KB",
    "snapshot_100KB",
    "snapshot_1MB",
    "bulk_load_1000",
    "recover",
    "list_events_200",
    "list_events_page",
    "iter_events_2000",
    "concurrent_threads_1",
    "concurrent_threads_2",
    "concurrent_processes_2",
}


# Figures that may rightly be zero or negative: memory growth between two passes.
MAY_BE_ZERO = {"rss_growth_mb"}


def _positive_numbers(value: object, where: str) -> None:
    """Every number in a case's sides and params is finite and above zero."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        assert math.isfinite(value), where
        if where.rsplit(".", 1)[-1] not in MAY_BE_ZERO:
            assert value > 0, where
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _positive_numbers(child, f"{where}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _positive_numbers(child, f"{where}[{index}]")


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--profile",
            "smoke",
            "--backends",
            "sqlite",
            "--plain",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "append_single" in done.stdout  # the table was printed
    return json.loads(out.read_text())


def test_smoke_run_reports_every_case_with_positive_rates(smoke_report: dict) -> None:
    cases = {case["case"]: case for case in smoke_report["backends"]["sqlite"]["cases"]}
    assert set(cases) == EXPECTED_CASES
    for name, case in cases.items():
        assert case["error"] is None, f"{name}: {case['error']}"
        assert "store" in case["sides"], name
        assert "raw" in case["sides"], name
        for label, side in case["sides"].items():
            assert side["rate"] > 0, f"{name}/{label}"
            assert side["units"] > 0, f"{name}/{label}"
            assert side["seconds"] > 0, f"{name}/{label}"
        assert case["ratios"]["raw"] > 0, name
        _positive_numbers(case["sides"], f"{name}.sides")
        _positive_numbers(case["params"], f"{name}.params")
        _positive_numbers(case["ratios"], f"{name}.ratios")


def test_smoke_run_measures_the_seed_and_peak_memory(smoke_report: dict) -> None:
    cases = {case["case"]: case for case in smoke_report["backends"]["sqlite"]["cases"]}
    seed_path = smoke_report["backends"]["sqlite"]["seed"]
    if "skipped" in seed_path:
        pytest.skip(seed_path["skipped"])
    for name in ("append_single", "snapshot_1KB", "recover", "list_events_200"):
        assert cases[name]["ratios"]["seed"] > 0, name
    for label in ("store", "raw"):
        side = cases["iter_events_2000"]["sides"][label]
        assert side["rss_peak_mb_small"] > 0
        assert side["rss_peak_mb_big"] > 0
        assert "rss_growth_mb" in side
    for name in ("snapshot_1KB", "snapshot_1MB"):
        for side in cases[name]["sides"].values():
            assert side["save_ops_per_s"] > 0
            assert side["load_ops_per_s"] > 0


def test_smoke_run_records_the_machine_and_judges_every_target(smoke_report: dict) -> None:
    machine = smoke_report["machine"]
    assert machine["cores"] > 0
    assert machine["cpu_model"]
    assert machine["python"]
    assert machine["sqlite_version"]
    settings = smoke_report["backends"]["sqlite"]
    assert settings["raw_settings"]["journal_mode"] == settings["store_settings"]["journal_mode"]
    assert settings["raw_settings"]["synchronous"] == settings["store_settings"]["synchronous"]
    targets = smoke_report["targets"]
    assert targets
    if "skipped" in settings["seed"]:
        # Without the seed module beside the checkout, its comparisons have nothing to judge.
        targets = [t for t in targets if not t["metric"].endswith(":seed")]
    assert all(t["met"] in (True, False) for t in targets)
    assert all(t["value"] is not None and t["value"] > 0 for t in targets if t["op"] == ">=")


def test_runs_row_study_writes_each_layout_as_it_says(tmp_path: Path) -> None:
    """``benchmarks.runs_row``: every layout's appends land, with the run row it claims."""
    import sqlite3

    from benchmarks import runs_row

    appenders = {
        name: runs_row._sqlite_appender(str(tmp_path / f"{index}.db"), name)
        for index, name in enumerate(runs_row.SQLITE_LAYOUTS)
    }
    figures = runs_row._measure(appenders, seconds=0.02)
    assert set(figures) == set(runs_row.SQLITE_LAYOUTS)
    assert all(figure["events_per_s"] > 0 for figure in figures.values())
    for index, name in enumerate(runs_row.SQLITE_LAYOUTS):
        conn = sqlite3.connect(tmp_path / f"{index}.db")
        count, last = conn.execute("SELECT count(*), max(seq) FROM e").fetchone()
        assert count == last >= 50, name  # one round of 50 appends at least, no gaps
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if name == "events only":
            assert "r" not in tables
            continue
        (run_last,) = conn.execute("SELECT last_seq FROM r").fetchone()
        assert run_last == (1 if name == "run row once" else last), name
        conn.close()


def _rows_in(folder: Path, tables: dict[str, str]) -> dict[str, int]:
    """The rows of each ``<name>.db``'s table in ``folder``, by name."""
    import sqlite3

    counts = {}
    for name, table in tables.items():
        with contextlib.closing(sqlite3.connect(folder / f"{name}.db")) as conn:
            counts[name] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return counts


def test_held_writes_study_runs_both_store_paths_and_each_stores_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``benchmarks.held_writes``: each side writes every event, the store sides by their paths."""

    from benchmarks import held_writes
    from purpose_agent import PAEvent, SQLCheckpointer
    from purpose_agent.db.transactions import Transactions

    figures = held_writes.measure(tmp_path, rounds=2, per_round=20)
    assert set(figures) == set(held_writes.SIDES)
    assert all(side["events_per_s"] > 0 and side["of_raw"] > 0 for side in figures.values())
    counts = _rows_in(tmp_path, {"raw": "raw_events", "store": "pa_events", "old": "pa_events"})
    assert counts == {"raw": 40, "store": 40, "old": 40}

    def refuse(*_args: object) -> None:
        raise AssertionError("the one-call write")

    monkeypatch.setattr(Transactions, "write_on_cursor", refuse)
    event = PAEvent(run_id="r", seq=1, kind="custom")
    with held_writes.PerStatementSQLCheckpointer(f"sqlite:///{tmp_path / 'a.db'}") as old:
        old.save_event(event)  # statement by statement: never the one-call write
        assert old.list_events("r") == [event]
    with (
        SQLCheckpointer(f"sqlite:///{tmp_path / 'b.db'}") as store,
        pytest.raises(AssertionError, match="one-call"),
    ):
        store.save_event(event)


def test_busy_process_study_stores_every_step_and_its_row_by_row_side_is_its_own(
    tmp_path: Path,
) -> None:
    """``benchmarks.busy_process``: every side stores every call; only one side goes row by row."""

    import sqlalchemy as sa

    from benchmarks import busy_process
    from purpose_agent import PAEvent, SQLCheckpointer

    figures = busy_process.measure(tmp_path, threads=1, rounds=2, per_round=3)
    sides = busy_process.SIDES
    assert set(figures) == {f"{op}/{side}" for op in busy_process.OPS for side in sides}
    assert all(side["per_s"] > 0 and side["p99_ms"] >= side["p50_ms"] for side in figures.values())
    # Per side: 2 rounds of 3 steps of 7 events, of 3 single events and of 1 batch of 231.
    counts = _rows_in(tmp_path, {"raw": "raw_events", "store": "pa_events", "rows": "pa_events"})
    assert counts == {"raw": 510, "store": 510, "rows": 510}

    def inserts(store_class: type[SQLCheckpointer], name: str) -> int:
        seen: list[str] = []
        engine = sa.create_engine(f"sqlite:///{tmp_path / name}")
        sa.event.listen(
            engine, "connect", lambda dbapi, _record: dbapi.set_trace_callback(seen.append)
        )
        with store_class(engine) as store:
            events = [PAEvent(run_id="r", seq=seq, kind="custom") for seq in range(1, 9)]
            store.save_events(events)
            assert store.list_events("r") == events
        engine.dispose()
        return sum(1 for sql in seen if sql.startswith("INSERT INTO pa_events"))

    assert inserts(busy_process.RowByRowSQLCheckpointer, "rows-8.db") == 8
    # The store's shared statements were not changed by the row-by-row store's copies.
    assert inserts(SQLCheckpointer, "store-8.db") == 1


def test_busy_loop_study_keeps_to_its_budget_and_on_loop_finishes_every_step(
    tmp_path: Path,
) -> None:
    """``benchmarks.busy_loop``: the sides that wait for aiosqlite's thread may starve."""
    import sqlite3

    from benchmarks import busy_loop

    figures = busy_loop.measure(tmp_path, steps=3, budget=2.0, slice_s=0.001)
    assert set(figures) == set(busy_loop.SIDES)
    assert figures["async store, on_loop"]["steps_done"] == 3
    files = {
        "raw aiosqlite": ("raw-aiosqlite.db", "raw_events"),
        "async store": ("async-store.db", "pa_events"),
        "async store, on_loop": ("async-store,-on_loop.db", "pa_events"),
    }
    for side, (name, table) in files.items():
        done = figures[side]["steps_done"]
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = 'r'").fetchone()[0]
        # Every step reported done is stored; a step stopped at the budget may be stored too.
        assert 7 * done <= stored <= 7 * (done + 1), side
