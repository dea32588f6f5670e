"""What every reader of seed-era data shares: the write half of the protocol, refused.

A legacy reader exists to move old runs into a current store (``purpose-agent copy``) and to
look at them on the way (``purpose-agent runs``). Writing the old format would only keep it
alive, so each reader implements the read side of the checkpointer protocol and refuses every
write with :class:`StoreReadOnly`, whose message names the store that should be written instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from purpose_agent.errors import StoreReadOnly
from purpose_agent.legacy.mapping import MappingNotes
from purpose_agent.protocol import ClosingContext
from purpose_agent.runtime.events import PAEvent
from purpose_agent.runtime.state import RunState


class LegacyReader(ClosingContext):
    """Base of the seed-era readers: the writes of the checkpointer protocol, refused.

    Attributes:
        notes: What the reader could not map exactly, counted per kind of problem; a copy
            reports them.

    """

    def __init__(self) -> None:
        self.notes = MappingNotes()

    def write_refusal(self) -> str:
        """Say why this store is read-only and what to write to instead; readers override it."""
        return f"{self!r} reads seed-era data and is read-only"

    def unread_runs(self) -> list[tuple[str, str]]:
        """Runs the source holds but cannot list, with what to do about each.

        Returns:
            ``(name, message)`` pairs; none by default.

        """
        return []

    def _refuse(self) -> NoReturn:
        raise StoreReadOnly(self.write_refusal())

    def save_event(self, event: PAEvent) -> None:
        """Refused: seed-era data is read-only here."""
        self._refuse()

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        """Refused: seed-era data is read-only here."""
        self._refuse()

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Refused: seed-era data is read-only here."""
        self._refuse()

    def delete_run(self, run_id: str) -> None:
        """Refused: seed-era data is read-only here."""
        self._refuse()
