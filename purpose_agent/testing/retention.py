"""Capability.RETENTION: compacting a run behind its snapshot, and deleting runs by filter.

The rows follow :class:`purpose_agent.protocol.Retention`. Those that read ``last_seq`` or put
runs in groups need Capability.APPEND or Capability.GROUPS as well.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, cast

from purpose_agent import Checkpointer, InvalidInput, InvalidRunId, Recovery
from purpose_agent.protocol import Appending, Retention, RunGroups
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import BAD_RUN_IDS, covering, ev, new, st

# The pause on each side of a cut in time, so that the writes before and after it are told
# apart by any clock the store reads (its own process's or a server's on this machine).
CLOCK_MARGIN = 0.05
# How long ago the old runs of the timedelta row were written, and the age that separates them
# from the new ones: the row fails only if a write and a delete together take longer than the
# difference.
AGED_SECONDS = 2.0
OLDER_THAN = timedelta(seconds=AGED_SECONDS / 2)


class RetainingStore(Retention, Checkpointer, Protocol):
    """A checkpointer with the methods of :class:`Retention`: what these rows call."""


class RetainingAppendingStore(Retention, RunGroups, Appending, Checkpointer, Protocol):
    """A checkpointer with retention, groups and appends, for the rows that need all three."""


def _write(cp: Checkpointer, *run_ids: str) -> None:
    """Write one more event to each run, in the order given: the last is the newest."""
    for run_id in run_ids:
        events = cp.list_events(run_id)
        cp.save_event(ev(run_id, events[-1].seq + 1 if events else 1))


def _gone(cp: Checkpointer, run_id: str) -> bool:
    """Whether nothing of the run can be read any more."""
    return (
        cp.recover(run_id) is None
        and cp.load_latest(run_id) is None
        and cp.list_events(run_id) == []
        and run_id not in cp.list_runs()
    )


class RetentionRows(Rows):
    """``compact`` and ``delete_runs`` on runs written with the protocol's own methods."""

    capability: ClassVar[Capability] = Capability.RETENTION

    # -- compact -------------------------------------------------------------------------------

    def test_compact_deletes_the_events_the_latest_snapshot_covers(
        self, cp: RetainingStore
    ) -> None:
        cp.save_events([ev("r", seq) for seq in range(1, 6)], snapshot=st("r", 2))
        cp.save_snapshot("r", st("r", 3))
        cp.save_event(ev("r", 6))
        cp.save_events([ev("other", 1), ev("other", 2)], snapshot=st("other", 2))
        before = cp.recover("r")
        assert before == Recovery(st("r", 3), [ev("r", 4), ev("r", 5), ev("r", 6)])
        assert cp.compact("r") == 3
        assert cp.recover("r") == before
        assert cp.list_events("r") == [ev("r", 4), ev("r", 5), ev("r", 6)]
        assert list(cp.iter_events("r")) == cp.list_events("r")
        assert cp.load_latest("r") == st("r", 3)
        assert cp.compact("r") == 0
        assert cp.list_events("other") == [ev("other", 1), ev("other", 2)]
        assert sorted(cp.list_runs()) == ["other", "r"]
        cp.save_snapshot("r", st("r", 6))
        assert cp.compact("r") == 3
        assert cp.recover("r") == Recovery(st("r", 6), [])
        assert cp.list_events("r") == []
        assert sorted(cp.list_runs()) == ["other", "r"]  # a compacted run is still listed

    def test_compact_without_a_covering_snapshot_deletes_nothing(self, cp: RetainingStore) -> None:
        cp.save_events([ev("r", 1), ev("r", 2)])
        assert cp.compact("r") == 0
        assert cp.compact("unknown") == 0
        assert cp.list_events("r") == [ev("r", 1), ev("r", 2)]
        cp.save_snapshot("r", st("r", 0))
        assert cp.compact("r") == 0
        assert cp.recover("r") == Recovery(st("r", 0), [ev("r", 1), ev("r", 2)])
        cp.save_snapshot("alone", st("alone", 4))
        assert cp.compact("alone") == 0
        assert cp.recover("alone") == Recovery(st("alone", 4), [])

    def test_compact_with_a_snapshot_past_the_log_deletes_every_event(
        self, cp: RetainingStore
    ) -> None:
        cp.save_events([ev("r", 1), ev("r", 3)], snapshot=st("r", 5))
        assert cp.compact("r") == 2
        assert cp.recover("r") == Recovery(st("r", 5), [])
        cp.save_event(ev("r", 6))
        assert cp.recover("r") == Recovery(st("r", 5), [ev("r", 6)])

    @pytest.mark.parametrize("name", list(BAD_RUN_IDS))
    def test_compact_and_delete_runs_refuse_a_bad_run_id(
        self, cp: RetainingStore, name: str
    ) -> None:
        with pytest.raises(InvalidRunId):
            cp.compact(BAD_RUN_IDS[name])
        with pytest.raises(InvalidRunId):
            cp.delete_runs(["kept", BAD_RUN_IDS[name]])

    # -- delete_runs by id and prefix ----------------------------------------------------------

    def test_delete_runs_by_id_returns_the_deleted_ids_sorted(self, cp: RetainingStore) -> None:
        cp.save_events([ev("z", 1), ev("z", 2)], snapshot=st("z", 1))
        cp.save_snapshot("c", st("c", 0))  # a run with a snapshot alone
        _write(cp, "a", "kept", "m")
        assert cp.delete_runs(["m", "z", "missing", "c", "a"]) == ["a", "c", "m", "z"]
        for run_id in ("a", "c", "m", "z"):
            assert _gone(cp, run_id)
        assert cp.list_runs() == ["kept"]
        assert cp.list_events("kept") == [ev("kept", 1)]
        assert cp.delete_runs(["a"]) == []
        assert cp.delete_runs([]) == []
        assert cp.delete_runs(iter(["kept"])) == ["kept"]
        assert cp.list_runs() == []

    def test_deleted_runs_can_be_written_again(self, cp: RetainingStore) -> None:
        cp.save_events([ev("r", 1, v="old")], snapshot=st("r", 1))
        assert cp.delete_runs(("r",)) == ["r"]
        cp.save_event(ev("r", 1, v="new"))
        assert cp.recover("r") == Recovery(None, [ev("r", 1, v="new")])

    def test_delete_runs_by_prefix_is_exact(self, cp: RetainingStore) -> None:
        runs = ["job-1", "job-2", "Job-3", "jobs", "a%b", "ab", "a_b", "axb"]
        _write(cp, *runs)
        cp.save_snapshot("job-4", st("job-4", 0))
        assert cp.delete_runs(prefix="job-") == ["job-1", "job-2", "job-4"]
        assert cp.delete_runs(prefix="a%") == ["a%b"]
        assert cp.delete_runs(prefix="a_") == ["a_b"]
        assert cp.delete_runs(prefix="%") == []
        assert cp.delete_runs(prefix="_") == []
        assert cp.delete_runs(prefix="J") == ["Job-3"]
        assert sorted(cp.list_runs()) == ["ab", "axb", "jobs"]
        assert cp.delete_runs(prefix="") == ["ab", "axb", "jobs"]
        assert cp.list_runs() == []

    def test_delete_runs_by_a_prefix_no_run_id_can_start_with_deletes_nothing(
        self, cp: RetainingStore
    ) -> None:
        cp.save_event(ev("a", 1))
        for prefix in ("\ud800", "a\x00", "\ud83d\ude00", "a/"):
            assert cp.delete_runs(prefix=prefix) == [], repr(prefix)
        assert cp.list_runs() == ["a"]

    # -- delete_runs by age and count ----------------------------------------------------------

    def test_delete_runs_last_written_before_a_time(self, cp: RetainingStore) -> None:
        _write(cp, "a", "b", "c")
        time.sleep(CLOCK_MARGIN)
        cut = datetime.now(UTC)
        time.sleep(CLOCK_MARGIN)
        _write(cp, "d", "a")  # "a" was written again after the cut
        assert cp.delete_runs(older_than=cut - timedelta(days=1)) == []
        same_instant = cut.astimezone(timezone(timedelta(hours=5)))
        assert cp.delete_runs(older_than=same_instant, prefix="x") == []
        assert cp.delete_runs(older_than=same_instant) == ["b", "c"]
        assert cp.list_runs() == ["a", "d"]
        assert _gone(cp, "b")
        assert cp.delete_runs(older_than=datetime.now(UTC) + timedelta(days=1)) == ["a", "d"]

    def test_delete_runs_last_written_longer_ago_than_a_timedelta(self, cp: RetainingStore) -> None:
        _write(cp, "old-1", "old-2", "renewed")
        time.sleep(AGED_SECONDS)
        _write(cp, "new", "renewed")
        assert cp.delete_runs(older_than=timedelta(days=1)) == []
        assert cp.delete_runs(older_than=OLDER_THAN) == ["old-1", "old-2"]
        assert cp.list_runs() == ["renewed", "new"]

    def test_delete_runs_keeping_the_newest(self, cp: RetainingStore) -> None:
        _write(cp, "r1", "r2", "r3", "r4", "r5", "r2")
        assert cp.delete_runs(keep_newest=10) == []
        assert cp.delete_runs(keep_newest=3) == ["r1", "r3"]
        assert cp.list_runs() == ["r2", "r5", "r4"]
        assert cp.delete_runs(prefix="", keep_newest=0) == ["r2", "r4", "r5"]
        assert cp.list_runs() == []

    def test_filters_beyond_what_a_database_integer_holds_mean_what_they_say(
        self, cp: RetainingStore
    ) -> None:
        # Passed on to the database as they were, these overflowed its 64-bit integers.
        _write(cp, "r1", "r2")
        assert cp.delete_runs(keep_newest=10**20) == []
        assert cp.delete_runs(older_than=timedelta(days=999_999_999)) == []
        assert cp.delete_runs(older_than=datetime.min.replace(tzinfo=UTC)) == []
        # Naive, they are local times, which the platform cannot convert at either end.
        assert cp.delete_runs(older_than=datetime.min) == []
        assert cp.delete_runs(older_than=datetime.min.replace(year=2)) == []
        assert cp.list_runs() == ["r2", "r1"]
        assert cp.delete_runs(older_than=datetime.max.replace(tzinfo=UTC)) == ["r1", "r2"]
        _write(cp, "r3")
        assert cp.delete_runs(older_than=datetime.max) == ["r3"]

    # -- filters together ----------------------------------------------------------------------

    def test_filters_given_together_must_all_match(self, cp: RetainingStore) -> None:
        _write(cp, "a-1", "b-1", "a-2", "a-3")
        time.sleep(CLOCK_MARGIN)
        cut = datetime.now(UTC)
        time.sleep(CLOCK_MARGIN)
        _write(cp, "a-4", "b-2", "a-5")
        assert cp.delete_runs(["a-1", "b-1"], prefix="a-") == ["a-1"]
        assert cp.delete_runs(prefix="a-", keep_newest=2) == ["a-2", "a-3"]
        assert cp.list_runs() == ["a-5", "b-2", "a-4", "b-1"]
        assert cp.delete_runs(["a-4", "b-2", "b-1"], older_than=cut) == ["b-1"]
        _write(cp, "b-3")
        assert cp.delete_runs(["a-4", "a-5", "b-2", "b-3"], keep_newest=1) == ["a-4", "a-5", "b-2"]
        assert cp.list_runs() == ["b-3"]

    def test_keep_newest_spares_the_newest_runs_whatever_their_age(
        self, cp: RetainingStore
    ) -> None:
        # With older_than, keep_newest is a floor: the newest runs stay even when they are old,
        # as in "delete what is older than a month, but keep the last ten".
        _write(cp, "old-1", "old-2", "old-3")
        time.sleep(CLOCK_MARGIN)
        cut = datetime.now(UTC)
        time.sleep(CLOCK_MARGIN)
        _write(cp, "new-1", "new-2")
        assert cp.delete_runs(older_than=cut, keep_newest=4) == ["old-1"]
        assert cp.delete_runs(older_than=cut, keep_newest=9) == []
        assert cp.delete_runs(older_than=cut, keep_newest=1) == ["old-2", "old-3"]
        assert cp.list_runs() == ["new-2", "new-1"]

    # -- bad arguments -------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "arguments",
        [
            {},
            {"run_ids": None},
            {"run_ids": "a"},
            {"run_ids": [1]},
            {"prefix": 5},
            {"older_than": "yesterday"},
            {"older_than": 3600},
            {"older_than": timedelta(seconds=-1)},  # every run, one being written included
            {"older_than": timedelta(days=-3650), "prefix": ""},
            {"keep_newest": -1},
            {"keep_newest": "1"},
        ],
        ids=repr,
    )
    def test_bad_filters_are_invalid_input_and_delete_nothing(
        self, cp: RetainingStore, arguments: dict[str, Any]
    ) -> None:
        _write(cp, "a", "b")
        with pytest.raises(InvalidInput):
            cp.delete_runs(**arguments)
        assert cp.list_runs() == ["b", "a"]


