"""``cloudprov demo``: the whole system in one process, on embedded defaults.

``run_demo`` starts the control plane (HTTPS on a free loopback port, state in a temporary folder),
an agent on the local transport over a memory directory (AD flavour) seeded with ``users`` users and
``groups`` groups, and the provisioning service syncing that domain into the embedded store. It
shows the full sync's progress and a summary of what was synced, then makes changes in the source
(add, modify, disable, delete, membership change) and shows the delta cycle picking them up; with
``follow`` it keeps syncing every 2 seconds until Ctrl-C.

``run_scim_demo`` is the earlier walkthrough: a scripted series of signed SCIM requests to the agent
(discovery, filters, create, patch, membership, delta, cursor paging, hostile input) and a burst.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import AgentSettings
from agent.runtime import Agent
from cli.progress import Progress
from cli.sync_demo import run_demo
from protocol.envelope import Request, decode_response
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from transports.local import LocalRequester

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
__all__ = ["run_demo", "run_scim_demo"]


class Script:
    def __init__(self, client: ScimClient) -> None:
        self.client = client
        self.steps = 0
        self.failures = 0

    async def step(self, title: str, action: Callable[[], Awaitable[str]]) -> None:
        self.steps += 1
        started = time.perf_counter()
        try:
            detail = await action()
            mark = "ok "
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            mark = "ERR"
            self.failures += 1
        elapsed = (time.perf_counter() - started) * 1000
        print(f"  [{mark}] {title:<52} {detail}  ({elapsed:.1f} ms)")


async def run_scim_demo(users: int = 100, groups: int = 5) -> int:
    signer = Signer.generate("demo")
    state = tempfile.TemporaryDirectory(prefix="cloudprov-scim-demo-")  # the agent's replay memory goes there
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "demo-agent", "domains": ["example.com"], "state_dir": state.name},
            "transport": {"url": "local://demo"},
            "directory": {"plugin": "memory", "seed_users": users, "seed_groups": groups},
            "signing": {"public_keys": {"demo": public_key_text(signer.public_key)}},
        }
    )
    agent = Agent(settings)
    stop = asyncio.Event()
    print(f"cloudprov demo: agent on local://demo over a memory directory with {users} users, {groups} groups")
    runner = asyncio.create_task(agent.run(stop))
    await agent.started.wait()
    try:
        async with LocalRequester.from_url("local://demo") as requester:
            client = ScimClient(requester, signer, "example.com", timeout=30)
            script = Script(client)
            await _scenario(script, client, requester, users)
            await _burst(client)
    finally:
        stop.set()
        await runner
        state.cleanup()
    counters = agent.dispatcher.counters
    print(
        f"summary: {script.steps} steps, {script.failures} failed; agent answered {counters.answered} requests, "
        f"refused {counters.refused}, dead-lettered {counters.dead_lettered}"
    )
    return 1 if script.failures else 0


async def _scenario(script: Script, client: ScimClient, requester: LocalRequester, users: int) -> None:
    state: dict[str, Any] = {}

    async def discovery() -> str:
        config = await client.get("/ServiceProviderConfig")
        types = await client.get("/ResourceTypes")
        supported = f"filter={config['filter']['supported']} patch={config['patch']['supported']}"
        return f"{supported}, {types['totalResults']} resource types"

    async def list_users() -> str:
        body = await client.search("/Users", count="3")
        names = ", ".join(r["userName"] for r in body["Resources"])
        return f"{body['totalResults']} users; first: {names}"

    async def filtered() -> str:
        body = await client.search("/Users", 'userName sw "user000" and (title eq "Engineer" or title pr)')
        return f"{body['totalResults']} match"

    async def complex_filter() -> str:
        body = await client.search("/Users", 'emails[type eq "work" and value ew "@example.com"]', count="0")
        return f"{body['totalResults']} match"

    async def watermark() -> str:
        state["watermark"] = (await client.changes(None))["watermark"]
        return f"start of delta: {state['watermark']}"

    async def create() -> str:
        user = await client.create(
            "/Users",
            {
                "schemas": [USER_SCHEMA],
                "userName": "ada.lovelace",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "emails": [{"value": "ada@example.com", "type": "work"}],
                "title": "Analyst",
            },
        )
        state["ada"] = user["id"]
        return f"id {user['id']}"

    async def patch() -> str:
        user = await client.patch(f"/Users/{state['ada']}", [{"op": "replace", "path": "title", "value": "Countess"}])
        return f"title is now {user['title']!r}"

    async def join_group() -> str:
        group = (await client.search("/Groups", count="1"))["Resources"][0]
        state["group"] = group["id"]
        await client.patch(
            f"/Groups/{group['id']}", [{"op": "add", "path": "members", "value": [{"value": state["ada"]}]}]
        )
        check = await client.search("/Groups", f'members[value eq "{state["ada"]}"]', count="0")
        return f"ada is in {check['totalResults']} group(s)"

    async def delta() -> str:
        body = await client.changes(state["watermark"])
        state["watermark"] = body["watermark"]
        return ", ".join(f"{r['op']} {r['resourceType']}" for r in body["Resources"])

    async def delete() -> str:
        await client.delete(f"/Users/{state['ada']}")
        body = await client.changes(state["watermark"])
        return "delta: " + ", ".join(f"{r['op']} {r['resourceType']} {r['id'][:8]}…" for r in body["Resources"])

    async def cursor_read() -> str:
        total = 0
        pages = 0
        async for page in client.read_all("/Users", page_size=max(users // 4, 1)):
            total += len(page)
            pages += 1
        return f"{total} users in {pages} pages, one directory pass"

    async def bad_filter() -> str:
        response = await client.call("GET", "/Users", {"filter": 'userName eq "x" and'})
        return f"{response.status} {response.body.get('scimType')}: {response.body.get('detail', '')[:50]}"

    async def injection() -> str:
        body = await client.search("/Users", 'userName eq "*)(uid=*"', count="0")
        return f"{body['totalResults']} match (the value stays a value)"

    async def unsigned() -> str:
        request = client.request("GET", "/Users")
        bare = Request(request.id, request.domain, request.operation, request.deadline)
        response = decode_response(await requester.request(client.domain, bare.id, bare.encode(), timeout=10))
        return f"{response.status}: {response.body['detail'][:60]}"

    async def replay() -> str:
        request = client.request("DELETE", f"/Groups/{state['group']}")
        forged = Request(request.id, request.domain, request.operation, request.deadline, request.key_id, "AAAA")
        first = await client.send(forged)
        still_there = await client.call("GET", f"/Groups/{state['group']}")
        return f"forged signature → {first.status}; the group is still there: {still_there.status == 200}"

    await script.step("discovery (/ServiceProviderConfig, /ResourceTypes)", discovery)
    await script.step("list users (count=3)", list_users)
    await script.step("filter with and/or/pr", filtered)
    await script.step("complex filter emails[type eq … and value ew …]", complex_filter)
    await script.step("delta: take a watermark", watermark)
    await script.step("create a user (POST /Users)", create)
    await script.step("patch the user (replace title)", patch)
    await script.step("add the user to a group (value-level member add)", join_group)
    await script.step("delta since the watermark", delta)
    await script.step("delete the user, delta shows the deletion", delete)
    await script.step("read all users with cursor paging", cursor_read)
    await script.step("invalid filter → SCIM error", bad_filter)
    await script.step("filter injection attempt", injection)
    await script.step("unsigned request → refused", unsigned)
    await script.step("forged signature on a DELETE → refused", replay)


async def _burst(client: ScimClient, count: int = 2000, concurrency: int = 64) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    progress = Progress("burst", count)

    async def one(i: int) -> int:
        async with semaphore:
            response = await client.call("GET", "/Users", {"filter": f'userName eq "user{i % 100 + 1:05d}"'})
            progress.advance()
            return response.status

    started = time.perf_counter()
    statuses = await asyncio.gather(*(one(i) for i in range(count)))
    progress.close()
    elapsed = time.perf_counter() - started
    ok = sum(1 for s in statuses if s == 200)
    print(f"burst: {count} signed, filtered GETs, {concurrency} in flight: {count / elapsed:,.0f} requests/s ({ok} ok)")
