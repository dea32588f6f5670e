"""Durable execution for agent runs: an event log and state snapshots behind one protocol.

Everything a user needs is importable from here::

    from purpose_agent import PAEvent, EventKind, RunState, SQLCheckpointer
"""

from purpose_agent.runtime.checkpoint import (
    AsyncSQLCheckpointer,
    Checkpointer,
    CheckpointError,
    CorruptRecord,
    InMemoryCheckpointer,
    InvalidInput,
    InvalidRunId,
    JSONLCheckpointer,
    Recovery,
    SchemaNotCurrent,
    SequenceConflict,
    SQLCheckpointer,
    SQLiteCheckpointer,
    StoreUnavailable,
)
from purpose_agent.runtime.events import EventKind, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus

__version__ = "0.1.0"

__all__ = [
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
    "RunStatus",
    "SQLCheckpointer",
    "SQLiteCheckpointer",
    "SchemaNotCurrent",
    "SequenceConflict",
    "StoreUnavailable",
]
