"""Helpers for the end-to-end sync tests: agents to start and kill, the service side, source and target views.

``AgentRunner`` starts a real ``Agent`` (any directory, any transport) and stops or kills it (its task
cancelled mid-work, as a crash would leave it). ``SyncService`` is the provisioning service as
``cloudprov service run`` wires it (``JobWiring`` + ``Scheduler`` on a state store), without the
control plane: fixed endpoints and a fixed signing key. ``source_view``/``target_view`` reduce both
sides to anchors, key attributes and memberships so a test can compare them with ``==``.
``FaultyTarget`` wraps a target to run a fault in the middle of a cycle or to answer 503s.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from agent.config import AgentSettings
from agent.runtime import Agent
from plugins.directory import Directory
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from service.provisioning.engine import CycleReport
from service.provisioning.jobs import Scheduler
from service.provisioning.state import StateStore
from service.provisioning.targets.base import Target, TargetObject, TargetUnavailableError
from service.provisioning.wiring import JobWiring, static_endpoints, static_signer

DOMAIN = "example.com"


def agent_settings(
    url: str,
    signer: Signer,
    *,
    options: Mapping[str, Any] | None = None,
    profile: str = "openldap",
    agent_id: str | None = None,
    memory: Mapping[str, Any] | None = None,
    profile_overrides: Mapping[str, Any] | None = None,
) -> AgentSettings:
    return AgentSettings.model_validate(
        {
            "agent": {"id": agent_id or f"agent-{uuid.uuid4().hex[:6]}", "domains": [DOMAIN]},
            "transport": {"url": url, "options": dict(options or {})},
            "directory": {"plugin": "memory", **dict(memory or {})},
            "scim": {"profile": profile, "profile_overrides": dict(profile_overrides or {})},
            "signing": {"public_keys": {signer.key_id: public_key_text(signer.public_key)}},
            "dispatcher": {"grace_period": 1},
            "retry": {"attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.5, "jitter": 0},
        }
    )


class AgentRunner:
    """A running agent; ``stop()`` shuts it down in order, ``kill()`` cancels it mid-work."""

    def __init__(self, settings: AgentSettings, directory: Directory | None = None) -> None:
        self.agent = Agent(settings, directory=directory)
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> AgentRunner:
        self.task = asyncio.create_task(self.agent.run(self.stop_event), name=self.agent.settings.agent.id)
        async with asyncio.timeout(30):
            started = asyncio.create_task(self.agent.started.wait())
            await asyncio.wait({started, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                started.cancel()
                await self.task  # raises what stopped the agent
        return self

    async def stop(self) -> None:
        if self.task is None or self.task.done():
            return
        self.stop_event.set()
        async with asyncio.timeout(30):
            await self.task

    async def kill(self) -> None:
        if self.task is None or self.task.done():
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(30):
                await self.task


@dataclass
class SyncService:
    """The service side of one job: state store, wiring and scheduler."""

    state: StateStore
    wiring: JobWiring
    scheduler: Scheduler

    async def client(self) -> ScimClient:
        return await self.wiring.client_for(await self.state.job("job"))

    async def cycle(self) -> CycleReport:
        return await self.scheduler.run_once("job")

    async def converge(self, attempts: int = 5) -> CycleReport:
        """Cycles until one ends ok (at most ``attempts``); the last report."""
        report = await self.cycle()
        for _ in range(attempts - 1):
            if report.outcome == "ok":
                break
            await self.state.restart("job", "quarantine")
            report = await self.cycle()
        return report


@asynccontextmanager
async def sync_service(
    state_url: str,
    endpoints: Sequence[Mapping[str, Any]],
    signer: Signer,
    target_url: str,
    **settings: Any,
) -> AsyncIterator[SyncService]:
    """A job ``job`` on ``DOMAIN`` into ``target_url``, and the service that runs it."""
    async with (
        StateStore(state_url) as state,
        JobWiring(endpoints=static_endpoints({DOMAIN: list(endpoints)}), signer=static_signer(signer)) as wiring,
    ):
        await state.put_job("job", DOMAIN, target_url, schedule=60, settings={"timeout": 10, **settings})
        scheduler = Scheduler(
            state,
            client_for=wiring.client_for,
            target_for=wiring.target_for,
            rules_for=wiring.rules_for,
            replica="e2e",
        )
        try:
            yield SyncService(state, wiring, scheduler)
        finally:
            await scheduler.aclose()


async def source_view(client: ScimClient) -> dict[str, Any]:
    """Users (anchor → userName, displayName, active) and groups (anchor → displayName, member anchors)."""
    users: dict[str, Any] = {}
    async for page in client.read_all("/Users", page_size=200):
        for r in page:
            users[r["id"]] = (r["userName"], r.get("displayName"), bool(r.get("active", True)))
    groups: dict[str, Any] = {}
    async for page in client.read_all("/Groups", page_size=200):
        for r in page:
            groups[r["id"]] = (r.get("displayName"), sorted(m["value"] for m in r.get("members") or []))
    return {"users": users, "groups": groups}


async def target_view(target: Target) -> dict[str, Any]:
    """The same view of the target; raises when an anchor is held twice (a duplicate)."""
    anchors: dict[str, str] = {}
    users: dict[str, Any] = {}
    async for obj in target.objects("User"):
        assert obj.anchor not in users, f"user anchor {obj.anchor} held twice"
        anchors[obj.id] = obj.anchor or ""
        attrs = obj.attributes
        users[obj.anchor or obj.id] = (attrs.get("userName"), attrs.get("displayName"), obj.active)
    groups_raw = [obj async for obj in target.objects("Group")]
    for obj in groups_raw:
        anchors[obj.id] = obj.anchor or ""
    groups: dict[str, Any] = {}
    for obj in groups_raw:
        assert obj.anchor not in groups, f"group anchor {obj.anchor} held twice"
        groups[obj.anchor or obj.id] = (
            obj.attributes.get("displayName"),
            sorted(anchors.get(m, m) for m in obj.members),
        )
    return {"users": users, "groups": groups}


class FaultyTarget(Target):
    """A target around another: ``before_write(n)`` is awaited before the n-th write (n from 1), and
    while ``failing`` every call raises ``TargetUnavailableError`` (a target answering 503)."""

    def __init__(self, inner: Target, before_write: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.inner = inner
        self.before_write = before_write
        self.failing = False
        self.writes = 0

    def _check(self) -> None:
        if self.failing:
            raise TargetUnavailableError("503 Service Unavailable (injected)")

    async def _write(self) -> None:
        self._check()
        self.writes += 1
        if self.before_write is not None:
            await self.before_write(self.writes)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        self._check()
        return await self.inner.get_by_anchor(resource_type, anchor)

    async def find_by_attribute(self, resource_type: str, attribute: str, value: Any) -> TargetObject | None:
        self._check()
        return await self.inner.find_by_attribute(resource_type, attribute, value)

    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        await self._write()
        return await self.inner.create(resource_type, anchor, attributes)

    async def update(
        self, obj: TargetObject, attributes: Mapping[str, Any], *, anchor: str | None = None
    ) -> TargetObject:
        await self._write()
        return await self.inner.update(obj, attributes, anchor=anchor)

    async def change_members(self, group: TargetObject, add: Collection[str], remove: Collection[str]) -> None:
        await self._write()
        await self.inner.change_members(group, add, remove)

    async def disable(self, obj: TargetObject) -> None:
        await self._write()
        await self.inner.disable(obj)

    async def delete(self, obj: TargetObject) -> None:
        await self._write()
        await self.inner.delete(obj)

    async def objects(self, resource_type: str) -> AsyncIterator[TargetObject]:
        self._check()
        async for obj in self.inner.objects(resource_type):
            yield obj
