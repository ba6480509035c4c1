"""Reply and request senders of the ``sb`` transport: cached per entity, batched, re-opened when broken."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any

import structlog
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from transports.base import MessageTooLargeError, TransportBrokenError, TransportClosedError
from transports.servicebus.settings import SDK_ERRORS, close_quietly, open_bounded

log = structlog.get_logger("cloudprov.transport.servicebus")
_RETRIED: tuple[type[BaseException], ...] = (TransportBrokenError, *SDK_ERRORS)


class BatchingSender:
    """One SDK sender fed by many coroutines: their messages go out together, one transfer per batch.

    The SDK's sender must not be used by concurrent ``send_messages`` calls (they interleave on the
    link and the peer closes the connection with a sequencing error), and one transfer per message
    is slow; so senders queue here and one task sends whatever has gathered, as one batch that fits
    the link's size limit.
    """

    def __init__(self, sender: Any, timeout: float) -> None:
        self.sender = sender
        self.timeout = timeout
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[None]]] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sb-batching-sender")
        self.broken: BaseException | None = None

    async def send(self, message: Any) -> None:
        if self.broken is not None:
            raise self.broken
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((message, done))
        await done

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty() and len(items) < 100:
                items.append(self._queue.get_nowait())
            while items:
                batch = await self.sender.create_message_batch()
                taken = 0
                for message, _ in items:
                    try:
                        batch.add_message(message)
                    except ValueError as exc:
                        if taken == 0:  # does not fit even alone: only its sender hears of it
                            items[0][1].set_exception(exc)
                            taken = -1
                        break
                    taken += 1
                if taken < 0:
                    items = items[1:]
                    continue
                sent, items = items[:taken], items[taken:]
                try:
                    await self.sender.send_messages(batch, timeout=self.timeout)
                except Exception as exc:  # every waiter learns why; the owner drops this sender
                    self.broken = exc
                    for _, done in [*sent, *items]:
                        if not done.done():
                            done.set_exception(exc)
                    while not self._queue.empty():
                        _, done = self._queue.get_nowait()
                        done.set_exception(exc)
                    return
                for _, done in sent:
                    if not done.done():
                        done.set_result(None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await close_quietly(self.sender)


class SenderPool:
    """At most ``max_senders`` open senders, one per entity, least recently used closed first."""

    def __init__(self, client: ServiceBusClient, *, connect_timeout: float, max_senders: int = 32) -> None:
        self._client = client
        self._connect_timeout = connect_timeout
        self._max = max_senders
        self._senders: OrderedDict[str, BatchingSender] = OrderedDict()
        self._lock = asyncio.Lock()
        self._closed = False

    async def _get(self, entity: str, timeout: float) -> BatchingSender:
        async with self._lock:
            if self._closed:
                raise TransportClosedError("sender pool is closed")
            sender = self._senders.get(entity)
            if sender is not None and sender.broken is None:
                self._senders.move_to_end(entity)
                return sender
            if sender is not None:
                del self._senders[entity]
                await sender.close()
            raw = self._client.get_queue_sender(entity)
            await open_bounded(raw, min(timeout, self._connect_timeout), f"sender to {entity!r}")
            sender = self._senders[entity] = BatchingSender(raw, timeout)
            while len(self._senders) > self._max:
                _, oldest = self._senders.popitem(last=False)
                await oldest.close()
            return sender

    async def send(self, entity: str, message: ServiceBusMessage, deadline: float) -> None:
        """Send one message, re-opening a broken sender and trying again until ``deadline`` (monotonic)."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                sender = await self._get(entity, max(1.0, remaining))
                await sender.send(message)
            except ValueError as exc:  # MessageSizeExceededError included: trying again will not help
                raise MessageTooLargeError(f"{entity!r} refused the message: {exc}") from exc
            except _RETRIED as exc:
                if time.monotonic() >= deadline:
                    raise TransportBrokenError(f"send to {entity!r} failed: {type(exc).__name__}: {exc}") from exc
                log.warning("send failed; retrying", entity=entity, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
            else:
                return

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            for sender in self._senders.values():
                await sender.close()
            self._senders.clear()
