"""The sb transport with the unmodified azure-servicebus SDK against the project's AMQP 1.0 test peer."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from structlog.testing import capture_logs

from protocol import chunking
from protocol.envelope import Request, ScimOperation, decode_response
from tests import agent_support
from tests.agent_support import running_agent, wait_until
from tests.contract.transport_suite import Responder, TransportSuite, echo, make_envelope
from tests.integration.transport_support import ConsumerProcess, SettlingRequester, policy_handler
from tests.servicebus_peer import PeerProcess, free_port
from transports.base import MessageTooLargeError, Requester, Transport, TransportBrokenError
from transports.registry import create_requester, create_transport
from transports.servicebus import ServiceBusSettings, ServiceBusTransport
from transports.servicebus.transport import message_body

pytestmark = pytest.mark.servicebus

DOMAIN = "sb.example.test"
LIMIT = 64 * 1024
LOCK_SECONDS = 4.0


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    """One test peer for the module, journalled, so a test can kill and restart it."""
    data = tmp_path_factory.mktemp("sbpeer")
    with PeerProcess(lock_seconds=LOCK_SECONDS, max_message_size=LIMIT, data_dir=data) as running:
        yield running


@pytest.fixture
def options(peer: PeerProcess) -> dict[str, Any]:
    """Settings with queue names of their own on the shared peer."""
    if peer.process is None or peer.process.poll() is not None:
        peer.start()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return {
        "request_queue": prefix + ".requests.{domain}",
        "reply_prefix": prefix + ".replies.",
        "max_message_size": LIMIT,
        "receive_wait": 1,
        "connect_timeout": 10,
        "backoff_initial": 0.2,
        "backoff_max": 2,
    }


async def drain(peer: PeerProcess, queue: str, *, dead_letter: bool = False) -> list[ServiceBusReceivedMessage]:
    """Every message in ``queue`` (or its dead-letter sub-queue), removed."""
    async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
        receiver = client.get_queue_receiver(
            queue,
            receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letter else None,
        )
        async with receiver:
            return list(await receiver.receive_messages(max_message_count=100, max_wait_time=1))


class TestServiceBusTransport(TransportSuite):
    domains = (DOMAIN,)

    @pytest.fixture(autouse=True)
    def _backend(self, peer: PeerProcess, options: dict[str, Any]) -> None:
        self.peer = peer
        self.options = options
        self.created: list[Transport] = []

    def new_transport(self) -> Transport:
        transport = create_transport(self.peer.url, domains=self.domains, options=self.options)
        self.created.append(transport)
        return transport

    def new_requester(self, transport: Transport) -> Requester:
        return SettlingRequester(create_requester(self.peer.url, options=self.options), self.created)

    async def dead_lettered(self, domain: str) -> list[bytes] | None:
        queue = ServiceBusSettings(request_queue=self.options["request_queue"]).queue_name(domain)
        return [message_body(m) for m in await drain(self.peer, queue, dead_letter=True)]


# ---- what only a broker (here: the peer) shows --------------------------------------------------


# The SDK leaves its half-open socket to the garbage collector when its open is cancelled.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_first_connect_to_a_silent_peer_is_bounded() -> None:
    """Against a port that accepts TCP but never speaks AMQP, connect() fails within connect_timeout."""
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = ServiceBusTransport.from_url(
            f"sb://127.0.0.1:{port}/?emulator=true", domains=[DOMAIN], options={"connect_timeout": 2, "retry_total": 0}
        )
        with pytest.raises(TransportBrokenError, match="cannot open"):
            async with asyncio.timeout(15):
                await transport.connect()
    finally:
        gc.collect()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def test_urls_and_connection_strings() -> None:
    """An emulator URL, a key in the query string and a full connection string all configure the client."""
    from transports.servicebus.settings import connection_string

    url = "sb://ns.servicebus.windows.net/?key_name=send&key=s3cret"
    assert connection_string(url, ServiceBusSettings.from_url(url)) == (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=s3cret"
    )
    emulator = "sb://127.0.0.1:5673/?emulator=true"
    assert "UseDevelopmentEmulator=true" in str(connection_string(emulator, ServiceBusSettings.from_url(emulator)))
    full = "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b"
    assert connection_string("sb://ignored", ServiceBusSettings(connection_string=full)) == full
    with pytest.raises(ValueError, match="needs key_name and key"):
        connection_string("sb://ns.servicebus.windows.net", ServiceBusSettings())


async def test_killed_consumer_process_requests_are_answered_once(peer: PeerProcess, options: dict[str, Any]) -> None:
    """Requests locked by a consumer process killed with SIGKILL come back after the lock expires, answered once."""
    consumer = ConsumerProcess(peer.url, DOMAIN, options)
    try:
        async with create_requester(peer.url, options=options) as requester:
            sent = [make_envelope(DOMAIN, f"/Users/{i}") for i in range(4)]
            pending = [asyncio.create_task(requester.request(DOMAIN, rid, p, timeout=60)) for rid, p in sent]
            await consumer.read_until(4)
            consumer.kill()
            async with (
                create_transport(peer.url, domains=[DOMAIN], options=options) as successor,
                Responder(successor, echo) as responder,
            ):
                responses = [decode_response(raw) for raw in await asyncio.gather(*pending)]
                await responder.until(lambda: responder.replied == 4, "four replies completed")
        assert sorted(consumer.taken) == sorted(rid for rid, _ in sent)
        assert [r.request_id for r in responses] == [rid for rid, _ in sent]
        assert all(r.body["delivery_count"] == 2 for r in responses)
        assert responder.replied == 4
        assert getattr(requester, "late_replies", 0) == 0
    finally:
        consumer.kill()


async def test_poison_is_dead_lettered_after_n_attempts(peer: PeerProcess, options: dict[str, Any]) -> None:
    """A request that fails every time is dead-lettered at its 3rd delivery with the reason; others flow."""
    async with (
        create_transport(peer.url, domains=[DOMAIN], options=options) as transport,
        create_requester(peer.url, options=options) as requester,
        Responder(transport, policy_handler(max_deliveries=3)) as responder,
    ):
        poison_id, poison = make_envelope(DOMAIN, "/poison")
        stuck = asyncio.create_task(requester.request(DOMAIN, poison_id, poison, timeout=60))
        others = [make_envelope(DOMAIN, f"/Users/{i}") for i in range(20)]
        answers = await asyncio.gather(*(requester.request(DOMAIN, rid, p, timeout=30) for rid, p in others))
        await responder.until(lambda: any(d.delivery_count == 3 for d in responder.handled), "3rd try")
        stuck.cancel()
        queue = ServiceBusSettings(request_queue=options["request_queue"]).queue_name(DOMAIN)
        parked = await drain(peer, queue, dead_letter=True)
        for _ in range(5):  # the dead-letter disposition may still be on its way
            if parked:
                break
            parked = await drain(peer, queue, dead_letter=True)
    assert [decode_response(a).status for a in answers] == [200] * 20
    assert [message_body(m) for m in parked] == [poison]
    assert parked[0].dead_letter_reason == "failed 3 times"


async def test_long_request_keeps_its_lock(peer: PeerProcess, options: dict[str, Any]) -> None:
    """A request handled for longer than the lock duration is not redelivered: its lock is renewed."""

    async def slow(responder: Responder, delivery: Any) -> None:
        await asyncio.sleep(LOCK_SECONDS * 2)
        await echo(responder, delivery)

    async with (
        create_transport(peer.url, domains=[DOMAIN], options=options) as transport,
        create_requester(peer.url, options=options) as requester,
        Responder(transport, slow) as responder,
    ):
        rid, payload = make_envelope(DOMAIN, "/Users/slow")
        response = decode_response(await requester.request(DOMAIN, rid, payload, timeout=60))
        await responder.until(lambda: responder.replied == 1, "the ack")
    assert response.body["delivery_count"] == 1
    assert len(responder.seen) == 1


async def test_oversized_reply_is_split_and_reassembled(
    peer: PeerProcess, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incompressible reply of 4x the limit travels as chunks the peer accepts and arrives whole."""
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
        create_transport(peer.url, domains=[DOMAIN], options=options) as transport,
        create_requester(peer.url, options=options) as requester,
        Responder(transport, big),
    ):
        rid, payload = make_envelope(DOMAIN, "/Users")
        assert await requester.request(DOMAIN, rid, payload, timeout=30) == blob
    assert 5 in frames  # the reply went as 5 chunks (the request as 1 frame)


