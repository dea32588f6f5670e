"""Capability.BASE: the protocol on one handle, the rows every store passes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from purpose_agent import (
    Checkpointer,
    EventKind,
    InvalidInput,
    InvalidRunId,
    PAEvent,
    Recovery,
    RunState,
    RunStatus,
    SequenceConflict,
)
from purpose_agent.codec import MAX_DEPTH
from purpose_agent.testing.capabilities import Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import (
    BAD_RUN_IDS,
    EXACT_VALUES,
    NOT_JSON,
    ev,
    nested,
    raw_event,
    raw_state,
    st,
)


def _refused(call: Callable[[], object], what: str) -> None:
    """Fail naming the call unless it raises ``InvalidInput`` (a loop of ``pytest.raises`` does not)."""
    try:
        call()
    except InvalidInput:
        return
    pytest.fail(f"{what} was not refused with InvalidInput")


class BaseSuite(Rows):
    """Every row of the protocol that one handle, in one thread, can check."""

    capability: ClassVar[Capability] = Capability.BASE

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
        # time.time() gives digits below the microsecond; a DATETIME(6)-like column drops them.
        now_like = PAEvent(run_id="r", seq=4, kind=EventKind.CUSTOM, ts=1_733_450_000.1234567)
        cp.save_event(now_like)
        [again] = cp.list_events("r", since_seq=3)
        assert repr(again.ts) == repr(now_like.ts), f"ts {now_like.ts!r} came back as {again.ts!r}"

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

    def test_str_enum_keys_and_values_come_back_as_their_text(self, cp: Checkpointer) -> None:
        # Nothing is turned into a string: a str-valued enum member already is one, and it
        # hashes and compares as its text, so the plain str that comes back equals it.
        payload = {EventKind.TOOL_CALL: [EventKind.TOOL_RESULT], "k": {EventKind.RUN_FAILED: 1}}
        cp.save_event(ev("r", 1, v=payload))
        cp.save_snapshot("r", st("r", 1, v=payload))
        expected = {"v": {"tool_call": ["tool_result"], "k": {"run_failed": 1}}}
        [event] = cp.list_events("r")
        state = cp.load_latest("r")
        assert state is not None
        for got in (event.data, state.data):
            assert got == {"v": payload}
            assert repr(got) == repr(expected)

    def test_deep_nesting_round_trips(self, cp: Checkpointer) -> None:
        value = nested(200)
        cp.save_event(ev("r", 1, deep=value))
        assert cp.list_events("r")[0].data == {"deep": value}

    def test_the_deepest_value_accepted_is_saved_and_read_from_deep_in_a_callers_stack(
        self, cp: Checkpointer
    ) -> None:
        # JSON's C encoder and scanner count nesting against the recursion limit together
        # with the caller's own frames, and frameworks call stores from hundreds deep.
        value = nested(MAX_DEPTH - 1)
        event = ev("r", 1, deep=value)

        def at_depth(frames: int, call: Callable[[], object]) -> object:
            return call() if frames == 0 else at_depth(frames - 1, call)

        frames = sys.getrecursionlimit() // 2
        at_depth(frames, lambda: cp.save_event(event))
        at_depth(frames, lambda: cp.save_event(ev("r", 1, deep=nested(MAX_DEPTH - 1))))
        assert at_depth(frames, lambda: cp.list_events("r")) == [event]
        assert at_depth(frames, lambda: cp.recover("r")) == Recovery(None, [event])

    def test_saved_value_is_a_copy(self, cp: Checkpointer) -> None:
        event = ev("r", 1, items=[1, 2])
        cp.save_event(event)
        event.data["items"].append(3)
        assert cp.list_events("r")[0].data == {"items": [1, 2]}

    def test_what_a_read_returns_is_the_callers_to_change(self, cp: Checkpointer) -> None:
        # A store that hands out the objects it keeps would let one reader's edit (a replay
        # filling in defaults, say) change what every later read returns.
        cp.save_events([ev("r", 1, items=[1]), ev("r", 2, items=[2])], snapshot=st("r", 1, v=[1]))
        recovery = cp.recover("r")
        latest = cp.load_latest("r")
        assert recovery is not None and recovery.state is not None and latest is not None
        reads = [cp.list_events("r"), list(cp.iter_events("r")), recovery.events]
        for event in (event for read in reads for event in read):
            event.data["items"].append("changed")
            event.data["added"] = True
        for state in (recovery.state, latest):
            state.data["v"].append("changed")
            state.data["added"] = True
        assert cp.list_events("r") == [ev("r", 1, items=[1]), ev("r", 2, items=[2])]
        assert list(cp.iter_events("r")) == [ev("r", 1, items=[1]), ev("r", 2, items=[2])]
        assert cp.recover("r") == Recovery(st("r", 1, v=[1]), [ev("r", 2, items=[2])])
        assert cp.load_latest("r") == st("r", 1, v=[1])

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
            raw_event(seq=0),
            raw_event(seq=-5),
            raw_event(ts=float("nan")),
            raw_event(ts=float("inf")),
            raw_event(kind="custom"),
            raw_event(seq=1.5),
            raw_event(seq=True),
            raw_event(seq=2**63),
            raw_event(data=[1]),
            raw_event(lane_id=None),
            raw_event(lane_id="a\x00b"),
            raw_event(lane_id="\ud800"),
        ]
        for bad in bad_events:
            _refused(functools.partial(cp.save_event, bad), f"save_event({bad!r})")
            _refused(
                functools.partial(cp.save_events, [ev("r", 7), bad]),
                f"save_events([..., {bad!r}])",
            )
        _refused(lambda: cp.save_event("not an event"), "save_event('not an event')")  # type: ignore[arg-type]
        assert cp.list_events("r") == []
        assert cp.list_runs() == []

    def test_non_finite_or_bad_state_fields_are_refused(self, cp: Checkpointer) -> None:
        bad_states = [
            raw_state(seq=-1),
            raw_state(seq=2**63),
            raw_state(seq=True),
            raw_state(seq=1.5),
            raw_state(created_at=float("nan")),
            raw_state(updated_at=float("inf")),
            raw_state(created_at="1.0"),
            raw_state(status="running"),
            raw_state(status="bogus"),
            raw_state(data=[1]),
        ]
        for bad in bad_states:
            _refused(functools.partial(cp.save_snapshot, "r", bad), f"save_snapshot('r', {bad!r})")
            _refused(
                functools.partial(cp.save_events, [ev("r", 1)], snapshot=bad),
                f"save_events([...], snapshot={bad!r})",
            )
        _refused(
            lambda: cp.save_events([ev("r", 1)], snapshot="not a state"),  # type: ignore[arg-type]
            "save_events([...], snapshot='not a state')",
        )
        assert cp.list_events("r") == []
        assert cp.load_latest("r") is None
        assert cp.list_runs() == []

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

    def test_run_ids_of_255_characters_of_any_width_are_accepted(self, cp: Checkpointer) -> None:
        # 255 characters of up to four bytes each: an index on bytes, or a file name made from
        # the id (NAME_MAX is 255 bytes), must still hold them.
        ids = ["\U0001f642" * 255, "é" * 255, "U" * 255, "." * 255, "%" * 255, " " * 255]
        for run_id in ids:
            cp.save_events([ev(run_id, 1, id=run_id)], snapshot=st(run_id, 1))
        for run_id in ids:
            assert cp.list_events(run_id) == [ev(run_id, 1, id=run_id)]
            assert cp.load_latest(run_id) == st(run_id, 1)
        assert sorted(cp.list_runs()) == sorted(ids)
        for run_id in ids:
            cp.delete_run(run_id)
            assert cp.recover(run_id) is None
        assert cp.list_runs() == []

    def test_run_ids_differing_only_in_spaces_case_accents_or_wildcards_are_separate(
        self, cp: Checkpointer
    ) -> None:
        # A column compared under a collation (PAD SPACE, case- or accent-insensitive), a
        # file system that normalises names, or a LIKE would read these as one run.
        ids = [
            "run",
            "run ",
            " run",
            "RUN",
            "Run",
            "ru_",
            "ru%",
            "caf\u00e9",  # é as one character (NFC)
            "cafe\u0301",  # e and a combining accent (NFD)
            "cafe",
            "\ufb01",  # the fi ligature, "fi" under NFKC
            "fi",
        ]
        for run_id in ids:
            cp.save_events([ev(run_id, 1, id=run_id)], snapshot=st(run_id, 1, id=run_id))
        for run_id in ids:
            assert cp.list_events(run_id) == [ev(run_id, 1, id=run_id)], f"run {run_id!r}"
            assert cp.recover(run_id) == Recovery(st(run_id, 1, id=run_id), []), f"run {run_id!r}"
        assert sorted(cp.list_runs()) == sorted(ids)
        cp.delete_run("run")
        assert sorted(cp.list_runs()) == sorted(set(ids) - {"run"})
        assert cp.list_events("run ") == [ev("run ", 1, id="run ")]

    def test_paging_arguments_are_checked(self, cp: Checkpointer) -> None:
        # A database handed these unchecked reads a negative OFFSET as 0, a string as a number,
        # or fails with its driver's own exception.
        cp.save_event(ev("r", 1))
        calls: dict[str, Callable[[], object]] = {}
        bad: Any
        for bad in (-1, "1", True, 1.0):
            calls[f"list_events('r', limit={bad!r})"] = functools.partial(
                cp.list_events, "r", limit=bad
            )
            calls[f"list_runs(limit={bad!r})"] = functools.partial(cp.list_runs, bad)
            calls[f"list_runs(offset={bad!r})"] = functools.partial(cp.list_runs, offset=bad)
        for bad in ("1", True, 1.0, None):
            calls[f"list_events('r', since_seq={bad!r})"] = functools.partial(
                cp.list_events, "r", bad
            )
            # Refused by the call itself, as a bad run id is, not on the first next().
            calls[f"iter_events('r', since_seq={bad!r})"] = functools.partial(
                cp.iter_events, "r", bad
            )
        for what, call in calls.items():
            _refused(call, what)

    def test_paging_arguments_beyond_64_bits_are_answered(self, cp: Checkpointer) -> None:
        # No seq or count reaches 2**63, so a larger bound reads as no bound and a larger
        # start as past the end, on every backend, whatever integers its database takes.
        events = [ev("r", 1), ev("r", 2)]
        cp.save_events(events)
        for huge in (2**63 - 1, 2**63, 2**64, 10**30):
            assert cp.list_events("r", since_seq=huge) == []
            assert list(cp.iter_events("r", since_seq=huge)) == []
            assert cp.list_events("r", limit=huge) == events
            assert cp.list_events("r", since_seq=-huge) == events
            assert list(cp.iter_events("r", since_seq=-huge)) == events
            assert cp.list_runs(limit=huge) == ["r"]
            assert cp.list_runs(offset=huge) == [], f"list_runs(offset={huge})"
            assert cp.list_runs(limit=huge, offset=huge) == []

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

    def test_a_retry_equal_to_the_stored_event_is_a_no_op_however_it_is_written(
        self, cp: Checkpointer
    ) -> None:
        # The rule is ``==``: a retry rebuilt with its keys in another order, 1.0 for 1, True
        # for 1 or -0.0 for 0.0 is the same event, and the stored one is kept as it was.
        stored = ev("r", 1, a=1, b={"x": 0.0, "y": [1, 2]}, c=1)
        cp.save_event(stored)
        retry = ev("r", 1, c=True, b={"y": [1.0, 2], "x": -0.0}, a=1.0)
        assert retry == stored and retry.model_dump_json() != stored.model_dump_json()
        cp.save_event(retry)
        cp.save_events([retry, ev("r", 2)], snapshot=st("r", 2))
        assert repr(cp.list_events("r")) == repr([stored, ev("r", 2)])
        # Equal values in another order are not equal lists: that is a conflict.
        with pytest.raises(SequenceConflict):
            cp.save_event(ev("r", 1, a=1, b={"x": 0.0, "y": [2, 1]}, c=1))
        with pytest.raises(SequenceConflict):
            cp.save_events([ev("r", 3, v=1), ev("r", 3, v=2.5)])
        cp.save_events([ev("r", 3, v=1), ev("r", 3, v=1.0)])
        assert repr(cp.list_events("r", since_seq=2)) == repr([ev("r", 3, v=1)])

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

    def test_batch_with_one_event_twice_stores_it_once(self, cp: Checkpointer) -> None:
        # An equal event twice in a batch is the batch's own retry of it, not a conflict.
        cp.save_events([ev("r", 1, v=1), ev("r", 2), ev("r", 1, v=1)], snapshot=st("r", 2))
        assert cp.list_events("r") == [ev("r", 1, v=1), ev("r", 2)]
        assert cp.load_latest("r") == st("r", 2)

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

    def test_batch_with_snapshot_lands_together(self, cp: Checkpointer) -> None:
        cp.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2, step=2))
        cp.save_events([ev("r", 3)])
        assert cp.load_latest("r") == st("r", 2, step=2)
        assert cp.recover("r") == Recovery(st("r", 2, step=2), [ev("r", 3)])

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
        # The same seq replaces it through save_events too, not only through save_snapshot.
        cp.save_events([ev("r", 2)], snapshot=st("r", 9, v="batch"))
        assert cp.load_latest("r") == st("r", 9, v="batch")

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
        # time.time() gives digits below the microsecond, which a DATETIME column would drop.
        now_like = RunState(
            run_id="r", seq=5, created_at=1_733_450_000.1234567, updated_at=1_733_450_001.7654321
        )
        cp.save_snapshot("r", now_like)
        again = cp.load_latest("r")
        assert again is not None
        for field in ("created_at", "updated_at"):
            sent, got = getattr(now_like, field), getattr(again, field)
            assert repr(got) == repr(sent), f"{field} {sent!r} came back as {got!r}"

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

    def test_iter_events_streams_across_gaps_longer_than_a_page(self, cp: Checkpointer) -> None:
        # seqs are caller-assigned: a store that pages by seq windows, or stops at the first
        # empty page, loses everything after a gap.
        seqs = [*range(1, 301), 100_000, *range(200_000, 200_300), 10**12]
        events = [ev("r", seq) for seq in seqs]
        cp.save_events(events)
        assert [e.seq for e in cp.iter_events("r")] == seqs
        assert list(cp.iter_events("r", since_seq=300)) == events[300:]

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

    def test_a_refused_write_does_not_make_a_run_the_most_recent(self, cp: Checkpointer) -> None:
        cp.save_event(ev("a", 1))
        cp.save_event(ev("b", 1))
        with pytest.raises(SequenceConflict):
            cp.save_event(ev("a", 1, v="other"))
        with pytest.raises(InvalidInput):
            cp.save_events([ev("a", 2), ev("a", 3, bad=float("nan"))])
        with pytest.raises(SequenceConflict):
            cp.save_events([ev("a", 2), ev("a", 1, v="other")], snapshot=st("a", 2))
        assert cp.list_runs() == ["b", "a"]
        assert cp.load_latest("a") is None

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

    def test_delete_run_removes_only_that_run(self, cp: Checkpointer) -> None:
        cp.save_events([ev("gone", 1), ev("gone", 2), ev("kept", 1)], snapshot=st("gone", 2))
        cp.save_snapshot("kept", st("kept", 1))
        cp.delete_run("gone")
        cp.delete_run("never-existed")
        assert cp.list_events("gone") == []
        assert cp.load_latest("gone") is None
        assert cp.recover("gone") is None
        assert cp.list_runs() == ["kept"]
        assert cp.list_events("kept") == [ev("kept", 1)]

    def test_deleted_run_can_be_written_again(self, cp: Checkpointer) -> None:
        cp.save_event(ev("r", 1, v="old"))
        cp.delete_run("r")
        cp.save_event(ev("r", 1, v="new"))
        assert cp.list_events("r") == [ev("r", 1, v="new")]
