"""The agent's lifecycle: start and stop order, draining within the grace period, SIGTERM in a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import runtime
from agent.config import AgentSettings
from agent.runtime import Agent, AgentNotStartedError
from agent.scim.handler import Result, ScimHandler
from plugins.memory import MemoryDirectory, MemorySettings
from protocol.envelope import Response, ScimOperation
from protocol.signing import Signer
from service.client import ScimClient
from tests.agent_support import DOMAIN, agent_settings, wait_until
from transports.local import LocalBroker, LocalRequester, LocalSettings, LocalTransport


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = f"runtime-{uuid.uuid4().hex}"
    yield name
    LocalBroker.discard(name)


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of every operation that reached the SCIM handler, in order."""
    calls: list[str] = []

    class Recorded(ScimHandler):
        async def handle(self, op: ScimOperation) -> Result:
            calls.append(op.path)
            return await super().handle(op)

    monkeypatch.setattr(runtime, "ScimHandler", Recorded)  # the handler the agent makes
    return calls


class Running:
    def __init__(self, agent: Agent, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.agent, self.stop, self.task = agent, stop, task


@asynccontextmanager
async def started(agent: Agent) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    async with asyncio.timeout(5):
        await agent.started.wait()
    try:
        yield Running(agent, stop, task)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


@asynccontextmanager
async def client_for(broker_name: str, signer: Signer) -> AsyncIterator[ScimClient]:
    async with LocalRequester.from_url(f"local://{broker_name}") as requester:
        yield ScimClient(requester, signer, DOMAIN, timeout=10)


def _settings(broker_name: str, signer: Signer, **kw: Any) -> AgentSettings:
    return agent_settings(broker_name, signer, **kw)


async def test_start_and_stop_follow_a_fixed_order(broker_name: str) -> None:
    """The directory opens before the transport connects; on stop the transport closes before the directory."""
    events: list[str] = []

    class Directory(MemoryDirectory):
        async def open(self) -> None:
            events.append("directory open")
            await super().open()

        async def close(self) -> None:
            events.append("directory close")
            await super().close()

    class Transport(LocalTransport):
        async def connect(self) -> None:
            events.append("transport connect")
            await super().connect()

        async def stop_consuming(self) -> None:
            if "transport stop_consuming" not in events:  # close() repeats it
                events.append("transport stop_consuming")
            await super().stop_consuming()

        async def close(self) -> None:
            if not self.closed:
                events.append("transport close")
            await super().close()

    signer = Signer.generate("k")
    agent = Agent(
        _settings(broker_name, signer),
        directory=Directory(MemorySettings()),
        transport=Transport([DOMAIN], LocalSettings(broker=broker_name)),
    )
    with pytest.raises(AgentNotStartedError):
        _ = agent.dispatcher
    async with started(agent):
        assert events == ["directory open", "transport connect"]
        assert agent.status()["ready"] is True
    assert events == [
        "directory open",
        "transport connect",
        "transport stop_consuming",
        "transport close",
        "directory close",
    ]
    assert agent.status()["ready"] is False


async def test_status_reports_counters(broker_name: str) -> None:
    """``status()`` reports readiness, the agent id and what the dispatcher did."""
    signer = Signer.generate("k")
    agent = Agent(_settings(broker_name, signer))
    async with started(agent), client_for(broker_name, signer) as client:
        await client.get("/ServiceProviderConfig")
        status = agent.status()
    assert status["agent_id"] == "test-agent"
    assert status["domains"] == [DOMAIN]
    assert status["counters"]["answered"] == 1


async def test_stop_finishes_in_flight_requests_and_takes_no_new_ones(broker_name: str, handled: list[str]) -> None:
    """Requests in flight when stop is set are answered; a request sent after stop stays in the queue."""
    signer = Signer.generate("k")
    agent = Agent(_settings(broker_name, signer, memory={"latency": 2}, dispatcher={"grace_period": 10}))
    async with started(agent) as running, client_for(broker_name, signer) as client:
        calls = [asyncio.create_task(client.call("GET", f"/Users/{i}")) for i in range(5)]
        await wait_until(lambda: agent.dispatcher.in_flight == 5)
        running.stop.set()
        await wait_until(lambda: not agent.transport.connected)
        late = asyncio.create_task(client.call("GET", "/Users/late"))
        responses: list[Response] = await asyncio.gather(*calls)
        assert [r.status for r in responses] == [404] * 5
        await running.task
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 1
        late.cancel()
    assert "/Users/late" not in handled


async def test_delivery_waiting_for_a_slot_is_not_started_after_stop(broker_name: str, handled: list[str]) -> None:
    """A delivery taken but still waiting for a free slot when stop comes is given back, not run after the drain."""
    signer = Signer.generate("k")
    settings = _settings(
        broker_name, signer, memory={"latency": 2}, dispatcher={"max_in_flight": 1, "grace_period": 10}
    )
    agent = Agent(settings)
    async with started(agent) as running, client_for(broker_name, signer) as client:
        first = asyncio.create_task(client.call("GET", "/Users/first"))
        second = asyncio.create_task(client.call("GET", "/Users/second"))
        await wait_until(lambda: handled == ["/Users/first"] and LocalBroker.named(broker_name).depth(DOMAIN) == 0)
        running.stop.set()
        assert (await first).status == 404
        await running.task
        assert handled == ["/Users/first"]
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 1
        second.cancel()


async def test_requests_beyond_the_grace_period_go_to_the_next_agent(broker_name: str) -> None:
    """Requests unfinished when the grace period ends are returned to the queue and answered by a new agent."""
    signer = Signer.generate("k")
    slow = Agent(_settings(broker_name, signer, memory={"latency": 30}, dispatcher={"grace_period": 0.1}))
    async with client_for(broker_name, signer) as client:
        async with started(slow) as running:
            calls = [
                asyncio.create_task(client.call("POST", "/Users", body=_user(f"late{i}"), timeout=20)) for i in range(3)
            ]
            await wait_until(lambda: slow.dispatcher.in_flight == 3)
            running.stop.set()
            await running.task
        assert not any(call.done() for call in calls)
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 3
        fresh = Agent(_settings(broker_name, signer))
        async with started(fresh):
            responses: list[Response] = await asyncio.gather(*calls)
        assert [r.status for r in responses] == [201] * 3
        assert {r.agent_id for r in responses} == {"test-agent"}
        assert fresh.dispatcher.counters.refused == 0


def _user(name: str) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "name": {"familyName": name}}


