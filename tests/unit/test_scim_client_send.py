"""ScimClient.call over a ``PostingRequester`` (sent as its batch is signed) behaves as over any ``Requester``."""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from protocol.envelope import Response
from protocol.signing import Signer
from service.client import ScimClient
from tests.contract.transport_suite import Responder, hold
from transports.base import Delivery, MessageTooLargeError, MisroutedReplyError, Requester, RequestTimeoutError
from transports.local import LocalBroker, LocalRequester, LocalSettings, LocalTransport

DOMAIN = "example.com"
SIGNER = Signer.generate("k1")


class PlainRequester(Requester):
    """Only ``request``: what ScimClient.call does with any requester that cannot send from a callback."""

    def __init__(self, inner: Requester) -> None:
        self.inner = inner
        self.reply_address = inner.reply_address

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        return await self.inner.request(domain, request_id, payload, timeout=timeout)


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    LocalBroker.discard(name)


def _fix_ids_and_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request ids 0001…, and a wall clock that stands still: the same calls make the same bytes."""
    counter = itertools.count(1)
    monkeypatch.setattr("service.client.os.urandom", lambda n: next(counter).to_bytes(n, "big"))
    monkeypatch.setattr("service.client.time.time", lambda: 1_767_225_600.0)


async def _calls(
    broker_name: str, posting: bool, calls: list[tuple[str, str, Any]], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[bytes], list[Any]]:
    """The envelopes a consumer receives for ``calls`` made together, and the responses the calls return."""
    settings = LocalSettings(broker=broker_name, max_message_size=4096)
    local = LocalRequester(settings)
    local.inbox = local.reply_address = "reply.calls"  # signed into each request: the same on every run
    async with LocalTransport([DOMAIN], settings) as transport, local:
        requester: Requester = local if posting else PlainRequester(local)
        client = ScimClient(requester, SIGNER, DOMAIN, timeout=30)
        async with Responder(transport) as responder:
            with monkeypatch.context() as patch:
                _fix_ids_and_clock(patch)
                responses = await asyncio.gather(*(client.call(m, p, body=b) for m, p, b in calls))
        assert local._pending == {}  # every expectation forgotten
        return [delivery.payload for delivery in responder.seen], [(r.request_id, r.status, r.body) for r in responses]


async def test_posted_calls_send_and_return_what_requested_calls_do(
    broker_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls sent as their batch is signed put the same bytes on the wire, and return the same, as through
    ``Requester.request``: alone (a plain signature) and together (a batch with proofs)."""
    for calls in (
        [("GET", "/Users/1", None)],
        [("GET", f"/Users/{n}", None) for n in range(5)] + [("PATCH", "/Users/9", {"Operations": []})],
    ):
        posted = await _calls(broker_name, True, calls, monkeypatch)
        requested = await _calls(broker_name, False, calls, monkeypatch)
        assert posted == requested
        assert len(posted[0]) == len(calls)


@pytest.mark.parametrize("posting", [True, False])
async def test_a_refused_body_fails_its_own_call_only(broker_name: str, posting: bool) -> None:
    """A NaN body is a ValueError for its call, before anything is sent; the calls batched with it go through."""
    settings = LocalSettings(broker=broker_name)
    async with LocalTransport([DOMAIN], settings) as transport, LocalRequester(settings) as local:
        client = ScimClient(local if posting else PlainRequester(local), SIGNER, DOMAIN, timeout=30)
        async with Responder(transport) as responder:
            good, bad = await asyncio.gather(
                client.call("POST", "/Users", body={"n": 1}),
                client.call("POST", "/Users", body={"n": math.nan}),
                return_exceptions=True,
            )
        assert not isinstance(good, BaseException)
        assert good.status == 200
        assert isinstance(bad, ValueError)
        assert len(responder.seen) == 1
        assert local._pending == {}


@pytest.mark.parametrize("posting", [True, False])
async def test_a_call_too_large_fails_before_it_is_sent(broker_name: str, posting: bool) -> None:
    """A request beyond max_message_size is MessageTooLargeError either way, and nothing is queued."""
    settings = LocalSettings(broker=broker_name, max_message_size=512)
    async with LocalRequester(settings) as local:
        client = ScimClient(local if posting else PlainRequester(local), SIGNER, DOMAIN, timeout=30)
        with pytest.raises(MessageTooLargeError):
            await client.call("POST", "/Users", body={"x": "y" * 1000})
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 0
        assert local._pending == {}


@pytest.mark.parametrize("posting", [True, False])
async def test_an_unanswered_call_times_out(broker_name: str, posting: bool) -> None:
    """No reply within the timeout is RequestTimeoutError either way, and the expectation is forgotten."""
    settings = LocalSettings(broker=broker_name)
    async with LocalTransport([DOMAIN], settings) as transport, LocalRequester(settings) as local:
        client = ScimClient(local if posting else PlainRequester(local), SIGNER, DOMAIN, timeout=0.1)
        async with Responder(transport, hold):
            with pytest.raises(RequestTimeoutError):
                await client.call("GET", "/Users")
        assert local._pending == {}


@pytest.mark.parametrize("posting", [True, False])
async def test_a_reply_answering_another_request_is_refused(broker_name: str, posting: bool) -> None:
    """A reply whose envelope answers another request than the one it came for (the correlation id is not
    signed: misrouted, or an agent's 401 to someone's junk sent to our reply queue) does not stand for the
    answer: the call fails as a broken transport, which the source reader retries."""

    async def answer_another(responder: Responder, delivery: Delivery) -> None:
        await delivery.reply(Response("attacker-1", 401, {"detail": "unsigned"}).encode())
        await delivery.ack()

    settings = LocalSettings(broker=broker_name)
    async with LocalTransport([DOMAIN], settings) as transport, LocalRequester(settings) as local:
        client = ScimClient(local if posting else PlainRequester(local), SIGNER, DOMAIN, timeout=5)
        async with Responder(transport, answer_another):
            with pytest.raises(MisroutedReplyError, match="answers request 'attacker-1'"):
                await client.call("GET", "/Users")


async def test_a_call_cancelled_before_its_batch_is_signed_is_not_sent(broker_name: str) -> None:
    """A posted call cancelled while its batch waits is left out of the batch: nothing reaches the queue."""
    settings = LocalSettings(broker=broker_name)
    async with LocalRequester(settings) as local:
        client = ScimClient(local, SIGNER, DOMAIN, timeout=30, batch_linger=5.0)
        client._in_flight = 20  # others "in flight" (one is not more than a sixteenth of them): the batch lingers
        call = asyncio.ensure_future(client.call("GET", "/Users"))
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        client._batcher._flush()
        assert LocalBroker.named(broker_name).depth(DOMAIN) == 0
        assert local._pending == {}
