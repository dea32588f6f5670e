"""The channel values a checkpoint stores: the changed ones as given, the others as stored.

LangGraph saves a step's checkpoint in the background while the next step runs (and, with
``durability="exit"``, every checkpoint when the run ends), and the checkpoint it hands over
is a shallow copy: a channel's value is the live object, which later steps may change in
place (a join's barrier set gains the branches that arrive, a finished workflow's result
gains the next run's interrupt). Serialized when the save runs, such a value is the later
one. LangGraph's own savers keep one value per channel version and store only the channels
``new_versions`` names; the others are read back from the version stored before.

Here each channel's value is stored on its own in the checkpoint's event, and a channel the
checkpoint did not change (not in ``new_versions``, at the version its parent has) is stored
as its parent stored it: the same text, serialized once when it changed. The parent's stored
values come from a small cache of the last checkpoint the saver stored in each namespace, or,
after a restart or a save by another process, from one lookup of the parent by its key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from purpose_agent import PAEvent
from purpose_agent.integrations.langgraph import calls, payloads
from purpose_agent.integrations.langgraph.calls import Op
from purpose_agent.integrations.langgraph.reads import could_be_key

Stored = dict[str, tuple[Any, Any]]
"""A checkpoint's channels: each one's version and its value as stored (see
:func:`~purpose_agent.integrations.langgraph.payloads.dump_value`)."""

# The cache holds about this many bytes at most, over all namespaces, and this many of them.
_BUDGET = 32 * 1024 * 1024
_ENTRIES = 10_000
# What an entry costs beyond its values' characters (its key, ids, tuples), and each channel.
_ENTRY_COST = 400
_CHANNEL_COST = 150


class LastStored:
    """The channels of the checkpoint last stored in each namespace, least recently used first.

    Shared by the saver's copies (``with_allowlist``) and by its threads and tasks.
    """

    def __init__(self, budget: int = _BUDGET, entries: int = _ENTRIES) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[str, Stored, int]] = OrderedDict()
        self._size = 0
        self._budget = budget
        self._most = entries
        self._lock = threading.Lock()

    def get(self, where: tuple[str, str], checkpoint_id: str) -> Stored | None:
        """The channels of that checkpoint, if it is the one last stored in the namespace."""
        with self._lock:
            entry = self._entries.get(where)
            if entry is None or entry[0] != checkpoint_id:
                return None
            self._entries.move_to_end(where)
            return entry[1]

    def put(self, where: tuple[str, str], checkpoint_id: str, stored: Stored) -> None:
        """Remember a checkpoint just stored, dropping the least recently used past the budget."""
        size = _ENTRY_COST + _CHANNEL_COST * len(stored)
        for _, value in stored.values():
            size += _size(value)
        with self._lock:
            old = self._entries.pop(where, None)
            if old is not None:
                self._size -= old[2]
            if size > self._budget // 4:
                return  # one huge state would push every other namespace out
            self._entries[where] = (checkpoint_id, stored, size)
            self._size += size
            while self._size > self._budget or len(self._entries) > self._most:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._size -= dropped


def _size(stored: Any) -> int:
    """About how many characters a stored value holds (``[type, base64]`` or a scalar)."""
    if type(stored) is list:
        return len(stored[1]) if len(stored) == 2 and type(stored[1]) is str else 0
    return len(stored) if type(stored) is str else 8


def to_store(
    serde: SerializerProtocol,
    values: Mapping[str, Any],
    versions: Mapping[str, Any],
    new_versions: Mapping[str, Any],
    parent: Stored | None,
) -> Stored:
    """Each channel's version and stored value: as its parent stored it, if unchanged since."""
    stored: Stored = {}
    for channel, value in values.items():
        version = versions.get(channel)
        kept = parent.get(channel) if parent is not None and channel not in new_versions else None
        if kept is not None and kept[0] == version:
            stored[channel] = kept
        else:
            stored[channel] = (version, payloads.dump_value(serde, value))
    return stored


def parent_of(
    serde: SerializerProtocol,
    run_id: str,
    parent_id: str,
    cache: LastStored,
    where: tuple[str, str],
) -> Op[Stored | None]:
    """The channels the parent checkpoint stored (``None`` if it is not found)."""
    cached = cache.get(where, parent_id)
    if cached is not None:
        return cached
    if not could_be_key(parent_id):
        return None
    event: PAEvent | None = yield calls.Call("event_by_key", (run_id, parent_id))
    if event is None or event.data.get(payloads.KEY) != payloads.CHECKPOINT:
        return None
    return stored_channels(serde, event)


def stored_channels(serde: SerializerProtocol, event: PAEvent) -> Stored:
    """A stored checkpoint's channels, each with its version and value as stored.

    A checkpoint stored whole (before channels were stored one by one) is decoded, and each
    of its values serialized again.

    Raises:
        CorruptRecord: The checkpoint cannot be decoded.
    """
    _, _, body, _ = payloads.checkpoint_parts(event)
    checkpoint = payloads.load(serde, body, event.run_id, event.seq)
    versions = checkpoint.get("channel_versions", {}) if isinstance(checkpoint, dict) else {}
    values = payloads.stored_values(event)
    if values is not None:
        return {channel: (versions.get(channel), value) for channel, value in values.items()}
    whole = checkpoint.get("channel_values", {}) if isinstance(checkpoint, dict) else {}
    return {
        channel: (versions.get(channel), payloads.dump_value(serde, value))
        for channel, value in whole.items()
    }
