"""The values users build: events, states, their dict forms, and the strict JSON codec."""

from __future__ import annotations

import json
import logging
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


def test_codec_stores_str_enum_keys_as_their_text_and_refuses_keys_that_would_not_match() -> None:
    # A str-valued enum member hashes and compares as its text: the dict that comes back,
    # with plain str keys, equals the one saved, as for such values.
    saved = {EventKind.TOOL_CALL: EventKind.TOOL_CALL, "k": {EventKind.TOOL_RESULT: [1]}}
    back = decode(encode(saved))
    assert back == saved
    assert [type(key) for key in back] == [str, str]
    assert encode(saved) == '{"tool_call":"tool_call","k":{"tool_result":[1]}}'
    with pytest.raises(InvalidInput, match=r"a key 'k' of type _OddKey, a subclass of str"):
        encode(NOT_JSON["odd_str_key"])
    with pytest.raises(InvalidInput, match=r"data has a key 1 of type int; JSON keys must be str"):
        encode({1: "a"})


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
        # The seed's module imported these, so code that took them from it keeps working.
        "PAEvent",
        "RunState",
        "EventKind",
    ):
        assert getattr(checkpoint, name) is getattr(purpose_agent, name)
    # The seed's module logger: code that sets its level or attaches a handler keeps working.
    assert checkpoint.logger is logging.getLogger("purpose_agent.runtime.checkpoint")


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


# -- each field rule lives on the value -------------------------------------------------------


def test_refusal_when_built_is_both_a_validation_error_and_invalid_input() -> None:
    from pydantic import ValidationError

    from purpose_agent import InvalidRunId

    for fields in (
        {"seq": 0},
        {"seq": 2**63},
        {"seq": True},
        {"ts": float("nan")},
        {"lane_id": "a\x00"},
    ):
        with pytest.raises(InvalidInput) as info:
            PAEvent(**{"run_id": "r", "seq": 1, "kind": EventKind.CUSTOM, **fields})
        assert isinstance(info.value, ValidationError)
        assert next(iter(fields)) in str(info.value)
    for run_id in ("", ".", "..", "a/b", "a\\b", "a\nb", "\ud800", "r" * 256):
        with pytest.raises(InvalidRunId):
            RunState(run_id=run_id)
    with pytest.raises(InvalidInput, match="seq"):
        RunState(run_id="r", seq=-1)


def test_huge_timestamp_is_invalid_input_not_an_overflow_error() -> None:
    with pytest.raises(InvalidInput, match="ts"):
        PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=10**400)
    with pytest.raises(InvalidInput, match="created_at"):
        RunState(run_id="r", created_at=10**400)
    with pytest.raises(InvalidInput, match="updated_at"):
        RunState.from_dict({"run_id": "r", "updated_at": -(10**400)})


def test_negative_zero_time_is_normalised_when_built() -> None:
    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=-0.0)
    assert repr(event.ts) == "0.0"
    state = RunState(run_id="r", created_at=-0.0, updated_at=-0.0)
    assert repr(state.created_at) == repr(state.updated_at) == "0.0"
    assert repr(PAEvent.from_dict({**event.to_dict(), "ts": -0.0}).ts) == "0.0"
    assert repr(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=3).ts) == "3.0"


def test_assigning_a_field_applies_its_rules() -> None:
    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0)
    with pytest.raises(InvalidInput, match="seq"):
        event.seq = 0
    event.ts = -0.0
    assert repr(event.ts) == "0.0"
    assert event.seq == 1


def _unchecked(value: Any, **changes: Any) -> Any:
    """The value with ``changes``, built around validation."""
    return type(value).model_construct(**{**value.__dict__, **changes})


def test_values_built_around_validation_are_checked_when_saved() -> None:
    from purpose_agent.records import event_row, state_row

    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0, data={"a": 1})
    for bad in (
        _unchecked(event, seq=0),
        _unchecked(event, ts=10**400),
        _unchecked(event, kind="custom"),
        _unchecked(event, lane_id=None),
    ):
        with pytest.raises(InvalidInput):
            event_row(bad)
    rebuilt = _unchecked(event, ts=-0.0)
    assert event_row(rebuilt) == event_row(event.model_copy(update={"ts": 0.0}))
    assert repr(event_row(rebuilt).ts) == "0.0"
    state = RunState(run_id="r", seq=1, created_at=1.0, updated_at=2.0)
    with pytest.raises(InvalidInput, match="seq"):
        state_row("r", _unchecked(state, seq=-1))
    with pytest.raises(InvalidInput, match="status"):
        state_row("r", _unchecked(state, status="finished"))


def test_a_copy_applies_the_rules_to_its_updates() -> None:
    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0, data={"a": 1})
    copied = event.model_copy(update={"kind": "message", "seq": 2})
    assert copied.kind is EventKind.MESSAGE
    assert copied.to_dict()["kind"] == "message"
    assert copied == PAEvent(run_id="r", seq=2, kind=EventKind.MESSAGE, ts=1.0, data={"a": 1})
    state = RunState(run_id="r", seq=1, created_at=1.0, updated_at=2.0)
    finished = state.model_copy(update={"status": "finished"})
    assert finished.to_dict()["status"] == "finished"
    assert RunState.from_dict(finished.to_dict()) == finished
    for update in ({"seq": 0}, {"kind": "no such kind"}, {"ts": 10**400}, {"extra": 1}):
        with pytest.raises(InvalidInput):
            event.model_copy(update=update)
    assert event.model_copy() == event
    deep = event.model_copy(deep=True)
    assert deep == event
    assert deep.data is not event.data


