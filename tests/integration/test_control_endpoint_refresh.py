"""Endpoint refresh under load on RabbitMQ: the control plane moves a domain from vhost A to vhost B mid-stream."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest

from protocol.signing import Signer
from service.client import ScimClient
from tests.conftest import server_missing
from tests.integration.control_support import (
    DOMAIN,
    admin_for,
    agent_settings,
    control_plane,
    lifecycle_agent,
    register_agent,
    wait_until,
)
from transports.base import Requester
from transports.registry import create_requester

pytestmark = pytest.mark.rabbitmq
aio_pika = pytest.importorskip("aio_pika")

VHOST_A = "amqp://guest:guest@127.0.0.1:5672/cloudprov-test"
VHOST_B = "amqp://guest:guest@127.0.0.1:5672/"  # the default vhost "/"
TOTAL = 160
WORKERS = 8


async def _check_vhosts() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        server_missing("RabbitMQ on 127.0.0.1:5672")
    for url in (VHOST_A, VHOST_B):
        try:
            connection = await aio_pika.connect(url, timeout=5)
        except Exception as exc:  # aio-pika raises several types for a missing vhost or refused login
            server_missing(f"RabbitMQ vhost of {url.split('@')[-1]} ({exc}; scripts/rabbitmq.sh creates it)")
        await connection.close()


async def _delete_queues(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def test_every_request_is_answered_exactly_once_across_an_endpoint_switch(tmp_path: Path) -> None:
    """Requests sent on vhost A before and on vhost B after the switch are each answered exactly once."""
    await _check_vhosts()
    prefix = f"cpswitch-{uuid.uuid4().hex[:8]}"
    options_a = {"request_queue": f"{prefix}.a.{{domain}}", "reply_prefix": f"{prefix}.replies-a."}
    options_b = {"request_queue": f"{prefix}.b.{{domain}}", "reply_prefix": f"{prefix}.replies-b."}
    async with control_plane(tmp_path / "cp", bootstrap_interval=600) as server:
        assert server.plane is not None
        admin = admin_for(server)
        status, _ = await admin(
            "PUT", f"/v1/admin/domains/{DOMAIN}/endpoints", {"endpoints": [{"url": VHOST_A, "options": options_a}]}
        )
        assert status == 200
        state = tmp_path / "agent"
        await register_agent(server, state, "agent-1")
        settings = agent_settings(state, server.url, "agent-1")
        settings = settings.model_copy(
            update={"directory": settings.directory.model_copy(update={"latency": 0.02})}  # requests stay in flight
        )
        signer: Signer = await server.plane.signer()
        requester_a = create_requester(VHOST_A, options=options_a)
        requester_b = create_requester(VHOST_B, options=options_b)
        try:
            async with lifecycle_agent(settings) as running, requester_a, requester_b:
                await running.bootstrapped()
                assert running.agent.transport.connected
                target: dict[str, Requester] = {"now": requester_a}
                sent: dict[str, list[str]] = {"a": [], "b": []}
                answers: dict[str, list[int]] = {}

                async def worker() -> None:
                    while len(sent["a"]) + len(sent["b"]) < TOTAL:
                        requester = target["now"]
                        client = ScimClient(requester, signer, DOMAIN, timeout=60)
                        request = client.request("GET", "/Users", {"count": "1"}, timeout=60)
                        sent["a" if requester is requester_a else "b"].append(request.id)
                        response = await client.send(request)
                        answers.setdefault(request.id, []).append(response.status)

                workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
                await wait_until(lambda: len(answers) >= 40, "40 requests were answered on vhost A")
                status, _ = await admin(
                    "PUT",
                    f"/v1/admin/domains/{DOMAIN}/endpoints",
                    {"endpoints": [{"url": VHOST_B, "options": options_b}]},
                )
                assert status == 200
                target["now"] = requester_b  # the service side follows the control plane at once
                counters = running.agent.dispatcher.counters
                await wait_until(lambda: counters.received >= len(sent["a"]), "vhost A's queue was delivered")
                # A's last requests are still being handled (directory latency) while B's queue fills up
                await running.bootstrap_now()  # the agent moves: consume B, then drain and close A
                async with asyncio.timeout(60):
                    await asyncio.gather(*workers)

                every = sent["a"] + sent["b"]
                assert len(every) == len(set(every)) >= TOTAL
                assert sent["a"]
                assert sent["b"]
                assert {rid: answers.get(rid) for rid in every} == {rid: [200] for rid in every}
                assert (counters.answered, counters.replayed_from_store) == (len(every), 0)
                assert running.agent.not_ready_reasons() == []
        finally:
            await _delete_queues(VHOST_A, [f"{prefix}.a.{DOMAIN}", f"{prefix}.a.{DOMAIN}.dlq"])
            await _delete_queues(VHOST_B, [f"{prefix}.b.{DOMAIN}", f"{prefix}.b.{DOMAIN}.dlq"])
