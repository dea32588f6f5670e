"""The points where a batch across runs can be stopped, for tests that crash a writer there.

A batch that writes to several runs passes through steps that a crash may separate: its journal
entry written but not renamed into place, the entry committed, each run given its line. Crash
tests need to stop or kill a writer at exactly one of them. Rather than patch the store, they
hand :class:`~purpose_agent.stores.jsonl.JSONLCheckpointer` a ``faults`` callable that it calls
at each step; the default does nothing.
"""

from __future__ import annotations

from typing import Literal, Protocol

FaultPoint = Literal["journal-temp", "journal", "appended"]
"""``"journal-temp"``: the entry is written but not yet renamed into place; ``"journal"``: the
entry is committed and no run has its line yet; ``"appended"``: one run has its line."""


class Faults(Protocol):
    """Called at each step of a batch that spans several runs; may block, raise or exit."""

    def __call__(self, point: FaultPoint, run_id: str | None = None) -> None:
        """Be told that the writer reached ``point``.

        Args:
            point: The step just reached.
            run_id: For ``"appended"``, the run that has just got its line; else ``None``.

        """


def no_faults(point: FaultPoint, run_id: str | None = None) -> None:
    """Do nothing at any step: the default outside tests."""
