"""The scheduler: due jobs run on one replica; when that replica stops, another one takes the job over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.client import ScimClient
from service.provisioning.jobs import Scheduler
from service.provisioning.state import Job, StateStore
from service.provisioning.targets.base import Target
from tests.agent_support import AgentHarness, running_agent, wait_until
from tests.provisioning_support import MemoryTarget, source_view, target_view


@pytest.fixture
async def h() -> AsyncIterator[AgentHarness]:
    async with running_agent(memory={"seed_users": 12, "seed_groups": 2}) as harness:
        yield harness


async def test_one_replica_runs_a_job_and_another_takes_it_over(h: AgentHarness, tmp_path: Path) -> None:
    """Two schedulers share a job: cycles run on one of them; after it stops the other continues."""
    target = MemoryTarget()

    async def client_for(job: Job) -> ScimClient:
        return h.client

    async def target_for(job: Job) -> Target:
        return target

    url = f"sqlite:///{tmp_path}/state.db"
    async with StateStore(url) as state, StateStore(url) as state_b:
        await state.put_job("job", "example.com", "memory:", schedule=1, settings={"timeout": 5, "lease_ttl": 30})
        a_done, b_done = asyncio.Event(), asyncio.Event()
        a = Scheduler(
            state,
            client_for=client_for,
            target_for=target_for,
            replica="A",
            poll=0.02,
            on_cycle=lambda j, r: a_done.set(),
        )
        b = Scheduler(
            state_b,
            client_for=client_for,
            target_for=target_for,
            replica="B",
            poll=0.02,
            on_cycle=lambda j, r: b_done.set(),
        )
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        run_a = asyncio.create_task(a.run(stop_a))
        await wait_until(lambda: a.held.get("job") is not None, timeout=5)
        run_b = asyncio.create_task(b.run(stop_b))
        async with asyncio.timeout(10):
            await a_done.wait()
        cycles = await state.cycles("job")
        assert {c.replica for c in cycles} == {"A"}
        assert await target_view(target) == await source_view(h)
        stop_a.set()
        await run_a
        await state.set_next_run("job", None, 0)
        async with asyncio.timeout(10):
            await b_done.wait()
        assert (await state.cycles("job"))[0].replica == "B"
        stop_b.set()
        await run_b
        assert (await state.job("job")).lease_owner is None


async def test_a_cycle_that_raises_still_schedules_the_next_run(h: AgentHarness, tmp_path: Path) -> None:
    """Whatever a cycle raises, the job gets its next run time: a job left due would start again at once."""

    async def client_for(job: Job) -> ScimClient:
        return h.client

    async def target_for(job: Job) -> Target:
        return MemoryTarget()

    def on_cycle(job_id: str, report: object) -> None:
        raise RuntimeError("a callback's fault")

    async with StateStore(f"sqlite:///{tmp_path}/state.db") as state:
        await state.put_job("job", "example.com", "memory:", schedule=3600, settings={"timeout": 5})
        before = (await state.job("job")).next_run
        scheduler = Scheduler(state, client_for=client_for, target_for=target_for, replica="A", on_cycle=on_cycle)
        with pytest.raises(RuntimeError, match="a callback's fault"):
            await scheduler.run_once("job")
        assert (await state.job("job")).next_run >= before + 3000
        await scheduler.aclose()
