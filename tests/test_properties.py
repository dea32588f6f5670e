"""On every backend, a value comes back exactly as it was built, or is refused with nothing written.

Hypothesis builds events and states from anything a caller could pass: every Unicode character
(surrogates, NUL and controls included), any float (NaN, infinities, -0.0, subnormals), integers
of any size, unknown kinds, long lanes and bad run ids. An oracle written here from the public
contract says which of them are storable; the store must refuse exactly the others with
``InvalidInput`` before anything is written, and give back exactly the rest (``==`` and ``repr``,
so key order, ``-0.0`` and int-versus-float count).

One store per backend serves every example of this module, each example under a run id of its
own, so the cost is the examples' own round trips (one write, one read).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from purpose_agent import (
    Checkpointer,
    EventKind,
    InMemoryCheckpointer,
    InvalidInput,
    JSONLCheckpointer,
    PAEvent,
    RunState,
    RunStatus,
    SQLCheckpointer,
)
from purpose_agent.testing import Backend, Capability
from tests.conftest import STORES


@pytest.fixture(scope="module", params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Checkpointer]:
    """One store per backend for every example: each example writes its own run."""
    name = request.param
    if name == "memory":
        opened: Checkpointer = InMemoryCheckpointer()
    elif name == "jsonl":
        opened = JSONLCheckpointer(str(tmp_path_factory.mktemp("jsonl")))
    elif name == "sqlite":
        opened = SQLCheckpointer(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'p.db'}")
    else:
        url = request.getfixturevalue(f"{name}_url")
        opened = SQLCheckpointer(url.render_as_string(hide_password=False))
    with opened:
        yield opened


_run_numbers = itertools.count()


def _fresh_prefix() -> str:
    return f"p{next(_run_numbers)}-"


# -- the oracle: the public contract, written out independently of the package ------------------

_SURROGATE_PAIR = ("\ud800", "\udbff", "\udc00", "\udfff")


def _has_surrogate_pair(text: str) -> bool:
    high_lo, high_hi, low_lo, low_hi = _SURROGATE_PAIR
    return any(
        high_lo <= a <= high_hi and low_lo <= b <= low_hi for a, b in itertools.pairwise(text)
    )


def json_storable(value: Any, depth: int = 0) -> bool:
    """JSON values as the contract defines them, and strings JSON can give back exactly."""
    if value is None or type(value) is bool:
        return True
    if type(value) is int:
        return abs(value) < 10**4300  # Python converts at most 4,300 digits
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is str:
        return not _has_surrogate_pair(value)
    if type(value) is list:
        return all(json_storable(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(
            type(key) is str and not _has_surrogate_pair(key) and json_storable(item, depth + 1)
            for key, item in value.items()
        )
    return False


def run_id_storable(run_id: Any) -> bool:
    return (
        type(run_id) is str
        and 1 <= len(run_id) <= 255
        and run_id not in (".", "..")
        and not any(char in "/\\" or unicodedata.category(char) in ("Cc", "Cs") for char in run_id)
    )


def lane_storable(lane_id: Any) -> bool:
    return (
        type(lane_id) is str
        and len(lane_id) <= 255
        and "\x00" not in lane_id
        and not any(unicodedata.category(char) == "Cs" for char in lane_id)
    )


def time_storable(ts: Any) -> bool:
    if type(ts) is int:
        return abs(ts) < 2**1024 and math.isfinite(float(ts))
    return type(ts) is float and math.isfinite(ts)


def seq_storable(seq: Any, lowest: int) -> bool:
    return type(seq) is int and lowest <= seq < 2**63


def event_storable(fields: dict[str, Any]) -> bool:
    return (
        run_id_storable(fields["run_id"])
        and seq_storable(fields["seq"], 1)
        and fields["kind"] in {kind.value for kind in EventKind}
        and time_storable(fields["ts"])
        and lane_storable(fields["lane_id"])
        and json_storable(fields["data"])
    )


def state_storable(fields: dict[str, Any]) -> bool:
    return (
        run_id_storable(fields["run_id"])
        and seq_storable(fields["seq"], 0)
        and fields["status"] in {status.value for status in RunStatus}
        and time_storable(fields["created_at"])
        and time_storable(fields["updated_at"])
        and json_storable(fields["data"])
    )


# -- what callers could pass ---------------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())
SPECIAL_TEXT = st.sampled_from(
    [
        "\ud83d\ude00",  # a surrogate pair: the same JSON as the next one
        "\U0001f600",
        "\ud800",
        "x\udfff",
        "\udc00\ud800",  # low then high: not a pair
        "\x00",
        "a\x00b",
        "",
        "\\ud83d\\ude00",  # backslashes, not surrogates
    ]
)
ANY_TEXT = st.one_of(st.text(ANY_CHAR, max_size=6), st.text(max_size=6), SPECIAL_TEXT)
# Text of every kind the contract promises to keep: NUL, controls, lone surrogates, astral.
GOOD_TEXT = ANY_TEXT.filter(lambda text: not _has_surrogate_pair(text))
GOOD_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**63, -(2**63) - 1, 10**4299, -(10**4299)]),  # 4,300 digits at most
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 5e-324, 1.7976931348623157e308, 1.0, 1]),
)
ANY_NUMBERS = st.one_of(GOOD_NUMBERS, st.floats())
NOT_JSON = st.sampled_from([(1, 2), {1}, b"x", frozenset(), 1j])


def _json(text: st.SearchStrategy[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)
        ),
        max_leaves=6,
    )


GOOD_JSON = _json(GOOD_TEXT, st.one_of(st.none(), st.booleans(), GOOD_NUMBERS, GOOD_TEXT))
ANY_JSON = _json(ANY_TEXT, st.one_of(st.none(), st.booleans(), ANY_NUMBERS, ANY_TEXT, NOT_JSON))
GOOD_TIMES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([-0.0, 2**1023]),
)
ANY_TIMES = st.one_of(GOOD_TIMES, st.floats(), st.sampled_from([10**400, -(10**400), True, "1"]))
GOOD_KINDS = st.one_of(
    st.sampled_from(list(EventKind)), st.sampled_from([kind.value for kind in EventKind])
)
ANY_KINDS = st.one_of(
    GOOD_KINDS, st.sampled_from(["", "RUN_STARTED", "Custom", "custom "]), st.text(max_size=5)
)
GOOD_LANES = st.one_of(st.just("main"), GOOD_TEXT.filter(lane_storable))
ANY_LANES = st.one_of(
    GOOD_LANES,
    ANY_TEXT,
    st.integers(min_value=250, max_value=260).map(lambda n: "l" * n),
    st.sampled_from([None, 1]),
)
GOOD_RUN_IDS = st.one_of(
    st.text(ANY_CHAR, min_size=1, max_size=12), st.sampled_from(["...", "🙂" * 200, "r" * 230])
).filter(run_id_storable)
ANY_RUN_IDS = st.one_of(
    GOOD_RUN_IDS,
    st.text(ANY_CHAR, max_size=12),
    st.integers(min_value=240, max_value=260).map(lambda n: "r" * n),
    st.sampled_from(["", ".", "..", "a/b", "a\\b", "a\nb", "a\x85b", "\ud800"]),
)


def _payloads(clean: bool) -> st.SearchStrategy[dict[str, Any]]:
    if clean:
        return st.dictionaries(GOOD_TEXT, GOOD_JSON, max_size=4)
    return st.dictionaries(ANY_TEXT, ANY_JSON, max_size=4)


def _events(clean: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = {
        "kind": GOOD_KINDS if clean else ANY_KINDS,
        "ts": GOOD_TIMES if clean else ANY_TIMES,
        "lane_id": GOOD_LANES if clean else ANY_LANES,
        "data": _payloads(clean),
    }
    if clean:  # the position in the batch
        return st.fixed_dictionaries(fields)
    seqs = st.sampled_from([0, -1, 2**63, 2**63 - 1, 1.0, True, "1", None])
    return st.fixed_dictionaries(fields, optional={"seq": seqs})


def _states(clean: bool) -> st.SearchStrategy[dict[str, Any]]:
    seqs = st.integers(min_value=0, max_value=4)
    statuses = st.sampled_from([*RunStatus, "running", "failed"])
    return st.fixed_dictionaries(
        {
            "seq": seqs if clean else st.one_of(seqs, st.sampled_from([-1, 2**63, True])),
            "status": statuses if clean else st.one_of(statuses, st.sampled_from(["x", None])),
            "created_at": GOOD_TIMES if clean else ANY_TIMES,
            "updated_at": GOOD_TIMES if clean else ANY_TIMES,
            "data": _payloads(clean),
        }
    )


def _examples(clean: bool) -> st.SearchStrategy[tuple[Any, list[dict[str, Any]], dict[str, Any]]]:
    """Storable values half the time, so that both outcomes are well explored."""
    return st.tuples(
        GOOD_RUN_IDS if clean else ANY_RUN_IDS,
        st.lists(_events(clean), min_size=1, max_size=3),
        _states(clean),
    )


def _run_id(drawn: Any) -> Any:
    """A run id of this example's own, keeping the drawn one whole where it is refused alone."""
    if type(drawn) is not str or drawn in ("", ".", "..") or len(drawn) > 255:
        return drawn
    return _fresh_prefix() + drawn


