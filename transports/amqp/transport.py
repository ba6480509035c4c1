"""The agent's side of the ``amqp`` transport: consume the domains' request queues, reply, settle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import aiormq.exceptions
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from protocol import chunking
from transports.amqp import wire
from transports.amqp.connection import open_connection
from transports.amqp.settings import (
    CONNECTION_ERRORS,
    DEAD_LETTER_COUNT,
    DEAD_LETTER_QUEUE,
    DEAD_LETTER_REASON,
    RECOVERABLE_ERRORS,
    AmqpSettings,
    declare_request_queue,
    first_connect,
    reconnector,
    safe_url,
)
from transports.base import (
    Delivery,
    MessageTooLargeError,
    Settlement,
    Transport,
    TransportBrokenError,
    TransportClosedError,
    signed_route,
)
from transports.reconnect import Reconnector

log = structlog.get_logger("cloudprov.transport.amqp")


@dataclass(slots=True)
class _Link:
    """One live connection: its generation number, channel and consumers."""

    generation: int
    connection: AbstractConnection
    channel: AbstractChannel
    consumers: list[tuple[AbstractQueue, str]]


class AmqpDelivery(Delivery):
    """A request message from a domain's quorum queue (``message`` as aiormq delivered it)."""

    def __init__(self, transport: AmqpTransport, message: wire.DeliveredMessage, generation: int, queue: str) -> None:
        self._transport = transport
        self.message = message
        self.generation = generation
        self.queue = queue
        props = message.header.properties
        headers = props.headers or {}
        try:
            self.payload = chunking.decode_frame(
                message.body, chunking.cp_headers(headers), max_message_size=transport.max_request_size
            )
        except chunking.ChunkError as error:
            self.payload, self.decode_error = message.body, error  # the dispatcher dead-letters it
        # Only the broker says a message comes again (Basic.Deliver's redelivered flag): a publisher can set any
        # header, and a redelivery is let past the replay check, so a first delivery counts 1 whatever it carries.
        returned = headers.get("x-delivery-count")
        if not getattr(message.delivery, "redelivered", False):
            self.delivery_count = 1
        elif isinstance(returned, int) and not isinstance(returned, bool) and returned >= 1:
            self.delivery_count = returned + 1  # quorum queues count every return
        else:
            self.delivery_count = 2
        self.request_id = props.correlation_id or props.message_id or ""
        self.reply_to = props.reply_to or ""

    async def reply(self, payload: bytes) -> None:
        await self._transport._reply(self, payload)

    async def _settle(self, outcome: Settlement, reason: str) -> None:
        await self._transport._settle(self, outcome, reason)


