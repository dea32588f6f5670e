"""The behaviour suite every checkpointer passes, grouped by capability, for any backend.

A store declares what it promises as :class:`Capability` values on a :class:`Backend`; the
suite runs the rows of every declared capability and skips the others, naming what is
missing. In a pytest module, subclass :class:`CheckpointerSuite` (the entry point) and
provide a ``backend`` fixture::

    import functools
    import pytest
    from purpose_agent.testing import Backend, Capability, CheckpointerSuite
    from my_package import MyStore

    class TestMyStore(CheckpointerSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            opener = functools.partial(MyStore, tmp_path / "db")
            return Backend("mine", opener, {Capability.DURABLE, Capability.THREADS})

A backend that lists no capabilities is held to all of them. ``Backend.open`` must return a
new handle on the same storage on each call, and for ``Capability.PROCESSES`` it must be
picklable (a ``functools.partial`` of the store's class is). An asyncio store runs through
the same rows wrapped in :class:`BlockingAdapter`. One capability's rows alone are a class of
their own too (``BaseSuite``, ``DurableSuite``, ``ThreadsSuite``, ``ProcessesSuite``,
``StreamingSuite``, ``BoundedReadsSuite``, ``AppendingSuite``, ``GroupsSuite``,
``RetentionSuite``), the one ``SUITES`` maps the capability to. A few rows check two promises
together (appends racing in threads need ``APPEND`` and ``THREADS``) and run only where the
backend declares both.

The rows need pytest (``pip install purpose-agent[testing]``); everything else here imports
without it, and the rows are only imported when one of their names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from purpose_agent.testing.adapters import AsyncCheckpointer, BlockingAdapter
from purpose_agent.testing.capabilities import ALL_CAPABILITIES, Backend, Capability

if TYPE_CHECKING:
    from purpose_agent.testing.suite import (
        SUITES,
        AppendingSuite,
        BaseSuite,
        BoundedReadsSuite,
        CheckpointerSuite,
        DurableSuite,
        GroupsSuite,
        ProcessesSuite,
        RetentionSuite,
        StreamingSuite,
        ThreadsSuite,
    )

_ROW_MODULES = (
    "harness",
    "base",
    "closing",
    "bounded",
    "appending",
    "groups",
    "retention",
    "durable",
    "threads",
    "processes",
    "streaming",
    "suite",
)
_NEEDS_PYTEST = frozenset(
    {
        "SUITES",
        "AppendingSuite",
        "BaseSuite",
        "BoundedReadsSuite",
        "CheckpointerSuite",
        "DurableSuite",
        "GroupsSuite",
        "ProcessesSuite",
        "RetentionSuite",
        "StreamingSuite",
        "ThreadsSuite",
    }
)

try:
    import pytest
except ImportError:
    pass
else:
    # Failures inside the rows then show the compared values, as in a project's own tests.
    pytest.register_assert_rewrite(*(f"{__name__}.{module}" for module in _ROW_MODULES))


def __getattr__(name: str) -> Any:
    """Import the rows when one of their names is first used, so that pytest stays optional."""
    if name in _NEEDS_PYTEST:
        return getattr(importlib.import_module(f"{__name__}.suite"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_CAPABILITIES",
    "SUITES",
    "AppendingSuite",
    "AsyncCheckpointer",
    "Backend",
    "BaseSuite",
    "BlockingAdapter",
    "BoundedReadsSuite",
    "Capability",
    "CheckpointerSuite",
    "DurableSuite",
    "GroupsSuite",
    "ProcessesSuite",
    "RetentionSuite",
    "StreamingSuite",
    "ThreadsSuite",
]
