"""What a store can promise beyond the protocol, and the store under test that declares it.

Not every store can keep every promise: an in-memory store forgets everything when it is
closed and cannot be shared between processes. The suite is grouped by these promises so
that such a store still runs every row that applies to it, and so that a new backend states
what it offers instead of being judged on what it never claimed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass

from purpose_agent import Checkpointer


class Capability(enum.Enum):
    """A promise a store makes; each one has its own rows in the suite.

    Attributes:
        BASE: The protocol itself, on one handle: every store has it.
        DURABLE: A new handle on the same storage sees what an earlier handle saved, after
            that handle is closed.
        THREADS: Handles are used from several threads at once, and writers never hide a
            reader's view of a whole batch.
        PROCESSES: Handles in several processes share one storage without losing,
            duplicating or tearing writes.
        STREAMING: ``iter_events`` keeps a page in memory, not the run, so memory stays
            flat however long the run is.
        BOUNDED_READS: ``list_events`` also takes ``before``, ``newest_first``, ``kinds``
            and ``lanes`` (:class:`purpose_agent.protocol.BoundedReads`).
        APPEND: ``append`` gives events their run's next seqs and checks an expected last
            seq, ``last_seq`` and ``event_by_key`` read what it wrote
            (:class:`purpose_agent.protocol.Appending`).
        GROUPS: Runs join a group through ``append(group=...)``; ``list_runs`` filters by
            group and id prefix, ``list_groups`` and ``run_group`` read the groups
            (:class:`purpose_agent.protocol.RunGroups`).
        RETENTION: ``compact`` drops the events a snapshot covers and ``delete_runs``
            deletes the runs that match its filters, each in one transaction
            (:class:`purpose_agent.protocol.Retention`).

    """

    BASE = "base"
    DURABLE = "durable"
    THREADS = "threads"
    PROCESSES = "processes"
    STREAMING = "streaming"
    BOUNDED_READS = "bounded-reads"
    APPEND = "append"
    GROUPS = "groups"
    RETENTION = "retention"


ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability)


@dataclass(frozen=True)
class Backend:
    """A store under test and the capabilities it declares.

    A backend that declares nothing is held to every capability: a store's author opts out
    of a promise by leaving it out, where a reader of the test setup sees it.

    Attributes:
        name: Shown in skip reasons and messages.
        open: Returns a new handle on the same storage on every call. The processes rows
            call it in child processes, so there it must be picklable (a
            ``functools.partial`` of the store's class is).
        capabilities: What the store promises; ``Capability.BASE`` is always included.

    """

    name: str
    open: Callable[[], Checkpointer]
    capabilities: Collection[Capability] = ALL_CAPABILITIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "capabilities", frozenset(self.capabilities) | {Capability.BASE})

    def has(self, capability: Capability) -> bool:
        """Whether the store declares ``capability``.

        Args:
            capability: The promise asked about.

        Returns:
            True when the rows of that capability apply to this store.

        """
        return capability in self.capabilities
