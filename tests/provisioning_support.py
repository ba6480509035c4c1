"""Helpers for sync-engine tests: an in-memory ``Target`` with injectable failures, and a wired engine.

``MemoryTarget`` keeps objects in dicts and raises ``TargetUnavailableError`` from ``fail_after``
writes on (``None``: never), so a test can break the target mid-cycle and heal it. ``engine_for``
builds a ``SyncEngine`` for a running agent harness, on a state store of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import replace
from typing import Any

from service.provisioning.engine import SyncEngine
from service.provisioning.reader import SourceReader
from service.provisioning.rules import Rules
from service.provisioning.settings import JobSettings
from service.provisioning.state import StateStore
from service.provisioning.targets.base import Target, TargetNotFoundError, TargetObject, TargetUnavailableError
from tests.agent_support import AgentHarness


class MemoryTarget(Target):
    def __init__(self) -> None:
        self.objects_by_id: dict[str, TargetObject] = {}
        self.fail_after: int | None = None
        self.writes = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _write(self) -> None:
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise TargetUnavailableError("503 from the target (injected)")
        self.writes += 1

    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        return next(
            (o for o in self.objects_by_id.values() if o.resource_type == resource_type and o.anchor == anchor), None
        )

    async def find_by_attribute(self, resource_type: str, attribute: str, value: Any) -> TargetObject | None:
        return next(
            (
                o
                for o in self.objects_by_id.values()
                if o.resource_type == resource_type and o.attributes.get(attribute) == value
            ),
            None,
        )

    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        self._write()
        active = bool(attributes.get("active", True))
        obj = TargetObject(uuid.uuid4().hex, resource_type, anchor, dict(attributes), active=active)
        self.objects_by_id[obj.id] = obj
        return obj

    async def update(
        self, obj: TargetObject, attributes: Mapping[str, Any], *, anchor: str | None = None
    ) -> TargetObject:
        self._write()
        current = self.objects_by_id[obj.id]
        merged = {**current.attributes, **attributes}
        merged = {k: v for k, v in merged.items() if v is not None}
        active = bool(attributes["active"]) if "active" in attributes else current.active
        new = replace(current, attributes=merged, anchor=anchor or current.anchor, active=active)
        self.objects_by_id[obj.id] = new
        return new

    async def change_members(self, group: TargetObject, add: Collection[str], remove: Collection[str]) -> None:
        self._write()
        current = self.objects_by_id[group.id]
        self.objects_by_id[group.id] = replace(current, members=(current.members | set(add)) - set(remove))

    async def disable(self, obj: TargetObject) -> None:
        self._write()
        current = self.objects_by_id[obj.id]
        self.objects_by_id[obj.id] = replace(current, active=False, attributes={**current.attributes, "active": False})

    async def delete(self, obj: TargetObject) -> None:
        self._write()
        if self.objects_by_id.pop(obj.id, None) is None:
            raise TargetNotFoundError(obj.id)
        for gid, group in list(self.objects_by_id.items()):
            if obj.id in group.members:
                self.objects_by_id[gid] = replace(group, members=group.members - {obj.id})

    async def objects(self, resource_type: str) -> AsyncIterator[TargetObject]:
        for obj in list(self.objects_by_id.values()):
            if obj.resource_type == resource_type:
                yield obj


async def source_view(h: AgentHarness) -> dict[str, Any]:
    """What the target should hold: users (anchor → userName, active), groups (anchor → member anchors)."""
    users: dict[str, Any] = {}
    async for page in h.client.read_all("/Users"):
        users.update({r["id"]: (r["userName"], bool(r.get("active", True))) for r in page})
    groups: dict[str, Any] = {}
    async for page in h.client.read_all("/Groups"):
        groups.update({r["id"]: sorted(m["value"] for m in r.get("members") or []) for r in page})
    return {"users": users, "groups": groups}


async def target_view(target: Target) -> dict[str, Any]:
    """The same view of what the target holds (member ids translated back to anchors)."""
    anchors: dict[str, str] = {}
    users: dict[str, Any] = {}
    async for obj in target.objects("User"):
        anchors[obj.id] = obj.anchor or ""
        users[obj.anchor or obj.id] = (obj.attributes.get("userName"), obj.active)
    groups: dict[str, Any] = {}
    async for obj in target.objects("Group"):
        anchors[obj.id] = obj.anchor or ""
    async for obj in target.objects("Group"):
        groups[obj.anchor or obj.id] = sorted(anchors.get(m, m) for m in obj.members)
    return {"users": users, "groups": groups}


async def engine_for(
    h: AgentHarness,
    state: StateStore,
    target: Target,
    *,
    job_id: str = "job",
    owner: str | None = "replica-a",
    rules: Rules | None = None,
    **settings: Any,
) -> SyncEngine:
    """A job on ``state`` and an engine for it, holding the job's lease as ``owner``."""
    job_settings = JobSettings.model_validate({"timeout": 5, **settings})
    await state.put_job(job_id, "example.com", "memory:", schedule=1, settings=job_settings.model_dump(mode="json"))
    if owner is not None:
        assert await state.acquire_lease(job_id, owner, 60)
    reader = SourceReader(h.client, timeout=job_settings.timeout, attempts=job_settings.attempts)
    return SyncEngine(job_id, state, reader, target, settings=job_settings, rules=rules, owner=owner)
