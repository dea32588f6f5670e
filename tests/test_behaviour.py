"""The shared behaviour suite, run against every backend the ``backend`` fixture yields."""

from purpose_agent.testing import CheckpointerSuite


class TestBehaviour(CheckpointerSuite):
    """Every contract row on every backend."""
