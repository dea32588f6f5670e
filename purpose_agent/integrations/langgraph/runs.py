r"""Which store run holds a LangGraph thread's checkpoints.

One run per (thread id, checkpoint namespace): ``lg:<thread>`` for the root namespace and
``lg:<thread>:<namespace>`` for a subgraph's. Both parts are percent-encoded with nothing left
safe but letters, digits and ``_.-~``, so the ``:`` between them is unambiguous, a run id never
holds the ``/``, ``\`` or control characters the store refuses, and the usual UUID thread ids
stay readable in ``purpose-agent runs list``.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from purpose_agent import InvalidInput

PREFIX = "lg:"
_MAX_RUN_ID = 255


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
    run_id = thread_prefix(thread_id)[:-1]
    if checkpoint_ns:
        run_id = f"{run_id}:{quote(checkpoint_ns, safe='')}"
    if len(run_id) > _MAX_RUN_ID:
        raise InvalidInput(
            f"thread {thread_id!r} with namespace {checkpoint_ns!r} needs a run id of "
            f"{len(run_id)} characters once encoded; a run id has at most {_MAX_RUN_ID}"
        )
    return run_id


def thread_prefix(thread_id: str) -> str:
    """What every run id of the thread starts with (the root run's id plus ``:``)."""
    return f"{PREFIX}{quote(str(thread_id), safe='')}:"


def belongs_to(run_id: str, thread_id: str) -> bool:
    """Whether the run holds one of the thread's namespaces."""
    prefix = thread_prefix(thread_id)
    return run_id == prefix[:-1] or run_id.startswith(prefix)


def parse(run_id: str) -> tuple[str, str] | None:
    """The (thread id, namespace) a run holds, or ``None`` for a run LangGraph did not write."""
    if not run_id.startswith(PREFIX):
        return None
    thread, _, namespace = run_id[len(PREFIX) :].partition(":")
    return unquote(thread), unquote(namespace)
