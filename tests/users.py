"""Running a probe as another user, where file permissions bind (root ignores them)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import TypeVar, cast

NOBODY = 65534
T = TypeVar("T")


def run_as(uid: int, probe: Callable[[], T]) -> T:
    """Run ``probe`` as ``uid`` in a forked child under root; in this process otherwise.

    The child is forked, so it imports nothing new: what it calls has run once beforehand.
    Its answer (or the error it met, which fails the caller) comes back through a pipe.
    """
    if os.geteuid() != 0:
        return probe()
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: drop root, run the probe, report, exit without cleanup
        try:
            os.setgid(uid)
            os.setuid(uid)
            writer.send(("ok", probe()))
        except BaseException as exc:  # reported to the parent, which fails
            writer.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    status, value = reader.recv()
    assert status == "ok", value
    return cast(T, value)
