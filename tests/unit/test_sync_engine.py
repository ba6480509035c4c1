"""The sync engine against an in-process agent over a memory directory, into an in-memory target."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from service.provisioning.reader import SourceReader
from service.provisioning.rules import Rules, rules_from_settings
from service.provisioning.settings import JobSettings
from service.provisioning.state import Retry, StateStore
from service.provisioning.targets.base import TargetObject
from service.provisioning.targets.registry import create_target
from tests.agent_support import PATCH_SCHEMA, USER_SCHEMA, AgentHarness, running_agent
from tests.provisioning_support import MemoryTarget, engine_for, source_view, target_view
from transports.base import Requester, RequestTimeoutError

AD = {
    "memory": {"flavor": "ad", "seed_users": 30, "seed_groups": 3},
    "scim": {"profile": "ad", "profile_overrides": {"User": {"_container": "ou=people"}}},
}


@pytest.fixture
async def h() -> AsyncIterator[AgentHarness]:
    async with running_agent(**AD) as harness:
        yield harness


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as opened:
        yield opened


class Clock:
    """The engine's clock, ``later`` seconds ahead of the wall clock (leases still run on the wall clock)."""

    def __init__(self, engine: Any) -> None:
        self.later = 0.0
        engine.clock = self

    def __call__(self) -> float:
        return time.time() + self.later


async def _user(h: AgentHarness, name: str) -> str:
    body = await h.client.create(
        "/Users",
        {"schemas": [USER_SCHEMA], "userName": name, "name": {"givenName": "New", "familyName": "User"}},
    )
    return str(body["id"])


async def _patch(h: AgentHarness, path: str, ops: list[dict[str, Any]]) -> None:
    await h.client.ok("PATCH", path, body={"schemas": [PATCH_SCHEMA], "Operations": ops})


async def test_full_sync_makes_the_target_equal_to_the_source(h: AgentHarness, state: StateStore) -> None:
    """The first cycle is a full sync that creates every user and group with its members."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target, page_size=7)
    report = await engine.run_cycle()
    assert (report.kind, report.outcome) == ("full", "ok")
    assert report.counts["create"] == 33
    assert await target_view(target) == await source_view(h)
    job = await state.job("job")
    assert job.watermark is not None
    assert not job.full_sync
    (cycle,) = await state.cycles("job")
    assert cycle.counts["create"] == 33
    assert cycle.objects == 33


async def test_delta_picks_up_adds_modifications_disables_deletes_and_memberships(
    h: AgentHarness, state: StateStore
) -> None:
    """A delta cycle applies each kind of source change, deletions included, and only those."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target)
    await engine.run_cycle()
    new = await _user(h, "ada")
    await _patch(
        h, f"/Users/{await h.user_id('user00002@example.com')}", [{"op": "replace", "path": "title", "value": "CTO"}]
    )
    await _patch(
        h, f"/Users/{await h.user_id('user00003@example.com')}", [{"op": "replace", "path": "active", "value": False}]
    )
    await h.client.delete(f"/Users/{await h.user_id('user00004@example.com')}")
    group = await h.group(0)
    await _patch(h, f"/Groups/{group['id']}", [{"op": "add", "path": "members", "value": [{"value": new}]}])
    report = await engine.run_cycle()
    assert (report.kind, report.outcome) == ("delta", "ok")
    assert report.counts["create"] == 1
    assert report.counts["delete"] == 1
    assert report.counts["member_add"] == 1
    assert await target_view(target) == await source_view(h)
    titles = {o.anchor: o.attributes.get("title") async for o in target.objects("User")}
    assert titles[await h.user_id("user00002@example.com")] == "CTO"
    log = await state.log("job", anchor=new)
    assert [e.action for e in log] == ["create"]
    assert [s["step"] for s in log[0].steps] == ["import", "scope", "match", "action"]


class NotManagers:
    """Scope: users whose title is not Manager."""

    def decide(self, resource: Mapping[str, Any], membership: Any) -> tuple[bool, str]:
        if resource.get("title") == "Manager":
            return False, "title is Manager"
        return True, "title is not Manager"