class AmqpTransport(Transport):
    """Consumes ``cloudprov.requests.{domain}`` for each domain (see the package docstring)."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = RECOVERABLE_ERRORS

    def __init__(self, url: str, domains: Sequence[str], settings: AmqpSettings | None = None) -> None:
        self.url = url
        self.domains = tuple(domains)
        self.settings = settings or AmqpSettings()
        self.max_message_size: int = self.settings.max_message_size
        self._reconnector: Reconnector | None = None
        self._link: _Link | None = None
        self._generation = 0
        #: The generation ``_open`` is setting up and what its consumers received meanwhile: handed out once
        #: it is the current one (a nack would count a delivery against the request's budget, unhandled).
        self._opening: tuple[int, list[AmqpDelivery]] | None = None
        self._consuming = True
        self._closed = False
        self._inbox: asyncio.Queue[AmqpDelivery | None] = asyncio.Queue()
        self._in_hand: set[AmqpDelivery] = set()
        self._log = log.bind(transport="amqp", url=safe_url(url))

    @classmethod
    def from_url(cls, url: str, *, domains: Sequence[str], options: Mapping[str, Any] | None = None) -> Self:
        return cls(url, domains, AmqpSettings.from_url(url, options))

    # ---- lifecycle --------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._reconnector is not None:
            raise TransportClosedError("AmqpTransport.connect() called twice")
        self._reconnector = reconnector("amqp", self._open, self.settings)
        await first_connect(self._reconnector, self.url)

    async def _open(self) -> None:
        generation = self._generation + 1
        connection = await open_connection(self.url, self.settings, f"cloudprov-agent:{','.join(self.domains)}")
        early: list[AmqpDelivery] = []
        self._opening = (generation, early)
        try:
            connection.close_callbacks.add(self._on_close(generation))
            channel = await connection.channel(publisher_confirms=True)
            channel.close_callbacks.add(self._on_close(generation))
            await channel.set_qos(prefetch_count=self.settings.prefetch)
            consumers = []
            for domain in self.domains:
                queue = await declare_request_queue(channel, self.settings, domain)
                if self._consuming:
                    tag = await wire.consume(channel, queue.name, self._on_message(generation, queue.name))
                    consumers.append((queue, tag))
        except BaseException:
            await connection.close()  # the broker puts back what it had handed out
            raise
        finally:
            self._opening = None
        old, self._link, self._generation = self._link, _Link(generation, connection, channel, consumers), generation
        for delivery in early:
            self._inbox.put_nowait(delivery)
        if old is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await old.connection.close()
        if connection.is_closed or channel.is_closed:
            raise TransportBrokenError("connection closed while it was being set up")
        self._log.info("consuming", queues=[q.name for q, _ in consumers], generation=generation)

    def _on_close(self, generation: int) -> Callable[[Any, BaseException | None], None]:
        def closed(_sender: Any, exc: BaseException | None = None) -> None:
            if generation == self._generation and not self._closed and self._reconnector is not None:
                self._reconnector.lost(exc)

        return closed

    def _on_message(self, generation: int, queue: str) -> Callable[[wire.DeliveredMessage], Any]:
        async def received(message: wire.DeliveredMessage) -> None:
            if self._consuming and generation == self._generation:
                self._inbox.put_nowait(AmqpDelivery(self, message, generation, queue))
            elif self._consuming and self._opening is not None and self._opening[0] == generation:
                self._opening[1].append(AmqpDelivery(self, message, generation, queue))  # still setting up
            else:
                await _nack(message)

        return received

    async def stop_consuming(self) -> None:
        if not self._consuming:
            return
        self._consuming = False
        link = self._link
        if link is not None:
            for queue, tag in link.consumers:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await queue.cancel(tag)
        while not self._inbox.empty():  # received but never handed out: give them back now
            delivery = self._inbox.get_nowait()
            if delivery is not None and delivery.generation == self._generation:
                await _nack(delivery.message)
        self._inbox.put_nowait(None)

    async def close(self) -> None:
        if self._closed:
            return
        if self._reconnector is not None:
            await self.stop_consuming()
        self._closed = True
        if self._reconnector is not None:
            await self._reconnector.aclose()
        link, self._link = self._link, None
        self._in_hand.clear()
        if link is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await link.connection.close()  # unsettled deliveries return to their queues
        self._log.info("closed")

    @property
    def connected(self) -> bool:
        return (
            not self._closed
            and self._reconnector is not None
            and self._reconnector.ready.is_set()
            and self._link is not None
            and not self._link.connection.is_closed
        )

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._reconnector is None:
            raise TransportClosedError("AmqpTransport is not connected: use `async with` or connect() first")
        while True:
            delivery = await self._inbox.get()
            if delivery is None:
                self._inbox.put_nowait(None)  # every iterator ends, not just the first
                return
            if delivery.generation != self._generation:
                continue  # its connection is gone and the broker has requeued it
            self._in_hand.add(delivery)
            yield delivery

    # ---- replies and settlement ---------------------------------------------------------------
    async def _channel(self, deadline: float) -> AbstractChannel:
        if self._closed or self._reconnector is None:
            raise TransportClosedError("AmqpTransport is closed")
        await self._reconnector.wait_ready(max(0.0, deadline - time.monotonic()))
        if self._link is None:
            raise TransportClosedError("AmqpTransport is closed")
        return self._link.channel

    async def _publish(self, routing_key: str, body: bytes, props: Any) -> None:
        """Publish with a broker confirm, riding out a reconnect for up to ``publish_timeout``."""
        deadline = time.monotonic() + self.settings.publish_timeout
        while True:
            channel = await self._channel(deadline)
            try:
                await wire.publish(channel, routing_key, body, props, timeout=max(0.1, deadline - time.monotonic()))
            except CONNECTION_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise TransportBrokenError(f"publish to {routing_key!r} failed: {exc}") from exc
                if self._reconnector is not None:
                    self._reconnector.lost(exc)
                await asyncio.sleep(0.05)
            else:
                return

    async def _reply(self, delivery: AmqpDelivery, payload: bytes) -> None:
        request_id, reply_to = signed_route(delivery, delivery.request_id, delivery.reply_to, self._log)
        if not reply_to:
            self._log.warning("request has no reply_to; reply dropped", request_id=request_id, queue=delivery.queue)
            return
        if not reply_to.startswith(self.settings.reply_prefix):
            self._log.error(
                "reply_to outside the reply prefix; reply dropped",
                request_id=request_id,
                queue=delivery.queue,
                reply_to=reply_to,
            )
            return
        try:
            frames = chunking.encode(payload, self.max_message_size)
        except chunking.PayloadTooLargeError as exc:
            raise MessageTooLargeError(str(exc)) from exc
        for frame in frames:
            props = wire.properties(correlation_id=request_id, headers=frame.headers)
            await self._publish(reply_to, frame.body, props)
        if len(frames) > 1:
            self._log.info(
                "reply split into chunks",
                request_id=delivery.request_id,
                queue=delivery.queue,
                chunks=len(frames),
                size=len(payload),
            )

    @property
    def in_hand(self) -> int:
        """Deliveries handed out on the live connection and not settled yet."""
        return sum(1 for d in self._in_hand if d.generation == self._generation) if not self._closed else 0

    async def _settle(self, delivery: AmqpDelivery, outcome: Settlement, reason: str) -> None:
        try:
            await self._settle_now(delivery, outcome, reason)
        finally:
            self._in_hand.discard(delivery)

    async def _settle_now(self, delivery: AmqpDelivery, outcome: Settlement, reason: str) -> None:
        link = self._link
        if link is None or delivery.generation != link.generation or link.channel.is_closed:
            self._settle_log(delivery, outcome).warning(
                "settlement lost with its connection; the broker redelivers the message"
            )
            return
        message = delivery.message
        tag = message.delivery_tag or 0
        try:
            if outcome is Settlement.ACK:
                await message.channel.basic_ack(tag, wait=False)  # queued for the writer, sent with its turn
            elif outcome is Settlement.RETRY:
                await message.channel.basic_nack(tag, requeue=True)
            else:
                props = message.header.properties
                headers = dict(props.headers or {})
                headers.update(
                    {
                        DEAD_LETTER_REASON: reason[:1000],
                        DEAD_LETTER_COUNT: delivery.delivery_count,
                        DEAD_LETTER_QUEUE: delivery.queue,
                    }
                )
                try:
                    await wire.publish(
                        link.channel,
                        delivery.queue + self.settings.dead_letter_suffix,
                        message.body,
                        wire.properties(
                            correlation_id=props.correlation_id,
                            headers=headers,
                            message_id=props.message_id,
                            reply_to=props.reply_to,
                            content_type=None,
                        ),
                        timeout=self.settings.publish_timeout,
                    )
                except aiormq.exceptions.DeliveryError as refused:  # the broker refused the copy (a full queue)
                    # Given back, not held: held unacked, it would take a prefetch slot until the connection
                    # closes; given back, it comes again, and the broker's delivery limit parks it at last.
                    await message.channel.basic_nack(tag, requeue=True)
                    self._settle_log(delivery, outcome).warning(
                        "dead-letter copy refused; the message goes back to its queue", error=str(refused)
                    )
                    return
                await message.channel.basic_ack(tag)
                self._settle_log(delivery, outcome).warning(
                    "dead-lettered", reason=reason, delivery_count=delivery.delivery_count
                )
        except CONNECTION_ERRORS as exc:
            self._settle_log(delivery, outcome).warning(
                "settlement lost with its connection; the broker redelivers the message", error=str(exc)
            )

    def _settle_log(self, delivery: AmqpDelivery, outcome: Settlement) -> Any:
        return self._log.bind(request_id=delivery.request_id, queue=delivery.queue, outcome=outcome.value)


async def _nack(message: wire.DeliveredMessage) -> None:
    """Give a delivery back to its queue now (it comes again, counted)."""
    with contextlib.suppress(*CONNECTION_ERRORS):
        await message.channel.basic_nack(message.delivery_tag or 0, requeue=True)