async def test_peer_enforces_its_message_size(peer: PeerProcess, options: dict[str, Any]) -> None:
    """A transport that believes in a bigger limit than the peer's gets MessageTooLargeError, not a hang."""
    options = {**options, "max_message_size": 4 * LIMIT}
    refused: list[BaseException] = []

    async def too_big(responder: Responder, delivery: Any) -> None:
        try:
            await delivery.reply(os.urandom(2 * LIMIT))
        except MessageTooLargeError as exc:
            refused.append(exc)
        await delivery.ack()

    async with (
        create_transport(peer.url, domains=[DOMAIN], options=options) as transport,
        create_requester(peer.url, options=options) as requester,
        Responder(transport, too_big) as responder,
    ):
        rid, payload = make_envelope(DOMAIN, "/Users")
        pending = asyncio.create_task(requester.request(DOMAIN, rid, payload, timeout=30))
        await responder.until(lambda: bool(refused), "the reply to be refused")
        pending.cancel()
    assert isinstance(refused[0], MessageTooLargeError)


# The SDK leaves the sockets of a connection that broke under it to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_peer_restart_mid_stream_loses_nothing(peer: PeerProcess, options: dict[str, Any]) -> None:
    """With the peer killed (SIGKILL) and started again mid-stream, both sides reconnect; every request is answered."""
    with capture_logs() as logs:
        async with (
            create_transport(peer.url, domains=[DOMAIN], options=options) as transport,
            create_requester(peer.url, options=options) as requester,
            Responder(transport, echo, jitter=0.01),
        ):

            async def one(i: int) -> str:
                await asyncio.sleep(i * 0.03)
                rid, payload = make_envelope(DOMAIN, f"/Users/{i}")
                return str(decode_response(await requester.request(DOMAIN, rid, payload, timeout=90)).body["path"])

            stream = asyncio.gather(*(one(i) for i in range(60)))
            await asyncio.sleep(0.8)
            peer.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(peer.start)
            paths = await stream
    gc.collect()  # let the SDK's abandoned sockets be reported here, under this test's warning filter
    assert sorted(paths) == sorted(f"/Users/{i}" for i in range(60))
    assert "reconnected" in [e["event"] for e in logs]


