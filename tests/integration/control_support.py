"""Helpers for control-plane tests: a control plane on loopback HTTPS, an admin client, agents bound to it.

``control_plane(tmp)`` serves a real ``ControlPlaneServer`` (SQLite in ``tmp``, port 0, short
intervals, a movable clock); ``Admin`` calls its admin API, ``raw_call`` sends bytes no client would;
``lifecycle_agent(...)`` registers an agent and runs it (memory directory, ``local://`` transport by
default) with the lifecycle services.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.config import AgentSettings
from agent.lifecycle import Identity, Lifecycle, install, register
from agent.runtime import Agent
from service.config import ServiceSettings
from service.control.app import ControlPlaneServer

ADMIN_TOKEN = "admin-test-token"
DOMAIN = "example.com"


class MovableClock:
    """``time.time()`` plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def service_settings(state: Path, *, port: int = 0, **control: Any) -> ServiceSettings:
    return ServiceSettings.model_validate(
        {
            "control": {
                "port": port,
                "public_hosts": ["127.0.0.1"],
                "state_dir": str(state),
                "bootstrap_interval": 0.2,
                "heartbeat_interval": 0.2,
                **control,
            },
            "store": {"key_secret": "test-key-secret"},
            "admin": {"token": ADMIN_TOKEN},
        }
    )


@asynccontextmanager
async def control_plane(
    state: Path, *, port: int = 0, clock: MovableClock | None = None, **control: Any
) -> AsyncIterator[ControlPlaneServer]:
    async with ControlPlaneServer(service_settings(state, port=port, **control), clock=clock) as server:
        yield server


@dataclass
class Admin:
    url: str
    ca_pem: str
    token: str | None = ADMIN_TOKEN

    async def __call__(self, method: str, path: str, body: Any = None) -> Any:
        context = ssl.create_default_context(cadata=self.ca_pem)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return await call_with_headers(self.url, method, path, body, context, headers)


async def call_with_headers(
    url: str, method: str, path: str, body: Any, context: ssl.SSLContext, headers: dict[str, str]
) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body, ssl=context, headers=headers) as response,
    ):
        payload = await response.json()
        return response.status, payload


async def raw_call(
    server: ControlPlaneServer, method: str, path: str, body: bytes, headers: dict[bytes, bytes]
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request written byte for byte (headers and body no client library would send); (status, JSON)."""
    assert server.plane is not None
    context = ssl.create_default_context(cadata=server.plane.ca.cert_pem)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n" % (
        method.encode(),
        path.encode(),
        len(body),
    )
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers.items())
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(15):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def admin_for(server: ControlPlaneServer) -> Admin:
    assert server.plane is not None
    return Admin(server.url, server.plane.ca.cert_pem)


def agent_settings(
    state: Path, control_url: str, agent_id: str, *, broker: str | None = None, **control: Any
) -> AgentSettings:
    return AgentSettings.model_validate(
        {
            "agent": {"id": agent_id, "domains": [DOMAIN], "state_dir": str(state)},
            "transport": {"url": f"local://{broker or uuid.uuid4().hex}"},
            "directory": {"plugin": "memory", "seed_users": 5, "seed_groups": 1},
            "control_plane": {
                "enabled": True,
                "url": control_url,
                "initial_backoff": 0.05,
                "max_backoff": 0.2,
                "jitter": 0,
                "request_timeout": 5,
                **control,
            },
        }
    )


async def register_agent(server: ControlPlaneServer, state: Path, agent_id: str, domain: str = DOMAIN) -> None:
    status, token = await admin_for(server)("POST", "/v1/admin/tokens", {"domain": domain})
    assert status == 200, token
    await register(server.url, token["token"], agent_id, state, ca_fingerprint_pin=token["ca_fingerprint"])


async def agent_call(state: Path, url: str, path: str, body: dict[str, Any]) -> Any:
    """A raw mTLS call with the registered agent's certificate; returns (status, body)."""
    return await call_with_headers(url, "POST", path, body, Identity(state).client_context(), {})


@dataclass
class RunningAgent:
    agent: Agent
    lifecycle: Lifecycle
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def bootstrapped(self, count: int = 1) -> None:
        """Wait (bounded) until the agent has completed ``count`` successful bootstraps."""
        async with asyncio.timeout(15), self.lifecycle.changed:
            await self.lifecycle.changed.wait_for(lambda: self.lifecycle.bootstraps >= count)

    async def bootstrap_now(self) -> None:
        """Ask for a bootstrap at once and wait until it succeeded."""
        target = self.lifecycle.bootstraps + 1
        self.lifecycle.refresh.set()
        await self.bootstrapped(target)


@asynccontextmanager
async def lifecycle_agent(settings: AgentSettings) -> AsyncIterator[RunningAgent]:
    agent = Agent(settings)
    lifecycle = install(agent)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(15):
            await agent.started.wait()
        yield RunningAgent(agent, lifecycle, stop, task)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def wait_until(predicate: Any, what: str, *, limit: int = 300, step: float = 0.05) -> None:
    """Poll ``predicate`` at most ``limit`` times (bounded), failing with ``what``."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting until {what}")
