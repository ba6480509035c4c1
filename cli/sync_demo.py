"""The full-system demo: control plane, agent and provisioning service in one process (``cloudprov demo``).

Settings: ``users``/``groups`` (seeded into a memory directory, AD flavour), ``follow`` (keep syncing
every 2 seconds until Ctrl-C). Everything lives in a temporary folder removed at the end; the
transport is ``local://``, the target the embedded store. The service side is wired as ``service run``
wires it (``JobWiring``): the domain's endpoint is stored in the control plane, requests are signed with
the control plane's active key (a generated key when the control plane could not start).

Guarantees: returns 0 only when the target equals the source after the full and the delta cycle;
the last line starting with ``summary:`` says how many steps failed.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agent.config import AgentSettings
from agent.runtime import Agent
from cli.progress import Progress
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from service.config import ServiceSettings
from service.control.app import ControlPlaneServer
from service.provisioning.engine import CycleReport
from service.provisioning.jobs import Scheduler
from service.provisioning.state import StateStore
from service.provisioning.targets.base import Target
from service.provisioning.targets.registry import create_target
from service.provisioning.wiring import JobWiring, SignerSource, static_endpoints, static_signer, store_sources
from transports.local import LocalBroker

DOMAIN = "example.com"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def _counts(report: CycleReport) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()) if v) or "no changes"


async def _control_plane(folder: Path) -> ControlPlaneServer | None:
    try:
        settings = ServiceSettings.model_validate({"control": {"port": 0, "state_dir": str(folder / "control")}})
        server = ControlPlaneServer(settings)
        await asyncio.wait_for(server.__aenter__(), 30)
    except Exception as error:  # the demo goes on without it, and says so
        print(f"control plane: not started ({type(error).__name__}: {error})")
        return None
    print(f"control plane: {server.url} (registration, bootstrap, admin API)")
    return server


async def _equal(client: ScimClient, target: Target) -> bool:
    source: dict[str, Any] = {}
    for endpoint in ("/Users", "/Groups"):
        async for page in client.read_all(endpoint):
            for r in page:
                members = sorted(m["value"] for m in r.get("members") or [])
                source[r["id"]] = (bool(r.get("active", True)), members)
    ids: dict[str, str] = {}
    objects = []
    for kind in ("User", "Group"):
        async for obj in target.objects(kind):
            ids[obj.id] = obj.anchor or ""
            objects.append(obj)
    held = {o.anchor: (o.active, sorted(ids.get(m, m) for m in o.members)) for o in objects}
    return held == source


async def run_demo(users: int = 100, groups: int = 5, *, follow: bool = False) -> int:
    broker = f"demo-{uuid.uuid4().hex[:8]}"
    print(f"cloudprov demo: agent on local://{broker} over a memory directory with {users} users, {groups} groups")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="cloudprov-demo-") as tmp:
        folder = Path(tmp)
        control = await _control_plane(folder)
        endpoints = static_endpoints({DOMAIN: f"local://{broker}"})
        signers: SignerSource = static_signer(Signer.generate("demo"))
        if control is not None and control.plane is not None:  # the service as it runs: the plane's key and endpoints
            plane = control.plane
            await plane.set_endpoints(DOMAIN, [{"url": f"local://{broker}"}])
            endpoints = store_sources(plane.store, None)[0]
            signers = plane.signer
        signer = await signers()
        settings = AgentSettings.model_validate(
            {
                "agent": {"id": "demo-agent", "domains": [DOMAIN], "state_dir": str(folder / "agent")},
                "transport": {"url": f"local://{broker}"},
                "directory": {"plugin": "memory", "flavor": "ad", "seed_users": users, "seed_groups": groups},
                "scim": {"profile": "ad", "profile_overrides": {"User": {"_container": "ou=people"}}},
                "signing": {"public_keys": {signer.key_id: public_key_text(signer.public_key)}},
            }
        )
        agent = Agent(settings)
        stop_agent = asyncio.Event()
        agent_task = asyncio.create_task(agent.run(stop_agent))
        await agent.started.wait()
        target_url = f"embedded:///{folder}/target.db"
        try:
            async with (
                StateStore(f"sqlite:///{folder}/provisioning.db") as state,
                JobWiring(endpoints=endpoints, signer=signers) as wiring,
                create_target(target_url) as target,
            ):
                await state.put_job("demo", DOMAIN, target_url, schedule=2, settings={"page_size": 500})
                client = await wiring.client_for(await state.job("demo"))
                total = users + groups
                progress = Progress("full sync", total)
                seen = [0]

                def on_progress(job_id: str, event: Any) -> None:
                    done = min(int(event.get("objects", 0)), total)
                    progress.advance(done - seen[0])
                    seen[0] = done

                scheduler = Scheduler(
                    state,
                    client_for=wiring.client_for,
                    target_for=wiring.target_for,
                    rules_for=wiring.rules_for,
                    replica="demo",
                    poll=0.5,
                    on_progress=on_progress,
                )
                print(f"provisioning service: job 'demo' syncs {DOMAIN} into the embedded store {target_url}")
                started = time.perf_counter()
                full = await scheduler.run_once("demo")
                progress.advance(total - seen[0])
                progress.close()
                elapsed = time.perf_counter() - started
                counts = await target.counts() if hasattr(target, "counts") else {}
                print(
                    f"full sync: {full.outcome}, {full.objects} objects in {elapsed:.2f} s "
                    f"({full.objects / max(elapsed, 1e-9):,.0f}/s): {_counts(full)}"
                )
                print(f"  the embedded store holds: {counts}")
                failures += full.outcome != "ok"
                changes = await _change_source(client)
                started = time.perf_counter()
                delta = await scheduler.run_once("demo")
                elapsed = time.perf_counter() - started
                print(f"delta sync: {delta.outcome} in {elapsed * 1000:.0f} ms: {_counts(delta)}")
                for entry in await state.log("demo", limit=20):
                    if entry.cycle_id == delta.cycle_id:
                        why = next((s["detail"] for s in reversed(entry.steps) if s.get("step") == "action"), "")
                        print(f"  {entry.action:<8} {entry.resource_type or '':<6} {entry.dn or entry.anchor}  {why}")
                failures += delta.outcome != "ok"
                same = await _equal(client, target)
                print(f"target equals source after {len(changes)} changes: {same}")
                failures += not same
                if follow:
                    await _follow(scheduler)
                await scheduler.aclose()
        finally:
            stop_agent.set()
            await agent_task
            LocalBroker.discard(broker)
            if control is not None:
                await control.__aexit__(None, None, None)
    print(f"summary: 2 cycles, {failures} failed")
    return 1 if failures else 0


async def _change_source(client: ScimClient) -> list[str]:
    """Add, modify, disable, delete and change a membership in the source; what was done."""
    done = []
    ada = await client.create(
        "/Users", {"schemas": [USER_SCHEMA], "userName": "ada.lovelace@example.com", "displayName": "Ada Lovelace"}
    )
    done.append("added ada.lovelace")
    users = (await client.search("/Users", count="3"))["Resources"]
    await client.patch(f"/Users/{users[0]['id']}", [{"op": "replace", "path": "title", "value": "Countess"}])
    done.append(f"retitled {users[0]['userName']}")
    await client.patch(f"/Users/{users[1]['id']}", [{"op": "replace", "path": "active", "value": False}])
    done.append(f"disabled {users[1]['userName']}")
    await client.delete(f"/Users/{users[2]['id']}")
    done.append(f"deleted {users[2]['userName']}")
    group = (await client.search("/Groups", count="1"))["Resources"][0]
    await client.patch(f"/Groups/{group['id']}", [{"op": "add", "path": "members", "value": [{"value": ada["id"]}]}])
    done.append(f"added ada.lovelace to {group['displayName']}")
    print("source changes: " + "; ".join(done))
    return done


async def _follow(scheduler: Scheduler) -> None:
    print("following: a cycle every 2 s; Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def on_cycle(job_id: str, report: CycleReport) -> None:
        print(f"  cycle {report.kind}: {report.outcome}, {_counts(report)}")

    scheduler.on_cycle = on_cycle
    scheduler.on_progress = None
    await scheduler.run(stop)
