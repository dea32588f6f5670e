"""Capability.APPEND: the store picks each appended event's seq, and finds events by key.

The rows follow :class:`purpose_agent.protocol.Appending`. Those that race writers against one
run need Capability.THREADS or Capability.PROCESSES as well, and run only where both are
declared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol, cast

from purpose_agent import (
    Checkpointer,
    EventKind,
    InvalidInput,
    InvalidRunId,
    NewEvent,
    PAEvent,
    Recovery,
    SequenceConflict,
)
from purpose_agent.protocol import Appending
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.processes import WAIT_SECONDS, _context
from purpose_agent.testing.samples import (
    BAD_RUN_IDS,
    EXACT_VALUES,
    NOT_JSON,
    covering,
    ev,
    new,
    raw_new_event,
    st,
)
from purpose_agent.testing.threads import _close_all, _handles


class AppendingStore(Appending, Checkpointer, Protocol):
    """A checkpointer with the methods of :class:`Appending`: what these rows call.

    The rows take the ``cp`` fixture under this type; the capability gate has made sure the
    backend declares Capability.APPEND before a row runs.
    """


class AppendingRows(Rows):
    """What one handle sees of ``append``, ``last_seq`` and ``event_by_key``."""

    capability: ClassVar[Capability] = Capability.APPEND

    # -- positions ------------------------------------------------------------------------

    def test_append_to_a_new_run_assigns_seqs_from_one(self, cp: AppendingStore) -> None:
        batch = [new(n=1), new(EventKind.TOOL_CALL, n=2), new(lane_id="side", n=3)]
        first = cp.append("r", batch)
        assert first == [event.at("r", seq) for seq, event in enumerate(batch, start=1)]
        assert cp.list_events("r") == first
        assert cp.last_seq("r") == 3
        assert cp.list_runs() == ["r"]
        second = cp.append("r", [new(n=4), new(n=5)])
        assert [event.seq for event in second] == [4, 5]
        assert cp.list_events("r") == first + second
        assert cp.last_seq("r") == 5

    def test_append_continues_after_explicit_seqs_and_keeps_the_gaps(
        self, cp: AppendingStore
    ) -> None:
        cp.save_event(ev("r", 10))
        assert cp.last_seq("r") == 10
        [eleventh] = cp.append("r", [new(n=11)])
        assert eleventh.seq == 11
        cp.save_events([ev("r", 20)])
        after = cp.append("r", [new(n=21), new(n=22)])
        assert [event.seq for event in after] == [21, 22]
        assert [event.seq for event in cp.list_events("r")] == [10, 11, 20, 21, 22]
        assert cp.last_seq("r") == 22

    def test_appended_events_come_back_as_returned(self, cp: AppendingStore) -> None:
        batch = [
            new(EventKind.MODEL_REQUEST, ts=1234.000001, lane_id="lane-2", **EXACT_VALUES),
            new(EventKind.TOOL_RESULT, key="result", ts=-0.0, v=[1, {"x": None}]),
            NewEvent(kind=EventKind.CUSTOM),  # ts defaults to now, data to {}
        ]
        returned = cp.append("r", iter(batch))
        stored = cp.list_events("r")
        assert stored == returned
        assert [repr(event.data) for event in stored] == [repr(event.data) for event in batch]
        assert [repr(event.ts) for event in stored] == [repr(event.ts) for event in returned]
        assert stored[0].kind is EventKind.MODEL_REQUEST
        assert stored[2].ts == batch[2].ts
        assert cp.event_by_key("r", "result") == returned[1]
        assert list(cp.iter_events("r")) == returned
        assert cp.recover("r") == Recovery(None, returned)

    def test_a_snapshot_ahead_of_the_events_moves_the_last_seq(self, cp: AppendingStore) -> None:
        # An event appended below a snapshot's seq would be hidden from recover().
        cp.save_snapshot("alone", st("alone", 5))
        assert cp.last_seq("alone") == 5
        [first] = cp.append("alone", [new()], expected_last_seq=5)
        assert first.seq == 6
        assert cp.recover("alone") == Recovery(st("alone", 5), [first])
        cp.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 4))
        assert cp.last_seq("r") == 4
        [after] = cp.append("r", [new()])
        assert after.seq == 5
        cp.save_snapshot("r", st("r", 1))  # an older snapshot lowers nothing
        assert cp.last_seq("r") == 5

    def test_unknown_run_has_last_seq_zero_and_no_keys(self, cp: AppendingStore) -> None:
        assert cp.last_seq("nobody") == 0
        assert cp.event_by_key("nobody", "k") is None
        assert cp.list_runs() == []

    def test_appended_run_is_the_most_recently_written(self, cp: AppendingStore) -> None:
        cp.save_event(ev("a", 1))
        cp.save_event(ev("b", 1))
        cp.append("a", [new()])
        assert cp.list_runs() == ["a", "b"]
        cp.append("c", [new()])
        assert cp.list_runs() == ["c", "a", "b"]

    # -- the expected last seq -----------------------------------------------------------------

    def test_expected_last_seq_that_matches_appends(self, cp: AppendingStore) -> None:
        [first] = cp.append("r", [new(n=1)], expected_last_seq=0)
        assert first.seq == 1
        assert [e.seq for e in cp.append("r", [new(), new()], expected_last_seq=1)] == [2, 3]
        cp.save_event(ev("r", 10))
        [after_gap] = cp.append("r", [new(n=11)], expected_last_seq=10)
        assert after_gap.seq == 11
        assert cp.last_seq("r") == 11

    @pytest.mark.parametrize("expected", [0, 1, 3, 99])
    def test_expected_last_seq_that_differs_conflicts_and_writes_nothing(
        self, cp: AppendingStore, expected: int
    ) -> None:
        stored = cp.append("r", [new(n=1), new(n=2)])
        with pytest.raises(SequenceConflict) as info:
            cp.append("r", [new(n=3)], expected_last_seq=expected, snapshot=st("r", 0, s=1))
        assert info.value.run_id == "r"
        assert cp.list_events("r") == stored
        assert cp.load_latest("r") is None
        assert cp.last_seq("r") == 2

    @pytest.mark.parametrize("key", [None, "k"])
    def test_a_failed_expectation_leaves_the_run_as_it_was(
        self, cp: AppendingStore, key: str | None
    ) -> None:
        stored = cp.append("r", [new(n=1), new(n=2)])
        cp.append("later", [new()])
        for expected in (0, 1, 3, 99):
            with pytest.raises(SequenceConflict) as info:
                cp.append("r", [new(key=key, n=3)], expected_last_seq=expected)
            assert (info.value.run_id, info.value.seq) == ("r", expected + 1)
        assert cp.list_events("r") == stored
        assert cp.last_seq("r") == 2
        assert cp.event_by_key("r", "k") is None
        assert cp.list_runs() == ["later", "r"]  # not written since "later" was
        [third] = cp.append("r", [new(key=key, n=3)], expected_last_seq=2)
        assert third.seq == 3
        assert cp.list_runs() == ["r", "later"]

    def test_expected_last_seq_on_a_new_run_must_be_zero(self, cp: AppendingStore) -> None:
        for expected in (1, 5):
            with pytest.raises(SequenceConflict):
                cp.append("fresh", [new()], expected_last_seq=expected, snapshot=st("fresh", 0))
        assert cp.recover("fresh") is None
        assert cp.last_seq("fresh") == 0
        assert cp.list_runs() == []

    # -- the snapshot written with the events --------------------------------------------------

    @pytest.mark.parametrize("given_seq", [0, 2, 99])
    def test_snapshot_covers_exactly_the_appended_events(
        self, cp: AppendingStore, given_seq: int
    ) -> None:
        cp.save_event(ev("r", 1))
        state = st("r", given_seq, step=1)
        appended = cp.append("r", [new(n=2), new(n=3)], snapshot=state)
        assert [event.seq for event in appended] == [2, 3]
        assert cp.load_latest("r") == covering(state, 3)
        assert cp.recover("r") == Recovery(covering(state, 3), [])
        [after] = cp.append("r", [new(n=4)])
        assert cp.recover("r") == Recovery(covering(state, 3), [after])

    def test_snapshot_of_another_run_is_refused_and_nothing_written(
        self, cp: AppendingStore
    ) -> None:
        with pytest.raises(InvalidInput):
            cp.append("r", [new()], snapshot=st("other", 1))
        with pytest.raises(InvalidInput):
            cp.append("r", [new()], snapshot="not a state")  # type: ignore[arg-type]
        assert cp.recover("r") is None
        assert cp.recover("other") is None
        assert cp.list_runs() == []

    @pytest.mark.parametrize("name", ["set", "nan", "too_deep"])
    def test_bad_snapshot_or_event_writes_neither(self, cp: AppendingStore, name: str) -> None:
        bad = NOT_JSON[name]
        with pytest.raises(InvalidInput):
            cp.append("r", [new(n=1)], snapshot=st("r", 0, bad=bad))
        with pytest.raises(InvalidInput):
            cp.append("r", [new(n=1), new(bad=bad)], snapshot=st("r", 0))
        assert cp.recover("r") is None
        assert cp.last_seq("r") == 0
        assert cp.list_runs() == []

    # -- bad input -----------------------------------------------------------------------------

    def test_no_events_is_invalid_input(self, cp: AppendingStore) -> None:
        with pytest.raises(InvalidInput):
            cp.append("r", [])
        with pytest.raises(InvalidInput):
            cp.append("r", iter([]), snapshot=st("r", 0))
        with pytest.raises(InvalidInput):
            cp.append("r", [], expected_last_seq=0)
        assert cp.recover("r") is None
        assert cp.list_runs() == []

    @pytest.mark.parametrize("name", list(NOT_JSON))
    def test_non_json_data_is_refused_and_nothing_written(
        self, cp: AppendingStore, name: str
    ) -> None:
        with pytest.raises(InvalidInput):
            cp.append("r", [new(n=1), new(bad=NOT_JSON[name])])
        assert cp.list_events("r") == []
        assert cp.last_seq("r") == 0
        assert cp.list_runs() == []

    def test_bad_events_and_arguments_are_refused_and_nothing_written(
        self, cp: AppendingStore
    ) -> None:
        bad_events: list[Any] = [
            raw_new_event(kind="no_such_kind"),
            raw_new_event(kind=None),
            raw_new_event(ts=float("nan")),
            raw_new_event(ts="1"),
            raw_new_event(lane_id=None),
            raw_new_event(lane_id="a\x00b"),
            raw_new_event(data=[1]),
            raw_new_event(key=""),
            raw_new_event(key="k" * 256),
            raw_new_event(key="a\x00b"),
            raw_new_event(key=7),
            ev("r", 1),  # a positioned event is for save_event
            "not an event",
        ]
        for bad in bad_events:
            with pytest.raises(InvalidInput):
                cp.append("r", [new(n=1), bad])
        for expected in (-1, "1", 1.0, True):
            with pytest.raises(InvalidInput):
                cp.append("r", [new()], expected_last_seq=expected)  # type: ignore[arg-type]
        assert cp.list_events("r") == []
        assert cp.last_seq("r") == 0
        assert cp.list_runs() == []

    @pytest.mark.parametrize("name", list(BAD_RUN_IDS))
    def test_append_and_its_reads_refuse_a_bad_run_id(self, cp: AppendingStore, name: str) -> None:
        run_id = BAD_RUN_IDS[name]
        calls: list[Callable[[], object]] = [
            lambda: cp.append(run_id, [new()]),
            lambda: cp.last_seq(run_id),
            lambda: cp.event_by_key(run_id, "k"),
        ]
        for call in calls:
            with pytest.raises(InvalidRunId):
                call()
        assert cp.list_runs() == []

    # -- keys ----------------------------------------------------------------------------------

    def test_keyed_events_are_found_by_their_key(self, cp: AppendingStore) -> None:
        appended = cp.append(
            "r", [new(key="step-1", n=1), new(n=2), new(key="Step-1", n=3), new(key="ü 🙂", n=4)]
        )
        assert cp.event_by_key("r", "step-1") == appended[0]
        assert cp.event_by_key("r", "Step-1") == appended[2]  # keys are case-sensitive
        assert cp.event_by_key("r", "ü 🙂") == appended[3]
        assert cp.event_by_key("r", "STEP-1") is None
        assert cp.event_by_key("r", "step-") is None
        assert cp.event_by_key("r", "step-%") is None
        assert cp.event_by_key("other", "step-1") is None
        long_key = "k" * 255
        [stored] = cp.append("r", [new(key=long_key)])
        assert cp.event_by_key("r", long_key) == stored

    def test_appending_a_stored_key_again_returns_the_stored_event(
        self, cp: AppendingStore
    ) -> None:
        [first] = cp.append("r", [new(key="k", ts=5.0, n=1)])
        cp.append("r", [new(), new()])
        retry = new(key="k", ts=6.0, n=1)  # rebuilt later: only ts differs
        assert cp.append("r", [retry]) == [first]
        assert cp.append("r", [retry], expected_last_seq=3) == [first]
        # Nothing is new, so a stale expected seq does not matter: the retry of a write that
        # did land succeeds.
        assert cp.append("r", [retry], expected_last_seq=0) == [first]
        assert cp.last_seq("r") == 3
        assert [event.seq for event in cp.list_events("r")] == [1, 2, 3]
        assert cp.event_by_key("r", "k") == first

    @pytest.mark.parametrize(
        "changed",
        [
            {"n": 2},
            {"kind": EventKind.CUSTOM},
            {"lane_id": "side"},
            {"extra": True},
        ],
        ids=repr,
    )
    def test_a_stored_key_with_other_content_conflicts_and_writes_nothing(
        self, cp: AppendingStore, changed: dict[str, Any]
    ) -> None:
        stored = cp.append("r", [new(key="k", n=1), new(n=2)])
        fields: dict[str, Any] = {"key": "k", "n": 1, **changed}
        with pytest.raises(SequenceConflict) as info:
            cp.append("r", [new(n=3), new(**fields)], snapshot=st("r", 0))
        assert info.value.run_id == "r"
        assert cp.list_events("r") == stored
        assert cp.load_latest("r") is None
        assert cp.last_seq("r") == 2
        assert cp.event_by_key("r", "k") == stored[0]

    def test_a_stored_key_among_new_events_leaves_nothing_behind(self, cp: AppendingStore) -> None:
        first = cp.append("r", [new(key="k", n=1)])
        cp.append("later", [new()])
        batch = [new(n=2), new(key="k", n="other"), new(key="new", n=3)]
        for expected in (None, 1):
            with pytest.raises(SequenceConflict) as info:
                cp.append("r", batch, expected_last_seq=expected)
            assert (info.value.run_id, info.value.seq) == ("r", 1)
        assert cp.list_events("r") == first
        assert cp.last_seq("r") == 1
        assert cp.event_by_key("r", "new") is None
        assert cp.list_runs() == ["later", "r"]
        after = cp.append("r", [new(n=2), new(key="new", n=3)])
        assert [event.seq for event in after] == [2, 3]

    def test_one_key_twice_in_a_batch_is_invalid_input(self, cp: AppendingStore) -> None:
        # A key names one event: a batch that gives it to two is a caller's mistake, even when
        # the two are equal, and writes nothing.
        [stored] = cp.append("r", [new(key="k", n=1)])
        batches = [
            [new(key="j", n=1), new(n=2), new(key="j", n=1)],
            [new(key="j", n=1), new(key="j", n=2)],
            [new(key="k", n=1), new(key="k", n=1)],
        ]
        for batch in batches:
            with pytest.raises(InvalidInput):
                cp.append("r", batch)
        assert cp.event_by_key("r", "j") is None
        assert cp.list_events("r") == [stored]
        assert cp.last_seq("r") == 1

    def test_keys_of_different_runs_are_independent(self, cp: AppendingStore) -> None:
        [in_a] = cp.append("a", [new(key="k", run="a")])
        [in_b] = cp.append("b", [new(EventKind.CUSTOM, key="k", lane_id="x", run="b")])
        assert (in_a.seq, in_b.seq) == (1, 1)
        assert cp.event_by_key("a", "k") == in_a
        assert cp.event_by_key("b", "k") == in_b
        cp.delete_run("a")
        assert cp.event_by_key("a", "k") is None
        assert cp.event_by_key("b", "k") == in_b

    def test_a_batch_of_stored_and_new_keyed_events(self, cp: AppendingStore) -> None:
        first = cp.append("r", [new(key="a", n=1), new(key="b", n=2)])
        cp.append("r", [new(n=3)])
        batch = [new(key="b", n=2), new(key="c", n=4), new(n=5), new(key="a", n=1)]
        with pytest.raises(SequenceConflict):  # some event is new, so the stale seq counts
            cp.append("r", batch, expected_last_seq=2)
        assert cp.last_seq("r") == 3
        state = st("r", 0, step="mixed")
        mixed = cp.append("r", batch, expected_last_seq=3, snapshot=state)
        assert mixed == [first[1], batch[1].at("r", 4), batch[2].at("r", 5), first[0]]
        assert cp.event_by_key("r", "c") == mixed[1]
        assert [event.seq for event in cp.list_events("r")] == [1, 2, 3, 4, 5]
        assert cp.load_latest("r") == covering(state, 5)
        assert cp.last_seq("r") == 5

    def test_a_run_at_the_highest_seq_refuses_appends(self, cp: AppendingStore) -> None:
        top = ev("r", 2**63 - 1)
        cp.save_event(top)
        cp.append("later", [new()])
        for batch in ([new()], [new(key="k")], [new(), new()]):
            with pytest.raises(InvalidInput, match="no seq left"):
                cp.append("r", batch)
        assert cp.list_events("r") == [top]
        assert cp.last_seq("r") == 2**63 - 1
        assert cp.event_by_key("r", "k") is None
        assert cp.list_runs() == ["later", "r"]

    def test_deleted_run_appends_from_one_again(self, cp: AppendingStore) -> None:
        cp.append("r", [new(key="k", n=1), new(n=2)], snapshot=st("r", 0))
        cp.delete_run("r")
        assert cp.last_seq("r") == 0
        assert cp.event_by_key("r", "k") is None
        assert cp.recover("r") is None
        [again] = cp.append("r", [new(key="k", n="other")], expected_last_seq=0)
        assert again.seq == 1
        assert cp.event_by_key("r", "k") == again
        assert cp.list_events("r") == [again]


class AppendingThreadsRows(Rows):
    """Appends racing in threads: the store, not the writers, decides every position."""

    capability: ClassVar[Capability] = Capability.APPEND
    also_needs: ClassVar[frozenset[Capability]] = frozenset({Capability.THREADS})

    def test_threads_appending_to_one_run_get_distinct_seqs_in_their_own_order(
        self, backend: Backend
    ) -> None:
        stores = _handles(backend)
        workers, appends = 4, 25

        def write(worker: int) -> list[PAEvent]:
            store = _appending(stores[worker % len(stores)])
            returned: list[PAEvent] = []
            for number in range(appends):
                size = 1 + number % 2
                batch = store.append("r", [new(w=worker, i=number, j=j) for j in range(size)])
                # The store gives a batch the run's next positions, with nobody in between.
                assert [e.seq for e in batch] == list(range(batch[0].seq, batch[0].seq + size))
                returned += batch
            return returned

        try:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(write, range(workers)))
            stored = stores[0].list_events("r")
            last = _appending(stores[0]).last_seq("r")
        finally:
            _close_all(stores)
        total = sum(len(result) for result in results)
        assert [event.seq for event in stored] == list(range(1, total + 1))
        assert sorted((e for result in results for e in result), key=_by_seq) == stored
        assert last == total
        for worker, result in enumerate(results):
            own = [event for event in stored if event.data["w"] == worker]
            assert own == result  # a writer's events keep the order it appended them in

    def test_threads_racing_on_one_expected_last_seq_have_one_winner(
        self, backend: Backend
    ) -> None:
        stores = _handles(backend)
        workers, rounds = 8, 10
        barrier = threading.Barrier(workers)
        winners: list[list[PAEvent]] = [[] for _ in range(rounds)]
        conflicts = [0] * rounds
        counted = threading.Lock()

        def race(worker: int) -> None:
            store = _appending(stores[worker % len(stores)])
            for number in range(rounds):
                barrier.wait(WAIT_SECONDS)
                batch = [new(w=worker, round=number), new(w=worker)]
                try:
                    won = store.append("r", batch, expected_last_seq=2 * number)
                except SequenceConflict:
                    with counted:
                        conflicts[number] += 1
                except BaseException:
                    barrier.abort()  # the others stop waiting for a writer that failed
                    raise
                else:
                    with counted:
                        winners[number] += won

        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(race, range(workers)))
            stored = stores[0].list_events("r")
        finally:
            barrier.abort()
            _close_all(stores)
        assert conflicts == [workers - 1] * rounds
        assert [len(won) for won in winners] == [2] * rounds
        assert stored == [event for won in winners for event in won]
        assert [event.seq for event in stored] == list(range(1, 2 * rounds + 1))

    def test_threads_retrying_on_conflict_lose_no_update(self, backend: Backend) -> None:
        stores = _handles(backend)
        workers, writes = 4, 15

        def write(worker: int) -> list[PAEvent]:
            store = _appending(stores[worker % len(stores)])
            return [_append_read_then_write(store, "r", w=worker, i=i) for i in range(writes)]

        try:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(write, range(workers)))
            stored = stores[0].list_events("r")
        finally:
            _close_all(stores)
        assert [event.seq for event in stored] == list(range(1, workers * writes + 1))
        for worker, result in enumerate(results):
            assert [event for event in stored if event.data["w"] == worker] == result

    def test_threads_appending_one_keyed_event_store_it_once(self, backend: Backend) -> None:
        stores = _handles(backend)
        workers = 8
        barrier = threading.Barrier(workers)

        def append_same(worker: int) -> list[PAEvent]:
            store = _appending(stores[worker % len(stores)])
            barrier.wait(WAIT_SECONDS)
            return store.append("r", [new(key="k", ts=float(worker), n=1)])

        def append_own(worker: int) -> str:
            store = _appending(stores[worker % len(stores)])
            barrier.wait(WAIT_SECONDS)
            try:
                store.append("r", [new(key="j", w=worker)])
            except SequenceConflict:
                return "conflict"
            return "saved"

        try:
            with ThreadPoolExecutor(workers) as pool:
                same = list(pool.map(append_same, range(workers)))
                barrier.reset()
                own = list(pool.map(append_own, range(workers)))
            stored = stores[0].list_events("r")
        finally:
            barrier.abort()
            _close_all(stores)
        [winner] = [event for event in stored if event.seq == 1]
        assert all(result == [winner] for result in same)
        assert sorted(own) == ["conflict"] * (workers - 1) + ["saved"]
        assert [event.seq for event in stored] == [1, 2]


class AppendingProcessesRows(Rows):
    """Appends from several processes to one run, with and without an expected seq."""

    capability: ClassVar[Capability] = Capability.APPEND
    also_needs: ClassVar[frozenset[Capability]] = frozenset({Capability.PROCESSES})

    def test_processes_appending_without_positions_lose_and_duplicate_nothing(
        self, backend: Backend
    ) -> None:
        with backend.open():
            pass  # create or migrate the storage once before the writers start
        writers, writes = 3, 20
        with _context().Pool(writers) as pool:
            jobs = [
                pool.apply_async(_append_in_process, (backend.open, run_id, worker, writes))
                for run_id in ("free", "checked")
                for worker in range(writers)
            ]
            results = [job.get(timeout=WAIT_SECONDS) for job in jobs]
        with backend.open() as cp:
            for index, run_id in enumerate(("free", "checked")):
                stored = cp.list_events(run_id)
                assert [event.seq for event in stored] == list(range(1, writers * writes + 1))
                for worker in range(writers):
                    own = [event for event in stored if event.data["w"] == worker]
                    assert own == results[index * writers + worker]

    def test_processes_racing_on_one_expected_last_seq_have_one_winner(
        self, backend: Backend
    ) -> None:
        with backend.open():
            pass  # create or migrate the storage once before the writers start
        writers, rounds = 2, 15
        context = _context()
        with context.Manager() as manager, context.Pool(writers) as pool:
            barrier = manager.Barrier(writers)
            jobs = [
                pool.apply_async(_race_in_process, (backend.open, barrier, worker, rounds))
                for worker in range(writers)
            ]
            results = [job.get(timeout=WAIT_SECONDS) for job in jobs]
        with backend.open() as cp:
            stored = cp.list_events("r")
        for number in range(rounds):
            outcomes = [result[number] for result in results]
            # Exactly one writer gets each round's positions; the other is told it lost.
            assert sorted(len(won) for won in outcomes) == [0, 2]
        assert stored == sorted(
            (event for result in results for won in result for event in won), key=_by_seq
        )
        assert [event.seq for event in stored] == list(range(1, 2 * rounds + 1))


class AppendingSuite(AppendingRows, AppendingThreadsRows, AppendingProcessesRows):
    """Every row of Capability.APPEND; the racing ones also need THREADS or PROCESSES."""

    capability: ClassVar[Capability] = Capability.APPEND


def _appending(store: Checkpointer) -> AppendingStore:
    """The handle as the rows call it, on a backend that declares Capability.APPEND."""
    return cast(AppendingStore, store)


def _by_seq(event: PAEvent) -> int:
    return event.seq


def _append_read_then_write(store: AppendingStore, run_id: str, **data: Any) -> PAEvent:
    """Append one event after the run's last seq as read, reading again after a conflict."""
    while True:
        last = store.last_seq(run_id)
        try:
            [event] = store.append(run_id, [new(**data)], expected_last_seq=last)
        except SequenceConflict:
            continue
        assert event.seq == last + 1
        return event


def _append_in_process(
    opener: Callable[[], Checkpointer], run_id: str, worker: int, writes: int
) -> list[PAEvent]:
    """Child-process body: ``writes`` appends, each after a read of the last seq on "checked"."""
    with opener() as cp:
        store = _appending(cp)
        if run_id == "checked":
            return [_append_read_then_write(store, run_id, w=worker, i=i) for i in range(writes)]
        return [store.append(run_id, [new(w=worker, i=i)])[0] for i in range(writes)]


def _race_in_process(
    opener: Callable[[], Checkpointer], barrier: Any, worker: int, rounds: int
) -> list[list[PAEvent]]:
    """Child-process body: per round, append two events expecting the round's last seq.

    Returns per round what this writer appended, empty when it got a conflict.
    """
    won: list[list[PAEvent]] = []
    with opener() as cp:
        store = _appending(cp)
        for number in range(rounds):
            barrier.wait(WAIT_SECONDS)
            batch = [new(w=worker, round=number), new(w=worker)]
            try:
                won.append(store.append("r", batch, expected_last_seq=2 * number))
            except SequenceConflict as exc:
                assert (exc.run_id, exc.seq) == ("r", 2 * number + 1)
                won.append([])
    return won
