"""Readers of what the seed module wrote, as read-only stores: one module per format.

They implement the read side of the checkpointer protocol, so that ``purpose-agent copy`` and
``purpose-agent runs`` work on seed-era data like on any store, and refuse every write with
:class:`~purpose_agent.legacy.read_only.StoreReadOnly`: the way forward is to copy the runs
into a current store.
"""

from purpose_agent.errors import StoreReadOnly
from purpose_agent.legacy.jsonl import SeedJSONLReader
from purpose_agent.legacy.mapping import MappingNotes
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.legacy.sqlite import SeedSQLiteReader

__all__ = ["LegacyReader", "MappingNotes", "SeedJSONLReader", "SeedSQLiteReader", "StoreReadOnly"]
