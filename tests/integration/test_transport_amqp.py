"""The amqp transport against the RabbitMQ on 127.0.0.1:5672: the behaviour suite and broker faults."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.exceptions
import pytest
from structlog.testing import capture_logs

from protocol import chunking
from protocol.envelope import Request, ScimOperation, decode_response
from protocol.signing import Signer, Verifier
from service.control.ca import CertificateAuthority
from tests import agent_support
from tests.agent_support import running_agent
from tests.conftest import server_missing
from tests.contract.transport_suite import Responder, TransportSuite, echo, make_envelope
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.transport_support import ConsumerProcess, SettlingRequester, policy_handler
from transports.amqp import AmqpRequester, AmqpSettings, AmqpTransport, wire
from transports.amqp.connection import CoalescingWriter, open_connection
from transports.base import Requester, Transport, TransportBrokenError
from transports.registry import create_requester, create_transport

pytestmark = pytest.mark.rabbitmq

VHOST = os.environ.get("CLOUDPROV_RABBITMQ_VHOST", "cloudprov-test")
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
DOMAIN = "amqp.example.test"
LIMIT = 64 * 1024


def _reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
async def rabbit() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel on the test vhost (skips locally, fails in CI, when RabbitMQ is not there)."""
    if not _reachable():
        server_missing("RabbitMQ on 127.0.0.1:5672")
    try:
        connection = await aio_pika.connect(URL, timeout=5)
    except (aiormq.exceptions.AMQPConnectionError, OSError) as exc:
        server_missing(f"RabbitMQ vhost {VHOST!r} ({exc}; scripts/rabbitmq.sh creates it)")
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def options(rabbit: aio_pika.abc.AbstractChannel) -> AsyncIterator[dict[str, Any]]:
    """Settings with queue names of their own; the queues are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    opts: dict[str, Any] = {
        "request_queue": prefix + ".requests.{domain}",
        "reply_prefix": prefix + ".replies.",
        "max_message_size": LIMIT,
        "reply_queue_expires": 120,
        "backoff_initial": 0.2,
        "backoff_max": 2,
    }
    yield opts
    settings = AmqpSettings(**{k: v for k, v in opts.items() if k in AmqpSettings.__dataclass_fields__})
    for name in (settings.queue_name(DOMAIN), settings.dead_letter_queue(DOMAIN)):
        try:
            await rabbit.queue_delete(name)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            break  # the channel closed: leave the rest (reply queues expire by themselves)


async def dead_letters(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    dlq = await channel.declare_queue(queue, durable=True, passive=True)
    found = []
    while (message := await dlq.get(no_ack=True, fail=False)) is not None:
        found.append(message)
    return found


async def parked(
    channel: aio_pika.abc.AbstractChannel, queue: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """``dead_letters`` read until ``count`` have come: the broker parks a message a moment after the
    settlement that sends it there (at most 15 s)."""
    found: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(15):
        while len(found) < count:
            found += await dead_letters(channel, queue)
            await asyncio.sleep(0.02)
    return found


class TestAmqpTransport(TransportSuite):
    domains = (DOMAIN,)

    @pytest.fixture(autouse=True)
    def _backend(self, options: dict[str, Any], rabbit: aio_pika.abc.AbstractChannel) -> None:
        self.options = options
        self.channel = rabbit
        self.created: list[Transport] = []

    def new_transport(self) -> Transport:
        transport = create_transport(URL, domains=self.domains, options=self.options)
        self.created.append(transport)
        return transport

    def new_requester(self, transport: Transport) -> Requester:
        return SettlingRequester(create_requester(URL, options=self.options), self.created)

    async def dead_lettered(self, domain: str) -> list[bytes] | None:
        queue = AmqpSettings.from_url(URL, self.options).dead_letter_queue(domain)
        return [m.body for m in await dead_letters(self.channel, queue)]


# ---- what only a real broker shows ------------------------------------------------------------


async def test_first_connect_fails_fast() -> None:
    """A refused first connection raises TransportBrokenError at once instead of retrying forever."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = AmqpTransport(f"amqp://guest:guest@127.0.0.1:{port}/", [DOMAIN], AmqpSettings(connect_timeout=2))
    with pytest.raises(TransportBrokenError, match="cannot connect"):
        async with asyncio.timeout(10):
            await transport.connect()


