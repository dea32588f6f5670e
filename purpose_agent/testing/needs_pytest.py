"""pytest for the modules that define rows, with the fix named when it is missing.

A plain ``pip install purpose-agent`` has no pytest; the rows need it, the rest of
``purpose_agent.testing`` does not.
"""

try:
    import pytest
except ImportError as exc:
    raise ImportError(
        "the behaviour suite's rows run under pytest, which is not installed: "
        "install purpose-agent[testing]"
    ) from exc

__all__ = ["pytest"]
