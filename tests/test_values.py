"""The values users build: events, states, their dict forms, and the strict JSON codec."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import purpose_agent
from purpose_agent import EventKind, InvalidInput, PAEvent, RunState, RunStatus
from purpose_agent.codec import decode, encode
from purpose_agent.testing.suite import EXACT_VALUES, NOT_JSON


def test_event_kinds_are_short_lowercase_strings() -> None:
    for kind in EventKind:
        assert isinstance(kind, str)
        assert kind.value == kind.value.lower()
        assert " " not in kind.value
        assert EventKind(kind.value) is kind
    wanted = {
        "RUN_STARTED",
        "RUN_FINISHED",
        "RUN_FAILED",
        "STEP_STARTED",
        "STEP_FINISHED",
        "TOOL_CALL",
        "TOOL_RESULT",
        "MODEL_REQUEST",
        "MODEL_RESPONSE",
        "STATE_CHANGE",
    }
    assert wanted <= set(EventKind.__members__)


def test_event_needs_only_run_id_seq_and_kind() -> None:
    before = time.time()
    event = PAEvent(run_id="r", seq=1, kind=EventKind.RUN_STARTED)
    assert before <= event.ts <= time.time()
    assert event.lane_id == "main"
    assert event.data == {}
    assert PAEvent(run_id="r", seq=1, kind="run_started", ts=event.ts) == event


def test_event_dict_is_plain_json_and_inverts_exactly() -> None:
    event = PAEvent(
        run_id="r",
        seq=2,
        kind=EventKind.TOOL_RESULT,
        ts=0.1,
        lane_id="b",
        data={"z": [1, -0.0, 2**70], "a": None},
    )
    as_dict = event.to_dict()
    assert as_dict["kind"] == "tool_result"
    assert type(as_dict["kind"]) is str
    assert json.loads(json.dumps(as_dict)) == as_dict
    back = PAEvent.from_dict(as_dict)
    assert back == event
    assert repr(back.data) == repr(event.data)
    assert PAEvent.from_dict(json.loads(json.dumps(as_dict))) == event


def test_events_with_equal_fields_are_equal_and_others_are_not() -> None:
    a = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=5.0, data={"x": 1})
    assert a == PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=5.0, data={"x": 1})
    assert a != PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=5.0, data={"x": 2})
    assert a != PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=6.0, data={"x": 1})


def test_event_refuses_unknown_fields_and_kinds() -> None:
    with pytest.raises(ValueError, match="payload"):
        PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, payload={})  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="kind"):
        PAEvent(run_id="r", seq=1, kind="no_such_kind")
    with pytest.raises(ValueError, match="data"):
        PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, data=[1])  # type: ignore[arg-type]


def test_state_defaults_and_dict_round_trip() -> None:
    state = RunState(run_id="r")
    assert state.seq == 0
    assert state.data == {}
    assert state.status is RunStatus.RUNNING
    assert state.created_at <= state.updated_at
    full = RunState(
        run_id="r",
        seq=9,
        data={"k": [1.5, "\x00"]},
        status=RunStatus.FINISHED,
        created_at=1.0,
        updated_at=2.0,
    )
    as_dict = full.to_dict()
    assert as_dict["status"] == "finished"
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert RunState.from_dict(as_dict) == full


@pytest.mark.parametrize("name", list(EXACT_VALUES))
def test_codec_round_trips_exactly(name: str) -> None:
    value: Any = {"v": EXACT_VALUES[name]}
    text = encode(value)
    assert text.isascii()
    assert "\x00" not in text
    back = decode(text)
    assert back == value
    assert repr(back) == repr(value)


@pytest.mark.parametrize("name", list(NOT_JSON))
def test_codec_refuses_what_is_not_json(name: str) -> None:
    with pytest.raises(InvalidInput):
        encode({"v": NOT_JSON[name]})


def test_codec_names_the_path_to_a_bad_value() -> None:
    with pytest.raises(InvalidInput, match=r"data\['a'\]\[1\]\['b'\] is nan"):
        encode({"a": [0, {"b": float("nan")}]})


def test_codec_decoder_refuses_non_standard_constants() -> None:
    for text in ('{"x": NaN}', '{"x": Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError, match="not a JSON value"):
            decode(text)


def test_every_public_name_is_importable_from_the_seed_paths() -> None:
    from purpose_agent.runtime import checkpoint, events, state

    assert events.PAEvent is purpose_agent.PAEvent
    assert events.EventKind is purpose_agent.EventKind
    assert state.RunState is purpose_agent.RunState
    for name in (
        "Checkpointer",
        "Recovery",
        "InMemoryCheckpointer",
        "JSONLCheckpointer",
        "SQLCheckpointer",
        "SQLiteCheckpointer",
        "AsyncSQLCheckpointer",
        "CheckpointError",
        "InvalidInput",
        "InvalidRunId",
        "SequenceConflict",
        "CorruptRecord",
        "SchemaNotCurrent",
    ):
        assert getattr(checkpoint, name) is getattr(purpose_agent, name)


def test_error_hierarchy() -> None:
    from purpose_agent import (
        CheckpointError,
        CorruptRecord,
        InvalidRunId,
        SchemaNotCurrent,
        SequenceConflict,
        StoreUnavailable,
    )

    assert issubclass(InvalidInput, CheckpointError)
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(InvalidRunId, InvalidInput)
    for error in (SequenceConflict, CorruptRecord, SchemaNotCurrent, StoreUnavailable):
        assert issubclass(error, CheckpointError)
    assert "seq 7" in str(SequenceConflict("r", 7))
    assert "'r'" in str(CorruptRecord("r", 3, "bad"))
    assert "seq 3" in str(CorruptRecord("r", 3, "bad"))
    message = str(SchemaNotCurrent("0001", "0002"))
    assert "0001" in message
    assert "0002" in message
    assert "upgrade" in message
