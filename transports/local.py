"""The ``local`` transport: an in-process broker for tests, demos and single-process deployments.

What it is
    ``LocalBroker`` keeps one FIFO request queue per domain, a dead-letter list per queue and the
    reply inboxes of its requesters; brokers live in a module-level registry, found by name.
    ``LocalTransport`` consumes the queues of its domains (several transports on one domain compete
    for its messages); ``LocalRequester`` sends requests and awaits responses by request id, many in
    flight.

Connection URL / options
    ``local://demo`` uses the broker named "demo", ``local://`` the broker "default". Settings, from
    the query string or the options mapping: ``max_message_size`` (bytes; none by default: set it
    to exercise the oversized path), ``retry_delay`` (seconds before a ``retry_later`` message is
    queued again; 0 by default). Both sides accept the same URL.

Guarantees
    At least once: a delivery not settled when its transport closes goes back to the front of its
    queue and is handed out again with ``delivery_count + 1`` (this is how a killed agent is
    simulated); ``retry_later`` queues it again at the back; ``dead_letter`` parks it in
    ``broker.dead_letters(domain)`` and it is never handed out again. A request leaves the queue
    unseen once its requester stopped waiting. Replies reach the requester that sent the request,
    routed by request id; late or duplicate replies are dropped and counted. Payloads are passed by
    reference and no task is started per message. A consumer that takes deliveries as they arrive
    (``hand_over``: the dispatcher) is offered each new message first, in the callback that publishes
    it, unless older ones wait in the queue; several such consumers are offered messages in turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from uuid import uuid4

from mypy_extensions import mypyc_attr

from protocol import deadlines
from transports.base import (
    Delivery,
    MessageTooLargeError,
    PostingRequester,
    RequestTimeoutError,
    Settlement,
    Transport,
    TransportClosedError,
    TransportError,
)
from transports.local_settings import LocalSettings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered request: its bytes, the reason given, and how often it had been handed out."""

    payload: bytes
    reason: str
    delivery_count: int


@dataclass(slots=True, eq=False)
class _Message:
    payload: bytes
    domain: str
    reply_to: str
    correlation_id: str
    expires_at: float | None = None
    delivery_count: int = 0


class _Queue:
    __slots__ = ("dead", "messages", "takers", "waiters")

    def __init__(self) -> None:
        self.messages: deque[_Message] = deque()
        self.waiters: deque[asyncio.Future[_Message | None]] = deque()
        self.takers: deque[Callable[[_Message], bool]] = deque()  # consumers' ``hand_over``, taken in turn
        self.dead: list[DeadLetter] = []


class LocalBroker:
    """Named in-process broker: request queues by domain, dead letters, and reply inboxes."""

    _registry: ClassVar[dict[str, LocalBroker]] = {}

    def __init__(self, name: str) -> None:
        self.name = name
        self._queues: dict[str, _Queue] = {}
        self._inboxes: dict[str, dict[str, asyncio.Future[bytes]]] = {}
        #: Replies that found nobody waiting (late, duplicate, or for a closed requester).
        self.dropped_replies = 0
        #: Requests removed from a queue because their requester had stopped waiting.
        self.expired = 0

    @classmethod
    def named(cls, name: str = "default") -> LocalBroker:
        """The broker called ``name``, created on first use."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls(name)
        return broker

    @classmethod
    def discard(cls, name: str) -> None:
        """Forget the broker called ``name`` (its queues go with it); tests use this to start clean."""
        cls._registry.pop(name, None)

    def queue(self, domain: str) -> _Queue:
        queue = self._queues.get(domain)
        if queue is None:
            queue = self._queues[domain] = _Queue()
        return queue

    def dead_letters(self, domain: str) -> list[DeadLetter]:
        """The messages dead-lettered on ``domain``'s queue, oldest first."""
        return list(self.queue(domain).dead)

    def depth(self, domain: str) -> int:
        """How many messages wait in ``domain``'s queue (not counting those handed out)."""
        return len(self.queue(domain).messages)

    def publish(self, message: _Message, *, front: bool = False) -> None:
        """Hand ``message`` to a waiting consumer, or queue it (at the front for returned messages)."""
        queue = self.queue(message.domain)
        if queue.takers and not front and not queue.messages and _hand(queue.takers, message):
            return  # taken as it arrived; never ahead of messages already waiting
        while queue.waiters:
            waiter = queue.waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        if front:
            queue.messages.appendleft(message)
        else:
            queue.messages.append(message)

    def open_inbox(self, name: str) -> dict[str, asyncio.Future[bytes]]:
        if name in self._inboxes:
            raise TransportError(f"reply inbox {name!r} is already open on broker {self.name!r}")
        inbox: dict[str, asyncio.Future[bytes]] = {}
        self._inboxes[name] = inbox
        return inbox

    def close_inbox(self, name: str) -> None:
        self._inboxes.pop(name, None)

    def route_reply(self, reply_to: str, correlation_id: str, payload: bytes) -> None:
        inbox = self._inboxes.get(reply_to)
        waiter = inbox.get(correlation_id) if inbox is not None else None
        if waiter is None or waiter.done():
            self.dropped_replies += 1
            return
        waiter.set_result(payload)


