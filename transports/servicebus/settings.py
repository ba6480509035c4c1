"""Settings, client construction and bounded opens shared by both sides of the ``sb`` transport."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from azure.servicebus import exceptions as sb_errors
from azure.servicebus.aio import ServiceBusClient

from transports.base import TransportBrokenError
from transports.registry import read_settings

#: Errors that mean "the link or connection broke": re-opening may help.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    sb_errors.ServiceBusConnectionError,
    sb_errors.ServiceBusCommunicationError,
    sb_errors.OperationTimeoutError,
    sb_errors.ServiceBusServerBusyError,
    TimeoutError,
    ConnectionError,
    OSError,
)
RECOVERABLE_ERRORS: tuple[type[BaseException], ...] = (TransportBrokenError, *CONNECTION_ERRORS)
#: Anything the SDK raises on a settlement or send whose link is gone.
SDK_ERRORS: tuple[type[BaseException], ...] = (sb_errors.ServiceBusError, ValueError, *CONNECTION_ERRORS)
_OPEN_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *SDK_ERRORS)

PropertyValue = int | float | bytes | bool | str | uuid.UUID


def sb_properties(headers: Mapping[str, str | int]) -> dict[str | bytes, PropertyValue]:
    """``protocol.chunking`` headers as Service Bus application properties."""
    properties: dict[str | bytes, PropertyValue] = {}
    properties.update(headers)
    return properties


@dataclass(frozen=True, slots=True)
class ServiceBusSettings:
    """Every setting of the ``sb`` transport, with defaults that work on a Standard namespace."""

    connection_string: str | None = None
    key_name: str | None = None
    key: str | None = None
    emulator: bool = False
    credential: object | None = None
    request_queue: str = "cloudprov.requests.{domain}"
    reply_prefix: str = "cloudprov.replies."
    requester_id: str | None = None
    prefetch: int = 32
    max_message_size: int = 256 * 1024
    max_lock_renewal: float = 600.0
    connect_timeout: float = 20.0
    operation_timeout: float = 30.0
    receive_wait: float = 5.0
    #: How long one idle SDK read waits for a frame. The read holds the connection's socket lock, so a
    #: settlement or send on that connection waits up to this long (the SDK's 0.2 s added up to 200 ms
    #: to a request at one in flight); a shorter wait only costs more wake-ups of an idle receiver.
    socket_timeout: float = 0.02
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_total: int = 2

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> ServiceBusSettings:
        return read_settings(cls, url, options)

    def queue_name(self, domain: str) -> str:
        return self.request_queue.format(domain=domain)


def connection_string(url: str, settings: ServiceBusSettings) -> str | None:
    """The SDK connection string the URL and settings describe (None: use ``credential``)."""
    if settings.connection_string:
        return settings.connection_string
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    if settings.emulator:
        return (
            f"Endpoint=sb://{netloc};SharedAccessKeyName={settings.key_name or 'emulator'};"
            f"SharedAccessKey={settings.key or 'emulator'};UseDevelopmentEmulator=true"
        )
    if settings.key_name and settings.key:
        return f"Endpoint=sb://{netloc}/;SharedAccessKeyName={settings.key_name};SharedAccessKey={settings.key}"
    if settings.credential is None:
        raise ValueError("an sb:// URL needs key_name and key, a connection_string, a credential, or emulator=true")
    return None


def safe_endpoint(url: str, settings: ServiceBusSettings) -> str:
    """Where we connect, for logs and errors: no key."""
    conn = settings.connection_string
    if conn:
        for part in conn.split(";"):
            if part.lower().startswith("endpoint="):
                return part.partition("=")[2]
    return f"sb://{urlsplit(url).netloc.rpartition('@')[2]}"


def make_client(url: str, settings: ServiceBusSettings) -> ServiceBusClient:
    kwargs: dict[str, Any] = {
        "retry_total": settings.retry_total,
        "retry_backoff_max": 5,
        "socket_timeout": settings.socket_timeout,
    }
    conn = connection_string(url, settings)
    if conn is not None:
        return ServiceBusClient.from_connection_string(conn, **kwargs)
    namespace = urlsplit(url).hostname or ""
    credential: Any = settings.credential
    return ServiceBusClient(namespace, credential, **kwargs)


class _Handler(Protocol):
    async def __aenter__(self) -> Any: ...
    async def close(self) -> None: ...


async def open_bounded(handler: _Handler, timeout: float, what: str) -> None:
    """Open an SDK sender or receiver, giving up after ``timeout`` seconds (``TransportBrokenError``)."""
    try:
        async with asyncio.timeout(timeout):
            await handler.__aenter__()
    except _OPEN_ERRORS as exc:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await handler.close()
        detail = "no answer" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise TransportBrokenError(f"cannot open {what} within {timeout:.0f}s: {detail}") from exc


async def close_quietly(handler: _Handler | None, timeout: float = 5.0) -> None:
    if handler is None:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await handler.close()


def return_what_has_arrived(receiver: Any) -> None:
    """Let ``receive_messages`` return as soon as messages have arrived, instead of 0.2 s later.

    After the first message of a call the SDK keeps pulling for ``_further_pull_receive_timeout``
    (0.2 s) unless ``max_message_count`` is reached: every request/reply round trip paid it twice
    (agent receive, requester reply receive), ~400 ms with one request in flight. With no further
    pull a call returns what the first read brought in (everything the peer had sent by then), so
    batches still form under load. The attribute is private: without it the SDK's default stays.

    Only for the requester's reply receiver. The agent's receiver keeps the SDK's wait: there the
    dispatcher's settlements read the same connection while the receive loop runs (the SDK awaits
    each settlement's outcome), and with the receive call returning at once more requests arrive
    between two calls, where the SDK releases them (the peer then counts a delivery: a poison
    request reached its limit one try early in the integration tests) or, read by a settlement
    just before a call, leaves them waiting for that call's whole ``receive_wait``.
    """
    if hasattr(receiver, "_further_pull_receive_timeout"):
        receiver._further_pull_receive_timeout = 0.0


def serialize_lock_renewal(receiver: Any) -> None:
    """Let one ``renew_message_lock`` at a time run on ``receiver`` (the AutoLockRenewer runs one per message).

    The SDK's AMQP layer numbers a transfer before it awaits the socket and counts it after, so two
    management requests in flight on one session can carry the same delivery-id; a strict peer
    (proton) then closes the whole connection with a sequencing error. Renewals are cheap and few
    (each lock is renewed once per lock period), so queueing them costs nothing.
    """
    lock = asyncio.Lock()
    renew = receiver.renew_message_lock

    async def renew_one_at_a_time(message: Any, **kwargs: Any) -> Any:
        async with lock:
            return await renew(message, **kwargs)

    setattr(receiver, "renew_message_lock", renew_one_at_a_time)  # noqa: B010 - an instance attribute, on purpose
