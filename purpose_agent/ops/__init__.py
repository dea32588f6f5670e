"""Maintenance of stores, not tied to the command line: copy, summaries, prune, verify, schema.

The ``purpose-agent`` command is a thin layer over these; scripts can call them directly::

    from purpose_agent.ops import copy_runs
    from purpose_agent.stores.open import open_store

    with open_store("jsonl:./checkpoints", create=False) as source:
        with open_store("postgresql+psycopg://app@db/agents") as dest:
            report = copy_runs(source, dest)
    assert report.ok
"""

from purpose_agent.ops.copy import CopyProgress, CopyReport, RunProblem, copy_runs
from purpose_agent.ops.prune import PruneProgress, PruneResult, prune
from purpose_agent.ops.schema import (
    SchemaStatus,
    downgrade_schema,
    schema_status,
    upgrade_schema,
)
from purpose_agent.ops.summaries import (
    GroupSummary,
    RunDetail,
    RunSummary,
    count_events,
    group_summaries,
    run_detail,
    run_ids,
    run_summaries,
)
from purpose_agent.ops.verify import Damage, VerifyProgress, VerifyReport, verify_runs

__all__ = [
    "CopyProgress",
    "CopyReport",
    "Damage",
    "GroupSummary",
    "PruneProgress",
    "PruneResult",
    "RunDetail",
    "RunProblem",
    "RunSummary",
    "SchemaStatus",
    "VerifyProgress",
    "VerifyReport",
    "copy_runs",
    "count_events",
    "downgrade_schema",
    "group_summaries",
    "prune",
    "run_detail",
    "run_ids",
    "run_summaries",
    "schema_status",
    "upgrade_schema",
    "verify_runs",
]