def _same(got: Any, want: Any) -> None:
    assert got == want
    assert repr(got) == repr(want)


@given(example=st.booleans().flatmap(_examples))
def test_values_round_trip_exactly_or_are_refused_with_nothing_written(
    store: Checkpointer, example: tuple[Any, list[dict[str, Any]], dict[str, Any]]
) -> None:
    drawn_run_id, drawn_events, drawn_state = example
    run_id = _run_id(drawn_run_id)
    events = [
        {"run_id": run_id, "seq": position, **drawn}
        for position, drawn in enumerate(drawn_events, start=1)
    ]
    state = {"run_id": run_id, **drawn_state}
    valid_seqs = [fields["seq"] for fields in events if seq_storable(fields["seq"], 1)]
    assume(len(set(valid_seqs)) == len(valid_seqs))  # a reused seq is a conflict, not bad input
    storable = all(event_storable(fields) for fields in events) and state_storable(state)

    try:
        built_events = [PAEvent(**fields) for fields in events]
        built_state = RunState(**state)
        store.save_events(built_events, snapshot=built_state)
    except InvalidInput:
        assert not storable, "a storable value was refused"
        hypothesis_event("refused")
        # The same fields, built around validation, are refused by the store all the same;
        # then neither attempt may have left anything behind.
        raw_events = [PAEvent.model_construct(**fields) for fields in events]
        with pytest.raises(InvalidInput):
            store.save_events(raw_events, snapshot=RunState.model_construct(**state))
        if run_id_storable(run_id):
            assert store.recover(run_id) is None
        return
    assert storable, "a value that cannot be stored exactly was accepted"
    hypothesis_event("accepted")

    recovery = store.recover(run_id)
    assert recovery is not None
    _same(recovery.state, built_state)
    tail = sorted(
        (event for event in built_events if event.seq > built_state.seq), key=lambda e: e.seq
    )
    _same(recovery.events, tail)
    for got, event in zip(recovery.events, tail, strict=True):
        assert list(got.data) == list(event.data)