@pytest.mark.parametrize("out_of_scope", ["disable", "delete"])
async def test_users_leaving_scope_are_disabled_or_deleted(
    h: AgentHarness, state: StateStore, out_of_scope: str
) -> None:
    """A user whose change takes it out of scope is disabled (or deleted) in the target, per configuration."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target, rules=Rules(scope=NotManagers()), out_of_scope=out_of_scope)
    await engine.run_cycle()
    body = await h.client.search("/Users", 'not (title eq "Manager")', count="1")
    leaving = body["Resources"][0]["id"]
    assert await target.get_by_anchor("User", leaving) is not None
    await _patch(h, f"/Users/{leaving}", [{"op": "replace", "path": "title", "value": "Manager"}])
    report = await engine.run_cycle()
    obj = await target.get_by_anchor("User", leaving)
    if out_of_scope == "disable":
        assert obj is not None
        assert not obj.active
        assert report.counts["disable"] == 1
    else:
        assert obj is None
        assert report.counts["delete"] == 1


async def test_deletions_past_the_threshold_are_staged_until_approved(h: AgentHarness, state: StateStore) -> None:
    """More deletions than the threshold are staged and pause the job; approval applies them next cycle."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target, deletion_threshold=2)
    await engine.run_cycle()
    gone = [await h.user_id(f"user0000{i}@example.com") for i in (5, 6, 7)]
    for anchor in gone:
        await h.client.delete(f"/Users/{anchor}")
    report = await engine.run_cycle()
    assert report.outcome == "staged"
    assert report.counts["staged"] == 3
    assert all([await target.get_by_anchor("User", a) for a in gone])
    assert (await state.job("job")).state == "paused-for-approval"
    assert (await engine.run_cycle()).outcome == "skipped"
    assert await state.approve_deletes("job") == 3
    report = await engine.run_cycle()
    assert report.counts["delete"] == 3
    assert await target_view(target) == await source_view(h)
    assert await state.staged_deletes("job") == []


async def test_an_object_whose_mapping_fails_on_its_data_fails_alone(h: AgentHarness, state: StateStore) -> None:
    """A mapping expression that cannot take one object's data (a title too long for Replace's pattern)
    fails that object, logged with the reason; the rest of the page and the cycle are written."""
    mapping = {"User": {"attributes": {"title": 'Replace([title], , "\\s+", , " ", , )'}}}
    rules = rules_from_settings(JobSettings.model_validate({"mapping": mapping}))
    ada = await h.user_id("user00002@example.com")
    await _patch(h, f"/Users/{ada}", [{"op": "replace", "path": "title", "value": "x " * 200}])
    async with create_target("embedded:") as target:
        engine = await engine_for(h, state, target, rules=rules, mapping=mapping, page_size=100)
        report = await engine.run_cycle()
        assert (report.outcome, report.counts["failed"], report.counts["create"]) == ("partial", 1, 32)
        assert (await target.counts())["objects"] == {"User": 29, "Group": 3}  # type: ignore[attr-defined]
    failed = [entry for entry in await state.log("job") if entry.outcome == "failed"]
    assert [(entry.anchor, entry.action) for entry in failed] == [(ada, "map")]
    assert "title" in (failed[0].error or "")
    assert (await state.job("job")).watermark is not None


async def test_an_object_the_target_refused_is_retried_until_written_with_its_memberships(
    h: AgentHarness, state: StateStore
) -> None:
    """A user the target refuses in a delta (its userName is taken) is kept with the watermark and retried by
    every later delta, though the source does not change it again; once written it joins its group."""
    async with create_target("embedded:") as target:
        engine = await engine_for(h, state, target)
        clock = Clock(engine)
        assert (await engine.run_cycle()).outcome == "ok"
        blocker = await target.create("User", None, {"userName": "ada"})  # type: ignore[arg-type]
        ada = await _user(h, "ada")
        group = await h.group(0)
        await _patch(h, f"/Groups/{group['id']}", [{"op": "add", "path": "members", "value": [{"value": ada}]}])
        refused = await engine.run_cycle()
        assert (refused.outcome, refused.counts["failed"]) == ("partial", 1)
        assert list(await state.retries("job")) == [("User", ada)]
        assert (await engine.run_cycle()).counts["failed"] == 1  # still refused: still kept
        await target.delete(blocker)
        clock.later += 120  # its second failure's wait
        retried = await engine.run_cycle()
        assert (retried.outcome, retried.counts["create"], retried.counts["member_add"]) == ("ok", 1, 1)
        assert await state.retries("job") == {}
        assert await target_view(target) == await source_view(h)


