"""A full sync's page path: writes in a target batch, creates through create_many, fallbacks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from service.provisioning.state import StateStore
from service.provisioning.targets.base import TargetConflictError, TargetObject
from service.provisioning.targets.registry import create_target
from tests.agent_support import AgentHarness, running_agent
from tests.provisioning_support import MemoryTarget, engine_for, source_view, target_view

SOURCE: dict[str, Any] = {"memory": {"seed_users": 25, "seed_groups": 3}}


@pytest.fixture
async def h() -> AsyncIterator[AgentHarness]:
    async with running_agent(**SOURCE) as harness:
        yield harness


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as opened:
        yield opened


class BatchingTarget(MemoryTarget):
    """A memory target with ``batch`` and ``create_many``; the latter may refuse a whole batch."""

    def __init__(self, *, refuse: str | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.batches = 0
        self.create_many_calls = 0

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[BatchingTarget]:
        self.batches += 1
        yield self

    async def create_many(self, resource_type: str, items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        self.create_many_calls += 1
        batch = list(items)
        if self.refuse is not None and any(attrs.get("userName") == self.refuse for _, attrs in batch):
            raise TargetConflictError(f"userName {self.refuse} is taken")
        return [await self.create(resource_type, anchor, attrs) for anchor, attrs in batch]

    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        if self.refuse is not None and attributes.get("userName") == self.refuse:
            raise TargetConflictError(f"userName {self.refuse} is taken")
        return await super().create(resource_type, anchor, attributes)


async def test_pages_are_created_in_batches(h: AgentHarness, state: StateStore) -> None:
    target = BatchingTarget()
    engine = await engine_for(h, state, target, page_size=10)
    report = await engine.run_cycle()
    assert (report.kind, report.outcome) == ("full", "ok")
    assert report.counts["create"] == 28
    assert target.create_many_calls == 4  # three pages of users, one of groups
    assert target.batches == 4
    assert await target_view(target) == await source_view(h)


async def test_a_refused_batch_is_retried_one_by_one(h: AgentHarness, state: StateStore) -> None:
    first = (await h.client.search("/Users", count="1"))["Resources"][0]["userName"]
    target = BatchingTarget(refuse=first)
    engine = await engine_for(h, state, target, page_size=10)
    report = await engine.run_cycle()
    assert report.outcome == "partial"
    assert report.counts["failed"] == 1
    assert report.counts["create"] == 27
    failed = [entry for entry in await state.log("job", limit=100) if entry.outcome == "failed"]
    assert [entry.action for entry in failed] == ["create"]


async def test_a_second_full_sync_into_the_embedded_store_changes_nothing(h: AgentHarness, state: StateStore) -> None:
    async with create_target("embedded:") as target:
        engine = await engine_for(h, state, target, page_size=10)
        first = await engine.run_cycle()
        assert first.counts["create"] == 28
        assert await target_view(target) == await source_view(h)
        await state.restart("job", "full")
        second = await engine.run_cycle()
        assert (second.kind, second.outcome) == ("full", "ok")
        assert second.counts["create"] == 0
        assert second.counts["none"] == 28
        assert await target_view(target) == await source_view(h)
