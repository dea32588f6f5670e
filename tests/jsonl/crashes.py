"""Writers killed at a chosen step: a script run in a child process, stopped, then SIGKILLed.

The script is handed a ``faults`` callable that prints ``stopped`` at the step and waits there,
holding every lock and file as it has them, until the parent kills it: what the next handle
makes of the files is what a crash at that step leaves.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def kill_when_stopped(script: str, *args: str, what: str = "the child") -> None:
    """Run ``python -c SCRIPT ARGS`` and SIGKILL it once it says it stopped.

    Args:
        script: The writer, which prints ``stopped`` at its fault point and waits there.
        args: Its command line.
        what: What the script runs, for the message if it never stops.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "stopped\n", f"{what} never reached the step"
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
