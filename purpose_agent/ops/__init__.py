"""Operations on stores that are not tied to the command line.

The ``purpose-agent`` command is a thin layer over these; scripts can call them directly::

    from purpose_agent.ops import copy_runs, open_store

    with open_store("jsonl:./checkpoints", create=False) as source:
        with open_store("postgresql+psycopg://app@db/agents") as dest:
            report = copy_runs(source, dest)
    assert report.ok
"""

from purpose_agent.ops.copy import CopyProgress, CopyReport, RunProblem, copy_runs
from purpose_agent.ops.prune import PruneResult, prune
from purpose_agent.ops.schema import (
    SchemaStatus,
    downgrade_schema,
    schema_status,
    upgrade_schema,
)
from purpose_agent.ops.seed import MappingNotes
from purpose_agent.ops.seed_jsonl import SeedTolerantJSONL
from purpose_agent.ops.seed_sqlite import SeedSQLiteSource
from purpose_agent.ops.summaries import (
    RunDetail,
    RunSummary,
    count_events,
    run_detail,
    run_summaries,
)
from purpose_agent.ops.targets import Target, TargetKind, describe, open_store, parse_target

__all__ = [
    "CopyProgress",
    "CopyReport",
    "MappingNotes",
    "PruneResult",
    "RunDetail",
    "RunProblem",
    "RunSummary",
    "SchemaStatus",
    "SeedSQLiteSource",
    "SeedTolerantJSONL",
    "Target",
    "TargetKind",
    "copy_runs",
    "count_events",
    "describe",
    "downgrade_schema",
    "open_store",
    "parse_target",
    "prune",
    "run_detail",
    "run_summaries",
    "schema_status",
    "upgrade_schema",
]
