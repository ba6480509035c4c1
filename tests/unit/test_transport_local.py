"""The local transport: the Transport behaviour suite, plus what only an in-process broker shows."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from protocol.envelope import Response, decode_response
from tests.contract.transport_suite import Responder, TransportSuite, answer, hold, make_envelope
from transports.base import (
    AlreadySettledError,
    Delivery,
    MessageTooLargeError,
    Requester,
    RequestTimeoutError,
    Settlement,
    Transport,
    TransportClosedError,
    TransportError,
)
from transports.local import LocalBroker, LocalRequester, LocalTransport
from transports.registry import TransportSettingsError, create_requester, create_transport


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    LocalBroker.discard(name)


class TestLocalTransport(TransportSuite):
    @pytest.fixture(autouse=True)
    def _broker(self, broker_name: str) -> None:
        self.broker_name = broker_name
        self.url = f"local://{broker_name}?max_message_size=65536"

    def new_transport(self) -> Transport:
        return create_transport(self.url, domains=self.domains)

    def new_requester(self, transport: Transport) -> Requester:
        return create_requester(self.url)

    async def dead_lettered(self, domain: str) -> list[bytes] | None:
        return [letter.payload for letter in LocalBroker.named(self.broker_name).dead_letters(domain)]


def _envelope(path: str = "/Users") -> tuple[str, bytes]:
    return make_envelope(DOMAIN, path)


DOMAIN = TransportSuite.domains[0]


def test_url_names_the_broker() -> None:
    """``local://demo`` uses broker "demo" and ``local://`` the broker "default"."""
    assert LocalTransport.from_url("local://demo", domains=["d"]).settings.broker == "demo"
    assert LocalTransport.from_url("local://", domains=["d"]).settings.broker == "default"
    assert LocalRequester.from_url("local://demo").settings.broker == "demo"


def test_unknown_setting_suggests_the_right_one() -> None:
    """A misspelt URL setting is refused with the nearest known name."""
    with pytest.raises(TransportSettingsError, match="did you mean 'max_message_size'"):
        create_transport("local://x?max_mesage_size=10", domains=["d"])


async def test_unconnected_transport_fails_loudly(broker_name: str) -> None:
    """Consuming before ``connect()`` raises a clear error instead of waiting on nothing."""
    transport = LocalTransport([DOMAIN])
    with pytest.raises(TransportError, match="not connected"):
        await anext(aiter(transport.deliveries()))


async def test_dead_letters_keep_the_reason(broker_name: str) -> None:
    """A dead-lettered request is listed on its queue with the reason and its delivery count."""
    url = f"local://{broker_name}"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        request_id, payload = _envelope()
        pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
        delivery = await anext(aiter(transport.deliveries()))
        await delivery.dead_letter("unparseable filter")
        pending.cancel()
    letters = LocalBroker.named(broker_name).dead_letters(DOMAIN)
    assert [(d.payload, d.reason, d.delivery_count) for d in letters] == [(payload, "unparseable filter", 1)]


async def test_retry_delay_holds_the_message_back(broker_name: str) -> None:
    """With ``retry_delay`` a retried message is not queued at once but comes back after the delay."""
    url = f"local://{broker_name}?retry_delay=0.05"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        request_id, payload = _envelope()
        pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
        stream = aiter(transport.deliveries())
        first = await anext(stream)
        await first.retry_later("busy")
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 0
        second = await anext(stream)
        assert second.delivery_count == 2
        await answer(second)
        assert decode_response(await pending).request_id == request_id


async def test_requester_refuses_oversized_request(broker_name: str) -> None:
    """A request over ``max_message_size`` raises ``MessageTooLargeError`` before it is queued."""
    async with create_requester(f"local://{broker_name}?max_message_size=100") as requester:
        request_id, payload = _envelope("/Users/" + "x" * 200)
        with pytest.raises(MessageTooLargeError):
            await requester.request(DOMAIN, request_id, payload, timeout=1)
    assert LocalBroker.named(broker_name).depth(DOMAIN) == 0


async def test_replies_reach_the_requester_that_asked(broker_name: str) -> None:
    """Two requesters using the same request id each get the answer to their own request."""
    url = f"local://{broker_name}"
    async with (
        create_transport(url, domains=[DOMAIN]) as transport,
        create_requester(url) as one,
        create_requester(url) as two,
        Responder(transport),
    ):
        _, first = _envelope("/Users/one")
        _, second = _envelope("/Users/two")
        answers = await asyncio.gather(
            one.request(DOMAIN, "same-id", first, timeout=30), two.request(DOMAIN, "same-id", second, timeout=30)
        )
    assert [decode_response(a).body["path"] for a in answers] == ["/Users/one", "/Users/two"]


async def test_late_reply_is_dropped_and_counted(broker_name: str) -> None:
    """A reply after the requester gave up (here: its caller was cancelled once the request was delivered)
    is dropped without error and counted on the broker."""
    url = f"local://{broker_name}"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        request_id, payload = _envelope()
        pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
        delivery = await anext(aiter(transport.deliveries()))
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await answer(delivery)
    assert LocalBroker.named(broker_name).dropped_replies == 1