def test_settings_come_from_url_and_options() -> None:
    """Query-string settings are read, and the options mapping wins over them."""
    transport = AmqpTransport.from_url(f"{URL}?prefetch=7&delivery_limit=4", domains=[DOMAIN], options={"prefetch": 9})
    assert (transport.settings.prefetch, transport.settings.delivery_limit) == (9, 4)
    assert transport.settings.queue_name("d") == "cloudprov.requests.d"


async def test_killed_consumer_process_requests_are_answered_once(options: dict[str, Any]) -> None:
    """Requests held by a consumer process killed with SIGKILL are redelivered and answered exactly once."""
    consumer = ConsumerProcess(URL, DOMAIN, options)
    try:
        async with create_requester(URL, options=options) as requester:
            ids_payloads = [make_envelope(DOMAIN, f"/Users/{i}") for i in range(5)]
            pending = [
                asyncio.create_task(requester.request(DOMAIN, rid, payload, timeout=60))
                for rid, payload in ids_payloads
            ]
            await consumer.read_until(5)
            consumer.kill()
            async with (
                create_transport(URL, domains=[DOMAIN], options=options) as successor,
                Responder(successor, echo) as responder,
            ):
                responses = [decode_response(raw) for raw in await asyncio.gather(*pending)]
                await responder.until(lambda: responder.replied == 5, "five replies acknowledged")
        assert sorted(consumer.taken) == sorted(rid for rid, _ in ids_payloads)
        assert [r.request_id for r in responses] == [rid for rid, _ in ids_payloads]
        assert all(r.body["redelivered"] for r in responses)
        assert responder.replied == 5
        assert isinstance(requester, AmqpRequester)
        assert requester.late_replies == 0
    finally:
        consumer.kill()


async def test_poison_is_dead_lettered_after_n_attempts(options: dict[str, Any], rabbit: Any) -> None:
    """A request that fails every time is dead-lettered at its 3rd delivery with the reason; others flow."""
    async with (
        create_transport(URL, domains=[DOMAIN], options=options) as transport,
        create_requester(URL, options=options) as requester,
        Responder(transport, policy_handler(max_deliveries=3)) as responder,
    ):
        poison_id, poison = make_envelope(DOMAIN, "/poison")
        stuck = asyncio.create_task(requester.request(DOMAIN, poison_id, poison, timeout=60))
        others = [make_envelope(DOMAIN, f"/Users/{i}") for i in range(20)]
        answers = await asyncio.gather(*(requester.request(DOMAIN, rid, p, timeout=30) for rid, p in others))
        await responder.until(lambda: any(d.delivery_count == 3 for d in responder.handled), "the third delivery")
        stuck.cancel()
    assert [decode_response(a).status for a in answers] == [200] * 20
    parked_ = await parked(rabbit, AmqpSettings(**_known(options)).dead_letter_queue(DOMAIN), 1)
    assert [m.body for m in parked_] == [poison]
    assert parked_[0].headers["x-cloudprov-dead-letter-reason"] == "failed 3 times"
    assert parked_[0].headers["x-cloudprov-dead-letter-delivery-count"] == 3


