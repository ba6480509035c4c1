"""The service's side of the ``sb`` transport: send requests, receive correlated replies."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any, Self

import structlog
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver

from protocol import chunking
from transports.base import (
    MessageTooLargeError,
    Requester,
    RequestTimeoutError,
    TransportClosedError,
)
from transports.reconnect import Backoff
from transports.replies import PendingReplies
from transports.servicebus.senders import SenderPool
from transports.servicebus.settings import (
    RECOVERABLE_ERRORS,
    SDK_ERRORS,
    ServiceBusSettings,
    close_quietly,
    make_client,
    open_bounded,
    return_what_has_arrived,
    safe_endpoint,
    sb_properties,
)
from transports.servicebus.transport import message_body

log = structlog.get_logger("cloudprov.transport.servicebus")


class ServiceBusRequester(Requester):
    """Sends to ``cloudprov.requests.{domain}``; receives from ``cloudprov.replies.{requester_id}``."""

    def __init__(self, url: str, settings: ServiceBusSettings | None = None) -> None:
        self.url = url
        self.settings = settings or ServiceBusSettings()
        self.requester_id = self.settings.requester_id or uuid.uuid4().hex[:16]
        self.reply_queue = self.reply_address = self.settings.reply_prefix + self.requester_id
        self.max_message_size: int = self.settings.max_message_size
        self._client: ServiceBusClient | None = None
        self._receiver: ServiceBusReceiver | None = None
        self._senders_: SenderPool | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer = chunking.Reassembler(max_message_size=64 * 1024 * 1024)
        self._closed = False
        self._log = log.bind(
            transport="sb", side="requester", endpoint=safe_endpoint(url, self.settings), requester_id=self.requester_id
        )
        self._pending = PendingReplies(self._log)

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        return cls(url, ServiceBusSettings.from_url(url, options))

    async def connect(self) -> None:
        if self._client is not None:
            raise TransportClosedError("ServiceBusRequester.connect() called twice")
        self._client = make_client(self.url, self.settings)
        self._senders_ = SenderPool(self._client, connect_timeout=self.settings.connect_timeout)
        try:
            self._receiver = await self._open_receiver()
        except BaseException:
            await close_quietly(self._client)
            raise
        self._task = asyncio.get_running_loop().create_task(self._receive(), name="sb-replies")

    async def _open_receiver(self) -> ServiceBusReceiver:
        assert self._client is not None
        receiver = self._client.get_queue_receiver(
            self.reply_queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=100
        )
        return_what_has_arrived(receiver)
        await open_bounded(receiver, self.settings.connect_timeout, f"receiver on {self.reply_queue!r}")
        return receiver

    async def _receive(self) -> None:
        while not self._closed:
            receiver = self._receiver
            assert receiver is not None
            try:
                messages = await receiver.receive_messages(max_message_count=100, max_wait_time=1)
                for message in messages:
                    self._deliver(message)
                await asyncio.gather(*(receiver.complete_message(m) for m in messages), return_exceptions=True)
            except SDK_ERRORS as exc:
                self._log.warning("reply receiver broke", error=f"{type(exc).__name__}: {exc}")
                await self._reopen()

    async def _reopen(self) -> None:
        await close_quietly(self._receiver)
        for attempt, delay in enumerate(Backoff(self.settings.backoff_initial, self.settings.backoff_max).delays(), 1):
            self._log.info("reconnect attempt", queue=self.reply_queue, attempt=attempt, delay=round(delay, 3))
            await asyncio.sleep(delay)
            try:
                self._receiver = await self._open_receiver()
            except RECOVERABLE_ERRORS as exc:
                self._log.warning("reconnect failed", attempt=attempt, error=str(exc))
                continue
            self._log.info("reconnected", queue=self.reply_queue, attempt=attempt)
            return

    def _deliver(self, message: ServiceBusReceivedMessage) -> None:
        request_id = str(message.correlation_id or "")
        try:
            payload = self._buffer.add(message_body(message), message.application_properties)
        except chunking.ChunkError as exc:
            self._log.warning("malformed reply dropped", request_id=request_id, error=str(exc))
            return
        if payload is None:
            return
        self._pending.resolve(request_id, payload)

    @property
    def late_replies(self) -> int:
        """Replies that came after their request gave up, or twice."""
        return self._pending.late

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.fail_all(TransportClosedError("requester closed while awaiting the reply"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._senders_ is not None:
            await self._senders_.close()
        await close_quietly(self._receiver)
        await close_quietly(self._client)

    @property
    def _senders(self) -> SenderPool:
        if self._senders_ is None or self._closed:
            raise TransportClosedError("ServiceBusRequester is closed")
        return self._senders_

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        if self._closed or self._client is None:
            raise TransportClosedError("ServiceBusRequester is not connected")
        try:
            [frame] = chunking.encode(payload, self.max_message_size, split=False)
        except chunking.PayloadTooLargeError as exc:
            raise MessageTooLargeError(str(exc)) from exc
        deadline = time.monotonic() + timeout
        message = ServiceBusMessage(
            frame.body,
            application_properties=sb_properties(frame.headers),
            message_id=request_id,
            correlation_id=request_id,
            reply_to=self.reply_queue,
            content_type="application/json",
        )
        with self._pending.expect(request_id) as future:
            try:
                async with asyncio.timeout(timeout):
                    await self._senders.send(self.settings.queue_name(domain), message, deadline)
                    return await future
            except TimeoutError:
                raise RequestTimeoutError(f"no reply to request {request_id} within {timeout:.1f}s") from None