def _hand(takers: deque[Callable[[_Message], bool]], message: _Message) -> bool:
    """Offer ``message`` to each consumer's taker in turn (the next message starts with the next one)."""
    for _ in range(len(takers)):
        take = takers[0]
        takers.rotate(-1)
        if take(message):
            return True
    return False


class LocalDelivery(Delivery):
    """A request handed out by a ``LocalTransport``."""

    def __init__(self, transport: LocalTransport, message: _Message) -> None:
        self.payload = message.payload
        self.delivery_count = message.delivery_count
        self._transport = transport
        self._message = message

    async def reply(self, payload: bytes) -> None:
        self._transport.send_reply(self._message, payload, self.signed_reply_to)

    def reply_and_ack_now(self, payload: bytes) -> bool:
        # how every delivery ends: no coroutine for the reply, its ack and what awaits them
        transport = self._transport
        if self.settlement is not None or transport.closed:
            return False
        transport.send_reply(self._message, payload, self.signed_reply_to)
        self.settlement = Settlement.ACK
        transport.settled(self, self._message, Settlement.ACK, "")
        return True

    async def settle(self, outcome: Settlement, reason: str = "") -> None:
        if self.settlement is None and self._transport.closed:
            raise TransportClosedError("the transport that handed out this delivery is closed; it was returned")
        await super().settle(outcome, reason)

    async def ack(self) -> None:
        # every delivery ends here: settled in one step instead of through settle, its base and _settle
        if self.settlement is not None or self._transport.closed:
            await self.settle(Settlement.ACK)  # raises the error that applies
            return
        self.settlement = Settlement.ACK
        self._transport.settled(self, self._message, Settlement.ACK, "")

    async def _settle(self, outcome: Settlement, reason: str) -> None:
        self._transport.settled(self, self._message, outcome, reason)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, and subclassed by code that is not
