"""Durable execution via event sourcing and state snapshots (the seed's module path).

Every step of a run appends events to the run's log; a snapshot of the state is saved now and
then; after a crash the run resumes from the latest snapshot plus the events after it::

    with SQLCheckpointer("sqlite:///purpose_agent.db") as checkpointer:
        checkpointer.save_events(step_events, snapshot=state_after_step)
        ...
        recovery = checkpointer.recover(run_id)   # state + exactly the events to replay
"""

import logging

from purpose_agent.errors import (
    CheckpointError,
    CorruptRecord,
    InvalidInput,
    InvalidRunId,
    SchemaNotCurrent,
    SequenceConflict,
    StoreUnavailable,
)
from purpose_agent.protocol import AsyncCheckpointer, Checkpointer, Recovery
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.jsonl import JSONLCheckpointer
from purpose_agent.stores.memory import InMemoryCheckpointer
from purpose_agent.stores.sql import SQLCheckpointer, SQLiteCheckpointer
from purpose_agent.stores.sql_async import AsyncSQLCheckpointer

# The seed's module logger, kept for code that sets its level or attaches a handler to it.
logger = logging.getLogger(__name__)

__all__ = [
    "AsyncCheckpointer",
    "AsyncSQLCheckpointer",
    "CheckpointError",
    "Checkpointer",
    "CorruptRecord",
    "EventKind",
    "InMemoryCheckpointer",
    "InvalidInput",
    "InvalidRunId",
    "JSONLCheckpointer",
    "PAEvent",
    "Recovery",
    "RunState",
    "SQLCheckpointer",
    "SQLiteCheckpointer",
    "SchemaNotCurrent",
    "SequenceConflict",
    "StoreUnavailable",
]
