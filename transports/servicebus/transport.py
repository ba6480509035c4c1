"""The agent's side of the ``sb`` transport: peek-lock receive per domain, replies, settlement."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import structlog
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusReceiveMode
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver

from protocol import chunking
from transports.base import (
    Delivery,
    MessageTooLargeError,
    Settlement,
    Transport,
    TransportClosedError,
    signed_route,
)
from transports.reconnect import Backoff
from transports.servicebus.senders import SenderPool
from transports.servicebus.settings import (
    RECOVERABLE_ERRORS,
    SDK_ERRORS,
    ServiceBusSettings,
    close_quietly,
    make_client,
    open_bounded,
    safe_endpoint,
    sb_properties,
    serialize_lock_renewal,
)

log = structlog.get_logger("cloudprov.transport.servicebus")


def message_body(message: ServiceBusReceivedMessage) -> bytes:
    body = message.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(bytes(part) for part in body)


class ServiceBusDelivery(Delivery):
    """A request received in peek-lock mode; settled on the receiver that received it."""

    def __init__(
        self,
        transport: ServiceBusTransport,
        message: ServiceBusReceivedMessage,
        receiver: ServiceBusReceiver,
        queue: str,
    ) -> None:
        self._transport = transport
        self.message = message
        self.receiver = receiver
        self.queue = queue
        body = message_body(message)
        try:
            self.payload = chunking.decode_frame(
                body, chunking.cp_headers(message.application_properties), max_message_size=transport.max_request_size
            )
        except chunking.ChunkError as error:
            self.payload, self.decode_error = body, error  # the dispatcher dead-letters it
        self.delivery_count = (message.delivery_count or 0) + 1
        self.request_id = str(message.correlation_id or message.message_id or "")
        self.reply_to = str(message.reply_to or "")

    async def reply(self, payload: bytes) -> None:
        await self._transport._reply(self, payload)

    async def _settle(self, outcome: Settlement, reason: str) -> None:
        await self._transport._settle(self, outcome, reason)


class ServiceBusTransport(Transport):
    """Receives ``cloudprov.requests.{domain}`` for each domain (see the package docstring)."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = RECOVERABLE_ERRORS

    def __init__(self, url: str, domains: Sequence[str], settings: ServiceBusSettings | None = None) -> None:
        self.url = url
        self.domains = tuple(domains)
        self.settings = settings or ServiceBusSettings()
        self.max_message_size: int = self.settings.max_message_size
        self._client: ServiceBusClient | None = None
        self._renewer: AutoLockRenewer | None = None
        self._receivers: dict[str, ServiceBusReceiver] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._senders: SenderPool | None = None
        self._inbox: asyncio.Queue[ServiceBusDelivery | None] = asyncio.Queue()
        self._unsettled: set[ServiceBusDelivery] = set()
        self._capacity = asyncio.Event()
        self._consuming = True
        self._closed = False
        self._healthy: set[str] = set()
        self._log = log.bind(transport="sb", endpoint=safe_endpoint(url, self.settings))

    @classmethod
    def from_url(cls, url: str, *, domains: Sequence[str], options: Mapping[str, Any] | None = None) -> Self:
        return cls(url, domains, ServiceBusSettings.from_url(url, options))

    # ---- lifecycle ----------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._client is not None:
            raise TransportClosedError("ServiceBusTransport.connect() called twice")
        self._client = make_client(self.url, self.settings)
        self._senders = SenderPool(self._client, connect_timeout=self.settings.connect_timeout)
        self._renewer = AutoLockRenewer(
            max_lock_renewal_duration=self.settings.max_lock_renewal, on_lock_renew_failure=self._renew_failed
        )
        try:
            for domain in self.domains:
                self._receivers[domain] = await self._open_receiver(domain)
        except BaseException:
            await self._shutdown()
            raise
        for domain in self.domains:
            self._tasks.append(
                asyncio.get_running_loop().create_task(self._receive(domain), name=f"sb-receive-{domain}")
            )
        self._log.info("consuming", queues=[self.settings.queue_name(d) for d in self.domains])

    async def _open_receiver(self, domain: str) -> ServiceBusReceiver:
        assert self._client is not None
        queue = self.settings.queue_name(domain)
        receiver = self._client.get_queue_receiver(
            queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, auto_lock_renewer=self._renewer
        )
        serialize_lock_renewal(receiver)
        await open_bounded(receiver, self.settings.connect_timeout, f"receiver on {queue!r}")
        self._healthy.add(domain)
        return receiver

    async def _renew_failed(self, renewable: Any, error: BaseException | None) -> None:
        self._log.warning("lock renewal stopped", error=str(error) if error else "max_lock_renewal reached")

    async def _receive(self, domain: str) -> None:
        """Pull requests while consuming; re-open the receiver with backoff when it breaks."""
        queue = self.settings.queue_name(domain)
        rlog = self._log.bind(queue=queue)
        while self._consuming:
            while len(self._unsettled) >= self.settings.prefetch:
                self._capacity.clear()
                await self._capacity.wait()
            receiver = self._receivers[domain]
            try:
                messages = await receiver.receive_messages(
                    max_message_count=self.settings.prefetch - len(self._unsettled),
                    max_wait_time=self.settings.receive_wait,
                )
            except SDK_ERRORS as exc:
                if not self._consuming:
                    return
                self._healthy.discard(domain)
                rlog.warning("receiver broke", error=f"{type(exc).__name__}: {exc}")
                await self._reopen(domain)
                continue
            for message in messages:
                delivery = ServiceBusDelivery(self, message, receiver, queue)
                self._unsettled.add(delivery)
                if self._consuming:
                    self._inbox.put_nowait(delivery)
                else:
                    await self._give_back(delivery)

    async def _reopen(self, domain: str) -> None:
        queue = self.settings.queue_name(domain)
        old = self._receivers[domain]
        await close_quietly(old)
        for attempt, delay in enumerate(Backoff(self.settings.backoff_initial, self.settings.backoff_max).delays(), 1):
            self._log.info("reconnect attempt", queue=queue, attempt=attempt, delay=round(delay, 3))
            await asyncio.sleep(delay)
            if not self._consuming:
                return
            try:
                self._receivers[domain] = await self._open_receiver(domain)
            except RECOVERABLE_ERRORS as exc:
                self._log.warning("reconnect failed", queue=queue, attempt=attempt, error=str(exc))
                continue
            self._log.info("reconnected", queue=queue, attempt=attempt)
            return

    async def stop_consuming(self) -> None:
        if not self._consuming:
            return
        self._consuming = False
        self._capacity.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        while not self._inbox.empty():  # received but never handed out: give them back now
            delivery = self._inbox.get_nowait()
            if delivery is not None:
                await self._give_back(delivery)
        self._inbox.put_nowait(None)

    async def _give_back(self, delivery: ServiceBusDelivery) -> None:
        if delivery.settlement is None:
            with contextlib.suppress(Exception):
                await delivery.retry_later("transport closing")

    async def close(self) -> None:
        if self._closed:
            return
        if self._client is not None:
            await self.stop_consuming()
            for delivery in list(self._unsettled):  # handed out, never settled: back to the queue now
                await self._give_back(delivery)
        self._closed = True
        await self._shutdown()
        self._log.info("closed")

    async def _shutdown(self) -> None:
        if self._renewer is not None:
            with contextlib.suppress(Exception):
                await self._renewer.close()
        for receiver in self._receivers.values():
            await close_quietly(receiver)
        if self._senders is not None:
            await self._senders.close()
        self._receivers.clear()
        await close_quietly(self._client)

    @property
    def connected(self) -> bool:
        return not self._closed and self._client is not None and self._healthy.issuperset(self.domains)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._client is None:
            raise TransportClosedError("ServiceBusTransport is not connected: use `async with` or connect() first")
        while True:
            delivery = await self._inbox.get()
            if delivery is None:
                self._inbox.put_nowait(None)
                return
            yield delivery

    @property
    def in_hand(self) -> int:
        """Deliveries received and not settled yet (handed out or waiting to be)."""
        return len(self._unsettled) if not self._closed else 0

    # ---- replies and settlement ---------------------------------------------------------------
    def _pool(self) -> SenderPool:
        if self._senders is None or self._closed:
            raise TransportClosedError("ServiceBusTransport is closed")
        return self._senders

    async def _reply(self, delivery: ServiceBusDelivery, payload: bytes) -> None:
        request_id, reply_to = signed_route(delivery, delivery.request_id, delivery.reply_to, self._log)
        rlog = self._log.bind(request_id=request_id, queue=delivery.queue)
        if not reply_to:
            rlog.warning("request has no reply_to; reply dropped")
            return
        if not reply_to.lower().startswith(self.settings.reply_prefix.lower()):
            rlog.error("reply_to outside the reply prefix; reply dropped", reply_to=reply_to)
            return
        try:
            frames = chunking.encode(payload, self.max_message_size)
        except chunking.PayloadTooLargeError as exc:
            raise MessageTooLargeError(str(exc)) from exc
        deadline = time.monotonic() + self.settings.operation_timeout
        for frame in frames:
            message = ServiceBusMessage(
                frame.body,
                application_properties=sb_properties(frame.headers),
                correlation_id=request_id,
                content_type="application/json",
            )
            await self._pool().send(reply_to, message, deadline)
        if len(frames) > 1:
            rlog.info("reply split into chunks", chunks=len(frames), size=len(payload))

    async def _settle(self, delivery: ServiceBusDelivery, outcome: Settlement, reason: str) -> None:
        slog = self._log.bind(request_id=delivery.request_id, queue=delivery.queue, outcome=outcome.value)
        receiver, message = delivery.receiver, delivery.message
        try:
            if outcome is Settlement.ACK:
                await receiver.complete_message(message)
            elif outcome is Settlement.RETRY:
                await receiver.abandon_message(message)
            else:
                await receiver.dead_letter_message(
                    message,
                    reason=reason[:1000] or "dead-lettered",
                    error_description=f"after {delivery.delivery_count} deliveries",
                )
                slog.warning("dead-lettered", reason=reason, delivery_count=delivery.delivery_count)
        except SDK_ERRORS as exc:
            slog.warning(
                "settlement lost with its lock; the message comes again when the lock expires",
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            self._unsettled.discard(delivery)
            self._capacity.set()
