"""The ``amqp`` transport's hot path without a broker: message properties, batched reply acks, merged writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.header import ContentHeader

from transports.amqp import AmqpRequester, wire
from transports.amqp.connection import CoalescingWriter


@dataclass
class FakeChannel:
    """Records the acks an aiormq channel would send."""

    acks: list[tuple[int, bool]] = field(default_factory=list)

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.acks.append((delivery_tag, multiple))


def reply(channel: Any, tag: int, request_id: str, body: bytes = b"{}") -> DeliveredMessage:
    props = wire.properties(correlation_id=request_id)
    deliver = aiormq.spec.Basic.Deliver(consumer_tag="c", delivery_tag=tag, routing_key="r")
    return DeliveredMessage(delivery=deliver, header=ContentHeader(properties=props), body=body, channel=channel)


def test_properties_are_persistent_json_without_an_empty_header_table() -> None:
    """Requests and replies are persistent; a plain payload carries no headers table at all."""
    props = wire.properties(correlation_id="r1", message_id="r1", reply_to="q", headers={})
    assert (props.delivery_mode, props.content_type, props.headers) == (2, "application/json", None)
    assert wire.properties(correlation_id="r1", headers={"cp-encoding": "deflate"}).headers == {
        "cp-encoding": "deflate"
    }


async def test_replies_read_together_are_acked_once_and_all_resolved() -> None:
    """Replies arriving in one batch resolve their requests and are acked by one multiple ack."""
    requester = AmqpRequester("amqp://guest:guest@127.0.0.1:5672/")
    channel = FakeChannel()
    with requester._pending.expect("a") as a, requester._pending.expect("b") as b:
        await asyncio.gather(
            requester._on_reply(reply(channel, 1, "a")),
            requester._on_reply(reply(channel, 2, "b")),
            requester._on_reply(reply(channel, 3, "late")),
        )
        assert (a.result(), b.result()) == (b"{}", b"{}")
    assert channel.acks == [(3, True)]
    assert requester.late_replies == 1
    await requester._on_reply(reply(channel, 4, "again"))
    assert channel.acks == [(3, True), (4, True)]


async def test_a_reply_on_a_new_channel_is_acked_there() -> None:
    """After a reconnect, a reply is acked on the channel that delivered it, never on the old one."""
    requester = AmqpRequester("amqp://guest:guest@127.0.0.1:5672/")
    old, new = FakeChannel(), FakeChannel()
    await asyncio.gather(requester._on_reply(reply(old, 7, "x")), requester._on_reply(reply(new, 1, "y")))
    assert (old.acks, new.acks) == ([], [(1, True)])


def test_delivery_reads_the_aiormq_message() -> None:
    """An agent-side delivery takes request id, reply queue and redelivery from aiormq's message."""
    from transports.amqp import AmqpDelivery

    transport = SimpleNamespace(max_message_size=1024, max_request_size=1024)
    props = wire.properties(correlation_id="r1", reply_to="cloudprov.replies.x")
    deliver = aiormq.spec.Basic.Deliver(consumer_tag="c", delivery_tag=5, redelivered=True, routing_key="q")
    message = DeliveredMessage(delivery=deliver, header=ContentHeader(properties=props), body=b"{}", channel=None)
    delivery = AmqpDelivery(transport, message, 1, "q")  # type: ignore[arg-type]
    assert (delivery.request_id, delivery.reply_to, delivery.delivery_count, delivery.payload) == (
        "r1",
        "cloudprov.replies.x",
        2,
        b"{}",
    )


def test_only_the_broker_makes_a_delivery_a_redelivery() -> None:
    """A publisher-set ``x-delivery-count`` on a first delivery counts for nothing (a redelivery skips the
    replay check); on a delivery the broker flags as redelivered, the quorum queue's count is read."""
    from transports.amqp import AmqpDelivery

    transport = SimpleNamespace(max_message_size=1024, max_request_size=1024)

    def delivered(redelivered: bool, count: object) -> int:
        props = wire.properties(correlation_id="r1", reply_to="q", headers={"x-delivery-count": count})
        deliver = aiormq.spec.Basic.Deliver(consumer_tag="c", delivery_tag=5, redelivered=redelivered, routing_key="q")
        message = DeliveredMessage(delivery=deliver, header=ContentHeader(properties=props), body=b"{}", channel=None)
        return AmqpDelivery(transport, message, 1, "q").delivery_count  # type: ignore[arg-type]

    assert [delivered(False, count) for count in (1, 7)] == [1, 1]
    assert [delivered(True, count) for count in (3, 0, "x")] == [4, 2, 2]


class FakeStreamWriter:
    """Records what reaches the socket, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.transport = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def coalescing(queued: int) -> tuple[CoalescingWriter, FakeStreamWriter, asyncio.Queue[int]]:
    inner, queue = FakeStreamWriter(), asyncio.Queue[int]()
    for frame in range(queued):
        queue.put_nowait(frame)
    return CoalescingWriter(inner, queue), inner, queue  # type: ignore[arg-type]


async def test_frames_the_writer_takes_together_leave_in_one_write_in_order() -> None:
    """Frames written while more wait in the write queue go out with the last of them, as one write."""
    writer, inner, queue = coalescing(queued=3)
    for frame in (b"publish-1", b"publish-2", b"ack"):
        queue.get_nowait()  # as aiormq's writer does: take the frame, then write it
        writer.write(frame)
    assert inner.writes == [b"publish-1publish-2ack"]
    writer.write(b"alone")
    assert inner.writes == [b"publish-1publish-2ack", b"alone"]


async def test_drain_and_close_send_what_is_kept_first() -> None:
    """A frame someone waits for (drain) and the last frames before closing are never held back."""
    writer, inner, _queue = coalescing(queued=1)
    writer.write(b"close")
    await writer.drain()
    assert inner.writes == [b"close"]
    writer.write(b"close-ok")
    writer.close()
    assert (inner.writes, inner.closed) == ([b"close", b"close-ok"], True)
