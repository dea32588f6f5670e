"""What every capability's rows share: the handle they test and the capability gate."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import ClassVar

from purpose_agent import Checkpointer
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.needs_pytest import pytest


class CapabilityNotDeclared(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """The skip of a row whose capability the backend leaves out.

    A skip of its own kind, so that a test setup that fails every skip of a backend it
    requires (a database server that was not reached, say) can still let these through: the
    backend declared, where a reader sees it, that it does not make the promise.
    """


class Rows:
    """The rows of one capability; a subclass names it in ``capability``.

    A test class that combines several of them (as ``CheckpointerSuite`` does) still runs each
    row only on backends that declare the capability of the class that defines the row, and
    skips it, saying which capability is missing, elsewhere. Rows that check how two promises
    work together (appends racing in threads, say) name the second one in ``also_needs`` and
    run only where both are declared.
    """

    capability: ClassVar[Capability] = Capability.BASE
    also_needs: ClassVar[frozenset[Capability]] = frozenset()

    @pytest.fixture(autouse=True)
    def _capability_gate(self, request: pytest.FixtureRequest, backend: Backend) -> None:
        rows = _defining_class(type(self), request.function.__name__)
        needed = [rows.capability, *sorted(rows.also_needs, key=lambda c: c.value)]
        missing = [capability for capability in needed if not backend.has(capability)]
        if missing:
            names = ", ".join(f"Capability.{capability.name}" for capability in missing)
            raise CapabilityNotDeclared(f"{backend.name} does not declare {names}")

    @pytest.fixture
    def cp(self, backend: Backend) -> Iterator[Checkpointer]:
        """A fresh handle on the backend's storage, closed after the test."""
        with backend.open() as store:
            fail_unless_declarable(backend, store)
            yield store


def fail_unless_declarable(backend: Backend, store: object) -> None:
    """Fail the row, saying what to do, when the store lacks what its backend declares.

    Args:
        backend: The backend and the capabilities it declares.
        store: A handle the backend opened.

    """
    missing = _undeclarable(backend, store)
    if missing:
        pytest.fail(
            f"{backend.name} is held to {', '.join(missing)}, which its store lacks; "
            "a Backend that lists no capabilities is held to all of them: list the ones "
            "the store has, e.g. Backend(name, open, {Capability.DURABLE})",
            pytrace=False,
        )


# The methods each capability adds to the protocol; a store without them cannot declare it.
_METHODS = {
    Capability.APPEND: ("append", "last_seq", "event_by_key"),
    Capability.GROUPS: ("list_groups", "run_group"),
    Capability.RETENTION: ("compact", "delete_runs"),
}


def _undeclarable(backend: Backend, store: object) -> list[str]:
    """The declared capabilities whose methods the store does not have, with those methods."""
    out = [
        f"Capability.{capability.name} ({', '.join(absent)})"
        for capability, methods in _METHODS.items()
        if backend.has(capability)
        and (absent := [name for name in methods if not callable(getattr(store, name, None))])
    ]
    if backend.has(Capability.BOUNDED_READS):
        try:
            parameters = inspect.signature(store.list_events).parameters  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        if not accepts_any and "before" not in parameters:
            out.append("Capability.BOUNDED_READS (list_events(before=..., newest_first=...))")
    return out


def _defining_class(cls: type, name: str) -> type[Rows]:
    """The class that wrote the row: the first in the MRO that defines it and a capability.

    A backend author's subclass that overrides a row (to mark it, say) declares no
    capability of its own, so the row keeps the capability of the class it came from.
    """
    for klass in cls.__mro__:
        if name in vars(klass) and "capability" in vars(klass) and issubclass(klass, Rows):
            return klass
    return Rows
