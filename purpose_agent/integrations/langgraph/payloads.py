"""The event data a LangGraph checkpoint, pending write or deletion is stored as.

Event data holds JSON values only, so LangGraph's own values (channel values, messages,
``bytes``, ``datetime``) go through the saver's serializer (``serde.dumps_typed``) and are
kept as ``[type, base64 of the bytes]``: the store sees plain text, and loading calls
``serde.loads_typed`` on exactly the bytes the serializer produced.
"""

from __future__ import annotations

import base64
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from purpose_agent import CorruptRecord, EventKind

KEY = "langgraph"
CHECKPOINT = "checkpoint"
WRITE = "write"
FORGET = "forget"

KINDS = {CHECKPOINT: EventKind.STATE_CHANGE, WRITE: EventKind.CUSTOM, FORGET: EventKind.CUSTOM}


def dump(serde: SerializerProtocol, value: Any) -> list[str]:
    """A value as JSON-safe text: its serializer type and the base64 of its bytes."""
    kind, raw = serde.dumps_typed(value)
    return [kind, base64.b64encode(raw).decode("ascii")]


def load(serde: SerializerProtocol, stored: Any, run_id: str, seq: int) -> Any:
    """The value :func:`dump` stored.

    Raises:
        CorruptRecord: The stored form is not ``[type, base64]``.
    """
    try:
        kind, text = stored
        raw = base64.b64decode(text, validate=True)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(run_id, seq, "a LangGraph value is not [type, base64]") from exc
    return serde.loads_typed((kind, raw))


def checkpoint(
    checkpoint_id: str,
    parent_id: str | None,
    body: list[str],
    metadata: list[str],
    step: Any = None,
) -> dict[str, Any]:
    """A checkpoint: its id, its parent's and both serialized parts.

    LangGraph's step (an ``int`` in its metadata) comes first in plain JSON, so that
    ``purpose-agent runs events`` shows where each checkpoint stands without decoding.
    """
    shown = {"step": step} if isinstance(step, int) and not isinstance(step, bool) else {}
    return {
        KEY: CHECKPOINT,
        **shown,
        "id": checkpoint_id,
        "parent": parent_id,
        "checkpoint": body,
        "metadata": metadata,
    }


def write(
    checkpoint_id: str, task_id: str, task_path: str, idx: int, channel: str, value: list[str]
) -> dict[str, Any]:
    """One pending write, keyed to the checkpoint id LangGraph gave with it."""
    return {
        KEY: WRITE,
        "channel": channel,
        "checkpoint": checkpoint_id,
        "task": task_id,
        "path": task_path,
        "idx": idx,
        "value": value,
    }


def forget(checkpoint_ids: list[str]) -> dict[str, Any]:
    """Checkpoints (and their writes) removed from the thread by a prune or a run deletion."""
    return {KEY: FORGET, "checkpoints": checkpoint_ids}