class RetentionWithAppendsRows(Rows):
    """Compaction and deletion seen through ``last_seq``, keys and groups."""

    capability: ClassVar[Capability] = Capability.RETENTION
    also_needs: ClassVar[frozenset[Capability]] = frozenset({Capability.APPEND, Capability.GROUPS})

    def test_appends_continue_after_compacted_positions(self, cp: RetainingAppendingStore) -> None:
        state = st("r", 0, step=3)
        cp.append("r", [new(n=1), new(n=2), new(n=3)], snapshot=state)
        assert cp.compact("r") == 3
        assert cp.last_seq("r") == 3
        assert cp.recover("r") == Recovery(covering(state, 3), [])
        [after] = cp.append("r", [new(n=4)], expected_last_seq=3)
        assert after.seq == 4
        assert cp.list_events("r") == [after]
        assert cp.recover("r") == Recovery(covering(state, 3), [after])

    def test_deleted_runs_append_from_one_again(self, cp: RetainingAppendingStore) -> None:
        cp.append("r", [new(key="k"), new()], group="g")
        assert cp.delete_runs(["r"]) == ["r"]
        assert cp.last_seq("r") == 0
        assert cp.event_by_key("r", "k") is None
        assert cp.run_group("r") is None
        [again] = cp.append("r", [new(key="k", n="new")])
        assert again.seq == 1

    def test_delete_runs_of_a_group(self, cp: RetainingAppendingStore) -> None:
        cp.append("b", [new()], group="g1")
        cp.append("a", [new()], group="g1")
        cp.append("c", [new()], group="g2")
        cp.append("d", [new()])
        cp.append("x-a", [new()], group="g1")
        assert cp.delete_runs(group="nobody") == []
        assert cp.delete_runs(group="G1") == []
        assert cp.delete_runs(group="g1", prefix="x-") == ["x-a"]
        assert cp.delete_runs(group="g1") == ["a", "b"]
        assert _gone(cp, "a")
        assert cp.run_group("a") is None
        assert cp.list_groups() == ["g2"]
        assert cp.list_runs() == ["d", "c"]

    def test_group_with_keep_newest_and_older_than(self, cp: RetainingAppendingStore) -> None:
        for name in ("t1", "t2", "t3"):
            cp.append(name, [new()], group="thread")
        cp.append("elsewhere", [new()], group="other")
        time.sleep(CLOCK_MARGIN)
        cut = datetime.now(UTC)
        time.sleep(CLOCK_MARGIN)
        cp.append("t4", [new()], group="thread")
        assert cp.delete_runs(group="thread", older_than=cut, keep_newest=3) == ["t1"]
        assert cp.delete_runs(group="thread", older_than=cut, keep_newest=2) == ["t2"]
        assert cp.list_runs(group="thread") == ["t4", "t3"]
        assert cp.delete_runs(group="thread", keep_newest=1) == ["t3"]
        assert cp.list_runs() == ["t4", "elsewhere"]

    def test_delete_runs_of_whole_groups_spares_a_group_with_a_run_not_selected(
        self, cp: RetainingAppendingStore
    ) -> None:
        for name in ("old-1", "old-2"):
            cp.append(name, [new()], group="idle")
        cp.append("live-1", [new()], group="live")
        cp.append("solo", [new()])
        time.sleep(CLOCK_MARGIN)
        cut = datetime.now(UTC)
        time.sleep(CLOCK_MARGIN)
        cp.append("live-2", [new()], group="live")  # the group went on after the cutoff
        chosen = ["old-1", "old-2", "live-1", "live-2", "solo"]
        assert cp.delete_runs(["old-1", "live-1"], whole_groups=True) == []
        assert cp.delete_runs(chosen, older_than=cut, whole_groups=True) == [
            "old-1",
            "old-2",
            "solo",
        ]
        assert cp.list_runs() == ["live-2", "live-1"]


class DurableRetentionRows(Rows):
    """What ``compact`` and ``delete_runs`` removed stays removed for a new handle."""

    capability: ClassVar[Capability] = Capability.RETENTION
    also_needs: ClassVar[frozenset[Capability]] = frozenset({Capability.DURABLE})

    def test_compact_and_delete_runs_are_durable(self, backend: Backend) -> None:
        state = st("kept", 2, step=2)
        with backend.open() as first:
            first.save_events([ev("kept", 1), ev("kept", 2), ev("kept", 3)], snapshot=state)
            first.save_events([ev("gone", 1)])
            store = cast(RetainingStore, first)
            assert store.compact("kept") == 2
            assert store.delete_runs(["gone"]) == ["gone"]
        with backend.open() as second:
            assert second.list_events("kept") == [ev("kept", 3)]
            assert second.recover("kept") == Recovery(state, [ev("kept", 3)])
            assert second.list_runs() == ["kept"]


class RetentionSuite(RetentionRows, RetentionWithAppendsRows, DurableRetentionRows):
    """Every row of Capability.RETENTION; some also need APPEND and GROUPS, or DURABLE."""

    capability: ClassVar[Capability] = Capability.RETENTION
