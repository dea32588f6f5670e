"""Fixtures of the JSONL store's own tests: a folder, and a store on it closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from purpose_agent import JSONLCheckpointer


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The store's folder (not created: the store makes it)."""
    return tmp_path / "store"


@pytest.fixture
def cp(base: Path) -> Iterator[JSONLCheckpointer]:
    """A JSONL store on ``base``."""
    with JSONLCheckpointer(base) as store:
        yield store
