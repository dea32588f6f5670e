"""The tasks mode of the concurrent-runs benchmark runs end to end (figures are not checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import concurrent_runs


@pytest.mark.sqlite
def test_tasks_mode_writes_every_side(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    argv = ["--mode", "tasks", "--runs", "3", "--seconds", "0.2", "--langgraph", "--json", str(out)]
    assert concurrent_runs.main(argv) == 0
    figures = json.loads(out.read_text())["sqlite/tasks/3"]
    assert set(figures) == {"raw", "store", "grouped", "on-loop", "lg-ours", "lg-theirs"}
    for side in figures.values():
        assert side["steps_per_s"] > 0
        assert side["p50_ms"] <= side["p99_ms"]


@pytest.mark.sqlite
@pytest.mark.parametrize("mode", ["threads", "tasks"])
def test_think_time_paces_each_run_and_p99_is_given_over_the_lone_run(
    tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "figures.json"
    argv = ["--mode", mode, "--runs", "1,2", "--seconds", "0.4", "--think-ms", "50"]
    assert concurrent_runs.main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for side, values in report[f"sqlite/{mode}/2"].items():
        # A run steps at most once per 50 ms: 2 runs, at most 2 * 20 steps/s (+1 step each).
        assert 0 < values["steps_per_s"] <= 2 * (20 + 1 / 0.4), side
        assert values["think_ms"] == 50
        lone = report[f"sqlite/{mode}/1"][side]["p99_ms"]
        assert values["p99_over_lone"] == pytest.approx(values["p99_ms"] / lone)
