"""Scoping configured in a job's settings, through the sync engine: base DNs, nested groups, conditions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.provisioning.rules import rules_from_settings
from service.provisioning.settings import JobSettings
from service.provisioning.state import StateStore
from tests.agent_support import PATCH_SCHEMA, AgentHarness, running_agent
from tests.provisioning_support import MemoryTarget, engine_for

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
AD: dict[str, Any] = {
    "memory": {"flavor": "ad", "seed_users": 12, "seed_groups": 3},
    "scim": {
        "profile": "ad",
        "profile_overrides": {"User": {"_container": "ou=people"}, "Group": {"_container": "ou=groups"}},
    },
}


@pytest.fixture
async def h() -> AsyncIterator[AgentHarness]:
    async with running_agent(**AD) as harness:
        yield harness


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as opened:
        yield opened


async def _source(h: AgentHarness, endpoint: str) -> list[dict[str, Any]]:
    return [r async for page in h.client.read_all(endpoint) for r in page]


def _anchors(target: MemoryTarget, resource_type: str, *, active: bool | None = None) -> set[str]:
    return {
        o.anchor or ""
        for o in target.objects_by_id.values()
        if o.resource_type == resource_type and (active is None or o.active == active)
    }


@pytest.mark.parametrize("out_of_scope", ["disable", "delete"])
async def test_nested_group_scope_with_a_condition_follows_membership_changes(
    h: AgentHarness, state: StateStore, out_of_scope: str
) -> None:
    """Users in a scoping group through a nested group and meeting the condition are provisioned; one removed
    from the group leaves scope and is disabled or deleted, as ``scoping.out_of_scope`` says."""
    inner = next(g for g in await _source(h, "/Groups") if g["displayName"] == "group0003")
    outer = await h.client.create(
        "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "scoped", "members": [{"value": inner["id"]}]}
    )
    scoping = {"groups": ["scoped"], "conditions": ['title ne "Manager"'], "out_of_scope": out_of_scope}
    rules = rules_from_settings(JobSettings.model_validate({"scoping": scoping}))
    assert rules.uses_membership
    target = MemoryTarget()
    engine = await engine_for(h, state, target, rules=rules, scoping=scoping)
    assert engine.settings.out_of_scope == out_of_scope

    report = await engine.run_cycle()
    assert report.outcome == "ok"
    users = {u["id"]: u for u in await _source(h, "/Users")}
    members = [m["value"] for m in inner["members"] if m["value"] in users]
    expected = {m for m in members if users[m].get("title") != "Manager"}
    assert expected, "the seed gives group0003 members that are not managers"
    assert _anchors(target, "User") == expected
    assert _anchors(target, "Group") == {outer["id"], inner["id"]}

    leaving = sorted(expected)[0]
    await h.client.ok(
        "PATCH",
        f"/Groups/{inner['id']}",
        body={"schemas": [PATCH_SCHEMA], "Operations": [{"op": "remove", "path": f'members[value eq "{leaving}"]'}]},
    )
    report = await engine.run_cycle()
    assert (report.kind, report.outcome) == ("full", "ok")  # a group changed: membership scoping reads all
    if out_of_scope == "disable":
        assert _anchors(target, "User", active=False) == {leaving}
        assert _anchors(target, "User", active=True) == expected - {leaving}
    else:
        assert _anchors(target, "User") == expected - {leaving}
    log = await state.log("job", anchor=leaving, limit=5)
    last = max(log, key=lambda e: e.at)
    assert last.action == out_of_scope
    assert any("scope" in s.get("detail", "") for s in last.steps)


async def test_base_dn_scope_keeps_objects_outside_it_out_of_the_target(h: AgentHarness, state: StateStore) -> None:
    """With a base DN of the people OU, users are provisioned and groups (in another OU) are not."""
    scoping = {"base_dns": ["OU=People,DC=example,DC=com"]}
    target = MemoryTarget()
    engine = await engine_for(
        h, state, target, rules=rules_from_settings(JobSettings.model_validate({"scoping": scoping})), scoping=scoping
    )
    report = await engine.run_cycle()
    assert report.outcome == "ok"
    assert _anchors(target, "User") == {u["id"] for u in await _source(h, "/Users")}
    assert _anchors(target, "Group") == set()
    assert report.counts["skip"] == 3


def test_a_job_without_scoping_keeps_everything_in_scope() -> None:
    """No scoping section: the rules need no membership index and every object is in scope."""
    rules = rules_from_settings(JobSettings())
    assert not rules.uses_membership
    assert rules.scope.decide({"id": "x", "userName": "a"}, None).in_scope
