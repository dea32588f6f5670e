"""A small round of ``benchmarks.async_stress`` on every backend, with and without group commit."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.async_stress import stress_round


@pytest.mark.parametrize("group", [False, True], ids=["plain", "grouped"])
def test_a_stress_round_keeps_every_run_whole_and_fails_no_call(
    empty_database: str, group: bool
) -> None:
    for seed in range(3):
        round_ = stress_round(empty_database, tasks=12, calls=25, group=group, seed=seed)
        errors = asyncio.run(round_)
        assert not errors, errors
