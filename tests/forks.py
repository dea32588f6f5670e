"""Running work in a forked child, as a worker that inherited an open store does."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable


def exit_code_in_forked_child(work: Callable[[], object], timeout: float = 30.0) -> int | None:
    """Run ``work`` in a child forked from this process, with everything it holds.

    Returns:
        The child's exit code (0 when ``work`` returned, 1 when it raised), or ``None`` when
        it was still running after ``timeout`` seconds: a hang, and the child is killed.
    """
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None
    return child.exitcode
