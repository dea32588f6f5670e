"""The LangGraph saver benchmark runs end to end at tiny sizes, so that it cannot rot.

Timings are never asserted: only that both savers ran every operation and produced every
figure, finite and above zero.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")
pytest.importorskip("langgraph.checkpoint.postgres")

from benchmarks import langgraph_savers
from tests.servers import server_url

FIGURES = {*langgraph_savers.OPS, "first_get_tuple_ms"}


def _figures(
    main: Callable[[list[str]], int], tmp_path: Path, backend: str, argv: list[str]
) -> dict[str, dict[str, float]]:
    """A benchmark's figures for one backend, run with ``argv`` and written as JSON."""
    out = tmp_path / "figures.json"
    assert main([*argv, "--backends", backend, "--json", str(out)]) == 0
    results: dict[str, dict[str, dict[str, float]]] = json.loads(out.read_text())
    assert list(results) == [backend]
    return results[backend]


def _run(tmp_path: Path, backend: str, *extra: str) -> dict[str, dict[str, float]]:
    argv = ["--checkpoints", "12", "--reads", "5", *extra]
    return _figures(langgraph_savers.main, tmp_path, backend, argv)


def _assert_complete(figures: dict[str, dict[str, float]], theirs: str) -> None:
    assert set(figures) == {"PurposeAgentSaver", theirs}
    for saver, values in figures.items():
        assert set(values) == FIGURES, saver
        assert all(math.isfinite(v) and v > 0 for v in values.values()), (saver, values)


@pytest.mark.sqlite
def test_benchmark_measures_both_savers_on_sqlite(tmp_path: Path) -> None:
    _assert_complete(_run(tmp_path, "sqlite"), "SqliteSaver")


@pytest.mark.postgres
def test_benchmark_measures_both_savers_on_postgres(tmp_path: Path) -> None:
    with server_url("postgres") as admin:
        url = admin.render_as_string(hide_password=False)
        _assert_complete(_run(tmp_path, "postgres", "--postgres-url", url), "PostgresSaver")


@pytest.mark.sqlite
def test_floor_study_writes_what_each_saver_writes(tmp_path: Path) -> None:
    """``benchmarks.langgraph_floor``: each raw side stores the rows its saver would."""
    import sqlite3

    from benchmarks import langgraph_floor

    path = tmp_path / "floor.db"
    figures = langgraph_floor.measure(path, rounds=4, synchronous="NORMAL")
    assert set(figures) == set(langgraph_floor.SIDES)
    for side, values in figures.items():
        assert set(values) == set(langgraph_floor.OPS), side
        assert all(math.isfinite(v) and v > 0 for v in values.values()), (side, values)
    conn = sqlite3.connect(path)
    # Ours, raw: four checkpoints appended at seqs 1-4 with their keys, in the saver's group,
    # and each one's writes in a run of its own, as the saver stored its one put_writes.
    ((run_id, group),) = conn.execute(
        "SELECT run_id, group_id FROM pa_runs WHERE run_id LIKE '%-floor'"
    ).fetchall()
    rows = conn.execute(
        "SELECT seq, key FROM pa_events WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    assert rows == [(n, f"floor-{n}") for n in range(1, 5)]
    assert group.startswith("lg:")
    assert group.endswith("-floor")
    writes = conn.execute(
        "SELECT r.run_id, count(*) FROM pa_runs r JOIN pa_events e ON e.run_id = r.run_id "
        "WHERE r.run_id LIKE '%-floor-%' AND r.group_id = ? GROUP BY r.run_id",
        (group,),
    ).fetchall()
    (stored,) = conn.execute(
        "SELECT count(*) FROM pa_events WHERE run_id = (SELECT min(run_id) FROM pa_runs "
        "WHERE run_id LIKE 'lgw:%' AND run_id NOT LIKE '%-floor-%')"
    ).fetchone()
    assert stored >= 1
    assert [count for _, count in writes] == [stored] * 4
    # SqliteSaver's, raw: four checkpoints, each the child of the one before, two writes each.
    chain = conn.execute(
        "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
        "WHERE thread_id = 'floor' ORDER BY checkpoint_id"
    ).fetchall()
    assert len(chain) == 4
    assert [parent for _, parent in chain] == [None] + [cid for cid, _ in chain[:-1]]
    (count,) = conn.execute("SELECT count(*) FROM writes WHERE thread_id = 'floor'").fetchone()
    assert count == 8
    # The cheapest append: one event a call (one at the start, then a put and a put_writes a
    # round), no key, in one ungrouped run whose row follows its events.
    cheapest = conn.execute(
        "SELECT seq, key FROM pa_events WHERE run_id = 'floor-cheapest' ORDER BY seq"
    ).fetchall()
    assert cheapest == [(n, None) for n in range(1, 10)]
    assert conn.execute(
        "SELECT last_seq, group_id FROM pa_runs WHERE run_id = 'floor-cheapest'"
    ).fetchall() == [(9, None)]
    conn.close()


def _delta_figures(tmp_path: Path, backend: str, *extra: str) -> dict[str, dict[str, float]]:
    from benchmarks import langgraph_delta

    argv = ["--invokes", "6", "--reads", "2", *extra]
    figures = _figures(langgraph_delta.main, tmp_path, backend, argv)
    for saver, values in figures.items():
        wanted = {*langgraph_delta.FIGURES}
        if saver == langgraph_delta.OURS:
            wanted.add("default history")
        assert set(values) == wanted, saver
        assert all(math.isfinite(v) and v > 0 for v in values.values()), (saver, values)
    return figures


# Defined only where LangGraph has DeltaChannel: a skip of a required backend fails the run.
if importlib.util.find_spec("langgraph.channels.delta") is not None:

    @pytest.mark.sqlite
    def test_delta_channel_benchmark_runs_both_savers_on_sqlite(tmp_path: Path) -> None:
        assert set(_delta_figures(tmp_path, "sqlite")) == {"PurposeAgentSaver", "SqliteSaver"}

    @pytest.mark.postgres
    def test_delta_channel_benchmark_runs_both_savers_on_postgres(tmp_path: Path) -> None:
        with server_url("postgres") as admin:
            url = admin.render_as_string(hide_password=False)
            figures = _delta_figures(tmp_path, "postgres", "--postgres-url", url)
        assert set(figures) == {"PurposeAgentSaver", "PostgresSaver"}


@pytest.mark.sqlite
def test_import_benchmark_imports_every_checkpoint_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``benchmarks.langgraph_import``: each worker count imports all the source holds."""
    from benchmarks import langgraph_import

    argv = ["--threads", "2", "--checkpoints", "6", "--sources", "sqlite", "--targets", "sqlite"]
    assert langgraph_import.main([*argv, "--workers", "1,2"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in out if line.startswith("{")]
    assert [(row["workers"], row["threads"]) for row in rows] == [(1, 2), (2, 2)]
    assert rows[0]["checkpoints"] == rows[1]["checkpoints"] >= 2 * 6
    assert all(row["checkpoints_per_s"] > 0 for row in rows)
