"""The Transport behaviour suite: the cases every transport must pass, written once.

What it is
    ``TransportSuite`` is an abstract test class. A subclass names the transport under test and
    inherits every case: request/reply, 100 in flight correlated, ``retry_later`` redelivery,
    dead-lettering, redelivery of an unsettled delivery to a new consumer, graceful drain, malformed
    payloads, oversized replies, double settlement, requester timeouts. ``Responder`` stands in for
    the agent: it consumes deliveries and answers each with a response envelope echoing its request.

How to subclass (``tests/unit/test_transport_local.py`` is the smallest example)
    ::

        class TestAmqpTransport(TransportSuite):
            supports_redelivery = True            # capabilities: see the class attributes below

            @pytest.fixture(autouse=True)
            def _backend(self, ...) -> Iterator[None]:
                # reach the server or call tests.conftest.server_missing(...); pick unique queue names
                ...

            def new_transport(self) -> Transport:
                return create_transport(self.url, domains=self.domains)     # fresh and unconnected

            def new_requester(self, transport: Transport) -> Requester:
                return create_requester(self.url)                           # unconnected

            async def dead_lettered(self, domain: str) -> list[bytes] | None:   # optional
                return [...]   # payloads parked in the domain's dead-letter queue

    Each call of ``new_transport`` must give a new consumer of ``self.domains`` on the same backend
    (the redelivery case closes one and opens another). The suite connects and closes everything it
    is given. A case that does not apply to a transport is skipped through a capability with its
    reason; a missing server is not a capability (use ``server_missing``).

Guarantees
    No case measures wall-clock time; waits are bounded only to fail rather than hang.
"""

from __future__ import annotations

import abc
import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Self

import pytest

from protocol.envelope import EnvelopeError, Request, Response, ScimOperation, decode_request, decode_response
from transports.base import (
    AlreadySettledError,
    Delivery,
    MessageTooLargeError,
    Requester,
    RequestTimeoutError,
    Transport,
    TransportClosedError,
)

Handler = Callable[["Responder", Delivery], Awaitable[None]]
GUARD = 20.0  # seconds: only so that a broken transport fails a case instead of hanging it


def make_envelope(domain: str, path: str, body: Any = None, method: str = "POST") -> tuple[str, bytes]:
    """A fresh request id and the (unsigned) request envelope for one SCIM call to ``domain``."""
    request_id = uuid.uuid4().hex
    operation = ScimOperation(method, path, {}, body)
    return request_id, Request(request_id, domain, operation, time.time() + 600).encode()


async def answer(delivery: Delivery, *, status: int = 200, body: Any = None) -> None:
    """Reply to ``delivery`` with an echo of its request (or ``body``), then ack it."""
    try:
        request = decode_request(delivery.payload)
    except EnvelopeError as exc:
        await delivery.reply(Response("", 400, {"detail": f"undecodable: {exc}"}).encode())
        await delivery.dead_letter(str(exc))
        return
    if body is None:
        body = {
            "path": request.operation.path,
            "body": request.operation.body,
            "delivery_count": delivery.delivery_count,
            "redelivered": delivery.redelivered,
        }
    await delivery.reply(Response(request.id, status, body, agent_id="suite").encode())
    await delivery.ack()


async def echo(responder: Responder, delivery: Delivery) -> None:
    await answer(delivery)
    responder.replied += 1


async def hold(responder: Responder, delivery: Delivery) -> None:
    """Take the delivery and do nothing with it (the test settles it, or never does)."""


