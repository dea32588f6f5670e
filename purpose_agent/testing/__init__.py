"""The behaviour suite every checkpointer passes, shipped so that other backends can run it.

Use it from a pytest module by subclassing :class:`CheckpointerSuite` and providing a
``backend`` fixture that returns a :class:`Backend`::

    import pytest
    from purpose_agent.testing import Backend, CheckpointerSuite

    class TestMyStore(CheckpointerSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            return Backend("mine", functools.partial(MyStore, tmp_path / "db"))

An asyncio store runs through the same suite wrapped in :class:`BlockingAdapter`.
``Backend.open`` must return a new handle on the same storage each time it is called; for
the process tests it must also be picklable (a ``functools.partial`` of the class is).
"""

from purpose_agent.testing.adapters import AsyncCheckpointer, BlockingAdapter
from purpose_agent.testing.suite import Backend, CheckpointerSuite

__all__ = ["AsyncCheckpointer", "Backend", "BlockingAdapter", "CheckpointerSuite"]