class LocalTransport(Transport):
    """Consume the request queues of ``domains`` on a ``LocalBroker``."""

    def __init__(self, domains: Sequence[str], settings: LocalSettings | None = None) -> None:
        if isinstance(domains, str) or not domains:
            raise ValueError("domains must be a non-empty sequence of domain names")
        self.domains = tuple(domains)
        self.settings = settings or LocalSettings()
        self.max_message_size = self.settings.max_message_size
        self._broker: LocalBroker | None = None
        self._closed = False
        self._stopping = False
        self._unsettled: dict[LocalDelivery, None] = {}
        self._waiters: set[asyncio.Future[_Message | None]] = set()
        self._taker: Callable[[_Message], bool] | None = None  # in its domains' queues while handed over

    @classmethod
    def from_url(cls, url: str, *, domains: Sequence[str], options: Mapping[str, Any] | None = None) -> Self:
        return cls(domains, LocalSettings.from_url(url, options))

    @property
    def broker(self) -> LocalBroker:
        if self._broker is None:
            raise TransportError("LocalTransport is not connected: use 'async with' or call connect() first")
        return self._broker

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self._broker is not None and not self._closed and not self._stopping

    async def connect(self) -> None:
        if self._closed:
            raise TransportClosedError("LocalTransport cannot be reconnected after close(); make a new one")
        self._broker = LocalBroker.named(self.settings.broker)

    async def stop_consuming(self) -> None:
        self._stopping = True
        self._withdraw()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop_consuming()
        self._closed = True
        if self._broker is not None:
            # Back to the front, oldest first, as a broker does when a consumer's channel dies.
            for delivery in reversed(self._unsettled):
                self._broker.publish(delivery._message, front=True)
        self._unsettled.clear()

    def deliveries(self) -> AsyncIterator[Delivery]:
        return _Deliveries(self)

    def hand_over(self, take: Callable[[Delivery], bool]) -> bool:
        """Deliveries go to ``take`` as the requester publishes them (in its batch's signing callback),
        while no older message waits in the queue; one ``take`` refuses waits for ``deliveries()``. A
        later call replaces the earlier ``take``; ``stop_consuming`` and ``close`` withdraw it."""
        if self._stopping or self._closed:
            return False
        self._withdraw()

        def taker(message: _Message) -> bool:
            return self._offer(message, take)

        broker = self.broker
        for domain in self.domains:
            broker.queue(domain).takers.append(taker)
        self._taker = taker
        return True

    def _offer(self, message: _Message, take: Callable[[Delivery], bool]) -> bool:
        delivery = self._hand_out(message)
        if delivery is None or take(delivery):
            return True  # taken, or expired and dropped
        message.delivery_count -= 1  # not handed out after all
        del self._unsettled[delivery]
        return False

    def _hand_out(self, message: _Message) -> LocalDelivery | None:
        """``message`` as a delivery counted and tracked until settled; None (counted, dropped unseen) once
        its requester stopped waiting."""
        if message.expires_at is not None and message.expires_at < time.monotonic():
            self.broker.expired += 1
            return None
        message.delivery_count += 1
        delivery = LocalDelivery(self, message)
        self._unsettled[delivery] = None
        return delivery

    def _withdraw(self) -> None:
        taker, self._taker = self._taker, None
        if taker is not None and self._broker is not None:
            for domain in self.domains:
                takers = self._broker.queue(domain).takers
                if taker in takers:
                    takers.remove(taker)

    def _take(self, queues: list[_Queue], turn: int) -> _Message | None:
        count = len(queues)
        for offset in range(count):
            queue = queues[(turn + offset) % count]
            if queue.messages:
                return queue.messages.popleft()
        return None

    async def _wait(self, queues: Iterable[_Queue]) -> _Message | None:
        waiter: asyncio.Future[_Message | None] = asyncio.get_running_loop().create_future()
        for queue in queues:
            queue.waiters.append(waiter)
        self._waiters.add(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a message was handed to us but before we woke: give it back.
            if waiter.done() and not waiter.cancelled() and (message := waiter.result()) is not None:
                self.broker.publish(message, front=True)
            raise
        finally:
            self._waiters.discard(waiter)
            for queue in queues:
                if waiter in queue.waiters:
                    queue.waiters.remove(waiter)

    def send_reply(self, message: _Message, payload: bytes, signed_reply_to: str | None = None) -> None:
        if self._closed:
            raise TransportClosedError("cannot reply: the transport is closed and the request was returned")
        limit = self.max_message_size
        if limit is not None and len(payload) > limit:
            raise MessageTooLargeError(f"reply of {len(payload)} bytes exceeds max_message_size {limit}")
        self.broker.route_reply(signed_reply_to or message.reply_to, message.correlation_id, payload)
        # (the correlation is the message's own: in one process, the requester that posted it made both)

    def settled(self, delivery: LocalDelivery, message: _Message, outcome: Settlement, reason: str) -> None:
        self._unsettled.pop(delivery, None)
        broker = self.broker
        if outcome is Settlement.RETRY:
            delay = self.settings.retry_delay
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, broker.publish, message)
            else:
                broker.publish(message)
        elif outcome is Settlement.DEAD_LETTER:
            broker.queue(message.domain).dead.append(DeadLetter(message.payload, reason, message.delivery_count))


