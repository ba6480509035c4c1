"""``cloudprov service run``'s provisioning half: the scheduler next to a real control plane, as the CLI starts it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from cli.control import run_provisioning
from service.client import ScimClient
from service.config import ProvisioningSection
from service.control.app import ControlPlaneServer
from service.provisioning.state import StateStore
from service.provisioning.targets.registry import create_target
from tests.integration.control_support import service_settings
from tests.integration.sync_support import DOMAIN, AgentRunner, agent_settings, source_view, target_view
from transports.local import LocalBroker, LocalRequester


async def test_service_run_syncs_a_job_through_the_control_planes_endpoints_and_active_key(tmp_path: Path) -> None:
    """A due job runs on its own: its domain is reached through the stored endpoints, signed with the active key."""
    settings = service_settings(tmp_path / "state").model_copy(update={"provisioning": ProvisioningSection(poll=0.1)})
    broker = f"svc-{uuid.uuid4().hex[:8]}"
    target_url = f"sqlite:///{tmp_path}/target.db"
    try:
        async with ControlPlaneServer(settings) as server:
            plane = server.plane
            assert plane is not None
            signer = await plane.signer()
            agent_config = agent_settings(
                f"local://{broker}",
                signer,
                profile="ad",
                profile_overrides={"User": {"_container": "ou=people"}, "Group": {"_container": "ou=groups"}},
                memory={"flavor": "ad", "seed_users": 20, "seed_groups": 2},
            )
            agent = await AgentRunner(agent_config).start()
            await plane.set_endpoints(DOMAIN, [{"url": f"local://{broker}"}])
            async with StateStore(settings.provisioning_state_url) as state:
                await state.put_job("job", DOMAIN, target_url, schedule=60)
                stop = asyncio.Event()
                service = asyncio.create_task(run_provisioning(settings, server, stop))
                try:
                    for _ in range(300):  # at most ~15 s
                        cycles = await state.cycles("job")
                        if cycles and cycles[0].finished_at is not None:
                            break
                        await asyncio.sleep(0.05)
                finally:
                    stop.set()
                    await asyncio.wait_for(service, 30)
                assert cycles, "the scheduler ran the due job"
                assert (cycles[0].kind, cycles[0].outcome) == ("full", "ok"), cycles[0].error
            async with (
                LocalRequester.from_url(f"local://{broker}") as requester,
                create_target(target_url) as target,
            ):
                client = ScimClient(requester, signer, DOMAIN, timeout=10)
                assert await target_view(target) == await source_view(client)
            await agent.stop()
    finally:
        LocalBroker.discard(broker)
