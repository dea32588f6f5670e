"""Run state: what a snapshot holds."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import Field

from purpose_agent.runtime.events import Covered, JsonObject, RunId, Timestamp, Value


class RunStatus(StrEnum):
    """Where a run stands."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class RunState(Value):
    """The state of a run after its events up to ``seq`` were applied.

    A snapshot saves replaying the whole log: recovery loads the snapshot and replays only the
    events after ``seq``. The fields are declared in the order of the stored form.

    Attributes:
        run_id: The run.
        seq: The last event seq this state includes; 0 means none.
        status: Where the run stands.
        created_at: Unix seconds when the run started.
        updated_at: Unix seconds of the last change.
        data: The run's own state, JSON values only.

    """

    run_id: RunId
    seq: Covered = 0
    status: RunStatus = RunStatus.RUNNING
    created_at: Timestamp = Field(default_factory=time.time)
    updated_at: Timestamp = Field(default_factory=time.time)
    data: JsonObject = Field(default_factory=dict)
