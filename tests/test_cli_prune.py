"""`purpose-agent prune`: covered events and old runs go, recovery stays exact."""

from __future__ import annotations

import importlib
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from purpose_agent import (
    EventKind,
    InMemoryCheckpointer,
    InvalidInput,
    NewEvent,
    PAEvent,
    RunState,
    SQLCheckpointer,
)
from purpose_agent.db.models import RunRecord
from purpose_agent.ops.prune import PruneProgress, PruneResult, prune
from purpose_agent.stores.open import open_store
from tests.test_cli_copy import _write_seed_sqlite
from tests.test_cli_support import STORES, invoke, make_store_url

# The module, not the function of the same name that purpose_agent.ops exports.
prune_module = importlib.import_module("purpose_agent.ops.prune")


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


# -- the library's retention, through the command and directly -------------------------------

_DAY_NS = 86_400 * 10**9

# run id, group, events, snapshot seq, age in days. Newest first, they are:
# a-1, b-1, x-1, a-2, a-3, a-4, b-2, x-2.
_RUNS = [
    ("a-1", "conv-a", 4, 2, 0.001),
    ("a-2", "conv-a", 3, 3, 10),
    ("a-3", "conv-a", 5, None, 40),
    ("a-4", "conv-a", 2, 1, 50),
    ("b-1", "conv-b", 6, 4, 1),
    ("b-2", "conv-b", 1, None, 60),
    ("x-1", None, 3, 3, 2),
    ("x-2", None, 2, None, 90),
]
_EVENTS = {run_id: events for run_id, _, events, _, _ in _RUNS}


def _fill_groups(url: str) -> None:
    """The runs of ``_RUNS``, appended in their groups, last written ``age`` days ago."""
    with open_store(url) as store:
        assert isinstance(store, SQLCheckpointer)
        for run_id, group, events, snap, _ in _RUNS:
            store.append(run_id, [NewEvent(kind=EventKind.CUSTOM)] * events, group=group)
            if snap is not None:
                store.save_snapshot(run_id, RunState(run_id=run_id, seq=snap))
    now = time.time_ns()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for run_id, _, _, _, days in _RUNS:
            written = now - int(days * _DAY_NS)
            conn.execute(
                sa.update(RunRecord).where(RunRecord.run_id == run_id).values(updated_ns=written)
            )
    engine.dispose()


# The options, the runs deleted whole, and the runs compacted (with the events they lose).
# Store-wide, a group's runs go only with its newest (conv-a's is 0.001 days old, conv-b's 1
# day); within a group or a prefix, runs are aged one by one.
_CASES = [
    (["--older-than", "30d"], {"x-2"}, {}),
    (["--older-than", "12h"], {"b-1", "b-2", "x-1", "x-2"}, {}),
    (["--keep-newest", "3"], {"x-2"}, {}),
    (["--keep-newest", "1"], {"b-1", "b-2", "x-1", "x-2"}, {}),
    (["--keep-newest", "1", "--group", "conv-a"], {"a-2", "a-3", "a-4"}, {}),
    (["--keep-newest", "1", "--older-than", "45d", "--group", "conv-a"], {"a-4"}, {}),
    (["--older-than", "30d", "--prefix", "a-"], {"a-3", "a-4"}, {}),
    (
        ["--covered", "--older-than", "30d"],
        {"x-2"},
        {"a-1": 2, "a-2": 3, "a-4": 1, "b-1": 4, "x-1": 3},
    ),
    (["--covered", "--group", "conv-b"], set(), {"b-1": 4}),
    (["--covered", "--keep-newest", "2", "--prefix", "x-"], set(), {"x-1": 3}),
    (["--keep-newest", "0", "--prefix", ""], set(_EVENTS), {}),
]


@pytest.mark.parametrize(("options", "deleted", "compacted"), _CASES)
def test_prune_dry_run_counts_what_the_prune_then_deletes(
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    deleted: set[str],
    compacted: dict[str, int],
) -> None:
    monkeypatch.setattr(prune_module, "_PAGE", 2)  # every walk takes several pages
    _fill_groups(store_url)
    expected = {
        "covered_events": sum(compacted.values()),
        "covered_runs": len(compacted),
        "old_runs": len(deleted),
        "old_run_events": sum(_EVENTS[run_id] for run_id in deleted),
    }
    dry = json.loads(invoke("prune", *options, "--dry-run", "--json", "--url", store_url).stdout)
    assert dry.pop("dry_run") is True
    assert {key: dry[key] for key in expected} == expected
    with open_store(store_url, create=False) as store:
        assert set(store.list_runs()) == set(_EVENTS)  # the dry run deleted nothing
    real = invoke("prune", *options, "--json", "--url", store_url)
    assert real.exit_code == 0, real.output
    done = json.loads(real.stdout)
    assert done.pop("dry_run") is False
    assert done == dry
    with open_store(store_url, create=False) as store:
        assert set(store.list_runs()) == set(_EVENTS) - deleted
        for run_id in set(_EVENTS) - deleted:
            left = len(store.list_events(run_id))
            assert left == _EVENTS[run_id] - compacted.get(run_id, 0), run_id


def test_prune_keep_newest_reports_in_words(store_url: str) -> None:
    _fill_groups(store_url)
    result = invoke(
        "prune", "--keep-newest", "1", "--older-than", "45d", "--group", "conv-a",
        "--url", store_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "Deleted 1 run of group 'conv-a' beyond the newest 1 and not written for 45d (2 events)"
    )
    covered = invoke("prune", "--covered", "--prefix", "b-", "--dry-run", "--url", store_url)
    assert covered.stdout.startswith(
        "Would delete 4 events covered by snapshots in 1 run with ids starting 'b-' from "
    )


