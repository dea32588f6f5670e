"""The shared behaviour suite: every row of the public contract, for any backend."""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from purpose_agent.errors import InvalidInput, InvalidRunId, SequenceConflict
from purpose_agent.protocol import Checkpointer, Recovery
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus


@dataclass
class Backend:
    """A store under test.

    Attributes:
        name: Shown in test ids and messages.
        open: Returns a new handle on the same storage on every call.
        durable: Whether a second handle sees what the first one saved (false for memory).
        processes: Whether handles opened in other processes share the storage.

    """

    name: str
    open: Callable[[], Checkpointer]
    durable: bool = True
    processes: bool = True


def ev(run_id: str, seq: int, kind: EventKind = EventKind.STEP_FINISHED, **data: Any) -> PAEvent:
    """Build an event with a fixed timestamp so that equal calls build equal events."""
    return PAEvent(run_id=run_id, seq=seq, kind=kind, ts=1_700_000_000.0 + seq, data=data)


def st(run_id: str, seq: int, **data: Any) -> RunState:
    """Build a state with fixed timestamps."""
    return RunState(run_id=run_id, seq=seq, data=data, created_at=1.5, updated_at=2.5 + seq)


# Values that must come back bit for bit; each is checked with repr() as well as ==, because
# -0.0 == 0.0 and 1 == 1.0 would hide a lossy round trip.
EXACT_VALUES: dict[str, Any] = {
    "key_order": {"z": 1, "a": 2, "m": {"y": None, "b": [3, 2, 1]}},
    "negative_zero": -0.0,
    "floats": [0.1, 1e-310, 5e-324, 1.7976931348623157e308, -2.5, 1e16, 123456789.123456789],
    "float_vs_int": [1.0, 1, 0, 0.0, -1.0],
    "big_ints": [2**63, -(2**63) - 1, 2**64 + 1, 10**100, -(10**300)],
    "longest_int": int("9" * 4300),
    "nul": "a\x00b",
    "nul_key": {"k\x00": "\x00"},
    "unicode": "héllo ✓ 🙂 \u200d \ufeff \U0010ffff",
    "lone_surrogate": "\ud800x\udfff",
    "controls": "".join(chr(c) for c in range(32)) + "\x7f",
    "escapes": '"\\/\b\f\n\r\t',
    "bools_none": [True, False, None, [], {}],
    "empty": "",
}

def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"d": value} if i % 2 else [value]
    return value


_contains_itself: dict[str, Any] = {}
_contains_itself["self"] = _contains_itself

NOT_JSON: dict[str, Any] = {
    "object": object(),
    "set": {1, 2},
    "tuple": (1, 2),
    "bytes": b"abc",
    "nan": float("nan"),
    "inf": float("inf"),
    "minus_inf": float("-inf"),
    "int_key": {1: "a"},
    "none_key": {None: "a"},
    "nested_bad": {"a": [{"b": [1, {2, 3}]}]},
    "too_many_digits": 10**4300,
    "exception": ValueError("x"),
    "contains_itself": _contains_itself,
    "too_deep": _nested(2000),
}

BAD_RUN_IDS: dict[str, Any] = {
    "empty": "",
    "too_long": "r" * 256,
    "slash": "a/b",
    "backslash": "a\\b",
    "dot": ".",
    "dotdot": "..",
    "parent_escape": "../../etc",
    "nul": "a\x00b",
    "newline": "a\nb",
    "tab": "a\tb",
    "del": "a\x7fb",
    "c1_control": "a\x85b",
    "not_a_str": 123,
}


def _raw_event(**fields: Any) -> PAEvent:
    """An event built without validation, as a caller bypassing pydantic could."""
    base = {"run_id": "r", "seq": 1, "kind": EventKind.CUSTOM, "ts": 1.0, "lane_id": "main"}
    return PAEvent.model_construct(**{**base, "data": {}, **fields})


def _write_in_process(
    opener: Callable[[], Checkpointer], run_id: str, seqs: list[int], tag: str
) -> list[str]:
    """Child-process body for the multi-process tests: returns what happened per seq."""
    outcome = []
    with opener() as cp:
        for seq in seqs:
            try:
                cp.save_event(ev(run_id, seq, writer=tag))
                outcome.append("saved")
            except SequenceConflict:
                outcome.append("conflict")
    return outcome


