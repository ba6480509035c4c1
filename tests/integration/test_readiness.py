"""/readyz follows the real servers: not ready while RabbitMQ or slapd is unreachable, ready again after."""

from __future__ import annotations

import asyncio
import functools
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from agent.config import AgentSettings
from agent.health import health_service
from agent.runtime import Agent
from plugins.ldap import LdapDirectory
from tests.conftest import server_missing
from tests.integration.ldap_support import slapd_settings
from tests.integration.tcp_proxy import TcpProxy

HEALTH = {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 0.05, "directory_check_interval": 0.05}


@asynccontextmanager
async def agent_with_health(settings: AgentSettings, **kwargs: Any) -> AsyncIterator[str]:
    """Run an agent with its health server; yields the /readyz URL."""
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    agent = Agent(settings, services=[functools.partial(health_service, on_listening=port.set_result)], **kwargs)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(20):
            bound = await port
        yield f"http://127.0.0.1:{bound}/readyz"
    finally:
        stop.set()
        done, _ = await asyncio.wait({runner}, timeout=20)
        if not done:  # say where it is stuck instead of leaving it to the per-test timeout
            for task in asyncio.all_tasks():
                task.print_stack(limit=8)
            raise AssertionError("the agent did not stop within 20 s (task stacks above)")


async def readiness(http: aiohttp.ClientSession, url: str, ready: bool) -> Any:
    """Poll /readyz until it says ``ready`` (bounded by the test's timeout); return its body."""
    while True:
        async with http.get(url) as response:
            body = await response.json()
            if (response.status == 200) == ready:
                return body
        await asyncio.sleep(0.05)


@pytest.mark.rabbitmq
async def test_readyz_follows_rabbitmq() -> None:
    """Cutting the agent's RabbitMQ connection makes /readyz 503 (transport), restoring it makes it 200."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        server_missing("RabbitMQ on 127.0.0.1:5672")
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    prefix = f"ready-{uuid.uuid4().hex[:8]}"
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "ready-amqp", "domains": ["example.com"]},
            "transport": {
                "url": f"amqp://guest:guest@127.0.0.1:{proxy.port}/cloudprov-test",
                "options": {
                    "request_queue": prefix + ".requests.{domain}",
                    "backoff_initial": 0.1,
                    "backoff_max": 0.3,
                    "connect_timeout": 2,
                },
            },
            "directory": {"plugin": "memory"},
            "health": HEALTH,
        }
    )
    async with asyncio.timeout(60), agent_with_health(settings) as url, aiohttp.ClientSession() as http:
        await readiness(http, url, ready=True)
        await proxy.cut()
        body = await readiness(http, url, ready=False)
        assert any("transport" in reason for reason in body["reasons"]), body
        await proxy.restore()
        await readiness(http, url, ready=True)
    await proxy.cut()


@pytest.mark.slapd
async def test_readyz_follows_slapd(tmp_path: Path) -> None:
    """Cutting the way to slapd makes /readyz 503 naming the directory; restoring it makes it 200 again."""
    real = slapd_settings(tmp_path)
    target = urlsplit(real.urls[0])
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 389)
    await proxy.start()
    ldap = real.model_copy(
        update={
            "urls": (f"ldap://127.0.0.1:{proxy.port}",),
            "starttls": False,
            "connect_timeout": 1.0,
            "retry": real.retry.model_copy(update={"attempts": 1}),
        }
    )
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "ready-ldap", "domains": ["example.com"]},
            "transport": {"url": f"local://ready-{uuid.uuid4().hex[:8]}"},
            "health": {**HEALTH, "directory_check_timeout": 2.0},
        }
    )
    directory = LdapDirectory(ldap)
    async with (
        asyncio.timeout(60),
        agent_with_health(settings, directory=directory) as url,
        aiohttp.ClientSession() as http,
    ):
        await readiness(http, url, ready=True)
        await proxy.cut()
        body = await readiness(http, url, ready=False)
        assert any("directory" in reason for reason in body["reasons"]), body
        await proxy.restore()
        await readiness(http, url, ready=True)
    await proxy.cut()