async def test_expired_request_is_never_delivered(broker_name: str) -> None:
    """A request whose requester stopped waiting leaves the queue unseen by the consumer."""
    url = f"local://{broker_name}"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        request_id, payload = _envelope("/Users/stale")
        with pytest.raises(RequestTimeoutError):
            await requester.request(DOMAIN, request_id, payload, timeout=0.01)
        async with Responder(transport) as responder:
            fresh_id, fresh = _envelope("/Users/fresh")
            await requester.request(DOMAIN, fresh_id, fresh, timeout=30)
    assert responder.seen_paths() == ["/Users/fresh"]
    assert LocalBroker.named(broker_name).expired == 1


async def test_one_transport_serves_several_domains(broker_name: str) -> None:
    """A transport consuming two domains answers requests sent to either."""
    url = f"local://{broker_name}"
    async with (
        create_transport(url, domains=["a.test", "b.test"]) as transport,
        create_requester(url) as requester,
        Responder(transport),
    ):
        _, payload = _envelope()
        answers = await asyncio.gather(
            requester.request("a.test", "1", payload, timeout=30), requester.request("b.test", "2", payload, timeout=30)
        )
    assert [decode_response(a).status for a in answers] == [200, 200]


async def test_competing_consumers_each_get_distinct_messages(broker_name: str) -> None:
    """Two transports on one domain share its messages: each request is handed out exactly once."""
    url = f"local://{broker_name}"
    async with (
        create_transport(url, domains=[DOMAIN]) as left,
        create_transport(url, domains=[DOMAIN]) as right,
        create_requester(url) as requester,
        Responder(left) as lefty,
        Responder(right) as righty,
    ):
        envelopes = [_envelope(f"/Users/{i}") for i in range(20)]
        await asyncio.gather(*(requester.request(DOMAIN, rid, p, timeout=30) for rid, p in envelopes))
    assert sorted(lefty.seen_paths() + righty.seen_paths()) == sorted(f"/Users/{i}" for i in range(20))


async def test_message_handed_to_a_cancelled_consumer_is_not_lost(broker_name: str) -> None:
    """A message given to a consumer cancelled before it woke goes back to the front of the queue."""
    url = f"local://{broker_name}"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        waiting = asyncio.create_task(anext(aiter(transport.deliveries())))
        await asyncio.sleep(0)  # the consumer now waits on the empty queue
        request_id, payload = _envelope()
        pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
        await asyncio.sleep(0)  # the request is published and handed to the waiting consumer ...
        waiting.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with Responder(transport, hold) as responder:
            await responder.until(lambda: bool(responder.seen), "the request to be handed out again")
        assert responder.seen[0].payload == payload
        assert responder.seen[0].delivery_count == 1
        await answer(responder.seen[0])
        assert decode_response(await pending).request_id == request_id


@contextlib.asynccontextmanager
async def _delivered_then_closed(broker_name: str) -> AsyncIterator[tuple[str, Delivery]]:
    """A request's id and its delivery, taken by a transport that was closed after handing it out (the
    request's caller stops waiting when the block ends)."""
    url = f"local://{broker_name}"
    transport = create_transport(url, domains=[DOMAIN])
    async with transport, create_requester(url) as requester:
        request_id, payload = _envelope()
        pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
        delivery = await anext(aiter(transport.deliveries()))
        await transport.close()
        try:
            yield request_id, delivery
        finally:
            pending.cancel()


async def test_acking_after_close_is_refused_and_the_message_comes_back(broker_name: str) -> None:
    """A delivery returned by close() cannot be acked any more: the ack raises and the message stays queued."""
    async with _delivered_then_closed(broker_name) as (_, delivery):
        with pytest.raises(TransportClosedError):
            await delivery.ack()
        assert delivery.settlement is None
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 1


async def test_reply_and_ack_now_does_what_reply_then_ack_do(broker_name: str) -> None:
    """``reply_and_ack_now`` (the dispatcher's way to end a delivery) routes the same reply and settles as
    ``reply`` then ``ack``: the requester gets it, the delivery is acked and gone from the unsettled."""
    url = f"local://{broker_name}"
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        assert isinstance(transport, LocalTransport)
        results = []
        for now in (True, False):
            request_id, payload = _envelope()
            pending = asyncio.create_task(requester.request(DOMAIN, request_id, payload, timeout=30))
            delivery = await anext(aiter(transport.deliveries()))
            reply = Response(request_id, 200, {"now": True}, agent_id="a").encode()
            if now:
                assert delivery.reply_and_ack_now(reply)
            else:
                await delivery.reply(reply)
                await delivery.ack()
            results.append((await pending == reply, delivery.settlement, len(transport._unsettled)))
            assert not delivery.reply_and_ack_now(reply)  # settled: the general path raises what applies
            with pytest.raises(AlreadySettledError):
                await delivery.ack()
        assert results == [(True, Settlement.ACK, 0)] * 2
    assert LocalBroker.named(broker_name).depth(DOMAIN) == 0


