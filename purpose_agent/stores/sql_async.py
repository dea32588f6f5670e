"""The asyncio twin of :class:`~purpose_agent.stores.sql.SQLCheckpointer`."""

class AsyncSQLCheckpointer:  # pragma: no cover - replaced below
    pass
