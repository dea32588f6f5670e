"""The points where a batch across runs can be stopped, for tests that crash a writer there.

A batch that writes to several runs passes through steps that a crash may separate: its journal
entry written but not renamed into place, the entry committed, each run given its line. So does
a compaction: its new log written, then renamed into place. Crash tests need to stop or kill a
writer at exactly one of them. Rather than patch the store, they
hand :class:`~purpose_agent.stores.jsonl.JSONLCheckpointer` a ``faults`` callable that it calls
at each step; the default does nothing.
"""

from __future__ import annotations

from typing import Literal, Protocol

FaultPoint = Literal["journal-temp", "journal", "appended", "compact-temp", "compacted"]
"""``"journal-temp"``: the entry is written but not yet renamed into place; ``"journal"``: the
entry is committed and no run has its line yet; ``"appended"``: one run has its line;
``"compact-temp"``: a compaction's new log is written but not yet renamed over the old one;
``"compacted"``: the new log is in place and the superseded ``snapshot.json`` not yet removed."""


class Faults(Protocol):
    """Called at each step of a batch across runs or a compaction; may block, raise or exit."""

    def __call__(self, point: FaultPoint, run_id: str | None = None) -> None:
        """Be told that the writer reached ``point``.

        Args:
            point: The step just reached.
            run_id: For ``"appended"``, the run that has just got its line; for the
                compaction steps, the run compacted; else ``None``.

        """


def no_faults(point: FaultPoint, run_id: str | None = None) -> None:
    """Do nothing at any step: the default outside tests."""