class Responder:
    """Consumes a transport's deliveries and hands each to ``handler`` (echo by default); no agent needed."""

    def __init__(self, transport: Transport, handler: Handler = echo, *, jitter: float = 0.0) -> None:
        self.transport = transport
        self.handler = handler
        self.jitter = jitter
        self.seen: list[Delivery] = []
        #: Deliveries whose handler has returned (settled, as far as the handler settles them).
        self.handled: list[Delivery] = []
        self.replied = 0
        self.task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._random = random.Random(7)

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        """Cancel the consumer as a killed agent would: deliveries in hand stay unsettled."""
        tasks = [t for t in (self.task, *self._handlers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        async for delivery in self.transport.deliveries():
            self.seen.append(delivery)
            if self.jitter:
                task = asyncio.create_task(self._later(delivery, self._random.uniform(0, self.jitter)))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            else:
                await self.handler(self, delivery)
                self.handled.append(delivery)

    async def _later(self, delivery: Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.handler(self, delivery)
        self.handled.append(delivery)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds (fails the case after ``GUARD`` seconds)."""
        try:
            async with asyncio.timeout(GUARD):
                while not predicate():
                    if self.task is not None and self.task.done():
                        self.task.result()  # surface a crashed consumer
                    await asyncio.sleep(0.005)
        except TimeoutError:
            pytest.fail(f"gave up waiting: {what}")

    def seen_paths(self) -> list[str]:
        return [decode_request(d.payload).operation.path for d in self.seen]


class TransportSuite(abc.ABC):
    """Behaviour every ``Transport`` / ``Requester`` pair must show; subclass it once per transport."""

    #: The domains the transport under test consumes; requests go to the first.
    domains: ClassVar[tuple[str, ...]] = ("suite.example.test",)
    #: Requester timeout for cases that expect an answer (a guard, not a measurement).
    request_timeout: ClassVar[float] = GUARD
    #: ``retry_later`` and an unsettled delivery at close come back (queues do; HTTP does not).
    supports_redelivery: ClassVar[bool] = True
    #: The requester can send arbitrary bytes and the consumer sees them as they are.
    carries_raw_payloads: ClassVar[bool] = True

    # ---- what a subclass provides -------------------------------------------------------------

    @abc.abstractmethod
    def new_transport(self) -> Transport:
        """A fresh, unconnected consumer of ``self.domains`` on the backend under test."""

    @abc.abstractmethod
    def new_requester(self, transport: Transport) -> Requester:
        """An unconnected requester that reaches ``transport`` (and any other consumer of its domains)."""

    async def dead_lettered(self, domain: str) -> list[bytes] | None:
        """Payloads parked in ``domain``'s dead-letter queue, or None if the backend cannot tell."""
        return None

    # ---- fixtures and helpers -----------------------------------------------------------------

    @pytest.fixture
    async def transport(self) -> AsyncIterator[Transport]:
        async with self.new_transport() as transport:
            yield transport

    @pytest.fixture
    async def requester(self, transport: Transport) -> AsyncIterator[Requester]:
        async with self.new_requester(transport) as requester:
            yield requester

    @property
    def domain(self) -> str:
        return self.domains[0]

    def envelope(self, path: str, body: Any = None) -> tuple[str, bytes]:
        return make_envelope(self.domain, path, body)

    async def call(
        self, requester: Requester, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Response:
        request_id, payload = self.envelope(path, body)
        raw = await requester.request(self.domain, request_id, payload, timeout=timeout or self.request_timeout)
        response = decode_response(raw)
        assert response.request_id == request_id, "a response must name the request it answers"
        return response

    def require_redelivery(self) -> None:
        if not self.supports_redelivery:
            pytest.skip(f"{type(self).__name__}: the transport does not redeliver (capability)")

    # ---- the cases ----------------------------------------------------------------------------

    async def test_request_reply(self, transport: Transport, requester: Requester) -> None:
        """A request reaches the consumer and its reply comes back to the requester."""
        async with Responder(transport) as responder:
            response = await self.call(requester, "/Users", {"userName": "ada"})
        assert response.status == 200
        assert response.body["path"] == "/Users"
        assert response.body["body"] == {"userName": "ada"}
        assert responder.replied == 1

    async def test_many_in_flight_are_correlated(self, transport: Transport, requester: Requester) -> None:
        """100 requests in flight, answered out of order, each get their own answer."""
        async with Responder(transport, jitter=0.01) as responder:
            responses = await asyncio.gather(*(self.call(requester, f"/Users/{i}", {"n": i}) for i in range(100)))
        assert [r.body["path"] for r in responses] == [f"/Users/{i}" for i in range(100)]
        assert [r.body["body"] for r in responses] == [{"n": i} for i in range(100)]
        assert responder.replied == 100

    async def test_requester_times_out_without_consumer(self, transport: Transport, requester: Requester) -> None:
        """With nobody consuming, the requester raises ``RequestTimeoutError`` instead of waiting forever."""
        with pytest.raises(RequestTimeoutError):
            await self.call(requester, "/Users", timeout=0.2)

    async def test_retry_later_is_redelivered(self, transport: Transport, requester: Requester) -> None:
        """A delivery given back with ``retry_later`` comes again with delivery_count 2 and is answered."""
        self.require_redelivery()

        async def retry_first(responder: Responder, delivery: Delivery) -> None:
            if delivery.delivery_count == 1:
                await delivery.retry_later("not now")
            else:
                await echo(responder, delivery)

        async with Responder(transport, retry_first) as responder:
            response = await self.call(requester, "/Users/again")
        assert response.body["delivery_count"] == 2
        assert [d.delivery_count for d in responder.seen] == [1, 2]

    async def test_dead_letter_is_not_redelivered(self, transport: Transport, requester: Requester) -> None:
        """A dead-lettered delivery never comes back, and the requests after it keep flowing."""

        async def poison_dies(responder: Responder, delivery: Delivery) -> None:
            if decode_request(delivery.payload).operation.path == "/poison":
                await delivery.dead_letter("poison")
            else:
                await echo(responder, delivery)

        async with Responder(transport, poison_dies) as responder:
            poison_id, poison = self.envelope("/poison")
            poisoned = asyncio.create_task(
                requester.request(self.domain, poison_id, poison, timeout=self.request_timeout)
            )
            await responder.until(lambda: any(d.settlement for d in responder.seen), "the poison to be dead-lettered")
            responses = await asyncio.gather(*(self.call(requester, f"/Users/{i}") for i in range(10)))
        assert [r.status for r in responses] == [200] * 10
        assert responder.seen_paths().count("/poison") == 1
        if poisoned.done():  # HTTP answers a dead-letter itself; queues leave the requester waiting
            answered = decode_response(poisoned.result())
            assert answered.status >= 400
        else:
            poisoned.cancel()
        parked = await self.dead_lettered(self.domain)
        if parked is not None:
            assert parked.count(poison) == 1

    async def test_unsettled_delivery_goes_to_next_consumer(self, transport: Transport, requester: Requester) -> None:
        """A delivery in hand when its consumer is cancelled and closed is redelivered and answered once."""
        self.require_redelivery()
        request_id, payload = self.envelope("/Users/orphan")
        pending = asyncio.create_task(requester.request(self.domain, request_id, payload, timeout=self.request_timeout))
        killed = Responder(transport, hold)
        async with killed:
            await killed.until(lambda: bool(killed.seen), "the first consumer to take the request")
        await transport.close()
        orphan = killed.seen[0]
        with pytest.raises(TransportClosedError):
            await orphan.reply(Response(request_id, 200, {"from": "the dead"}).encode())

        async with self.new_transport() as successor, Responder(successor) as responder:
            response = decode_response(await pending)
        assert response.request_id == request_id
        assert response.body["redelivered"] is True
        assert responder.replied == 1
        assert orphan.payload == responder.seen[0].payload

    async def test_graceful_drain(self, transport: Transport, requester: Requester) -> None:
        """After ``stop_consuming`` the delivery stream ends, yet replies to deliveries in hand still arrive."""
        async with Responder(transport, hold) as responder:
            pending = [asyncio.create_task(self.call(requester, f"/Groups/{i}")) for i in range(3)]
            await responder.until(lambda: len(responder.seen) == 3, "three deliveries in hand")
            await transport.stop_consuming()
            assert responder.task is not None
            async with asyncio.timeout(GUARD):
                await responder.task  # the async iterator ended on its own
            for delivery in responder.seen:
                await answer(delivery)
            responses = await asyncio.gather(*pending)
        assert sorted(r.body["path"] for r in responses) == [f"/Groups/{i}" for i in range(3)]

    async def test_malformed_payload_reaches_consumer(self, transport: Transport, requester: Requester) -> None:
        """Bytes that are not an envelope reach the consumer unchanged and do not break the transport."""
        if not self.carries_raw_payloads:
            pytest.skip(f"{type(self).__name__}: the requester only sends valid envelopes (capability)")
        garbage = b"\x00\xff{not an envelope"
        async with Responder(transport) as responder:
            raw = await requester.request(self.domain, "garbage-1", garbage, timeout=self.request_timeout)
            after = await self.call(requester, "/Users/after")
        assert responder.seen[0].payload == garbage
        assert decode_response(raw).status == 400
        assert after.status == 200

    async def test_oversized_reply_is_refused_or_split(self, transport: Transport, requester: Requester) -> None:
        """A reply over the transport's size limit raises ``MessageTooLargeError`` or arrives whole, split."""
        limit = transport.max_message_size
        if limit is None:
            pytest.skip(f"{type(self).__name__}: the transport has no message size limit (capability)")
        big = "x" * (limit + 1024)
        refused: list[MessageTooLargeError] = []

        async def reply_big(responder: Responder, delivery: Delivery) -> None:
            try:
                await answer(delivery, body={"blob": big})
            except MessageTooLargeError as exc:
                refused.append(exc)
                await answer(delivery, status=413, body={"detail": "reply too large"})

        async with Responder(transport, reply_big):
            response = await self.call(requester, "/Users/big")
        if refused:
            assert response.status == 413
        else:
            assert response.body == {"blob": big}

    async def test_settling_twice_is_refused(self, transport: Transport, requester: Requester) -> None:
        """A delivery settles exactly once; a second settlement raises ``AlreadySettledError``."""
        second: list[BaseException] = []

        async def double_ack(responder: Responder, delivery: Delivery) -> None:
            await echo(responder, delivery)
            try:
                await delivery.ack()
            except AlreadySettledError as exc:
                second.append(exc)

        async with Responder(transport, double_ack):
            await self.call(requester, "/Users")
        assert len(second) == 1

    async def test_close_ends_deliveries_and_is_idempotent(self, transport: Transport) -> None:
        """Closing the transport ends a running delivery stream, and closing again is harmless."""
        async with Responder(transport) as responder:
            await asyncio.sleep(0)
            await transport.close()
            assert responder.task is not None
            async with asyncio.timeout(GUARD):
                await responder.task
            await transport.close()
        assert not transport.connected
