"""``purpose_agent.checks``: the package's own checks, for a store written outside it."""

from __future__ import annotations

from typing import Any

import pytest

from purpose_agent import InvalidInput, InvalidRunId, PAEvent, RunState
from purpose_agent.checks import check_event, check_run_id, check_state, decode_json
from purpose_agent.testing.samples import BAD_RUN_IDS, EXACT_VALUES, NOT_JSON, nested, raw_event


@pytest.mark.parametrize("name", sorted(EXACT_VALUES))
def test_what_the_checks_encode_decodes_to_what_was_given(name: str) -> None:
    value: Any = EXACT_VALUES[name]
    event = PAEvent(run_id="r", seq=1, kind="custom", data={"v": value})
    decoded = decode_json(check_event(event))
    assert repr(decoded) == repr({"v": value})
    state = RunState(run_id="r", seq=1, data={"v": value})
    assert RunState.from_dict(decode_json(check_state("r", state))) == state


@pytest.mark.parametrize("name", sorted(NOT_JSON))
def test_a_value_the_stores_refuse_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_event(raw_event(data={"v": NOT_JSON[name]}))
    with pytest.raises(InvalidInput):
        check_state("r", RunState.model_construct(run_id="r", seq=0, data={"v": NOT_JSON[name]}))


@pytest.mark.parametrize("name", sorted(BAD_RUN_IDS))
def test_a_run_id_the_stores_refuse_is_refused(name: str) -> None:
    with pytest.raises(InvalidRunId):
        check_run_id(BAD_RUN_IDS[name])


def test_fields_a_caller_changed_after_building_the_event_are_checked_again() -> None:
    for bad in (raw_event(seq=0), raw_event(kind="custom"), raw_event(lane_id="\ud800")):
        with pytest.raises(InvalidInput):
            check_event(bad)
    with pytest.raises(InvalidInput, match="does not match"):
        check_state("other", RunState(run_id="r"))
    assert decode_json(check_event(raw_event(data={"d": nested(899)}))) == {"d": nested(899)}
