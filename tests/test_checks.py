"""``purpose_agent.checks``: the package's own checks, for a store written outside it."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from purpose_agent import InvalidInput, InvalidRunId, PAEvent, RunState
from purpose_agent.checks import (
    check_event,
    check_page,
    check_run_id,
    check_since,
    check_state,
    decode_json,
    same_data,
)
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


@pytest.mark.parametrize("bad", [-1, "1", True, 1.0])
def test_paging_checks_refuse_what_the_suite_refuses(bad: object) -> None:
    with pytest.raises(InvalidInput):
        check_page(bad, None)
    with pytest.raises(InvalidInput):
        check_page(None, bad)
    if bad != -1:
        with pytest.raises(InvalidInput):
            check_since(bad)


def test_paging_checks_bring_bounds_past_64_bits_into_a_bigint() -> None:
    # SQLite's driver raises OverflowError on a larger int; these read the same rows.
    largest = 2**63 - 1
    assert check_page(None, None) == (None, 0)
    assert check_page(10**30, 2**64) == (largest, largest)
    assert check_since(10**30) == largest
    assert check_since(-(10**30)) == -largest
    assert check_since(5) == 5


def test_same_data_is_the_rule_a_retry_is_judged_by() -> None:
    def data(**values: Any) -> str:
        return check_event(raw_event(data=values))

    assert same_data(data(a=1, b={"x": 0.0}), data(b={"x": -0.0}, a=1.0))
    assert not same_data(data(a=[1, 2]), data(a=[2, 1]))
    assert not same_data(data(a=1), data(a="1"))
    deep_one, deep_two = data(a=1, d=nested(899)), data(d=nested(899), a=True)

    def at_depth(frames: int) -> bool:
        return same_data(deep_one, deep_two) if frames == 0 else at_depth(frames - 1)

    assert at_depth(sys.getrecursionlimit() // 2)
