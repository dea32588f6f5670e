r"""Which store runs hold a LangGraph thread, and the group that keeps them together.

A thread is one group of runs, named ``lg:<thread>``:

* one run per checkpoint namespace holds its checkpoints, in the order they were saved:
  ``lg:<thread>`` for the root graph, ``lg:<thread>:<namespace>`` for a subgraph's;
* one run per checkpoint holds the pending writes keyed to it, one event per ``put_writes``:
  ``lgw:<thread>:<namespace>:<checkpoint id>`` (the namespace part is empty for the root).

Every part is percent-encoded with nothing left safe but letters, digits and ``_.-~``, so the
``:`` between parts is unambiguous, a run id never holds the ``/``, ``\`` or control characters
the store refuses, and the usual UUID thread and checkpoint ids stay readable in
``purpose-agent runs list``. The two prefixes differ before their first ``:``, so
``list_runs(prefix="lg:")`` lists checkpoint runs only.

A run id has at most 255 characters, and LangGraph's ids have no limit: a long thread id,
subgraphs nested a few levels deep (each level adds its node name and a task id to the
namespace) or non-ASCII ids (up to 12 characters each once encoded) would not fit. Where the
whole id would be longer, its longest parts are replaced, one at a time until it fits, by
``*`` and 32 hex digits of their SHA-256 (``*`` is never left as it is by the encoding). A part
holding a lone surrogate, which has no UTF-8 form to encode, is hashed the same way. Ids
that fit are named exactly as before. Such a run cannot be read back into names, so each event
the saver stores in it also holds its thread, namespace (and checkpoint id, for writes) as
``names`` (see :mod:`~purpose_agent.integrations.langgraph.payloads`).
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import NamedTuple
from urllib.parse import quote, unquote

PREFIX = "lg:"
WRITES_PREFIX = "lgw:"
HASHED = "*"
_MAX_RUN_ID = 255
# What ``quote(text, safe="")`` leaves as it is: text of these only is its own encoding.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")


# Every call of the saver names its runs again; a thread's names are worth keeping. Typed:
# 1, 1.0 and True are equal as keys but name three threads ("1", "1.0", "True").
@functools.lru_cache(maxsize=4096, typed=True)
def _part(value: object) -> str:
    return _encoded(value)


def _encoded(value: object) -> str:
    """A part percent-encoded; a checkpoint id (new at each put) is mostly left as it is."""
    text = str(value)
    if _UNQUOTED.fullmatch(text):
        return text  # what quote() returns for it, without its encode and byte loop
    try:
        return quote(text, safe="")
    except UnicodeEncodeError:
        # A lone surrogate (bytes decoded with "surrogateescape": a header, a file name) has
        # no UTF-8 form to percent-encode: the part is hashed, as a long one is.
        return _digest(value)


def _digest(value: object) -> str:
    text = str(value).encode("utf-8", "surrogatepass")
    return HASHED + hashlib.sha256(text).hexdigest()[:32]


def _fitted(prefix: str, values: tuple[object, ...], parts: list[str] | None = None) -> str:
    """``prefix`` and the encoded values joined by ``:``, longest parts hashed until it fits.

    ``parts`` are the values already encoded, if the caller has them.
    """
    if parts is None:
        parts = [_part(value) for value in values]
    whole = prefix + ":".join(parts)
    if len(whole) <= _MAX_RUN_ID:
        return whole
    while len(prefix) + sum(map(len, parts)) + len(parts) - 1 > _MAX_RUN_ID:
        longest = max(
            (n for n, part in enumerate(parts) if not part.startswith(HASHED)),
            key=lambda n: len(parts[n]),
        )
        parts[longest] = _digest(values[longest])
    return prefix + ":".join(parts)


@functools.lru_cache(maxsize=4096, typed=True)
def run_id_for(thread_id: str, checkpoint_ns: str = "") -> str:
    """The run that holds one thread's checkpoints in one namespace.

    Args:
        thread_id: LangGraph's ``thread_id``.
        checkpoint_ns: LangGraph's ``checkpoint_ns``; ``""`` is the root graph.

    Returns:
        The store's run id, for ``purpose-agent runs events`` and the store's own methods.
    """
    if not checkpoint_ns:
        return group_for(thread_id)
    return _fitted(PREFIX, (thread_id, checkpoint_ns))


# A checkpoint's writes run is named when its writes are stored and at every read of it
# (twice in a listing: to read a page's writes, then to find the checkpoint's among them).
@functools.lru_cache(maxsize=4096, typed=True)
def writes_run_for(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> str:
    """The run that holds the pending writes keyed to one checkpoint.

    Args:
        thread_id: LangGraph's ``thread_id``.
        checkpoint_ns: LangGraph's ``checkpoint_ns``.
        checkpoint_id: The checkpoint the writes belong to (stored yet or not).

    Returns:
        The run id.
    """
    # The checkpoint id is new at every put: encoded uncached, so as not to push the
    # thread's names out of _part's cache.
    parts = [_part(thread_id), _part(checkpoint_ns), _encoded(checkpoint_id)]
    return _fitted(WRITES_PREFIX, (thread_id, checkpoint_ns, checkpoint_id), parts)


@functools.lru_cache(maxsize=4096, typed=True)
def group_for(thread_id: str) -> str:
    """The group of every run of the thread (the same text as its root run's id)."""
    return _fitted(PREFIX, (thread_id,))


def hashed(run_id: str) -> bool:
    """Whether a part of the run id is hashed: its events must name what the run holds."""
    return HASHED in run_id


def is_checkpoints(run_id: str) -> bool:
    """Whether the run holds one namespace's checkpoints."""
    return run_id.startswith(PREFIX)


def is_writes(run_id: str) -> bool:
    """Whether the run holds the pending writes keyed to one checkpoint."""
    return run_id.startswith(WRITES_PREFIX)


class Checkpoints(NamedTuple):
    """What a checkpoint run holds: one namespace of one thread."""

    thread_id: str
    checkpoint_ns: str


class WritesOf(NamedTuple):
    """What a writes run holds: the pending writes keyed to one checkpoint."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


def parse(run_id: str) -> Checkpoints | None:
    """The thread and namespace a checkpoint run holds.

    Returns:
        ``None`` for any other run, and for a hashed one (its events name them).
    """
    if not run_id.startswith(PREFIX) or hashed(run_id):
        return None
    thread, _, namespace = run_id[len(PREFIX) :].partition(":")
    return Checkpoints(unquote(thread), unquote(namespace))


def parse_writes(run_id: str) -> WritesOf | None:
    """The checkpoint a writes run belongs to.

    Returns:
        ``None`` for any other run, and for a hashed one (its events name them).
    """
    if not run_id.startswith(WRITES_PREFIX) or hashed(run_id):
        return None
    parts = run_id[len(WRITES_PREFIX) :].split(":")
    if len(parts) != 3:
        return None
    thread, namespace, checkpoint_id = parts
    return WritesOf(unquote(thread), unquote(namespace), unquote(checkpoint_id))
