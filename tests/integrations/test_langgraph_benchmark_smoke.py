"""The LangGraph saver benchmark runs end to end at tiny sizes, so that it cannot rot.

Timings are never asserted: only that both savers ran every operation and produced every
figure, finite and above zero.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")
pytest.importorskip("langgraph.checkpoint.postgres")

from benchmarks import langgraph_savers
from tests.servers import server_url

FIGURES = {*langgraph_savers.OPS, "first_get_tuple_ms"}


def _run(tmp_path: Path, backend: str, *extra: str) -> dict[str, dict[str, float]]:
    out = tmp_path / "figures.json"
    argv = ["--checkpoints", "12", "--reads", "5", "--backends", backend, "--json", str(out)]
    assert langgraph_savers.main([*argv, *extra]) == 0
    results: dict[str, dict[str, dict[str, float]]] = json.loads(out.read_text())
    assert list(results) == [backend]
    return results[backend]


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