async def test_requests_waiting_when_the_agent_connects_come_as_first_deliveries(
    options: dict[str, Any], rabbit: Any
) -> None:
    """Requests queued before an agent of three domains connects reach it as first deliveries: the consumers
    started while the later domains are still being set up must not give them back (each return counts
    against the request's delivery budget; with more domains they were dead-lettered unhandled)."""
    others = [f"b.{DOMAIN}", f"c.{DOMAIN}"]
    settings = AmqpSettings(**_known(options))
    async with create_transport(URL, domains=[DOMAIN], options=options):
        pass  # declares the queue with its arguments
    queued = [make_envelope(DOMAIN, f"/Users/{i}") for i in range(10)]
    for request_id, payload in queued:
        message = aio_pika.Message(payload, correlation_id=request_id, message_id=request_id, delivery_mode=2)
        await rabbit.default_exchange.publish(message, routing_key=settings.queue_name(DOMAIN))
    counts: list[int] = []
    try:
        async with create_transport(URL, domains=[DOMAIN, *others], options=options) as transport:
            async with asyncio.timeout(15):
                async for delivery in transport.deliveries():
                    counts.append(delivery.delivery_count)
                    await delivery.ack()
                    if len(counts) == len(queued):
                        break
    finally:
        for domain in others:
            for name in (settings.queue_name(domain), settings.dead_letter_queue(domain)):
                await rabbit.queue_delete(name)
    assert counts == [1] * len(queued)


async def test_a_dead_letter_copy_the_broker_refuses_gives_the_message_back(
    options: dict[str, Any], rabbit: Any
) -> None:
    """When the dead-letter queue refuses the copy (full, reject-publish), the request goes back to its queue
    and comes again, instead of being held unacked (a prefetch slot lost until the connection closes)."""
    settings = AmqpSettings(**_known(options))
    dlq = settings.dead_letter_queue(DOMAIN)
    policy = f"{options['reply_prefix']}full"
    limit = '{"max-length":0,"overflow":"reject-publish"}'
    command = ["rabbitmqctl", "-q", "set_policy", "-p", VHOST, policy, f"^{dlq}$", limit, "--apply-to", "queues"]
    await asyncio.to_thread(subprocess.run, command, check=True, timeout=60, capture_output=True)
    try:
        async with (
            create_transport(URL, domains=[DOMAIN], options=options) as transport,
            create_requester(URL, options=options) as requester,
        ):
            async with await aio_pika.connect(URL, timeout=5) as connection:
                confirming = await connection.channel(publisher_confirms=True)
                await confirming.default_exchange.publish(aio_pika.Message(b"older"), routing_key=dlq)
            await asyncio.sleep(1)  # a quorum queue enforces its length a moment after a publish goes past it
            request_id, payload = make_envelope(DOMAIN, "/poison")
            asking = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
            counts: list[int] = []
            async with asyncio.timeout(15):
                async for delivery in transport.deliveries():
                    counts.append(delivery.delivery_count)
                    if len(counts) == 1:
                        await delivery.dead_letter("poison")  # refused by the full queue: given back
                    else:
                        await delivery.ack()
                        break
            asking.cancel()
    finally:
        clear = ["rabbitmqctl", "-q", "clear_policy", "-p", VHOST, policy]
        await asyncio.to_thread(subprocess.run, clear, check=True, timeout=60, capture_output=True)
    assert counts == [1, 2]
    assert [m.body for m in await dead_letters(rabbit, dlq)] == [b"older"]


async def test_broker_dead_letters_when_no_consumer_settles(options: dict[str, Any], rabbit: Any) -> None:
    """The queue's delivery limit parks a message that every consumer gives back, even without our reason."""
    options = {**options, "delivery_limit": 2}
    async with (
        create_transport(URL, domains=[DOMAIN], options=options) as transport,
        create_requester(URL, options=options) as requester,
    ):

        async def always_retry(responder: Responder, delivery: Any) -> None:
            await delivery.retry_later("crashing handler")

        rid, payload = make_envelope(DOMAIN, "/crashes")
        stuck = asyncio.create_task(requester.request(DOMAIN, rid, payload, timeout=60))
        async with Responder(transport, always_retry) as responder:
            await responder.until(lambda: len(responder.handled) >= 3, "three deliveries given back")
            found = await parked(rabbit, AmqpSettings(**_known(options)).dead_letter_queue(DOMAIN), 1)
        stuck.cancel()
    assert [m.body for m in found] == [payload]
    assert [d.delivery_count for d in responder.seen] == [1, 2, 3]


