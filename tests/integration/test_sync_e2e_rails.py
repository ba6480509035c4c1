"""End to end safety rails: an agent over a memory directory → the service as wired → the embedded store.

The service side is what ``cloudprov service run`` builds (``JobWiring`` + ``Scheduler``), the agent
a real one on the local transport; the target fails with 503s through a wrapper, and deletions are
approved through the CLI's own action.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cli.sync import _approve
from protocol.signing import Signer
from service.provisioning.state import Job
from service.provisioning.targets.base import Target
from service.provisioning.targets.registry import create_target
from tests.integration.sync_support import (
    AgentRunner,
    FaultyTarget,
    SyncService,
    agent_settings,
    source_view,
    sync_service,
    target_view,
)
from transports.local import LocalBroker

AD_OVERRIDES = {"User": {"_container": "ou=people"}, "Group": {"_container": "ou=groups"}}


@pytest.fixture
async def broker() -> AsyncIterator[str]:
    name = f"rails-{uuid.uuid4().hex[:8]}"
    yield name
    LocalBroker.discard(name)


async def _agent(broker: str, signer: Signer, users: int) -> AgentRunner:
    settings = agent_settings(
        f"local://{broker}",
        signer,
        profile="ad",
        profile_overrides=AD_OVERRIDES,
        memory={"flavor": "ad", "seed_users": users, "seed_groups": 3},
    )
    return await AgentRunner(settings).start()


async def _views(service: SyncService, target_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async with create_target(target_url) as target:
        return await source_view(await service.client()), await target_view(target)


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback; the events it got."""
    events: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        events.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook", events
    finally:
        await runner.cleanup()


async def test_a_target_answering_503_quarantines_the_job_then_it_recovers_without_loss_or_duplicates(
    tmp_path: Path, broker: str, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """Repeated 503s from the target quarantine the job and notify; healed, the next cycle converges."""
    signer = Signer.generate("rails")
    hook_url, events = webhook
    target_url = f"sqlite:///{tmp_path}/target.db"
    agent = await _agent(broker, signer, 40)
    wrappers: list[FaultyTarget] = []
    try:
        async with sync_service(
            f"sqlite:///{tmp_path}/state.db",
            [{"url": f"local://{broker}"}],
            signer,
            target_url,
            quarantine_after=2,
            notify={"webhook_url": hook_url},
        ) as service:
            wiring = service.wiring

            async def target_for(job: Job) -> Target:
                wrappers.append(FaultyTarget(await wiring.target_for(job)))
                return wrappers[-1]

            service.scheduler.target_for = target_for
            assert (await service.cycle()).outcome == "ok"
            client = await service.client()
            users = (await client.search("/Users", count="2"))["Resources"]
            await client.patch(f"/Users/{users[0]['id']}", [{"op": "replace", "path": "displayName", "value": "X"}])
            await client.delete(f"/Users/{users[1]['id']}")
            wrappers[0].failing = True
            outcomes = [(await service.cycle()).outcome for _ in range(2)]
            assert outcomes == ["failed", "failed"]
            job = await service.state.job("job")
            assert job.state == "quarantined"
            assert "503" in (job.quarantine_reason or "")
            assert [e["event"] for e in events] == ["quarantined"]

            wrappers[0].failing = False
            await service.state.restart("job", "quarantine")
            report = await service.cycle()
            assert (report.kind, report.outcome) == ("delta", "ok"), report.error
            want, have = await _views(service, target_url)
            assert have == want
            assert len(have["users"]) == 39
    finally:
        await agent.stop()


async def test_six_hundred_source_deletions_are_staged_until_approved(tmp_path: Path, broker: str) -> None:
    """600 deletions in one cycle exceed the threshold: staged, not applied, until approve-deletes."""
    signer = Signer.generate("rails")
    target_url = f"sqlite:///{tmp_path}/target.db"
    agent = await _agent(broker, signer, 650)
    try:
        async with sync_service(
            f"sqlite:///{tmp_path}/state.db", [{"url": f"local://{broker}"}], signer, target_url
        ) as service:
            assert (await service.cycle()).outcome == "ok"
            client = await service.client()
            ids = [r["id"] async for page in client.read_all("/Users", page_size=1000) for r in page]
            for anchor in ids[:600]:
                await client.delete(f"/Users/{anchor}")

            staged = await service.cycle()
            assert staged.outcome == "staged"
            assert staged.counts["staged"] == 600
            async with create_target(target_url) as target:
                assert len((await target_view(target))["users"]) == 650  # nothing deleted yet
            assert (await service.state.job("job")).state == "paused-for-approval"
            assert (await service.cycle()).outcome == "skipped"

            args: Any = argparse.Namespace(job="job")
            assert await _approve(service.state, args) == 0
            applied = await service.cycle()
            assert applied.outcome == "ok", applied.error
            assert applied.counts["delete"] == 600
            want, have = await _views(service, target_url)
            assert have == want
            assert len(have["users"]) == 50
    finally:
        await agent.stop()
