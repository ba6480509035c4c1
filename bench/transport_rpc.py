"""Request/reply throughput of the broker transports against the raw client limit, in one run.

What it is
    For RabbitMQ: raw aio-pika request/reply (quorum request queue, persistent messages, publisher
    confirms, manual acks: the same guarantees our transport gives; the client and the responder on
    a connection each, as ours are, so that the broker serves both sides in parallel for raw as it
    does for ours) with 1 and 100 requests in flight, then the same through ``AmqpRequester`` +
    ``AmqpTransport`` with a trivial responder (echo the request envelope as the response), then
    signed filtered SCIM GETs from ``ScimClient`` to the real agent over a memory directory (zero
    latency). Prints msg/s, p50/p99 latency, the process's CPU per message (both sides run in
    this process; it tells a loaded machine's noise from a real change) and our/raw ratio (target
    ≥ 0.7). Ours publishes and consumes one level under aio-pika (``transports.amqp.wire``, with
    the connections of ``transports.amqp.connection``), so ours alone can beat the raw row, which
    stays on aio-pika's public API. Then ``sb://`` against the project's Service Bus test
    peer (reported only: the peer is not Azure).

Connection URL / options
    ``python bench/transport_rpc.py [--amqp-url URL] [-n 5000] [--sb-n 1000] [--skip-sb] [--skip-amqp]``;
    RabbitMQ defaults to ``amqp://guest:guest@127.0.0.1:5672/cloudprov-test``.

Guarantees
    Bounded: N requests per row; queues are uniquely named and deleted afterwards. No asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aio_pika
import structlog

from protocol.envelope import Request, Response, ScimOperation, decode_request
from transports.base import Delivery, Requester, Transport
from transports.registry import create_requester, create_transport

DOMAIN = "bench.example.test"
Call = Callable[[int], Awaitable[None]]


def envelope(i: int) -> tuple[str, bytes]:
    request_id = uuid.uuid4().hex
    op = ScimOperation("GET", f"/Users/{i}", {"attributes": "userName"})
    return request_id, Request(request_id, DOMAIN, op, time.time() + 600).encode()


Result = tuple[float, float, float, float]


async def measure(call: Call, n: int, in_flight: int) -> Result:
    """msg/s, p50 ms, p99 ms and this process's CPU µs per call for ``n`` calls with ``in_flight`` at a time.

    The CPU figure covers both sides (client and responder or agent run in this process): it
    moves far less than msg/s when other processes load the machine.
    """
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - start) * 1000)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return n / elapsed, cuts[49], cuts[98], cpu / n * 1e6


# ---- raw aio-pika ---------------------------------------------------------------------------------


async def raw_amqp(url: str, n: int, in_flight: int) -> Result:
    prefix = f"bench-raw-{uuid.uuid4().hex[:8]}"
    agent_connection = await aio_pika.connect(url)
    client_connection = await aio_pika.connect(url)
    async with agent_connection, client_connection:
        agent_channel = await agent_connection.channel(publisher_confirms=True)
        await agent_channel.set_qos(prefetch_count=100)
        client_channel = await client_connection.channel(publisher_confirms=True)
        await client_channel.set_qos(prefetch_count=100)
        requests = await agent_channel.declare_queue(
            f"{prefix}.requests", durable=True, arguments={"x-queue-type": "quorum"}
        )
        replies = await client_channel.declare_queue(f"{prefix}.replies", durable=True)
        pending: dict[str, asyncio.Future[bytes]] = {}

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await agent_channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    correlation_id=message.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                message.reply_to or "",
            )
            await message.ack()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            future = pending.pop(message.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(message.body)

        await requests.consume(serve)
        await replies.consume(on_reply, exclusive=True)

        async def call(i: int) -> None:
            request_id, payload = envelope(i)
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            pending[request_id] = future
            await client_channel.default_exchange.publish(
                aio_pika.Message(
                    payload,
                    message_id=request_id,
                    correlation_id=request_id,
                    reply_to=replies.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                requests.name,
            )
            await asyncio.wait_for(future, 30)

        try:
            return await measure(call, n, in_flight)
        finally:
            await requests.delete(if_unused=False, if_empty=False)
            await replies.delete(if_unused=False, if_empty=False)


# ---- through our transports --------------------------------------------------------------------


async def respond(transport: Transport) -> None:
    """The trivial agent: decode the request, answer 200 with its path, ack."""

    async def one(delivery: Delivery) -> None:
        request = decode_request(delivery.payload)
        await delivery.reply(Response(request.id, 200, {"path": request.operation.path}, agent_id="bench").encode())
        await delivery.ack()

    tasks: set[asyncio.Task[None]] = set()
    async for delivery in transport.deliveries():
        task = asyncio.create_task(one(delivery))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def ours(url: str, options: dict[str, object], n: int, in_flight: int) -> Result:
    async with (
        create_transport(url, domains=[DOMAIN], options=options) as transport,
        create_requester(url, options=options) as requester,
    ):
        server = asyncio.create_task(respond(transport))

        async def call(i: int) -> None:
            request_id, payload = envelope(i)
            await requester.request(DOMAIN, request_id, payload, timeout=60)

        try:
            await measure(call, min(50, n), in_flight)  # warm up: open senders, declare queues
            return await measure(call, n, in_flight)
        finally:
            await transport.stop_consuming()
            server.cancel()
            await cleanup(url, options, requester)


async def cleanup(url: str, options: dict[str, object], requester: Requester) -> None:
    if not url.startswith("amqp"):
        return
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        prefix = str(options["request_queue"]).format(domain=DOMAIN)
        for name in (
            prefix,
            prefix + ".dlq",
            str(options["reply_prefix"]) + str(getattr(requester, "requester_id", "")),
        ):
            await channel.queue_delete(name)


async def agent_over(url: str, options: dict[str, object], n: int, in_flight: int, users: int = 1000) -> Result:
    """Signed, filtered SCIM GETs from ``ScimClient`` to the real agent (memory directory, zero latency)."""
    from agent.config import AgentSettings
    from agent.runtime import Agent
    from bench.common import agent_state
    from protocol.signing import Signer, public_key_text
    from service.client import ScimClient

    signer = Signer.generate("bench")
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "bench-agent", "domains": [DOMAIN], "state_dir": agent_state()},
            "transport": {"url": url, "options": options},
            "directory": {"plugin": "memory", "seed_users": users},
            "signing": {"public_keys": {"bench": public_key_text(signer.public_key)}},
            "dispatcher": {"max_in_flight": max(in_flight, 1)},
        }
    )
    agent = Agent(settings)
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    await agent.started.wait()
    try:
        async with create_requester(url, options=options) as requester:
            client = ScimClient(requester, signer, DOMAIN, timeout=60)

            async def call(i: int) -> None:
                response = await client.call("GET", "/Users", {"filter": f'userName eq "user{i % users + 1:05d}"'})
                if response.status != 200:
                    raise RuntimeError(f"agent answered {response.status}: {response.body}")

            await measure(call, min(50, n), in_flight)
            result = await measure(call, n, in_flight)
            stop.set()
            await runner
            await cleanup(url, options, requester)
            return result
    finally:
        stop.set()
        if not runner.done():
            await runner


def row(name: str, result: Result, raw: Result | None = None) -> None:
    rate, p50, p99, cpu = result
    ratio = f"{rate / raw[0]:5.2f}" if raw else "    -"
    print(
        f"{name:42s} {rate:9.0f} msg/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   CPU {cpu:6.0f} us/msg   ratio {ratio}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/cloudprov-test")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--sb-n", type=int, default=1000)
    parser.add_argument("--skip-sb", action="store_true")
    parser.add_argument("--skip-amqp", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only

    print(f"== RabbitMQ ({args.n} requests per row)")
    for in_flight in () if args.skip_amqp else (1, 100):
        raw = await raw_amqp(args.amqp_url, args.n, in_flight)
        row(f"raw aio-pika, {in_flight} in flight", raw)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        options: dict[str, object] = {
            "request_queue": prefix + ".requests.{domain}",
            "reply_prefix": prefix + ".replies.",
            "prefetch": 100,
        }
        row(
            f"AmqpRequester+AmqpTransport, {in_flight} in flight",
            await ours(args.amqp_url, options, args.n, in_flight),
            raw,
        )
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        options = {
            "request_queue": prefix + ".requests.{domain}",
            "reply_prefix": prefix + ".replies.",
            "prefetch": 100,
        }
        row(
            f"ScimClient+agent (memory), {in_flight} in flight",
            await agent_over(args.amqp_url, options, args.n, in_flight),
            raw,
        )

    if args.skip_sb:
        return
    from tests.servicebus_peer import PeerProcess

    print(f"== Service Bus SDK against the test peer ({args.sb_n} requests per row; no target)")
    with PeerProcess(lock_seconds=60) as peer:
        for in_flight in (1, 100):
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            options = {
                "request_queue": prefix + ".requests.{domain}",
                "reply_prefix": prefix + ".replies.",
                "prefetch": 100,
            }
            n = args.sb_n if in_flight > 1 else max(100, args.sb_n // 5)
            row(f"ServiceBusRequester+Transport, {in_flight} in flight", await ours(peer.url, options, n, in_flight))
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            options = {
                "request_queue": prefix + ".requests.{domain}",
                "reply_prefix": prefix + ".replies.",
                "prefetch": 100,
            }
            row(f"ScimClient+agent (memory), {in_flight} in flight", await agent_over(peer.url, options, n, in_flight))


if __name__ == "__main__":
    asyncio.run(main())
