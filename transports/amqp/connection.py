"""The ``amqp`` transport's connection: aio-pika's, with aiormq's frame queues unbounded and writes merged.

What it is
    aiormq bounds the connection's write queue and each channel's read queue at 10 frames: the
    eleventh publish of a loop turn waits a turn for the writer, and the deliveries of one socket
    read reach their consumers three by three, a loop turn apart. Requests sent together then
    stop arriving together, and the requester's signature batches (requests sent in one loop turn
    share one signature) shrink to a single request. ``open_connection`` opens an aio-pika
    connection over ``_AiormqConnection``, whose queues are unbounded: they hold at most what is
    in flight anyway (the prefetch, the unconfirmed publishes).

    aiormq's writer task also writes each queued frame (a publish, an ack) with its own
    ``transport.write``, one ``send`` system call each on a ``TCP_NODELAY`` socket.
    ``CoalescingWriter`` keeps what the writer takes from its queue in one go and hands it to the
    socket with one write once the queue is empty: no timer and no extra loop turn.

Connection URL / options
    ``open_connection(url, settings, name)``: the transport's URL and ``AmqpSettings`` (heartbeat,
    TLS files, connect timeout); ``amqp://`` and ``amqps://`` alike.

Guarantees
    Bytes reach the socket in the order they were written, by the end of the writer's turn;
    ``drain``, ``close`` and ``write_eof`` send what is kept first, and ``drain`` still waits
    while the socket's buffer is over its high-water mark.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aiormq.abc
import aiormq.connection
from aio_pika.abc import AbstractConnection, TimeoutType, UnderlayConnection
from aiormq.abc import URLorStr
from yarl import URL

from transports.amqp.settings import AmqpSettings, connection_url, ssl_context


class CoalescingWriter:
    """A ``StreamWriter`` stand-in: what is written while more frames wait in ``queue`` goes out in one write."""

    def __init__(self, writer: asyncio.StreamWriter, queue: asyncio.Queue[Any]) -> None:
        self._writer = writer
        self._queue = queue
        self._kept: list[bytes] = []
        self.transport = writer.transport

    def write(self, data: bytes) -> None:
        self._kept.append(data)
        if self._queue.empty():  # the writer's last frame for now: send what it took
            self.flush()

    def flush(self) -> None:
        """Hand what was kept to the socket now (one write)."""
        kept, self._kept = self._kept, []
        if kept and not self._writer.is_closing():
            self._writer.write(kept[0] if len(kept) == 1 else b"".join(kept))

    async def drain(self) -> None:
        self.flush()  # aiormq drains after a frame someone waits for (a Close, an RPC): send it now
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        return self._writer.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._writer.write_eof()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self.flush()
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)


class CoalescingTransportFactory(aiormq.connection.TransportFactory):
    """aiormq's TCP or TLS transport (by the URL's scheme), written through a ``CoalescingWriter``."""

    def __init__(self, connection: aiormq.Connection) -> None:
        self._connection = connection

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner: aiormq.connection.TransportFactory
        if url.scheme == "amqps":
            inner = aiormq.connection.TLSTransportFactory()
        else:
            inner = aiormq.connection.TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        merged = CoalescingWriter(writer, self._connection.write_queue)
        return reader, merged  # type: ignore[return-value]  # duck-typed: the methods aiormq calls


class _AiormqConnection(aiormq.Connection):
    """aiormq's connection with unbounded frame queues, writing through a ``CoalescingWriter``."""

    FRAME_BUFFER_SIZE = 0  # the write queue's bound, read in __init__

    def __init__(self, url: URLorStr, **kwargs: Any) -> None:
        super().__init__(url, transport_factory=CoalescingTransportFactory(self), **kwargs)

    async def channel(  # same parameters, another default
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        frame_buffer_size: int = 0,
        timeout: TimeoutType = None,
        **kwargs: Any,
    ) -> aiormq.abc.AbstractChannel:
        return await super().channel(channel_number, publisher_confirms, frame_buffer_size, timeout, **kwargs)


class _Underlay(UnderlayConnection):
    @classmethod
    async def make_connection(
        cls, url: URL, timeout: TimeoutType = None, **kwargs: Any
    ) -> aiormq.abc.AbstractConnection:
        connection = _AiormqConnection(url, **kwargs)
        await asyncio.wait_for(connection.connect(), timeout=timeout)
        await connection.ready()
        return connection


class _Connection(aio_pika.Connection):
    """aio-pika's connection over an ``_AiormqConnection``."""

    async def connect(self, timeout: TimeoutType = None) -> None:
        self.transport = await _Underlay.connect(self.url, self._on_connection_close, timeout=timeout, **self.kwargs)
        await self._on_connected()


async def open_connection(url: str, settings: AmqpSettings, name: str) -> AbstractConnection:
    """A connected aio-pika connection to ``url`` (``name`` is shown in the broker's connection list)."""
    connection = _Connection(
        URL(connection_url(url, settings)),
        ssl_context=ssl_context(url, settings),
        client_properties={"connection_name": name},
    )
    await connection.connect(timeout=settings.connect_timeout)
    return connection