async def test_oversized_reply_is_split_and_reassembled(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incompressible reply of 4x the limit travels as chunks and arrives whole."""
    blob = os.urandom(4 * LIMIT)

    async def big(responder: Responder, delivery: Any) -> None:
        await delivery.reply(blob)
        await delivery.ack()

    frames: list[int] = []
    encode = chunking.encode

    def spy(*args: Any, **kwargs: Any) -> list[chunking.Frame]:
        out = encode(*args, **kwargs)
        frames.append(len(out))
        return out

    monkeypatch.setattr(chunking, "encode", spy)
    async with (
        create_transport(URL, domains=[DOMAIN], options=options) as transport,
        create_requester(URL, options=options) as requester,
        Responder(transport, big),
    ):
        rid, payload = make_envelope(DOMAIN, "/Users")
        assert await requester.request(DOMAIN, rid, payload, timeout=30) == blob
    assert 5 in frames  # the reply went as 5 chunks (the request as 1 frame)


async def test_malformed_and_unsigned_never_crash_the_consumer(options: dict[str, Any], rabbit: Any) -> None:
    """Garbage, broken compression, bogus headers and unsigned requests are settled; the consumer keeps going."""
    signer = Signer.generate()
    verifier = Verifier({signer.key_id: signer.public_key})
    settings = AmqpSettings(**_known(options))
    async with (
        create_transport(URL, domains=[DOMAIN], options=options) as transport,
        create_requester(URL, options=options) as requester,
        Responder(transport, policy_handler(3, verifier)) as responder,
    ):
        queue = settings.queue_name(DOMAIN)
        for body, headers in [
            (b"\x00\xff not json", {}),
            (b"not zlib at all", {"cp-encoding": "deflate"}),
            (b"{}", {"cp-chunk-group": "g", "cp-chunk-index": "x"}),
            (b"[]", {"x-delivery-count": "many"}),
        ]:
            await rabbit.default_exchange.publish(aio_pika.Message(body, headers=headers), queue)
        unsigned_id, unsigned = make_envelope(DOMAIN, "/Users")
        refused = decode_response(await requester.request(DOMAIN, unsigned_id, unsigned, timeout=30))
        request = signer.sign(Request(uuid.uuid4().hex, DOMAIN, ScimOperation("GET", "/Users"), _deadline()))
        accepted = decode_response(await requester.request(DOMAIN, request.id, request.encode(), timeout=30))
        await responder.until(lambda: all(d.settlement for d in responder.seen), "every delivery settled")
    assert refused.status == 401
    assert accepted.status == 200
    assert len(responder.seen) == 6
    parked = await dead_letters(rabbit, settings.dead_letter_queue(DOMAIN))
    assert len(parked) == 4


async def test_publishes_of_one_loop_turn_leave_in_one_write(rabbit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages published together go to the broker together (what lets requests share a batch signature)."""
    frames_per_write: list[int] = []
    flush = CoalescingWriter.flush

    def counted(writer: CoalescingWriter) -> None:
        if writer._kept:
            frames_per_write.append(len(writer._kept))
        flush(writer)

    monkeypatch.setattr(CoalescingWriter, "flush", counted)
    connection = await open_connection(URL, AmqpSettings(), "cloudprov-test:writes")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"cloudprov-test.writes.{uuid.uuid4().hex[:10]}", exclusive=True)
        frames_per_write.clear()
        props = wire.properties(correlation_id="c")
        await asyncio.gather(*(wire.publish(channel, queue.name, b"{}", props) for _ in range(30)))
        assert 30 in frames_per_write
        assert (await channel.declare_queue(queue.name, passive=True)).declaration_result.message_count == 30