async def test_reply_and_ack_now_after_close_does_nothing(broker_name: str) -> None:
    """After close(), ``reply_and_ack_now`` does nothing and says so (reply and ack then raise), and the
    message stays queued for another agent."""
    async with _delivered_then_closed(broker_name) as (request_id, delivery):
        assert not delivery.reply_and_ack_now(Response(request_id, 200).encode())
        assert delivery.settlement is None
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 1


def _publish(requester: Requester, path: str, timeout: float = 30) -> tuple[bytes, asyncio.Future[bytes]]:
    """Publish a request as ``ScimClient`` does over the local transport (``expect``, then ``post``, which
    publishes at once); returns the payload and the future its reply resolves."""
    assert isinstance(requester, LocalRequester)
    request_id, payload = _envelope(path)
    waiter, _ = requester.expect(request_id, 30)
    requester.post(DOMAIN, request_id, timeout, payload)
    return payload, waiter


def _forget(*waiters: asyncio.Future[bytes]) -> None:
    for waiter in waiters:
        waiter.cancel()  # the test is done with it: the requester's close would fail it instead


async def test_hand_over_takes_a_request_in_the_call_that_publishes_it(broker_name: str) -> None:
    """A consumer that takes deliveries as they arrive gets each one inside ``post``, not a turn later,
    and its reply reaches the requester as any delivery's does."""
    url = f"local://{broker_name}"
    taken: list[Delivery] = []
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        assert transport.hand_over(lambda delivery: taken.append(delivery) is None)
        payload, waiter = _publish(requester, "/Users")
        assert [d.payload for d in taken] == [payload]  # no await in between
        assert taken[0].delivery_count == 1
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 0
        assert taken[0].reply_and_ack_now(b"answer")
        assert await waiter == b"answer"


async def test_hand_over_refused_goes_to_deliveries_and_keeps_the_order(broker_name: str) -> None:
    """A delivery the taker refuses waits for ``deliveries()``; while it waits, later requests queue behind
    it instead of being taken ahead of it; the refused one is handed out once, not twice."""
    url = f"local://{broker_name}"
    accept = False
    taken: list[bytes] = []

    def take(delivery: Delivery) -> bool:
        if accept:
            taken.append(delivery.payload)
        return accept

    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        transport.hand_over(take)
        first, first_reply = _publish(requester, "/Users/first")  # refused: queued
        accept = True
        second, second_reply = _publish(requester, "/Users/second")  # taken only after the first
        assert taken == []
        deliveries = aiter(transport.deliveries())
        got = [await anext(deliveries), await anext(deliveries)]
        assert [d.payload for d in got] == [first, second]
        assert [d.delivery_count for d in got] == [1, 1]
        for delivery in got:
            await answer(delivery)
        await asyncio.gather(first_reply, second_reply)


async def test_hand_over_ends_when_consuming_stops(broker_name: str) -> None:
    """After ``stop_consuming`` the taker is offered nothing: requests wait in the queue for a consumer."""
    url = f"local://{broker_name}"
    taken: list[Delivery] = []
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        transport.hand_over(lambda delivery: taken.append(delivery) is None)
        await transport.stop_consuming()
        assert not transport.hand_over(lambda delivery: taken.append(delivery) is None)
        _, waiter = _publish(requester, "/Users")
        assert taken == []
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 1
        _forget(waiter)


async def test_hand_over_drops_an_expired_request_unseen(broker_name: str) -> None:
    """A request whose requester stopped waiting is not offered to the taker, and is counted."""
    url = f"local://{broker_name}"
    taken: list[Delivery] = []
    async with create_transport(url, domains=[DOMAIN]) as transport, create_requester(url) as requester:
        transport.hand_over(lambda delivery: taken.append(delivery) is None)
        _, waiter = _publish(requester, "/Users", timeout=-1)  # expired as it is published
        assert taken == []
        assert LocalBroker.named(broker_name).expired == 1
        _forget(waiter)


async def test_competing_takers_share_the_requests(broker_name: str) -> None:
    """Two transports taking deliveries as they arrive on one domain are offered requests in turn."""
    url = f"local://{broker_name}"
    left: list[Delivery] = []
    right: list[Delivery] = []
    async with (
        create_transport(url, domains=[DOMAIN]) as one,
        create_transport(url, domains=[DOMAIN]) as other,
        create_requester(url) as requester,
    ):
        one.hand_over(lambda delivery: left.append(delivery) is None)
        other.hand_over(lambda delivery: right.append(delivery) is None)
        waiters = [_publish(requester, f"/Users/{i}")[1] for i in range(10)]
        assert len(left) == len(right) == 5
        assert {d.payload for d in left}.isdisjoint(d.payload for d in right)
        _forget(*waiters)
