"""`purpose-agent prune`: covered events and old runs go, recovery stays exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from purpose_agent import EventKind, PAEvent, RunState
from purpose_agent.db.models import RunRecord
from purpose_agent.stores.open import open_store
from tests.test_cli_support import STORES, invoke, make_store_url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request, tmp_path, request.param)


def _fill(url: str) -> None:
    """Runs "snap" (10 events, snapshot at 6), "bare" (5 events), "old" (3, snapshot at 3)."""
    with open_store(url) as store:
        for run_id, count, snap in (("snap", 10, 6), ("bare", 5, None), ("old", 3, 3)):
            events = [
                PAEvent(run_id=run_id, seq=i, kind=EventKind.CUSTOM, ts=float(i))
                for i in range(1, count + 1)
            ]
            store.save_events(events)
            if snap is not None:
                store.save_snapshot(run_id, RunState(run_id=run_id, seq=snap, data={"at": snap}))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        # Last written in 2001: older than any age a test asks for.
        conn.execute(
            sa.update(RunRecord).where(RunRecord.run_id == "old").values(updated_ns=10**18)
        )
    engine.dispose()


def test_prune_dry_run_counts_and_deletes_nothing(store_url: str) -> None:
    _fill(store_url)
    result = invoke(
        "prune", "--covered", "--older-than", "30d", "--dry-run", "--json", "--url", store_url
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "store": json.loads(result.stdout)["store"],
        "dry_run": True,
        "covered_events": 6,
        "covered_runs": 1,
        "old_runs": 1,
        "old_run_events": 3,
    }
    text = invoke("prune", "--covered", "--dry-run", "--url", store_url)
    assert "Would delete 9 events covered by snapshots in 2 runs" in text.stdout
    with open_store(store_url, create=False) as store:
        assert len(store.list_events("snap")) == 10
        assert len(store.list_events("old")) == 3


def test_prune_covered_keeps_recovery_exact(store_url: str) -> None:
    _fill(store_url)
    with open_store(store_url, create=False) as store:
        before = store.recover("snap")
    result = invoke("prune", "--covered", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert "Deleted 9 events covered by snapshots in 2 runs" in result.stdout
    with open_store(store_url, create=False) as store:
        assert store.recover("snap") == before
        assert [e.seq for e in store.list_events("snap")] == [7, 8, 9, 10]
        assert len(store.list_events("bare")) == 5
    again = invoke("prune", "--covered", "--url", store_url)
    assert "Deleted 0 events" in again.stdout


def test_prune_older_than_removes_only_old_runs(store_url: str) -> None:
    _fill(store_url)
    result = invoke("prune", "--older-than", "365d", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert "Deleted 1 run not written for 365d (3 events)" in result.stdout
    with open_store(store_url, create=False) as store:
        assert sorted(store.list_runs()) == ["bare", "snap"]
        assert store.recover("old") is None


def test_prune_needs_something_to_prune(store_url: str) -> None:
    result = invoke("prune", "--url", store_url)
    assert result.exit_code == 2
    assert "say what to prune" in result.stderr
    bad_age = invoke("prune", "--older-than", "soon", "--url", store_url)
    assert bad_age.exit_code == 2
    assert "not an age like 30d" in bad_age.stderr


def test_prune_refuses_stores_that_are_not_sql(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    result = invoke("prune", "--covered", "--url", f"jsonl:{folder}")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: prune works on SQL stores")
