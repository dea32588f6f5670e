"""Backends for the shared behaviour suite, and the servers they need."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from purpose_agent import InMemoryCheckpointer
from purpose_agent.testing import Backend


@functools.cache
def _memory_singleton(key: str) -> InMemoryCheckpointer:
    return InMemoryCheckpointer()


BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    name = request.param
    if name == "memory":
        store = InMemoryCheckpointer()
        return Backend("memory", lambda: store, durable=False, processes=False)
    raise AssertionError(name)