# ------------------------------------------------------------------------------------- SIGTERM


def _cloudprov() -> list[str]:
    script = Path(sys.executable).with_name("cloudprov")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


async def _listening(proc: asyncio.subprocess.Process) -> tuple[str, int]:
    """Read the agent's JSON log (stdout and stderr merged) until both the HTTP transport and the health
    server say where they listen: the transport's URL and the health server's port."""
    assert proc.stdout is not None
    url, port = None, None
    async with asyncio.timeout(30):
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "http.listening":
                url = str(event["url"])
            elif event.get("event") == "health server listening":
                port = int(event["port"])
            if url is not None and port is not None:
                return url, port
    rest = await proc.stdout.read()
    raise AssertionError(f"the agent exited before it listened: {rest.decode()[-2000:]}")


async def _in_flight(session: aiohttp.ClientSession, health_port: int) -> float:
    """The agent's ``cloudprov_agent_requests_in_flight`` gauge, read from its ``/metrics``."""
    async with session.get(f"http://127.0.0.1:{health_port}/metrics") as answer:
        text = await answer.text()
    for family in text_string_to_metric_families(text):
        if family.name == "cloudprov_agent_requests_in_flight":
            return float(family.samples[0].value)
    raise AssertionError("no cloudprov_agent_requests_in_flight in /metrics")


