"""A LangGraph checkpointer on any purpose_agent store.

``pip install 'purpose-agent[langgraph]'`` and pass the saver to ``StateGraph.compile``::

    from purpose_agent import SQLCheckpointer
    from purpose_agent.integrations.langgraph import PurposeAgentSaver

    saver = PurposeAgentSaver(SQLCheckpointer("postgresql+psycopg://user@host/db"))
    graph = builder.compile(checkpointer=saver)

A thread is a group of runs in the store (``lg:<thread>``): each namespace's checkpoints are
one run, each checkpoint's pending writes another, so ``purpose-agent runs list`` shows
LangGraph threads by group, ``runs events`` shows their checkpoints, and deleting or pruning a
thread is the store's own retention.

Threads kept by another checkpointer (LangGraph's ``PostgresSaver`` or ``SqliteSaver``) move
here with :func:`import_threads` (``purpose-agent import langgraph`` on the command line).
"""

from purpose_agent.integrations.langgraph.imports import (
    ImportProgress,
    ImportReport,
    ThreadProblem,
    aimport_threads,
    import_threads,
)
from purpose_agent.integrations.langgraph.runs import group_for, run_id_for, writes_run_for
from purpose_agent.integrations.langgraph.saver import PurposeAgentSaver

__all__ = [
    "ImportProgress",
    "ImportReport",
    "PurposeAgentSaver",
    "ThreadProblem",
    "aimport_threads",
    "group_for",
    "import_threads",
    "run_id_for",
    "writes_run_for",
]
