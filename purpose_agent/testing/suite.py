"""The whole behaviour suite in one class: every capability's rows, each gated by capability.

The events, states and values the rows use live in ``purpose_agent.testing.samples``; they
are named here too because tests have imported them from this module.
"""

from __future__ import annotations

from purpose_agent.testing.appending import AppendingSuite
from purpose_agent.testing.base import BaseSuite
from purpose_agent.testing.bounded import BoundedReadsSuite
from purpose_agent.testing.capabilities import Capability
from purpose_agent.testing.closing import ClosingSuite
from purpose_agent.testing.durable import DurableSuite
from purpose_agent.testing.groups import GroupsSuite
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.processes import ProcessesSuite
from purpose_agent.testing.retention import RetentionSuite
from purpose_agent.testing.samples import BAD_RUN_IDS, EXACT_VALUES, NOT_JSON, ev, st
from purpose_agent.testing.streaming import StreamingSuite
from purpose_agent.testing.threads import ThreadsSuite

SUITES: dict[Capability, type[Rows]] = {
    Capability.BASE: BaseSuite,
    Capability.DURABLE: DurableSuite,
    Capability.THREADS: ThreadsSuite,
    Capability.PROCESSES: ProcessesSuite,
    Capability.STREAMING: StreamingSuite,
    Capability.BOUNDED_READS: BoundedReadsSuite,
    Capability.APPEND: AppendingSuite,
    Capability.GROUPS: GroupsSuite,
    Capability.RETENTION: RetentionSuite,
}


class CheckpointerSuite(
    BaseSuite,
    ClosingSuite,
    DurableSuite,
    StreamingSuite,
    ThreadsSuite,
    ProcessesSuite,
    BoundedReadsSuite,
    AppendingSuite,
    GroupsSuite,
    RetentionSuite,
):
    """Every row of the contract; subclass it and provide a ``backend`` fixture.

    Rows of a capability the backend does not declare are skipped with the capability named.
    """


__all__ = [
    "BAD_RUN_IDS",
    "EXACT_VALUES",
    "NOT_JSON",
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
    "ev",
    "st",
]