def _broker_pki(directory: Path, name: str) -> tuple[str, str, str]:
    """A CA of its own (the control plane's kind) and a server certificate for 127.0.0.1 it signed:
    the CA, certificate and key files."""
    ca = CertificateAuthority.create(name)
    cert_text, key_bytes = ca.server_certificate(["127.0.0.1"])
    ca_path, cert_path, key_path = (directory / f"{name}-{part}.pem" for part in ("ca", "cert", "key"))
    ca_path.write_text(ca.cert_pem)
    cert_path.write_text(cert_text)
    key_path.write_bytes(key_bytes)
    return str(ca_path), str(cert_path), str(key_path)


class TlsProxy(TcpProxy):
    """Terminates TLS on 127.0.0.1 and forwards the plain stream to RabbitMQ (which has no TLS listener here)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", 5672)
        self._context = context

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]


async def test_amqps_verifies_the_broker_and_carries_requests(
    options: dict[str, Any], rabbit: Any, tmp_path: Path
) -> None:
    """Over amqps:// the broker's certificate is checked against ca_file; a broker the CA did not sign is refused."""
    ca_file, cert, key = _broker_pki(tmp_path, "broker")
    stranger, _, _ = _broker_pki(tmp_path, "stranger")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    proxy = TlsProxy(context)
    await proxy.start()
    try:
        url = f"amqps://guest:guest@127.0.0.1:{proxy.port}/{VHOST}"
        async with (
            create_transport(url, domains=[DOMAIN], options={**options, "ca_file": ca_file}) as transport,
            create_requester(url, options={**options, "ca_file": ca_file}) as requester,
            Responder(transport, echo),
        ):
            rid, payload = make_envelope(DOMAIN, "/Users/tls")
            response = decode_response(await requester.request(DOMAIN, rid, payload, timeout=30))
        assert response.body["path"] == "/Users/tls"
        refused = AmqpTransport(url, [DOMAIN], AmqpSettings(**_known(options), ca_file=stranger, connect_timeout=5))
        with pytest.raises(TransportBrokenError, match="cannot connect"):
            await refused.connect()
        await refused.close()
    finally:
        await proxy.cut()


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to restart the broker")
async def test_broker_restart_mid_stream_loses_nothing(options: dict[str, Any]) -> None:
    """With RabbitMQ stopped and started mid-stream, both sides reconnect and every request is answered."""
    with capture_logs() as logs:
        async with (
            create_transport(URL, domains=[DOMAIN], options=options) as transport,
            create_requester(URL, options=options) as requester,
            Responder(transport, echo, jitter=0.01),
        ):

            async def one(i: int) -> str:
                rid, payload = make_envelope(DOMAIN, f"/Users/{i}")
                return decode_response(await requester.request(DOMAIN, rid, payload, timeout=90)).body["path"]

            restarted = asyncio.Event()

            async def stream() -> list[str]:
                """A request every 20 ms, before, during and after the restart (20 after it)."""
                calls: list[asyncio.Task[str]] = []
                after = 20
                while after:
                    after -= restarted.is_set()
                    calls.append(asyncio.create_task(one(len(calls))))
                    await asyncio.sleep(0.02)
                return list(await asyncio.gather(*calls))

            sending = asyncio.create_task(stream())
            await asyncio.sleep(1.0)
            await asyncio.to_thread(_rabbitmqctl, "stop_app")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(_rabbitmqctl, "start_app")
            restarted.set()
            paths = await sending

            def back() -> bool:  # the agent's and the requester's connections
                return transport.connected and [e["event"] for e in logs].count("reconnected") >= 2

            async with asyncio.timeout(30):
                while not back():  # noqa: ASYNC110 - log lines and a flag: no event to wait on
                    await asyncio.sleep(0.05)
    assert len(paths) > 20
    assert sorted(paths) == sorted(f"/Users/{i}" for i in range(len(paths)))
    assert "connection lost" in [e["event"] for e in logs]


def _rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", command], check=True, timeout=120, capture_output=True)
    if command == "start_app":
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120, capture_output=True)


@pytest.fixture(autouse=True)
def _restart_guard() -> Iterator[None]:
    """Whatever happens in a test, leave the broker running for the next one."""
    yield
    if shutil.which("rabbitmqctl") and not _reachable():
        _rabbitmqctl("start_app")


