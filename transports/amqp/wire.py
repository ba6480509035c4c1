"""The hot path of the ``amqp`` transport, one level under aio-pika: publish and consume on aiormq.

What it is
    aio-pika wraps every message twice: an ``aio_pika.Message`` (attributes set one by one through
    a validating ``__setattr__``, then copied into ``spec.Basic.Properties``) for each publish, and
    an ``IncomingMessage`` plus a second task for each delivery. At 100 requests in flight that was
    a tenth of the process's CPU for nothing we use. Here ``properties`` builds the AMQP properties
    at once, ``publish`` hands them to the aiormq channel, and ``consume`` registers a callback
    that receives aiormq's ``DeliveredMessage`` in the one task aiormq starts per delivery.
    ``publish`` does not wait for aiormq's writer to take a small message (aiormq holds the
    channel's lock through that wait: one publish per loop turn and channel); it waits for the
    broker's confirm. Declaring queues, QoS and connection handling stay on aio-pika
    (``connection`` opens the connections).

Connection URL / options
    None: callers pass the aio-pika channel they opened.

Guarantees
    The same as aio-pika's ``Exchange.publish`` (``mandatory``, and with a confirming channel it
    returns once the broker confirms; a ``basic.nack`` raises ``DeliveryError``) and
    ``Queue.consume`` (manual acks unless ``no_ack``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

PERSISTENT = 2
JSON = "application/json"
#: A body from this size on waits for the socket writer (back-pressure) while it holds the channel's
#: publish lock; a smaller one only joins the write queue, so a loop turn's publishes leave together.
DRAIN_FROM = 64 * 1024

__all__ = ["DeliveredMessage", "consume", "properties", "publish"]


def properties(
    *,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    reply_to: str | None = None,
    content_type: str | None = JSON,
) -> aiormq.spec.Basic.Properties:
    """A persistent message's properties (no ``headers`` table at all when there are none)."""
    return aiormq.spec.Basic.Properties(
        content_type=content_type,
        correlation_id=correlation_id,
        delivery_mode=PERSISTENT,
        headers=dict(headers) if headers else None,
        message_id=message_id,
        reply_to=reply_to,
    )


async def publish(
    channel: AbstractChannel,
    routing_key: str,
    body: bytes,
    props: aiormq.spec.Basic.Properties,
    *,
    timeout: float | None = None,
) -> None:
    """Publish to the default exchange; on a confirming channel, return once the broker confirms."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
    await underlay.basic_publish(
        body, routing_key=routing_key, properties=props, mandatory=True, timeout=timeout, wait=len(body) >= DRAIN_FROM
    )


async def consume(
    channel: AbstractChannel,
    queue: str,
    callback: Callable[[DeliveredMessage], Coroutine[Any, Any, None]],
    *,
    exclusive: bool = False,
) -> str:
    """Start a manual-ack consumer on ``queue``; returns its consumer tag (cancel it with ``Queue.cancel``)."""
    underlay = await channel.get_underlay_channel()
    ok = await underlay.basic_consume(queue, callback, exclusive=exclusive)
    if ok.consumer_tag is None:
        raise aiormq.exceptions.ChannelInvalidStateError(f"no consumer tag for {queue!r}")
    return str(ok.consumer_tag)