def test_peer_runs_as_a_module(tmp_path: Path) -> None:
    """``python -m tests.servicebus_peer --port N`` listens, and SIGKILL then restart keeps its journal."""
    with PeerProcess(port=free_port(), data_dir=tmp_path) as running:
        running.kill()
        running.start()
    assert (tmp_path / "journal.jsonl").exists()


async def test_a_copy_with_another_reply_queue_is_answered_where_the_request_signed(
    peer: PeerProcess, options: dict[str, Any]
) -> None:
    """A signed request copied by someone who can send to the request queue, with their own reply queue and
    correlation id, reaches the agent first: its answer goes to the reply queue and under the id the request
    signed; the copier's queue gets nothing."""
    domain = agent_support.DOMAIN
    queue = ServiceBusSettings(request_queue=options["request_queue"]).queue_name(domain)
    genuine, copier = options["reply_prefix"] + "genuine", options["reply_prefix"] + "copier"
    async with running_agent(transport=lambda _: create_transport(peer.url, domains=[domain], options=options)) as h:
        operation = ScimOperation("GET", "/Users", {"filter": 'userName eq "user00002"'})
        request = h.signer.sign(Request(uuid.uuid4().hex, domain, operation, time.time() + 300, reply_to=genuine))
        async with ServiceBusClient.from_connection_string(peer.connection_string) as client:
            async with client.get_queue_sender(queue) as sender:
                copy = ServiceBusMessage(request.encode(), reply_to=copier, correlation_id="someone-else")
                await sender.send_messages(copy)
            receiver = client.get_queue_receiver(genuine, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE)
            async with receiver:
                answers = await receiver.receive_messages(max_message_count=1, max_wait_time=15)
    assert answers[0].correlation_id == request.id
    assert decode_response(message_body(answers[0])).body["totalResults"] == 1
    assert await drain(peer, copier) == []


async def test_the_agent_inflates_a_compressed_request_no_further_than_it_takes(
    peer: PeerProcess, options: dict[str, Any]
) -> None:
    """A deflate bomb (a few KB that inflate to 4 MB) is dead-lettered as too large once it passes the agent's
    own limit (scim.max_body_bytes), not the transport's."""
    domain = agent_support.DOMAIN
    queue = ServiceBusSettings(request_queue=options["request_queue"]).queue_name(domain)
    bomb = zlib.compress(b"{" + b" " * (4 * 1024 * 1024) + b"}", 9)
    async with running_agent(
        transport=lambda _: create_transport(peer.url, domains=[domain], options=options),
        scim={"max_body_bytes": 4096},
    ) as harness:
        message = ServiceBusMessage(bomb, application_properties={"cp-encoding": "deflate"})
        async with (
            ServiceBusClient.from_connection_string(peer.connection_string) as client,
            client.get_queue_sender(queue) as sender,
        ):
            await sender.send_messages(message)
        await wait_until(lambda: harness.agent.dispatcher.counters.dead_lettered == 1, timeout=15)
        parked = await drain(peer, queue, dead_letter=True)
        for _ in range(5):  # the dead-letter disposition may still be on its way
            if parked:
                break
            parked = await drain(peer, queue, dead_letter=True)
    assert parked[0].dead_letter_reason == "undecodable message: compressed body inflates beyond 4096 bytes"