async def test_an_object_that_keeps_failing_is_tried_less_and_less_often(h: AgentHarness, state: StateStore) -> None:
    """Each failure in a row doubles the wait before the next try, from retry_backoff up to retry_backoff_max
    (the next cycle retries a first failure); the cycles in between leave it alone, and once the target
    takes it, it is written."""
    async with create_target("embedded:") as target:
        engine = await engine_for(h, state, target, retry_backoff=120, retry_backoff_max=300)
        clock = Clock(engine)
        assert (await engine.run_cycle()).outcome == "ok"
        blocker = await target.create("User", None, {"userName": "ada"})  # type: ignore[arg-type]
        key = ("User", await _user(h, "ada"))
        waits = []
        for _ in range(5):
            assert (await engine.run_cycle()).counts["failed"] == 1
            waits.append(round((await state.retries("job"))[key].next_at - clock()))
            if waits[-1]:
                clock.later += waits[-1] - 30
                assert (await engine.run_cycle()).counts["failed"] == 0  # not due yet: left alone
                clock.later += 30
        assert waits == [0, 120, 240, 300, 300]
        assert (await state.retries("job"))[key].failures == 5
        await target.delete(blocker)
        clock.later += 300
        assert (await engine.run_cycle()).counts["create"] == 1
        assert await state.retries("job") == {}


async def test_the_wait_of_an_object_failing_for_good_stays_at_its_bound(h: AgentHarness, state: StateStore) -> None:
    """However many failures in a row, the next wait is retry_backoff_max (2.0 ** 1024 would overflow and fail
    every cycle); a full sync starts the count afresh."""
    async with create_target("embedded:") as target:
        engine = await engine_for(h, state, target, retry_backoff=120, retry_backoff_max=300)
        many = engine._next_try(Retry("taken", 5000, 0.0), "taken", 1000.0)
        assert (many.failures, many.next_at) == (5001, 1300.0)
        blocker = await target.create("User", None, {"userName": "ada"})  # type: ignore[arg-type]
        key = ("User", await _user(h, "ada"))
        await state.advance_watermark("job", "replica-a", None, {key: Retry("taken", 40, 0.0)})
        await state.restart("job", "full")
        assert (await engine.run_cycle()).kind == "full"
        assert (await state.retries("job"))[key].failures == 1
        await target.delete(blocker)


async def test_a_user_entering_scope_in_a_delta_joins_the_groups_that_hold_it(
    h: AgentHarness, state: StateStore
) -> None:
    """A group member out of scope at the full sync, brought into scope later, is created by the delta and added
    to its group, which the change feed does not name (the group did not change)."""

    class NotManagers:
        def decide(self, resource: Mapping[str, Any], membership: Any) -> tuple[bool, str]:
            return resource.get("title") != "Manager", "managers are out of scope"

    group = await h.group(0)
    member = group["members"][0]["value"]
    await _patch(h, f"/Users/{member}", [{"op": "replace", "path": "title", "value": "Manager"}])
    target = MemoryTarget()
    engine = await engine_for(h, state, target, rules=Rules(scope=NotManagers()))
    assert (await engine.run_cycle()).outcome == "ok"
    assert await target.get_by_anchor("User", member) is None
    await _patch(h, f"/Users/{member}", [{"op": "replace", "path": "title", "value": "Engineer"}])
    report = await engine.run_cycle()
    assert (report.kind, report.counts["create"]) == ("delta", 1)
    holding = {anchor for anchor, members in (await source_view(h))["groups"].items() if member in members}
    assert report.counts["member_add"] == len(holding)
    held = await target_view(target)
    assert {anchor for anchor, members in held["groups"].items() if member in members} == holding


async def test_a_user_back_in_scope_later_in_the_cycle_is_not_deleted(h: AgentHarness, state: StateStore) -> None:
    """A user that leaves scope in one batch of a delta (deletion queued) and is back in scope in a later batch of
    the same cycle keeps its target object: the later write cancels the queued deletion."""

    class NotManagers:
        def decide(self, resource: Mapping[str, Any], membership: Any) -> tuple[bool, str]:
            return resource.get("title") != "Manager", "managers are out of scope"

    target = MemoryTarget()
    rules = Rules(scope=NotManagers())
    engine = await engine_for(h, state, target, rules=rules, out_of_scope="delete", change_batch=1)
    assert (await engine.run_cycle()).outcome == "ok"
    ada, other = await h.user_id("user00002@example.com"), await h.user_id("user00003@example.com")
    await _patch(h, f"/Users/{ada}", [{"op": "replace", "path": "title", "value": "Manager"}])
    await _patch(h, f"/Users/{other}", [{"op": "replace", "path": "title", "value": "Dev"}])
    read = engine.reader.changes

    async def changes(watermark: str, count: int) -> dict[str, Any]:
        body = await read(watermark, count)
        if body.get("more") and not getattr(changes, "done", False):  # while the cycle works on the first batch
            changes.done = True  # type: ignore[attr-defined]
            await _patch(h, f"/Users/{ada}", [{"op": "replace", "path": "title", "value": "Engineer"}])
        return body

    engine.reader.changes = changes  # type: ignore[method-assign]
    report = await engine.run_cycle()
    assert (report.kind, report.counts["delete"]) == ("delta", 0)
    assert await target.get_by_anchor("User", ada) is not None