@pytest.mark.sqlite
def test_prune_refuses_a_store_without_retention(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    _write_seed_sqlite(path, [("r", 1, "custom", {})], {})
    result = invoke("prune", "--covered", "--url", f"seed-sqlite:{path}")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: seed-sqlite:{path} cannot be pruned: it has no ")
    assert "purpose-agent copy" in result.stderr


def _racing(base: type[Any]) -> type[Any]:
    """A store in which a writer appends to the first run of each page before it is deleted."""

    class Racing(base):  # type: ignore[misc, valid-type]
        touched: ClassVar[set[str]] = set()

        def delete_runs(self, run_ids: Any = None, **filters: Any) -> list[str]:
            ids = list(run_ids)
            self.append(ids[0], [NewEvent(kind=EventKind.CUSTOM)])
            self.touched.add(ids[0])
            return super().delete_runs(ids, **filters)  # type: ignore[no-any-return]

    return Racing


@pytest.mark.sqlite
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("rule", ["older_than", "keep_newest"])
def test_prune_keeps_a_run_written_after_it_was_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, rule: str
) -> None:
    monkeypatch.setattr(prune_module, "_PAGE", 3)
    racing = _racing(InMemoryCheckpointer if kind == "memory" else SQLCheckpointer)
    store = racing() if kind == "memory" else racing(f"sqlite:///{tmp_path / 'store.db'}")
    with store:
        for number in range(7):
            store.append(f"r{number}", [NewEvent(kind=EventKind.CUSTOM)] * 2)
        time.sleep(0.05)
        # Pinned before "fresh" is written, so that however long its commit takes on a busy
        # machine, "fresh" is younger than the cutoff and the others are 50 ms older.
        now = time.time_ns()
        store.append("fresh", [NewEvent(kind=EventKind.CUSTOM)])
        if rule == "older_than":
            result = prune(store, older_than=timedelta(milliseconds=40), now_ns=now)
        else:
            result = prune(store, keep_newest=1)  # the newest is "fresh"
        old_touched = racing.touched - {"fresh"}
        assert old_touched  # the writer got in before some deletes
        assert set(store.list_runs()) == {"fresh"} | old_touched
        gone = 7 - len(old_touched)
        assert (result.old_runs, result.old_run_events) == (gone, 2 * gone)
        for run_id in old_touched:
            assert len(store.list_events(run_id)) == 3
        if kind == "sqlite" or rule == "keep_newest":
            # Pages of three past "fresh": r6 r5 r4 | r3 r2 r1 | r0, each one's first written.
            assert old_touched == {"r6", "r3", "r0"}


def test_prune_works_on_the_in_memory_store() -> None:
    store = InMemoryCheckpointer()
    for run_id, group, events, snap, _ in _RUNS:
        store.append(run_id, [NewEvent(kind=EventKind.CUSTOM)] * events, group=group)
        if snap is not None:
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=snap))
    options: dict[str, Any] = {"covered": True, "keep_newest": 2, "group": "conv-a"}
    planned = prune(store, dry_run=True, **options)
    steps: list[PruneProgress] = []
    result = prune(store, progress=steps.append, **options)
    # Written in _RUNS order: conv-a newest first is a-4, a-3, a-2, a-1.
    assert sorted(store.list_runs(group="conv-a")) == ["a-3", "a-4"]
    assert (result.old_runs, result.old_run_events) == (2, 7)
    assert (result.covered_runs, result.covered_events) == (1, 1)
    assert result == PruneResult(**{**planned.to_dict(), "dry_run": False})
    assert [(s.stage, s.run_id, s.runs_done) for s in steps] == [
        ("deleting runs", "a-1", 2),
        ("compacting", "a-4", 1),
    ]
    assert len(store.list_runs()) == 6  # other groups untouched
    assert store.recover("a-4") is not None


def test_prune_by_group_needs_a_store_with_groups() -> None:
    class NoGroups(InMemoryCheckpointer):
        list_groups = None  # type: ignore[assignment]

    with pytest.raises(InvalidInput, match="keeps no run groups"):
        prune(NoGroups(), covered=True, group="g")
    with pytest.raises(InvalidInput, match="nothing to prune"):
        prune(InMemoryCheckpointer())


@pytest.mark.parametrize(
    "args",
    [
        ("prune", "--keep-newest", str(10**20)),
        ("prune", "--older-than", "999999999d"),
        ("runs", "delete", "--yes", "--keep-newest", str(10**20)),
        ("runs", "delete", "--yes", "--older-than", "999999999d"),
    ],
)
def test_counts_and_ages_past_a_database_integer_delete_nothing(
    store_url: str, args: tuple[str, ...]
) -> None:
    """They overflowed: OverflowError on SQLite, "bigint out of range" on Postgres."""
    _fill(store_url)
    result = invoke(*args, "--url", store_url)
    assert result.exit_code == 0, result.stderr
    assert "0 runs" in result.stdout
    with open_store(store_url) as store:
        assert sorted(store.list_runs()) == ["bare", "old", "snap"]


def test_an_age_longer_than_any_is_a_usage_error() -> None:
    result = invoke("prune", "--older-than", "99999999999d", "--url", "memory:")
    assert result.exit_code == 2
    assert "longer than any age" in result.stderr
