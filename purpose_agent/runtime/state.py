"""Run state: what a snapshot holds."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from purpose_agent.runtime.events import _plain_dict


class RunStatus(StrEnum):
    """Where a run stands."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class RunState(BaseModel):
    """The state of a run after its events up to ``seq`` were applied.

    A snapshot saves replaying the whole log: recovery loads the snapshot and replays only the
    events after ``seq``.

    Attributes:
        run_id: The run.
        seq: The last event seq this state includes; 0 means none.
        data: The run's own state, JSON values only.
        status: Where the run stands.
        created_at: Unix seconds when the run started.
        updated_at: Unix seconds of the last change.

    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    seq: int = 0
    data: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    _check_data = field_validator("data", mode="plain")(_plain_dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the state as plain JSON-able values (``status`` as its string value)."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Rebuild a state from :meth:`to_dict` output."""
        return cls.model_validate(d)
