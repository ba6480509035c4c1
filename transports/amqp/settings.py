"""Settings and broker topology shared by both sides of the ``amqp`` transport."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractQueue

from transports.base import TransportBrokenError
from transports.reconnect import Backoff, Reconnector
from transports.registry import read_settings

#: Errors that mean "the connection or channel broke": reconnecting may help.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    TimeoutError,
)
RECOVERABLE_ERRORS: tuple[type[BaseException], ...] = (TransportBrokenError, *CONNECTION_ERRORS)

DEAD_LETTER_REASON = "x-cloudprov-dead-letter-reason"
DEAD_LETTER_COUNT = "x-cloudprov-dead-letter-delivery-count"
DEAD_LETTER_QUEUE = "x-cloudprov-dead-letter-queue"


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """Every setting of the ``amqp`` transport, with defaults that work against a stock RabbitMQ."""

    request_queue: str = "cloudprov.requests.{domain}"
    dead_letter_suffix: str = ".dlq"
    reply_prefix: str = "cloudprov.replies."
    requester_id: str | None = None
    prefetch: int = 32
    delivery_limit: int = 20
    max_message_size: int = 16 * 1024 * 1024
    connect_timeout: float = 10.0
    publish_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    reply_queue_expires: float = 1800.0
    heartbeat: int = 30
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> AmqpSettings:
        return read_settings(cls, url, options)

    def queue_name(self, domain: str) -> str:
        return self.request_queue.format(domain=domain)

    def dead_letter_queue(self, domain: str) -> str:
        return self.queue_name(domain) + self.dead_letter_suffix


def connection_url(url: str, settings: AmqpSettings) -> str:
    """The URL handed to aio-pika: ours without our own settings, with the heartbeat."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, f"heartbeat={settings.heartbeat}", ""))


def safe_url(url: str) -> str:
    """The URL for logs and errors: no password, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def ssl_context(url: str, settings: AmqpSettings) -> ssl.SSLContext | None:
    """For ``amqps://``: verify the server against ``ca_file`` (or the system store) and its host name."""
    if urlsplit(url).scheme != "amqps":
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


async def declare_request_queue(channel: AbstractChannel, settings: AmqpSettings, domain: str) -> AbstractQueue:
    """The domain's durable quorum queue and its dead-letter queue (both sides declare them alike)."""
    dead = settings.dead_letter_queue(domain)
    await channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
    return await channel.declare_queue(
        settings.queue_name(domain),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )


def reconnector(name: str, open_: Callable[[], Awaitable[None]], settings: AmqpSettings) -> Reconnector:
    """The supervisor of one side's connection: backoff from the settings, retrying the recoverable errors."""
    return Reconnector(name, open_, Backoff(settings.backoff_initial, settings.backoff_max), RECOVERABLE_ERRORS)


async def first_connect(supervisor: Reconnector, url: str) -> None:
    """The first connection, failing fast with a ``TransportBrokenError`` that names the broker."""
    try:
        await supervisor.start()
    except CONNECTION_ERRORS as exc:
        raise TransportBrokenError(f"cannot connect to {safe_url(url)}: {type(exc).__name__}: {exc}") from exc
