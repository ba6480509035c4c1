"""The service's side of the ``amqp`` transport: publish requests, await correlated replies."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Self

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from protocol import chunking
from transports.amqp import wire
from transports.amqp.connection import open_connection
from transports.amqp.settings import (
    CONNECTION_ERRORS,
    AmqpSettings,
    declare_request_queue,
    first_connect,
    reconnector,
    safe_url,
)
from transports.base import (
    MessageTooLargeError,
    Requester,
    RequestTimeoutError,
    TransportBrokenError,
    TransportClosedError,
)
from transports.reconnect import Reconnector
from transports.replies import PendingReplies

log = structlog.get_logger("cloudprov.transport.amqp")


class AmqpRequester(Requester):
    """Publishes to ``cloudprov.requests.{domain}``; replies come to ``cloudprov.replies.{requester_id}``.

    The reply queue is durable with an idle expiry (``reply_queue_expires``) rather than exclusive,
    so replies published while this requester reconnects (or the broker restarts) wait for it;
    it is consumed with an exclusive consumer, so no other process takes them. Replies are acked
    together: one ``basic.ack`` with ``multiple`` for all that arrived in one read from the socket.
    """

    def __init__(self, url: str, settings: AmqpSettings | None = None) -> None:
        self.url = url
        self.settings = settings or AmqpSettings()
        self.requester_id = self.settings.requester_id or uuid.uuid4().hex[:16]
        self.reply_queue = self.reply_address = self.settings.reply_prefix + self.requester_id
        self.max_message_size: int = self.settings.max_message_size
        self._reconnector: Reconnector | None = None
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._generation = 0
        self._declared: set[str] = set()
        self._buffer = chunking.Reassembler(max_message_size=self.max_message_size * 64)
        self._closed = False
        self._log = log.bind(transport="amqp", side="requester", url=safe_url(url), requester_id=self.requester_id)
        self._pending = PendingReplies(self._log)
        self._ack_upto: tuple[Any, int] | None = None  # (aiormq channel, highest delivery tag) not acked yet

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        return cls(url, AmqpSettings.from_url(url, options))

    async def connect(self) -> None:
        if self._reconnector is not None:
            raise TransportClosedError("AmqpRequester.connect() called twice")
        self._reconnector = reconnector("amqp-requester", self._open, self.settings)
        await first_connect(self._reconnector, self.url)

    async def _open(self) -> None:
        generation = self._generation + 1
        connection = await open_connection(self.url, self.settings, f"cloudprov-requester:{self.requester_id}")
        try:
            connection.close_callbacks.add(self._on_close(generation))
            channel = await connection.channel(publisher_confirms=True)
            channel.close_callbacks.add(self._on_close(generation))
            await channel.set_qos(prefetch_count=max(self.settings.prefetch, 100))
            queue = await channel.declare_queue(
                self.reply_queue,
                durable=True,
                arguments={"x-expires": int(self.settings.reply_queue_expires * 1000)},
            )
            await wire.consume(channel, queue.name, self._on_reply, exclusive=True)
        except BaseException:
            await connection.close()
            raise
        old = self._connection
        self._connection, self._channel, self._generation = connection, channel, generation
        self._declared.clear()
        if old is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await old.close()
        if connection.is_closed or channel.is_closed:
            raise TransportBrokenError("connection closed while it was being set up")

    def _on_close(self, generation: int) -> Callable[[Any, BaseException | None], None]:
        def closed(_sender: Any, exc: BaseException | None = None) -> None:
            if generation == self._generation and not self._closed and self._reconnector is not None:
                self._reconnector.lost(exc)

        return closed

    async def _on_reply(self, message: wire.DeliveredMessage) -> None:
        props = message.header.properties
        request_id = props.correlation_id or ""
        try:
            payload = self._buffer.add(message.body, props.headers)
        except chunking.ChunkError as exc:
            self._log.warning("malformed reply dropped", request_id=request_id, error=str(exc))
            payload = None
        if payload is not None:
            self._pending.resolve(request_id, payload)
        await self._ack(message)

    async def _ack(self, message: wire.DeliveredMessage) -> None:
        """Ack this reply and every earlier one on its channel, once per batch of replies.

        aiormq runs each delivery's callback in its own task, in delivery order, and every reply is
        acked (malformed, late or not). The first callback of a batch yields once, so that the
        callbacks of the other replies read with it run; then one ``multiple`` ack covers them all.
        """
        tag = message.delivery_tag
        if tag is None:
            return
        pending = self._ack_upto
        self._ack_upto = (message.channel, tag)
        if pending is not None and pending[0] is message.channel:
            return  # the batch's first callback acks this one too
        await asyncio.sleep(0)
        upto = self._ack_upto
        if upto is None or upto[0] is not message.channel:
            return
        self._ack_upto = None
        with contextlib.suppress(*CONNECTION_ERRORS):
            await message.channel.basic_ack(upto[1], multiple=True, wait=False)

    @property
    def late_replies(self) -> int:
        """Replies that came after their request gave up, or twice."""
        return self._pending.late

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosedError("requester closed while awaiting the reply"))
        if self._reconnector is not None:
            await self._reconnector.aclose()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await connection.close()

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        if self._closed or self._reconnector is None:
            raise TransportClosedError("AmqpRequester is not connected")
        try:
            [frame] = chunking.encode(payload, self.max_message_size, split=False)
        except chunking.PayloadTooLargeError as exc:
            raise MessageTooLargeError(str(exc)) from exc
        deadline = time.monotonic() + timeout
        with self._pending.expect(request_id) as future:
            try:
                async with asyncio.timeout(timeout):  # one timer for publish, confirm and reply
                    await self._send(domain, request_id, frame, deadline)
                    return await future
            except TimeoutError:
                raise RequestTimeoutError(f"no reply to request {request_id} within {timeout:.1f}s") from None

    async def _send(self, domain: str, request_id: str, frame: chunking.Frame, deadline: float) -> None:
        assert self._reconnector is not None
        props = wire.properties(
            correlation_id=request_id, headers=frame.headers, message_id=request_id, reply_to=self.reply_queue
        )
        queue_name = self.settings.queue_name(domain)
        while True:
            try:
                await self._reconnector.wait_ready(max(0.0, deadline - time.monotonic()))
            except TransportBrokenError:
                raise TimeoutError from None
            channel = self._channel
            if channel is None:
                raise TransportClosedError("AmqpRequester is closed")
            try:
                if domain not in self._declared:
                    await declare_request_queue(channel, self.settings, domain)
                    self._declared.add(domain)
                await wire.publish(channel, queue_name, frame.body, props)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError from exc
                self._reconnector.lost(exc)
                await asyncio.sleep(0.05)
            else:
                return
