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
"""

from __future__ import annotations

import functools
from typing import NamedTuple
from urllib.parse import quote, unquote

from purpose_agent import InvalidInput

PREFIX = "lg:"
WRITES_PREFIX = "lgw:"
_MAX_RUN_ID = 255


# Every call of the saver names its runs again; a thread's names are worth keeping. Typed:
# 1, 1.0 and True are equal as keys but name three threads ("1", "1.0", "True").
@functools.lru_cache(maxsize=4096, typed=True)
def _part(value: object) -> str:
    return quote(str(value), safe="")


def _checked(run_id: str, what: str) -> str:
    if len(run_id) > _MAX_RUN_ID:
        raise InvalidInput(
            f"{what} needs a run id of {len(run_id)} characters once encoded; a run id has at "
            f"most {_MAX_RUN_ID}: use a shorter thread id or namespace"
        )
    return run_id


@functools.lru_cache(maxsize=4096, typed=True)
def run_id_for(thread_id: str, checkpoint_ns: str = "") -> str:
    """The run that holds one thread's checkpoints in one namespace.

    Args:
        thread_id: LangGraph's ``thread_id``.
        checkpoint_ns: LangGraph's ``checkpoint_ns``; ``""`` is the root graph.

    Returns:
        The store's run id, for ``purpose-agent runs events`` and the store's own methods.

    Raises:
        InvalidInput: The encoded ids are longer than a run id may be (255 characters).
    """
    run_id = group_for(thread_id)
    if checkpoint_ns:
        run_id = f"{run_id}:{_part(checkpoint_ns)}"
    return _checked(run_id, f"thread {thread_id!r} with namespace {checkpoint_ns!r}")


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

    Raises:
        InvalidInput: The encoded ids are longer than a run id may be (255 characters).
    """
    run_id = f"{WRITES_PREFIX}{_part(thread_id)}:{_part(checkpoint_ns)}:{_part(checkpoint_id)}"
    return _checked(
        run_id,
        f"checkpoint {checkpoint_id!r} of thread {thread_id!r} in namespace {checkpoint_ns!r}",
    )


def group_for(thread_id: str) -> str:
    """The group of every run of the thread (the same text as its root run's id)."""
    return f"{PREFIX}{_part(thread_id)}"


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
    """The thread and namespace a checkpoint run holds, or ``None`` for any other run."""
    if not run_id.startswith(PREFIX):
        return None
    thread, _, namespace = run_id[len(PREFIX) :].partition(":")
    return Checkpoints(unquote(thread), unquote(namespace))


def parse_writes(run_id: str) -> WritesOf | None:
    """The checkpoint a writes run belongs to, or ``None`` for any other run."""
    if not run_id.startswith(WRITES_PREFIX):
        return None
    parts = run_id[len(WRITES_PREFIX) :].split(":")
    if len(parts) != 3:
        return None
    thread, namespace, checkpoint_id = parts
    return WritesOf(unquote(thread), unquote(namespace), unquote(checkpoint_id))
