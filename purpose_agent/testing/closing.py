"""Capability.BASE: a closed store refuses every call, reads included, whatever the backend.

``close()`` releases what a store holds. A store that went on answering afterwards would let a
caller keep a handle it believes released (and, on a store that keeps nothing open, read or
write behind the back of whoever closed it), so every backend refuses alike: the call raises
``StoreUnavailable`` naming that the store is closed, and nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from purpose_agent import Checkpointer, Recovery, StoreUnavailable
from purpose_agent.protocol import KeyedEvent, KeyedEvents
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows, fail_unless_declarable
from purpose_agent.testing.samples import ev, new, st

# What every backend's refusal says, in its own words around it ("the store is closed").
CLOSED = "is closed"

_Calls = dict[str, Callable[[], object]]


def _protocol_calls(store: Checkpointer) -> _Calls:
    """One call of each protocol method, with arguments a store that is open would accept."""
    return {
        "save_event": lambda: store.save_event(ev("r", 3)),
        "save_events": lambda: store.save_events([ev("r", 3), ev("s", 1)], snapshot=st("r", 3)),
        "save_snapshot": lambda: store.save_snapshot("r", st("r", 2)),
        "load_latest": lambda: store.load_latest("r"),
        "list_events": lambda: store.list_events("r"),
        "iter_events": lambda: list(store.iter_events("r")),
        "recover": lambda: store.recover("r"),
        "list_runs": store.list_runs,
        "delete_run": lambda: store.delete_run("r"),
    }


def _declared_calls(backend: Backend, store: Checkpointer) -> _Calls:
    """One call of each method the backend's capabilities add to the protocol."""
    extended: Any = store  # the capabilities below say which of these methods it has
    calls: _Calls = {}
    if backend.has(Capability.BOUNDED_READS):
        calls["list_events(newest_first)"] = lambda: extended.list_events(
            "r", newest_first=True, limit=1
        )
    if backend.has(Capability.APPEND):
        calls["append"] = lambda: extended.append("r", [new()])
        calls["last_seq"] = lambda: extended.last_seq("r")
        calls["event_by_key"] = lambda: extended.event_by_key("r", "k")
    if backend.has(Capability.GROUPS):
        calls["list_runs(group)"] = lambda: extended.list_runs(group="g")
        calls["list_groups"] = extended.list_groups
        calls["run_group"] = lambda: extended.run_group("r")
    if backend.has(Capability.RETENTION):
        calls["compact"] = lambda: extended.compact("r")
        calls["delete_runs"] = lambda: extended.delete_runs(["r"])
    if isinstance(store, KeyedEvents):
        calls["iter_keyed_events"] = lambda: list(store.iter_keyed_events("r"))
        calls["save_keyed_events"] = lambda: store.save_keyed_events(
            "r", [KeyedEvent(ev("r", 3), "k")]
        )
    return calls


def _outcome(call: Callable[[], object]) -> str:
    """``"refused"`` for the refusal the rows expect, else what the call did instead."""
    try:
        call()
    except StoreUnavailable as exc:
        return "refused" if CLOSED in str(exc) else f"StoreUnavailable not naming it: {exc}"
    except Exception as exc:  # noqa: BLE001 - any other outcome is the failure to show
        return f"{type(exc).__name__}: {exc}"
    return "answered"


def _not_refused(calls: _Calls) -> dict[str, str]:
    outcomes = {name: _outcome(call) for name, call in calls.items()}
    return {name: outcome for name, outcome in outcomes.items() if outcome != "refused"}


class ClosingSuite(Rows):
    """What ``close()`` and leaving a ``with`` block do to a handle."""

    capability: ClassVar[Capability] = Capability.BASE

    def test_every_call_after_close_is_refused_naming_the_closed_store(
        self, backend: Backend
    ) -> None:
        store = backend.open()
        try:
            fail_unless_declarable(backend, store)
        except BaseException:
            store.close()
            raise
        store.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 1))
        store.close()
        calls = _protocol_calls(store) | _declared_calls(backend, store)
        wrong = _not_refused(calls)
        assert not wrong, f"calls after close() that were not refused as closed: {wrong}"
        if backend.has(Capability.DURABLE):
            # The refused writes and deletes reached nothing: a new handle reads the run whole.
            with backend.open() as again:
                assert again.recover("r") == Recovery(st("r", 1), [ev("r", 2)])
                assert again.list_runs() == ["r"]

    def test_closing_twice_is_no_error(self, backend: Backend) -> None:
        store = backend.open()
        store.save_event(ev("r", 1))
        store.close()
        store.close()

    def test_leaving_the_with_block_closes_the_store(self, backend: Backend) -> None:
        opened = backend.open()
        with opened as store:
            assert store is opened
            store.save_event(ev("r", 1))
        wrong = _not_refused({"list_runs": store.list_runs, "recover": lambda: store.recover("r")})
        assert not wrong, f"calls after the with block that were not refused as closed: {wrong}"