def test_dict_form_of_a_value_built_around_validation_holds_plain_strings() -> None:
    event = _unchecked(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0), kind="message")
    assert event.to_dict()["kind"] == "message"


def test_dict_form_follows_the_declared_fields_and_shares_the_payload() -> None:
    data: dict[str, Any] = {"k": [1]}
    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0, data=data)
    assert list(event.to_dict()) == list(PAEvent.model_fields)
    assert event.to_dict()["data"] is data
    state = RunState(run_id="r", seq=2, created_at=1.0, updated_at=2.0, data=data)
    assert list(state.to_dict()) == ["run_id", "seq", "status", "created_at", "updated_at", "data"]
    assert type(state.to_dict()["status"]) is str


def test_stored_state_is_its_dict_form_as_json() -> None:
    from purpose_agent.records import state_row

    state = RunState(run_id="r", seq=2, created_at=1.0, updated_at=2.0, data={"z": 1, "a": 2})
    assert state_row("r", state).state == encode(state.to_dict())


# -- surrogates ---------------------------------------------------------------------------------


def test_codec_refuses_surrogate_pairs_naming_where() -> None:
    with pytest.raises(InvalidInput, match=r"data\['pair'\]"):
        encode({"pair": "\ud83d\ude00"})
    with pytest.raises(InvalidInput, match="key"):
        encode({"ok": 1, "\ud83d\ude00": 1, "\U0001f600": 2})
    with pytest.raises(InvalidInput, match=r"data\['a'\]\[2\]"):
        encode({"a": [0, "x", "x\udbff\udfffy"]})


def test_codec_keeps_astral_characters_and_surrogates_that_are_not_pairs() -> None:
    for text in ("\U0001f600", "\ud800", "\udc00\ud800", "\ud83d \ude00", "\ud83d\\ude00"):
        value = {text: text}
        back = decode(encode(value))
        assert back == value
        assert repr(back) == repr(value)


# -- decoding what a store kept -----------------------------------------------------------------


def test_decoded_state_must_agree_with_the_seq_kept_beside_it() -> None:
    from purpose_agent import CorruptRecord
    from purpose_agent.records import decode_state, state_row

    text = state_row("r", RunState(run_id="r", seq=6, created_at=1.0, updated_at=2.0)).state
    assert decode_state("r", text, 6).seq == 6
    assert decode_state("r", text).seq == 6
    for column in (3, 999, "6", 6.0):
        with pytest.raises(CorruptRecord, match="covers") as info:
            decode_state("r", text, column)
        assert info.value.run_id == "r"
        assert info.value.seq == 6


@pytest.mark.parametrize(
    ("column", "value", "seq"),
    [
        ("seq", "x5", None),
        ("seq", 0, 0),
        ("ts", "garbage", 3),
        ("ts", float("nan"), 3),
        ("ts", float("-inf"), 3),
        ("kind", "nope", 3),
        ("kind", b"custom", 3),
        ("lane_id", "a\x00b", 3),
        ("lane_id", b"main", 3),
        ("lane_id", "x" * 256, 3),
        ("data", "[1]", 3),
        ("data", '{"a": 1} x', 3),
    ],
)
def test_decoding_a_damaged_column_is_a_corrupt_record(column: str, value: Any, seq: Any) -> None:
    from purpose_agent import CorruptRecord
    from purpose_agent.records import decode_event, decode_events

    good = {"seq": 3, "kind": "custom", "ts": 1.5, "lane_id": "main", "data": '{"a":1}'}
    row = {**good, column: value}
    for decode_rows in (
        lambda: decode_events("r", [tuple(good.values()), tuple(row.values())]),
        lambda: decode_event("r", *row.values()),
    ):
        with pytest.raises(CorruptRecord) as info:
            decode_rows()
        assert info.value.run_id == "r"
        assert info.value.seq == seq
    assert decode_events("r", [tuple(good.values())]) == [
        PAEvent(run_id="r", seq=3, kind=EventKind.CUSTOM, ts=1.5, data={"a": 1})
    ]


def test_a_refused_run_id_says_which_rule_it_breaks() -> None:
    from purpose_agent import InvalidRunId
    from purpose_agent.records import check_run_id

    for run_id, reason in [
        ("a/b", "contains '/'"),
        ("", "must not be empty"),
        ("..", "must not be '..'"),
        ("r" * 256, "256 characters long"),
        ("a\x85", "control character"),
        ("\ud800", "surrogate"),
        (7, "must be a str"),
    ]:
        with pytest.raises(InvalidRunId, match=reason):
            check_run_id(run_id)


def test_rows_in_thousands_of_lanes_are_decoded_without_validating_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past 4,096 lanes, every row of a lane not seen before was validated field by field.

    A LangGraph checkpoint's lane names its run, so a server reading the checkpoints of many
    runs decoded each through the event's full rules, several times the cost of the row.
    """
    from purpose_agent import records

    checked: list[Any] = []
    full_rules = records._checked_event

    def counted(*row: Any) -> PAEvent:
        checked.append(row)
        return full_rules(*row)

    monkeypatch.setattr(records, "_checked_event", counted)
    rows = [(n, "custom", 1.5, f"lg:run-{n:05}", f'{{"n":{n}}}') for n in range(1, 6_001)]
    events = records.decode_events("r", rows)
    assert checked == []
    assert events == [full_rules("r", *row) for row in rows]
    assert records.decode_events("r", [(1, "custom", 1.5, "é" * 10, "{}")])[0].lane_id == "é" * 10
    assert len(checked) == 1  # a lane that is not plain ASCII is checked (then remembered)
