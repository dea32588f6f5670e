"""LangGraph's own conformance suite, with every capability the saver offers, on every backend."""

from __future__ import annotations

import asyncio

import pytest

conformance = pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance.capabilities import (  # noqa: E402
    ALL_CAPABILITIES,
    DetectedCapabilities,
)

from purpose_agent.integrations.langgraph import PurposeAgentSaver  # noqa: E402
from tests.integrations.conftest import StoreFactory  # noqa: E402


def test_saver_offers_every_capability_langgraph_defines(saver: PurposeAgentSaver) -> None:
    assert DetectedCapabilities.from_instance(saver).missing == frozenset()


def test_conformance_suite_passes_every_capability(store_factory: StoreFactory) -> None:
    @conformance.checkpointer_test(name=f"PurposeAgentSaver[{store_factory.backend}]")  # type: ignore[attr-defined]
    async def registered():
        yield PurposeAgentSaver(store_factory())

    report = asyncio.run(conformance.validate(registered))
    results = report.results
    assert set(results) == {cap.value for cap in ALL_CAPABILITIES}
    failures = {name: r.failures for name, r in results.items() if not r.passed}
    assert failures == {}
    assert all(r.detected and r.tests_passed > 0 for r in results.values())