class _Faulty(MemoryTarget):
    """A target with a fault of ours: reading an object raises something no target should."""

    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        raise RuntimeError("a bug")


async def test_an_unexpected_error_fails_the_cycle_and_counts_towards_quarantine(
    h: AgentHarness, state: StateStore
) -> None:
    """An error no handler expects ends the cycle as failed (not left running) and counts as a failure."""
    engine = await engine_for(h, state, _Faulty(), quarantine_after=2)
    report = await engine.run_cycle()
    assert (report.outcome, report.error) == ("failed", "RuntimeError: a bug")
    assert [cycle.outcome for cycle in await state.cycles("job")] == ["failed"]
    assert (await state.job("job")).failures == 1


async def test_a_delta_that_falls_back_to_a_full_sync_counts_each_deletion_once(
    h: AgentHarness, state: StateStore
) -> None:
    """Deletions a delta collected before it fell back to a full sync are not counted again by the full sync:
    two deletions under a threshold of three are applied, not staged as four."""
    group = await h.group(0)
    scoping = {"groups": [group["id"]]}
    rules = rules_from_settings(JobSettings.model_validate({"scoping": scoping}))
    target = MemoryTarget()
    engine = await engine_for(h, state, target, rules=rules, scoping=scoping, change_batch=2, deletion_threshold=3)
    assert (await engine.run_cycle()).outcome == "ok"
    gone = [m["value"] for m in group["members"]][:2]
    for member in gone:
        await h.client.delete(f"/Users/{member}")
    await _patch(h, f"/Groups/{group['id']}", [{"op": "replace", "path": "displayName", "value": "renamed"}])
    report = await engine.run_cycle()
    assert (report.kind, report.outcome, report.counts["delete"]) == ("full", "ok", 2)
    assert (await state.job("job")).state == "active"
    assert [await target.get_by_anchor("User", member) for member in gone] == [None, None]


async def test_a_failing_target_quarantines_the_job_and_notifies_the_webhook(
    h: AgentHarness, state: StateStore
) -> None:
    """Repeated failed cycles put the job in quarantine with a backoff and POST one notification."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        target = MemoryTarget()
        target.fail_after = 0
        notify = {"webhook_url": f"http://127.0.0.1:{port}/hook"}
        engine = await engine_for(h, state, target, quarantine_after=2, notify=notify)
        assert (await engine.run_cycle()).outcome == "failed"
        assert (await state.job("job")).state == "active"
        report = await engine.run_cycle()
        assert report.outcome == "failed"
        assert "503" in (report.error or "")
        job = await state.job("job")
        assert job.state == "quarantined"
        assert job.quarantine_until is not None
        assert job.full_sync
        assert job.watermark is None
        assert [(r["job"], r["event"]) for r in received] == [("job", "quarantined")]
        target.fail_after = None
        assert (await engine.run_cycle()).outcome == "ok"
        job = await state.job("job")
        assert (job.state, job.failures) == ("active", 0)
    finally:
        await runner.cleanup()


async def test_watermark_stays_when_the_target_fails_mid_cycle_and_the_next_cycle_converges(
    h: AgentHarness, state: StateStore
) -> None:
    """A delta cycle broken by the target keeps the old watermark; the next one applies everything once."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target)
    await engine.run_cycle()
    before = (await state.job("job")).watermark
    for name in ("x1", "x2", "x3"):
        await _user(h, name)
    target.fail_after = target.writes + 1
    report = await engine.run_cycle()
    assert report.outcome == "failed"
    assert (await state.job("job")).watermark == before
    target.fail_after = None
    report = await engine.run_cycle()
    assert report.outcome == "ok"
    assert report.counts["create"] == 2
    assert await target_view(target) == await source_view(h)
    assert (await state.job("job")).watermark != before