# -- the examples that were bugs, on every backend --------------------------------------------


def test_surrogate_pairs_are_refused_and_nothing_written(backend: Backend) -> None:
    data = {"pair": "\ud83d\ude00", "\ud83d\ude00": 1, "\U0001f600": 2}
    with backend.open() as cp:
        with pytest.raises(InvalidInput, match="surrogate pair"):
            cp.save_event(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, data=data))
        with pytest.raises(InvalidInput, match="surrogate pair"):
            cp.save_snapshot("r", RunState(run_id="r", data={"k": ["\udbff\udfff"]}))
        assert cp.recover("r") is None
        kept = {"astral": "\U0001f600", "lone": "\ud800", "reversed": "\udc00\ud800"}
        event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=1.0, data=kept)
        cp.save_event(event)
        _same(cp.list_events("r"), [event])


def test_negative_zero_ts_comes_back_as_built(backend: Backend) -> None:
    event = PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, ts=-0.0, data={"z": -0.0})
    state = RunState(run_id="r", seq=1, created_at=-0.0, updated_at=-0.0)
    with backend.open() as cp:
        cp.save_events([event], snapshot=state)
        _same(cp.list_events("r"), [event])
        _same(cp.load_latest("r"), state)
    if backend.has(Capability.DURABLE):
        with backend.open() as again:
            _same(again.list_events("r"), [event])


def test_huge_ts_built_around_validation_is_invalid_input(backend: Backend) -> None:
    bad_event = PAEvent.model_construct(
        run_id="r", seq=1, kind=EventKind.CUSTOM, ts=10**400, lane_id="main", data={}
    )
    state = RunState(run_id="r")
    bad_state = RunState.model_construct(**{**state.__dict__, "created_at": 10**400})
    with backend.open() as cp:
        with pytest.raises(InvalidInput):
            cp.save_event(bad_event)
        with pytest.raises(InvalidInput):
            cp.save_snapshot("r", bad_state)
        assert cp.recover("r") is None


def test_oracle_agrees_with_the_contract_on_known_values() -> None:
    # The oracle is what the property test trusts: check it against values whose answer the
    # contract states outright.
    assert json_storable({"z": [1, -0.0, 2**70, "\x00", "\ud800"], "a": None})
    assert not json_storable({"a": (1,)})
    assert not json_storable({"a": float("nan")})
    assert not json_storable({1: "a"})
    assert not json_storable({"a": "\ud83d\ude00"})
    assert not json_storable({"\ud83d\ude00": 1})
    assert not json_storable({"a": 10**4300})
    assert run_id_storable("...")
    assert run_id_storable("🙂" * 255)
    assert not any(run_id_storable(bad) for bad in ("", ".", "..", "a/b", "a\x85", "r" * 256))
    assert lane_storable("")
    assert not any(lane_storable(bad) for bad in ("a\x00", "\ud800", "l" * 256, None))
    assert time_storable(3)
    assert time_storable(-0.0)
    assert not any(time_storable(bad) for bad in (10**400, True, float("inf"), float("nan")))
    assert seq_storable(1, 1)
    assert not any(seq_storable(bad, 1) for bad in (0, True, 1.0, 2**63))