async def test_the_agent_inflates_a_compressed_request_no_further_than_it_takes(
    options: dict[str, Any], rabbit: Any
) -> None:
    """A deflate bomb (a few KB that inflate to 4 MB) is dead-lettered as too large once it passes the agent's
    own limit (scim.max_body_bytes), not the transport's; a compressed request within it is answered."""
    domain = agent_support.DOMAIN
    settings = AmqpSettings(**_known(options))
    inbox = await rabbit.declare_queue(settings.reply_prefix + "bomb-test", auto_delete=True)
    try:
        async with running_agent(
            transport=lambda _: create_transport(URL, domains=[domain], options=options),
            scim={"max_body_bytes": 4096},
        ) as harness:
            queue = settings.queue_name(domain)
            bomb = zlib.compress(b"{" + b" " * (4 * 1024 * 1024) + b"}", 9)
            assert len(bomb) < LIMIT
            request = harness.signer.sign(
                Request(uuid.uuid4().hex, domain, ScimOperation("GET", "/Users", {"count": "1"}), _deadline())
            )
            fine = request.encode()
            for body in (bomb, zlib.compress(fine)):
                message = aio_pika.Message(
                    body,
                    headers={"cp-encoding": "deflate"},
                    reply_to=inbox.name,
                    correlation_id=request.id,
                )
                await rabbit.default_exchange.publish(message, queue)
            async with asyncio.timeout(15):
                async with inbox.iterator(no_ack=True) as replies:
                    reply = decode_response((await anext(replies)).body)
            letters = await parked(rabbit, settings.dead_letter_queue(domain), 1)
            counters = harness.agent.dispatcher.counters
    finally:
        for name in (settings.queue_name(domain), settings.dead_letter_queue(domain)):
            await rabbit.queue_delete(name)
    assert reply.request_id == request.id
    assert reply.status == 200
    reason = letters[0].headers["x-cloudprov-dead-letter-reason"]
    assert reason == "undecodable message: compressed body inflates beyond 4096 bytes"
    assert counters.dead_lettered == 1
    assert counters.answered == 1


async def test_a_copy_with_another_reply_queue_is_answered_where_the_request_signed(
    options: dict[str, Any], rabbit: Any
) -> None:
    """A signed request copied by someone who can publish to the request queue, with their own reply queue and
    correlation id, reaches the agent first: its answer goes to the reply queue and under the id the request
    signed; the copier's queue gets nothing."""
    domain = agent_support.DOMAIN
    settings = AmqpSettings(**_known(options))
    genuine = await rabbit.declare_queue(settings.reply_prefix + "genuine", auto_delete=True)
    copier = await rabbit.declare_queue(settings.reply_prefix + "copier", auto_delete=True)
    try:
        async with running_agent(transport=lambda _: create_transport(URL, domains=[domain], options=options)) as h:
            operation = ScimOperation("GET", "/Users", {"filter": 'userName eq "user00002"'})
            request = h.signer.sign(Request(uuid.uuid4().hex, domain, operation, _deadline(), reply_to=genuine.name))
            copy = aio_pika.Message(request.encode(), reply_to=copier.name, correlation_id="someone-else")
            with capture_logs() as logs:
                await rabbit.default_exchange.publish(copy, settings.queue_name(domain))
                async with asyncio.timeout(15), genuine.iterator(no_ack=True) as replies:
                    answer = await anext(replies)
    finally:
        for name in (settings.queue_name(domain), settings.dead_letter_queue(domain)):
            await rabbit.queue_delete(name)
    assert answer.correlation_id == request.id
    assert decode_response(answer.body).body["totalResults"] == 1
    assert await copier.get(no_ack=True, fail=False) is None
    differ = [entry for entry in logs if entry["event"].startswith("message properties differ")]
    assert differ[0]["property_reply_to"] == copier.name


def _known(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in AmqpSettings.__dataclass_fields__}


def _deadline() -> float:
    import time

    return time.time() + 300