async def test_a_dead_replicas_job_is_taken_over_and_the_stale_replica_is_fenced(
    h: AgentHarness, state: StateStore
) -> None:
    """Replica B takes the job when A's lease expires; A can then no longer advance the watermark."""
    target = MemoryTarget()
    a = await engine_for(h, state, target, owner="A")
    assert not await state.acquire_lease("job", "B", 60)
    await state.acquire_lease("job", "A", -1)  # A stops renewing: its lease has expired
    assert await state.acquire_lease("job", "B", 60)
    b = await engine_for(h, state, target, owner=None)
    b.owner = "B"
    report = await a.run_cycle()
    assert report.outcome == "failed"
    assert "another replica" in (report.error or "")
    assert (await state.job("job")).watermark is None
    report = await b.run_cycle()
    assert report.outcome == "ok"
    assert await target_view(target) == await source_view(h)


async def test_on_demand_runs_one_object_and_explains_each_step(h: AgentHarness, state: StateStore) -> None:
    """On-demand provisioning of a DN prints Import, Scope, Match and Action with reasons and applies it."""
    target = MemoryTarget()
    engine = await engine_for(h, state, target)
    steps = await engine.on_demand("CN=user00001,OU=people,dc=example,dc=com")
    assert [s.name for s in steps] == ["import", "scope", "match", "action", "result"]
    assert steps[3].outcome == "create"
    assert len(target.objects_by_id) == 1
    steps = await engine.on_demand("CN=nobody,OU=people,dc=example,dc=com")
    assert [(s.name, s.outcome) for s in steps] == [("import", "not found")]


async def test_a_group_says_which_of_its_members_are_not_in_the_target(h: AgentHarness, state: StateStore) -> None:
    """A group provisioned before its members says how many source members the target lacks; once they are
    written, it does not."""
    group = "CN=group0001,OU=groups,dc=example,dc=com"
    target = MemoryTarget()
    engine = await engine_for(h, state, target)
    found = await h.client.search("/Groups", 'displayName eq "group0001"')
    members = len(found["Resources"][0]["members"])
    assert members > 0
    steps = await engine.on_demand(group)
    missing = [s for s in steps if s.name == "members"]
    assert [(s.outcome, s.detail.split(" member(s)")[0]) for s in missing] == [("not in target", str(members))]
    assert (await engine.run_cycle()).outcome == "ok"
    assert not [s for s in await engine.on_demand(group) if s.name == "members" and s.outcome == "not in target"]


class FlakyRequester(Requester):
    """A requester whose first ``failures`` requests time out (an agent that died holding them)."""

    def __init__(self, inner: Requester, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.ids: list[str] = []

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        self.ids.append(request_id)
        if self.failures:
            self.failures -= 1
            raise RequestTimeoutError(request_id)
        return await self.inner.request(domain, request_id, payload, timeout=timeout)


async def test_a_timed_out_request_goes_back_to_the_domain_queue_with_a_fresh_id(
    h: AgentHarness, state: StateStore
) -> None:
    """A request that times out is sent again as a new request, which any agent of the domain may take."""
    flaky = FlakyRequester(h.requester, failures=2)
    h.client.requester = flaky
    reader = SourceReader(h.client, timeout=1, attempts=3)
    assert await reader.current_watermark()
    assert len(flaky.ids) == 3
    assert len(set(flaky.ids)) == 3
    assert reader.retries == 2


async def test_quarantine_is_mailed_through_an_smtp_server(h: AgentHarness, state: StateStore) -> None:
    """With SMTP configured, quarantine sends one e-mail, over a real SMTP exchange, naming the job and reason."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message as MessageHandler

    mails: list[Any] = []

    class Collect(MessageHandler):  # type: ignore[misc]
        def handle_message(self, message: Any) -> None:
            mails.append(message)

    with socket.socket() as probe:  # aiosmtpd checks readiness on the port it was given: find a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        target = MemoryTarget()
        target.fail_after = 0
        notify = {"smtp_host": "127.0.0.1", "smtp_port": port, "mail_to": ["ops@example.com"]}
        engine = await engine_for(h, state, target, quarantine_after=1, notify=notify)
        assert (await engine.run_cycle()).outcome == "failed"
        assert (await state.job("job")).state == "quarantined"
    finally:
        controller.stop()
    assert len(mails) == 1
    mail = mails[0]
    assert mail["To"] == "ops@example.com"
    assert mail["Subject"] == "cloudprov: job job: quarantined"
    assert "503" in mail.get_payload()