class _Deliveries(AsyncIterator[Delivery]):
    """``LocalTransport.deliveries``: its domains' queues taken in turn, waiting when all are empty, until
    the transport stops consuming. Written out rather than as an async generator, which mypyc does not
    compile (this module is compiled: pyproject's ``[tool.cloudprov] compiled``)."""

    __slots__ = ("_broker", "_ended", "_queues", "_transport", "_turn")

    def __init__(self, transport: LocalTransport) -> None:
        self._transport = transport
        self._broker: LocalBroker | None = None  # and its queues: looked up at the first delivery
        self._queues: list[_Queue] = []
        self._turn = 0
        self._ended = False

    def __aiter__(self) -> _Deliveries:
        return self

    async def __anext__(self) -> Delivery:
        transport = self._transport
        broker = self._broker
        if broker is None:
            broker = self._broker = transport.broker
            self._queues = [broker.queue(domain) for domain in transport.domains]
        queues = self._queues
        while not self._ended and not transport._stopping:
            message = transport._take(queues, self._turn)
            self._turn += 1
            if message is None:
                message = await transport._wait(queues)
                if message is None:
                    break
                if transport._stopping:
                    broker.publish(message, front=True)
                    break
            delivery = transport._hand_out(message)
            if delivery is not None:
                return delivery
        self._ended = True
        raise StopAsyncIteration


class LocalRequester(PostingRequester):
    """Send requests through a ``LocalBroker`` and await their replies by request id."""

    def __init__(self, settings: LocalSettings | None = None) -> None:
        self.settings = settings or LocalSettings()
        self.max_message_size = self.settings.max_message_size
        self.inbox = self.reply_address = f"reply.{uuid4().hex}"
        self._broker: LocalBroker | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        return cls(LocalSettings.from_url(url, options))

    @property
    def broker(self) -> LocalBroker:
        if self._broker is None:
            raise TransportError("LocalRequester is not connected: use 'async with' or call connect() first")
        return self._broker

    async def connect(self) -> None:
        if self._broker is not None:
            return
        broker = LocalBroker.named(self.settings.broker)
        self._pending = broker.open_inbox(self.inbox)
        self._broker = broker

    async def close(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        broker.close_inbox(self.inbox)
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(TransportClosedError("the requester was closed while waiting"))
        self._pending = {}

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        waiter, timer = self.expect(request_id, timeout)
        try:
            self.post(domain, request_id, timeout, payload)
        except Exception as error:  # too large, not connected: raised by ``reply``, which forgets the request
            waiter.set_exception(error)
        return await self.reply(request_id, waiter, timer, timeout)

    # ``request``'s three steps (``PostingRequester``): ``ScimClient.call`` takes them itself, sending as its
    # batch is signed; a test holds the two ways together.

    def expect(self, request_id: str, timeout: float) -> tuple[asyncio.Future[bytes], int]:
        if request_id in self._pending:
            raise TransportError(f"request {request_id!r} is already in flight on this requester")
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        return waiter, deadlines.running().start(waiter, timeout)

    def post(self, domain: str, request_id: str, timeout: float, payload: bytes) -> None:
        limit = self.max_message_size
        if limit is not None and len(payload) > limit:
            raise MessageTooLargeError(f"request of {len(payload)} bytes exceeds max_message_size {limit}")
        self.broker.publish(_Message(payload, domain, self.inbox, request_id, time.monotonic() + timeout))

    async def reply(self, request_id: str, waiter: asyncio.Future[bytes], timer: int, timeout: float) -> bytes:
        try:
            return await waiter
        except TimeoutError:
            raise RequestTimeoutError(f"no reply to request {request_id!r} within {timeout} s") from None
        finally:
            deadlines.running().cancel(waiter, timer)
            self._pending.pop(request_id, None)
