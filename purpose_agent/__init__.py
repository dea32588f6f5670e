"""Durable execution for agent runs: an event log and state snapshots behind one protocol.

Everything a user needs is importable from here::

    from purpose_agent import PAEvent, EventKind, RunState, SQLCheckpointer

The names are imported when first used (PEP 562), so that ``import purpose_agent`` - and the
``purpose-agent`` command's ``--version`` and ``--help`` - do not load pydantic, SQLAlchemy
and every backend before anything needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from purpose_agent.runtime.checkpoint import (
        AsyncCheckpointer,
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
    from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
    from purpose_agent.runtime.state import RunState, RunStatus

__version__ = "0.1.0"

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
    "NewEvent",
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

# Where each public name lives: the seed's module paths, as the contract names them.
_HOMES = {
    "EventKind": "purpose_agent.runtime.events",
    "NewEvent": "purpose_agent.runtime.events",
    "PAEvent": "purpose_agent.runtime.events",
    "RunState": "purpose_agent.runtime.state",
    "RunStatus": "purpose_agent.runtime.state",
} | dict.fromkeys(
    (
        "AsyncCheckpointer",
        "AsyncSQLCheckpointer",
        "CheckpointError",
        "Checkpointer",
        "CorruptRecord",
        "InMemoryCheckpointer",
        "InvalidInput",
        "InvalidRunId",
        "JSONLCheckpointer",
        "Recovery",
        "SQLCheckpointer",
        "SQLiteCheckpointer",
        "SchemaNotCurrent",
        "SequenceConflict",
        "StoreUnavailable",
    ),
    "purpose_agent.runtime.checkpoint",
)


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it, so later lookups are plain attributes.

    Raises:
        AttributeError: For a name this package does not export.

    """
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
