"""Events: the append-only log entries an agent run emits."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EventKind(StrEnum):
    """What happened in a run. ``kind.value`` is the short string that is stored."""

    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"
    RUN_FAILED = "run_failed"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_FAILED = "step_failed"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    MODEL_REQUEST = "model_request"
    MODEL_RESPONSE = "model_response"
    STATE_CHANGE = "state_change"
    MESSAGE = "message"
    CUSTOM = "custom"


def _plain_dict(value: Any) -> Any:
    # Only the container type is checked when a value is built: whether the contents are JSON is
    # decided when the event is saved, where it raises InvalidInput before anything is written.
    if not isinstance(value, dict):
        # pydantic turns a ValueError, not a TypeError, into its ValidationError
        raise ValueError(f"data must be a dict, not {type(value).__name__}")  # noqa: TRY004
    return value


class PAEvent(BaseModel):
    """One entry of a run's log.

    ``seq`` is assigned by the caller and is the event's position in its run; the store refuses
    a second, different event at the same position. Field values are checked fully when the
    event is saved (``InvalidInput``), so an event built from untrusted data never reaches
    storage half-valid.

    Attributes:
        run_id: The run this event belongs to.
        seq: Position in the run, from 1.
        kind: What happened.
        ts: Unix seconds when it happened; defaults to now.
        lane_id: The lane of a run with parallel branches.
        data: The event's payload, JSON values only.

    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    seq: int
    kind: EventKind
    ts: float = Field(default_factory=time.time)
    lane_id: str = "main"
    data: dict[str, Any] = Field(default_factory=dict)

    _check_data = field_validator("data", mode="plain")(_plain_dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON-able values (``kind`` as its string value)."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "kind": self.kind.value,
            "ts": self.ts,
            "lane_id": self.lane_id,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Rebuild an event from :meth:`to_dict` output."""
        return cls.model_validate(d)