class CheckpointerSuite:
    """Every row of the contract; subclass it and provide a ``backend`` fixture."""

    @pytest.fixture
    def cp(self, backend: Backend) -> Iterator[Checkpointer]:
        """A fresh handle on the backend's storage, closed after the test."""
        with backend.open() as store:
            yield store

    @staticmethod
    def reopen(backend: Backend, cp: Checkpointer) -> Checkpointer:
        """A second handle when the backend is durable, else the same one."""
        return backend.open() if backend.durable else cp

    # -- the protocol ---------------------------------------------------------------------

    def test_store_implements_the_protocol(self, cp: Checkpointer) -> None:
        assert isinstance(cp, Checkpointer)

    def test_unknown_run_reads_as_empty(self, cp: Checkpointer) -> None:
        assert cp.load_latest("nobody") is None
        assert cp.list_events("nobody") == []
        assert list(cp.iter_events("nobody")) == []
        assert cp.recover("nobody") is None
        assert cp.list_runs() == []

    # -- save_event and exact round trips ---------------------------------------------------

    def test_saved_event_is_visible_to_a_new_handle(
        self, backend: Backend, cp: Checkpointer
    ) -> None:
        event = PAEvent(run_id="r1", seq=1, kind=EventKind.RUN_STARTED)
        cp.save_event(event)
        other = self.reopen(backend, cp)
        try:
            assert other.list_events("r1") == [event]
        finally:
            if other is not cp:
                other.close()

    def test_event_comes_back_equal_with_ts_and_lane(self, cp: Checkpointer) -> None:
        event = PAEvent(
            run_id="r",
            seq=3,
            kind=EventKind.TOOL_CALL,
            ts=1234.000001,
            lane_id="lane-2",
            data={"tool": "search", "args": {"q": "x"}},
        )
        cp.save_event(event)
        [back] = cp.list_events("r")
        assert back == event
        assert back.kind is EventKind.TOOL_CALL
        assert repr(back.ts) == repr(event.ts)
        assert back.lane_id == "lane-2"

    @pytest.mark.parametrize("name", list(EXACT_VALUES))
    def test_json_values_round_trip_exactly(self, cp: Checkpointer, name: str) -> None:
        value = EXACT_VALUES[name]
        payload = {"v": value, "after": 1}
        cp.save_event(ev("r", 1, **payload))
        cp.save_snapshot("r", st("r", 1, **payload))
        [event] = cp.list_events("r")
        state = cp.load_latest("r")
        assert state is not None
        for got in (event.data, state.data):
            assert got == payload
            assert repr(got) == repr(payload)
            assert list(got) == ["v", "after"]

    def test_deep_nesting_round_trips(self, cp: Checkpointer) -> None:
        value = _nested(200)
        cp.save_event(ev("r", 1, deep=value))
        assert cp.list_events("r")[0].data == {"deep": value}

    def test_saved_value_is_a_copy(self, cp: Checkpointer) -> None:
        event = ev("r", 1, items=[1, 2])
        cp.save_event(event)
        event.data["items"].append(3)
        assert cp.list_events("r")[0].data == {"items": [1, 2]}

    # -- bad input: refused, and nothing written ---------------------------------------------

    @pytest.mark.parametrize("name", list(NOT_JSON))
    def test_non_json_event_data_is_refused_and_nothing_written(
        self, cp: Checkpointer, name: str
    ) -> None:
        with pytest.raises(InvalidInput):
            cp.save_event(ev("r", 1, bad=NOT_JSON[name]))
        assert cp.list_events("r") == []
        assert cp.list_runs() == []

    @pytest.mark.parametrize("name", list(NOT_JSON))
    def test_non_json_state_data_is_refused_and_nothing_written(
        self, cp: Checkpointer, name: str
    ) -> None:
        with pytest.raises(InvalidInput):
            cp.save_snapshot("r", st("r", 1, bad=NOT_JSON[name]))
        assert cp.load_latest("r") is None
        assert cp.list_runs() == []

    def test_non_finite_or_bad_fields_are_refused(self, cp: Checkpointer) -> None:
        bad_events = [
            _raw_event(seq=0),
            _raw_event(seq=-5),
            _raw_event(ts=float("nan")),
            _raw_event(ts=float("inf")),
            _raw_event(kind="custom"),
            _raw_event(seq=1.5),
            _raw_event(seq=True),
            _raw_event(seq=2**63),
            _raw_event(data=[1]),
            _raw_event(lane_id=None),
            _raw_event(lane_id="a\x00b"),
            _raw_event(lane_id="\ud800"),
        ]
        for bad in bad_events:
            with pytest.raises(InvalidInput):
                cp.save_event(bad)
            with pytest.raises(InvalidInput):
                cp.save_events([ev("r", 7), bad])
        with pytest.raises(InvalidInput):
            cp.save_event("not an event")  # type: ignore[arg-type]
        assert cp.list_events("r") == []
        assert cp.list_runs() == []

    def test_seq_below_one_is_refused(self, cp: Checkpointer) -> None:
        for seq in (0, -1):
            with pytest.raises(InvalidInput):
                cp.save_event(PAEvent(run_id="r", seq=seq, kind=EventKind.CUSTOM))
        with pytest.raises(InvalidInput):
            cp.save_snapshot("r", RunState(run_id="r", seq=-1))
        assert cp.list_events("r") == []
        assert cp.load_latest("r") is None

    def test_state_run_id_must_match(self, cp: Checkpointer) -> None:
        with pytest.raises(InvalidInput):
            cp.save_snapshot("a", st("b", 1))
        with pytest.raises(InvalidInput):
            cp.save_snapshot("a", "not a state")  # type: ignore[arg-type]
        assert cp.load_latest("a") is None
        assert cp.load_latest("b") is None
        assert cp.list_runs() == []

    @pytest.mark.parametrize("name", list(BAD_RUN_IDS))
    def test_bad_run_id_is_refused_by_every_method(self, cp: Checkpointer, name: str) -> None:
        run_id = BAD_RUN_IDS[name]
        event = PAEvent.model_construct(
            run_id=run_id, seq=1, kind=EventKind.CUSTOM, ts=1.0, lane_id="main", data={}
        )
        state = RunState.model_construct(
            run_id=run_id, seq=1, data={}, status=RunStatus.RUNNING, created_at=1.0, updated_at=1.0
        )
        calls: list[Callable[[], object]] = [
            lambda: cp.save_event(event),
            lambda: cp.save_events([ev("ok", 1), event]),
            lambda: cp.save_events([ev("ok", 1)], snapshot=state),
            lambda: cp.save_snapshot(run_id, state),
            lambda: cp.load_latest(run_id),
            lambda: cp.list_events(run_id),
            lambda: list(cp.iter_events(run_id)),
            lambda: cp.recover(run_id),
            lambda: cp.delete_run(run_id),
        ]
        for call in calls:
            with pytest.raises(InvalidRunId):
                call()
        assert cp.list_runs() == []

    def test_run_ids_at_the_limits_are_accepted(self, cp: Checkpointer) -> None:
        ids = ["r" * 255, "...", "a.b", "ünïcödé-🙂", "with space", "UPPER", "upper", "%2F"]
        for run_id in ids:
            cp.save_event(ev(run_id, 1, id=run_id))
            cp.save_snapshot(run_id, st(run_id, 1))
        for run_id in ids:
            assert cp.list_events(run_id) == [ev(run_id, 1, id=run_id)]
            assert cp.load_latest(run_id) == st(run_id, 1)
        assert sorted(cp.list_runs()) == sorted(ids)

    def test_paging_arguments_are_checked(self, cp: Checkpointer) -> None:
        with pytest.raises(InvalidInput):
            cp.list_events("r", limit=-1)
        with pytest.raises(InvalidInput):
            cp.list_events("r", since_seq="1")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            cp.list_runs(limit=-1)

    # -- conflicts and idempotent retries ----------------------------------------------------

    def test_conflicting_event_raises_and_keeps_the_first(self, cp: Checkpointer) -> None:
        first = ev("r", 1, v="first")
        cp.save_event(first)
        with pytest.raises(SequenceConflict) as info:
            cp.save_event(ev("r", 1, v="second"))
        assert info.value.run_id == "r"
        assert info.value.seq == 1
        assert cp.list_events("r") == [first]

    def test_identical_retry_is_a_no_op(self, cp: Checkpointer) -> None:
        event = ev("r", 1, v="same")
        cp.save_event(event)
        cp.save_event(event)
        cp.save_event(PAEvent.from_dict(event.to_dict()))
        cp.save_events([event, ev("r", 2)])
        cp.save_events([event, ev("r", 2)])
        assert cp.list_events("r") == [event, ev("r", 2)]

    def test_events_differing_only_in_ts_or_lane_conflict(self, cp: Checkpointer) -> None:
        event = ev("r", 1)
        cp.save_event(event)
        with pytest.raises(SequenceConflict):
            cp.save_event(event.model_copy(update={"ts": event.ts + 1}))
        with pytest.raises(SequenceConflict):
            cp.save_event(event.model_copy(update={"lane_id": "other"}))
        with pytest.raises(SequenceConflict):
            cp.save_event(event.model_copy(update={"kind": EventKind.CUSTOM}))
        assert cp.list_events("r") == [event]

    def test_same_seq_in_other_runs_is_no_conflict(self, cp: Checkpointer) -> None:
        cp.save_event(ev("a", 1))
        cp.save_event(ev("b", 1))
        assert cp.list_events("a") == [ev("a", 1)]
        assert cp.list_events("b") == [ev("b", 1)]

    # -- batches -----------------------------------------------------------------------------

    def test_batch_spans_runs_and_lands_whole(self, cp: Checkpointer) -> None:
        batch = [ev("a", 1), ev("b", 1), ev("a", 2), ev("b", 2, x=[1])]
        cp.save_events(batch)
        assert cp.list_events("a") == [ev("a", 1), ev("a", 2)]
        assert cp.list_events("b") == [ev("b", 1), ev("b", 2, x=[1])]

    def test_batch_accepts_any_iterable(self, cp: Checkpointer) -> None:
        cp.save_events(ev("r", seq) for seq in range(1, 4))
        cp.save_events(())
        assert [e.seq for e in cp.list_events("r")] == [1, 2, 3]

    def test_batch_with_a_conflict_writes_nothing(self, cp: Checkpointer) -> None:
        cp.save_event(ev("r", 2, v="stored"))
        with pytest.raises(SequenceConflict):
            cp.save_events(
                [ev("r", 1), ev("other", 1), ev("r", 2, v="different"), ev("r", 3)],
                snapshot=st("r", 3),
            )
        assert cp.list_events("r") == [ev("r", 2, v="stored")]
        assert cp.list_events("other") == []
        assert cp.load_latest("r") is None
        assert cp.list_runs() == ["r"]

    def test_batch_with_two_different_events_at_one_seq_writes_nothing(
        self, cp: Checkpointer
    ) -> None:
        with pytest.raises(SequenceConflict):
            cp.save_events([ev("r", 1, v=1), ev("r", 1, v=2)])
        assert cp.list_events("r") == []

    def test_batch_with_invalid_event_writes_nothing(self, cp: Checkpointer) -> None:
        with pytest.raises(InvalidInput):
            cp.save_events([ev("r", 1), ev("r", 2, bad=float("nan"))], snapshot=st("r", 2))
        assert cp.list_events("r") == []
        assert cp.load_latest("r") is None

    def test_batch_with_invalid_snapshot_writes_nothing(self, cp: Checkpointer) -> None:
        with pytest.raises(InvalidInput):
            cp.save_events([ev("r", 1)], snapshot=st("r", 1, bad={1, 2}))
        assert cp.list_events("r") == []
        assert cp.list_runs() == []

    def test_batch_with_snapshot_lands_together(self, backend: Backend, cp: Checkpointer) -> None:
        cp.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2, step=2))
        cp.save_events([ev("r", 3)])
        other = self.reopen(backend, cp)
        try:
            assert other.load_latest("r") == st("r", 2, step=2)
            assert other.recover("r") == Recovery(st("r", 2, step=2), [ev("r", 3)])
        finally:
            if other is not cp:
                other.close()

    def test_snapshot_alone_through_save_events(self, cp: Checkpointer) -> None:
        cp.save_events([], snapshot=st("r", 0))
        assert cp.load_latest("r") == st("r", 0)
        assert cp.list_runs() == ["r"]

    def test_large_batch(self, cp: Checkpointer) -> None:
        batch = [ev("r", seq, text="x" * 50) for seq in range(1, 5001)]
        cp.save_events(batch)
        assert cp.list_events("r") == batch

    # -- snapshots ---------------------------------------------------------------------------

    def test_latest_snapshot_is_the_highest_seq(self, cp: Checkpointer) -> None:
        cp.save_snapshot("r", st("r", 5, v=5))
        cp.save_snapshot("r", st("r", 3, v=3))
        assert cp.load_latest("r") == st("r", 5, v=5)
        cp.save_snapshot("r", st("r", 5, v="again"))
        assert cp.load_latest("r") == st("r", 5, v="again")
        cp.save_snapshot("r", st("r", 9, v=9))
        assert cp.load_latest("r") == st("r", 9, v=9)
        cp.save_events([ev("r", 1)], snapshot=st("r", 1))
        assert cp.load_latest("r") == st("r", 9, v=9)

    def test_snapshot_keeps_status_and_timestamps(self, cp: Checkpointer) -> None:
        state = RunState(
            run_id="r",
            seq=4,
            data={"k": "v"},
            status=RunStatus.FAILED,
            created_at=12.25,
            updated_at=99.125,
        )
        cp.save_snapshot("r", state)
        back = cp.load_latest("r")
        assert back == state
        assert back is not None and back.status is RunStatus.FAILED

    def test_snapshots_of_runs_are_separate(self, cp: Checkpointer) -> None:
        cp.save_snapshot("a", st("a", 1))
        cp.save_snapshot("b", st("b", 7))
        assert cp.load_latest("a") == st("a", 1)
        assert cp.load_latest("b") == st("b", 7)

    # -- reading the log ---------------------------------------------------------------------

    def test_list_events_since_and_limit(self, cp: Checkpointer) -> None:
        events = [ev("r", seq) for seq in range(1, 11)]
        cp.save_events(events)
        assert cp.list_events("r") == events
        assert cp.list_events("r", since_seq=0) == events
        assert cp.list_events("r", since_seq=-3) == events
        assert cp.list_events("r", since_seq=4) == events[4:]
        assert cp.list_events("r", since_seq=10) == []
        assert cp.list_events("r", since_seq=99) == []
        assert cp.list_events("r", limit=3) == events[:3]
        assert cp.list_events("r", since_seq=8, limit=5) == events[8:]
        assert cp.list_events("r", limit=0) == []

    def test_events_come_back_in_seq_order_whatever_the_write_order(self, cp: Checkpointer) -> None:
        for seq in (5, 1, 9, 3, 7, 2):
            cp.save_event(ev("r", seq))
        cp.save_events([ev("r", 8), ev("r", 4), ev("r", 6)])
        assert [e.seq for e in cp.list_events("r")] == list(range(1, 10))
        assert [e.seq for e in cp.list_events("r", since_seq=4, limit=3)] == [5, 6, 7]
        assert [e.seq for e in cp.iter_events("r", since_seq=6)] == [7, 8, 9]

    def test_gaps_in_seq_are_kept(self, cp: Checkpointer) -> None:
        cp.save_events([ev("r", 1), ev("r", 10), ev("r", 100)])
        assert [e.seq for e in cp.list_events("r", since_seq=5)] == [10, 100]

    def test_iter_events_streams_everything_in_order(self, cp: Checkpointer) -> None:
        events = [ev("r", seq, i=seq) for seq in range(1, 2601)]
        cp.save_events(events)
        iterator = cp.iter_events("r")
        assert next(iterator) == events[0]
        assert list(iterator) == events[1:]
        assert list(cp.iter_events("r", since_seq=2500)) == events[2500:]

    def test_iter_events_checks_run_id_before_iterating(self, cp: Checkpointer) -> None:
        with pytest.raises(InvalidRunId):
            cp.iter_events("../x")

    # -- recovery ----------------------------------------------------------------------------

    def test_recover_returns_snapshot_and_exactly_the_tail(self, cp: Checkpointer) -> None:
        cp.save_events([ev("r", seq) for seq in range(1, 6)], snapshot=st("r", 3))
        cp.save_events([ev("r", 6)])
        recovery = cp.recover("r")
        assert recovery == Recovery(st("r", 3), [ev("r", 4), ev("r", 5), ev("r", 6)])
        assert recovery is not None and recovery.seq == 6
        state, events = recovery
        assert state == st("r", 3)
        assert [e.seq for e in events] == [4, 5, 6]

    def test_recover_without_snapshot_returns_every_event(self, cp: Checkpointer) -> None:
        cp.save_events([ev("r", 1), ev("r", 2)])
        assert cp.recover("r") == Recovery(None, [ev("r", 1), ev("r", 2)])

    def test_recover_with_snapshot_past_the_log(self, cp: Checkpointer) -> None:
        cp.save_event(ev("r", 1))
        cp.save_snapshot("r", st("r", 4))
        assert cp.recover("r") == Recovery(st("r", 4), [])

    def test_recover_snapshot_only_run(self, cp: Checkpointer) -> None:
        cp.save_snapshot("r", st("r", 0))
        assert cp.recover("r") == Recovery(st("r", 0), [])

    # -- runs --------------------------------------------------------------------------------

    def test_list_runs_has_runs_with_events_or_snapshots(self, cp: Checkpointer) -> None:
        cp.save_event(ev("events-only", 1))
        cp.save_snapshot("snapshot-only", st("snapshot-only", 0))
        assert sorted(cp.list_runs()) == ["events-only", "snapshot-only"]

    def test_list_runs_most_recently_written_first(self, cp: Checkpointer) -> None:
        for run_id in ("a", "b", "c"):
            cp.save_event(ev(run_id, 1))
        assert cp.list_runs() == ["c", "b", "a"]
        cp.save_event(ev("a", 2))
        assert cp.list_runs() == ["a", "c", "b"]
        cp.save_snapshot("b", st("b", 1))
        assert cp.list_runs() == ["b", "a", "c"]
        cp.save_events([ev("c", 2)], snapshot=st("c", 2))
        assert cp.list_runs() == ["c", "b", "a"]
        assert cp.list_runs(limit=2) == ["c", "b"]
        assert cp.list_runs(limit=0) == []
        assert cp.list_runs(offset=1) == ["b", "a"]
        assert cp.list_runs(limit=1, offset=1) == ["b"]

    def test_delete_run_removes_only_that_run(self, backend: Backend, cp: Checkpointer) -> None:
        cp.save_events([ev("gone", 1), ev("gone", 2), ev("kept", 1)], snapshot=st("gone", 2))
        cp.save_snapshot("kept", st("kept", 1))
        cp.delete_run("gone")
        cp.delete_run("never-existed")
        other = self.reopen(backend, cp)
        try:
            for store in (cp, other):
                assert store.list_events("gone") == []
                assert store.load_latest("gone") is None
                assert store.recover("gone") is None
                assert store.list_runs() == ["kept"]
                assert store.list_events("kept") == [ev("kept", 1)]
        finally:
            if other is not cp:
                other.close()

    def test_deleted_run_can_be_written_again(self, cp: Checkpointer) -> None:
        cp.save_event(ev("r", 1, v="old"))
        cp.delete_run("r")
        cp.save_event(ev("r", 1, v="new"))
        assert cp.list_events("r") == [ev("r", 1, v="new")]

    # -- concurrency -------------------------------------------------------------------------

    def test_threads_appending_to_one_run_lose_nothing(self, backend: Backend) -> None:
        stores = [backend.open() for _ in range(2)] if backend.durable else [backend.open()] * 2
        try:

            def write(worker: int) -> None:
                store = stores[worker % len(stores)]
                for seq in range(worker * 50 + 1, worker * 50 + 51):
                    store.save_event(ev("r", seq))

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(write, range(4)))
            assert [e.seq for e in stores[0].list_events("r")] == list(range(1, 201))
        finally:
            for store in {id(s): s for s in stores}.values():
                store.close()

    def test_threads_racing_for_one_seq_have_one_winner(self, backend: Backend) -> None:
        with backend.open() as cp:
            barrier = threading.Barrier(4)
            outcome: list[str] = []

            def race(worker: int) -> None:
                barrier.wait()
                try:
                    cp.save_event(ev("r", 1, writer=worker))
                    outcome.append("saved")
                except SequenceConflict:
                    outcome.append("conflict")

            threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcome) == ["conflict"] * 3 + ["saved"]
            [stored] = cp.list_events("r")
            assert stored.data["writer"] in range(4)

    def test_processes_appending_to_one_run_lose_and_duplicate_nothing(
        self, backend: Backend
    ) -> None:
        if not backend.processes:
            pytest.skip(f"{backend.name} keeps its data inside one process")
        context = multiprocessing.get_context("spawn" if sys.platform != "linux" else "forkserver")
        with backend.open():
            pass  # create or migrate the storage once before the writers start
        with context.Pool(3) as pool:
            jobs = [
                pool.apply_async(
                    _write_in_process, (backend.open, "r", list(range(w, 91, 3)), str(w))
                )
                for w in (1, 2, 3)
            ]
            results = [job.get(timeout=120) for job in jobs]
            races = [
                pool.apply_async(
                    _write_in_process, (backend.open, "race", list(range(1, 31)), str(w))
                )
                for w in (1, 2, 3)
            ]
            race_results = [job.get(timeout=120) for job in races]
        assert all(result == ["saved"] * 30 for result in results)
        with backend.open() as cp:
            assert [e.seq for e in cp.list_events("r")] == list(range(1, 91))
            stored = cp.list_events("race")
            assert [e.seq for e in stored] == list(range(1, 31))
        for seq_index in range(30):
            assert sorted(r[seq_index] for r in race_results) == ["conflict", "conflict", "saved"]
