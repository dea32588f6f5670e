"""What the package's stores check before they write, for a store written outside it.

A third party's backend is held by the shipped behaviour suite (``purpose_agent.testing``) to
the rules the package's own stores keep: a run id that could name a path is refused, a value
that would not come back bit for bit (``NaN``, a tuple, a string holding a surrogate pair,
nesting deeper than 900 levels, a field changed after the model was built) is refused with
``InvalidInput`` before anything is written. These are the checks the package runs, so that
such a backend does not have to rewrite them, and the JSON text they produce is what the
package stores: decoded by :func:`decode_json`, it is equal to what was saved, key order,
``-0.0`` and integers beyond 64 bits included. The paging checks answer a bound past 2**63
with one a 64-bit column takes, and :func:`same_data` is the rule a retry is judged by.
"""

from __future__ import annotations

from typing import Any

from purpose_agent.codec import MAX_DEPTH, check_json, decode
from purpose_agent.records import check_page, check_since, event_row, same_data, state_row
from purpose_agent.runtime.events import check_run_id

__all__ = [
    "MAX_DEPTH",
    "check_event",
    "check_json",
    "check_page",
    "check_run_id",
    "check_since",
    "check_state",
    "decode_json",
    "same_data",
]


def check_event(event: object) -> str:
    """Check every field of an event as a save does, and encode its data.

    Args:
        event: What a caller passed to ``save_event`` or ``save_events``.

    Returns:
        The event's ``data`` as the JSON text the package's stores keep.

    Raises:
        InvalidInput: It is not a ``PAEvent``, or a field cannot be stored exactly.
        InvalidRunId: Its run id is not acceptable.

    """
    return event_row(event).data


def check_state(run_id: object, state: object) -> str:
    """Check a snapshot as ``save_snapshot(run_id, state)`` does, and encode it.

    Returns:
        The whole state as the JSON text the package's stores keep; ``RunState.from_dict``
        of :func:`decode_json` of it is equal to ``state``.

    Raises:
        InvalidInput: It is not a ``RunState``, its ``run_id`` differs, or a field cannot be
            stored exactly.
        InvalidRunId: The run id is not acceptable.

    """
    return state_row(run_id, state).state


def decode_json(text: str | bytes) -> Any:
    """Decode JSON text :func:`check_event` or :func:`check_state` produced, exactly.

    Raises:
        ValueError: The text is not one JSON value (a damaged record: report it as
            ``CorruptRecord`` with the run and seq).

    """
    return decode(text)
