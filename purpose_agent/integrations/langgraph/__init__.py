"""A LangGraph checkpointer on any purpose_agent store.

``pip install 'purpose-agent[langgraph]'`` and pass the saver to ``StateGraph.compile``::

    from purpose_agent import SQLCheckpointer
    from purpose_agent.integrations.langgraph import PurposeAgentSaver

    saver = PurposeAgentSaver(SQLCheckpointer("postgresql+psycopg://user@host/db"))
    graph = builder.compile(checkpointer=saver)

Each (thread, checkpoint namespace) is one run in the store; checkpoints and pending writes
are its events, so ``purpose-agent runs list`` and ``runs events`` show LangGraph threads too.
"""

from purpose_agent.integrations.langgraph.runs import run_id_for
from purpose_agent.integrations.langgraph.saver import PurposeAgentSaver

__all__ = ["PurposeAgentSaver", "run_id_for"]