async def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM while 50 slow requests are in flight: all 50 are answered 2xx and the process exits 0 in the grace.

    SIGTERM goes once the agent's own gauge says all 50 are in flight (each then has 5 s of directory
    latency to go), so a slow machine only makes the test wait longer."""
    token = uuid.uuid4().hex
    grace = 20
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
agent: {{id: sigterm-agent, domains: [{DOMAIN}]}}
transport:
  url: http://127.0.0.1:0/scim/v2
  options: {{token: "${{AGENT_TOKEN}}"}}
directory: {{plugin: memory, seed_users: 50, latency: 5}}
dispatcher: {{max_in_flight: 64, grace_period: {grace}}}
logging: {{level: info, format: json}}
health: {{host: 127.0.0.1, port: 0}}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        *_cloudprov(),
        "agent",
        "run",
        "-c",
        str(config),
        env={**os.environ, "AGENT_TOKEN": token},
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url, health_port = await _listening(proc)
        assert proc.stdout is not None
        log_rest = asyncio.create_task(proc.stdout.read())  # keep the pipe drained so logging never blocks
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session, aiohttp.ClientSession() as probe:

            async def one(i: int) -> int:
                async with session.get(f"{url}/Users", params={"filter": f'userName eq "user{i:05d}"'}) as answer:
                    await answer.read()
                    return answer.status

            calls = [asyncio.create_task(one(i)) for i in range(1, 51)]
            async with asyncio.timeout(30):
                while await _in_flight(probe, health_port) < 50:  # noqa: ASYNC110 - a gauge read over HTTP
                    await asyncio.sleep(0.05)
            assert not any(call.done() for call in calls), "requests finished before SIGTERM"
            proc.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*calls)
        assert statuses == [200] * 50
        async with asyncio.timeout(grace):
            code = await proc.wait()
        assert code == 0
        rest = (await log_rest).decode()
        assert "agent stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_replace_transport_finishes_old_work_and_serves_the_new(broker_name: str, handled: list[str]) -> None:
    """``replace_transport`` answers what the old endpoints had in flight, then serves from the new ones only."""
    signer = Signer.generate("k")
    new_broker = f"{broker_name}-new"
    agent = Agent(_settings(broker_name, signer, memory={"latency": 2}, dispatcher={"max_in_flight": 1}))
    try:
        async with started(agent), client_for(broker_name, signer) as old, client_for(new_broker, signer) as new:
            in_flight = asyncio.create_task(old.call("GET", "/Users/in-flight"))
            waiting = asyncio.create_task(old.call("GET", "/Users/waiting"))
            await wait_until(lambda: handled == ["/Users/in-flight"])
            await agent.replace_transport(LocalTransport([DOMAIN], LocalSettings(broker=new_broker)))
            assert (await in_flight).status == 404
            assert (await new.call("GET", "/Users/new")).status == 404
            assert "/Users/waiting" not in handled
            assert LocalBroker.named(broker_name).depth(DOMAIN) == 1
            waiting.cancel()
    finally:
        LocalBroker.discard(new_broker)


async def test_transports_take_the_agents_request_limit_before_they_connect(broker_name: str) -> None:
    """A transport inflates requests no further than scim.max_body_bytes from its first message on: the limit is
    set before it connects (messages waiting in the queue arrive as it does), for a replacement transport too."""
    seen: list[int] = []

    class Recording(LocalTransport):
        async def connect(self) -> None:
            seen.append(self.max_request_size)
            await super().connect()

    signer = Signer.generate("k")
    new_broker = f"{broker_name}-new"
    agent = Agent(
        _settings(broker_name, signer, scim={"max_body_bytes": 4096}),
        transport=Recording([DOMAIN], LocalSettings(broker=broker_name)),
    )
    try:
        async with started(agent):
            await agent.replace_transport(Recording([DOMAIN], LocalSettings(broker=new_broker)))
    finally:
        LocalBroker.discard(new_broker)
    assert seen == [4096, 4096]
