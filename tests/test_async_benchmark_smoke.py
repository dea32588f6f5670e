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
    assert set(figures) == {"raw", "store", "grouped", "lg-ours", "lg-theirs"}
    for side in figures.values():
        assert side["steps_per_s"] > 0
        assert side["p50_ms"] <= side["p99_ms"]
