"""The dispatcher over a real agent: verification before the directory, idempotency, settlement, limits."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent import runtime
from agent.idempotency import ResponseStore
from agent.scim.handler import Result, ScimHandler
from protocol.envelope import ScimOperation, decode_response
from protocol.replayguard import ReplayGuard
from protocol.signing import Signer
from service.client import ScimCallError, ScimClient
from tests.agent_support import DOMAIN, PATCH_SCHEMA, USER_SCHEMA, AgentHarness, HandDelivery, running_agent, wait_until
from transports.base import Delivery, Settlement, Transport
from transports.local import LocalRequester, LocalSettings, LocalTransport


def _new_user(name: str = "grace.hopper") -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": name, "name": {"givenName": "Grace", "familyName": "Hopper"}}


async def _still_there(harness: AgentHarness, path: str) -> bool:
    return (await harness.client.call("GET", path)).status == 200


async def test_request_and_reply() -> None:
    """A signed GET through the local transport is answered with the agent id, a status and timings."""
    async with running_agent() as harness:
        response = await harness.client.call("GET", "/Users", {"filter": 'userName eq "user00002"'})
        assert response.status == 200
        assert response.body["totalResults"] == 1
        assert response.agent_id == "test-agent"
        assert "handle_ms" in response.timing
        assert harness.agent.dispatcher.counters.answered == 1


async def test_unsigned_delete_is_refused_and_changes_nothing() -> None:
    """An unsigned DELETE is answered 401 and the user stays."""
    async with running_agent() as harness:
        user = await harness.user_id()
        signed = harness.client.request("DELETE", f"/Users/{user}")
        response = await harness.client.send(dataclasses.replace(signed, key_id=None, signature=None))
        assert response.status == 401
        assert "not signed" in response.body["detail"]
        assert await _still_there(harness, f"/Users/{user}")
        assert harness.agent.dispatcher.counters.refused == 1


async def test_forged_delete_is_refused_and_changes_nothing() -> None:
    """A DELETE whose path was changed after signing is answered 401 and neither user is deleted."""
    async with running_agent() as harness:
        victim, other = await harness.user_id("user00001"), await harness.user_id("user00002")
        signed = harness.client.request("DELETE", f"/Users/{other}")
        forged = dataclasses.replace(signed, operation=dataclasses.replace(signed.operation, path=f"/Users/{victim}"))
        response = await harness.client.send(forged)
        assert response.status == 401
        assert "does not verify" in response.body["detail"]
        assert await _still_there(harness, f"/Users/{victim}")
        assert await _still_there(harness, f"/Users/{other}")


async def test_delete_signed_by_an_untrusted_key_changes_nothing() -> None:
    """A DELETE signed by a key the agent does not trust is answered 401; the user stays."""
    async with running_agent() as harness:
        user = await harness.user_id()
        stranger = ScimClient(harness.requester, Signer.generate("stranger"), DOMAIN, timeout=10)
        response = await stranger.call("DELETE", f"/Users/{user}")
        assert response.status == 401
        assert await _still_there(harness, f"/Users/{user}")


async def test_expired_delete_is_refused_with_408() -> None:
    """A DELETE whose deadline passed is answered 408 and the user stays."""
    async with running_agent() as harness:
        user = await harness.user_id()
        harness.agent.verifier.clock_skew = 0
        signed = harness.client.request("DELETE", f"/Users/{user}")
        expired = harness.signer.sign(dataclasses.replace(signed, deadline=signed.deadline - 3600))
        response = await harness.client.send(expired)
        assert response.status == 408
        assert await _still_there(harness, f"/Users/{user}")


async def test_replayed_create_is_refused_with_409_and_not_applied() -> None:
    """A fresh copy of an accepted POST the agent no longer holds an answer for is a replay: 409, and only
    one user exists."""
    async with running_agent() as harness:
        signed = harness.client.request("POST", "/Users", body=_new_user())
        assert (await harness.client.send(signed)).status == 201
        dispatcher = harness.agent.dispatcher
        dispatcher.responses = ResponseStore()  # the answer forgotten (a restart keeps the replay window)
        replay = await harness.client.send(signed)
        assert replay.status == 409
        assert "replay" in replay.body["detail"]
        found = await harness.client.search("/Users", 'userName eq "grace.hopper"')
        assert found["totalResults"] == 1


async def test_a_fresh_copy_of_a_request_in_hand_is_dropped_without_an_answer() -> None:
    """A second first-delivery of a request the agent answered (a requester that published it again when a
    confirm was lost) is acked without a reply: the first copy's 201 is the answer, not a 409 that would
    reach the caller first; nor is the stored answer sent to the copy's unsigned reply queue."""
    async with running_agent() as harness:
        signed = harness.client.request("POST", "/Users", body=_new_user())
        assert (await harness.client.send(signed)).status == 201
        copy = HandDelivery(signed.encode())
        await harness.agent.dispatcher.process(copy)
        assert (copy.settlement, copy.replies) == (Settlement.ACK, [])
        assert harness.agent.dispatcher.counters.duplicates == 1
        found = await harness.client.search("/Users", 'userName eq "grace.hopper"')
        assert found["totalResults"] == 1


async def test_a_copy_of_an_answered_request_the_replay_memory_let_go_is_dropped_too() -> None:
    """A copy of an answered request whose id the exact replay memory let go (into its Bloom filters) is acked
    without a reply, as a copy of one it still holds is: a 503 would reach the caller before the answer."""
    async with running_agent() as harness:
        harness.agent.verifier.replays = ReplayGuard(max_entries=1)
        signed = harness.client.request("POST", "/Users", body=_new_user(), timeout=60)
        assert (await harness.client.send(signed)).status == 201
        assert (await harness.client.call("GET", "/Users", timeout=600)).status == 200  # the POST's id spills
        assert not harness.agent.verifier.replays.seen(signed.id)
        copy = HandDelivery(signed.encode())
        await harness.agent.dispatcher.process(copy)
        assert (copy.settlement, copy.replies) == (Settlement.ACK, [])
        assert harness.agent.dispatcher.counters.duplicates == 1


async def test_the_answer_goes_where_the_request_signed_not_to_whoever_copied_it() -> None:
    """A copy of a signed request that reaches the agent first, published by someone with an inbox of their
    own, has its answer sent to the inbox the request signed (``reply_to``): the copier gets nothing."""
    async with running_agent() as harness, LocalRequester.from_url(f"local://{harness.broker_name}") as copier:
        signed = harness.client.request("GET", "/Users", {"filter": 'userName eq "user00002"'})
        assert signed.reply_to == harness.requester.inbox
        waiter, timer = harness.requester.expect(signed.id, 10)
        copied, _ = copier.expect(signed.id, 10)
        copier.post(DOMAIN, signed.id, 10, signed.encode())
        answer = decode_response(await harness.requester.reply(signed.id, waiter, timer, 10))
        assert answer.request_id == signed.id
        assert answer.body["totalResults"] == 1
        assert not copied.done()
        copied.cancel()


async def test_redelivered_create_returns_the_stored_response() -> None:
    """A redelivered POST is answered with the first 201 body (not 409) and creates one user."""
    async with running_agent() as harness:
        signed = harness.client.request("POST", "/Users", body=_new_user())
        first = await harness.client.send(signed)
        assert first.status == 201
        again = HandDelivery(signed.encode(), delivery_count=2)
        await harness.agent.dispatcher.process(again)
        assert again.settlement is Settlement.ACK
        assert (again.response.status, again.response.body) == (first.status, first.body)
        assert harness.agent.dispatcher.counters.replayed_from_store == 1
        found = await harness.client.search("/Users", 'userName eq "grace.hopper"')
        assert found["totalResults"] == 1


async def test_redelivered_patch_is_applied_once() -> None:
    """A redelivered member-adding PATCH is answered from the store: the delta shows one change."""
    async with running_agent() as harness:
        user = (await harness.client.create("/Users", _new_user()))["id"]
        group = await harness.group()
        watermark = (await harness.client.changes(None))["watermark"]
        patch = {
            "schemas": [PATCH_SCHEMA],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user}]}],
        }
        signed = harness.client.request("PATCH", f"/Groups/{group['id']}", body=patch)
        first = await harness.client.send(signed)
        assert first.status in {200, 204}
        for count in (2, 3):
            again = HandDelivery(signed.encode(), delivery_count=count)
            await harness.agent.dispatcher.process(again)
            assert again.replies == [again.replies[0]]
            assert again.response.status == first.status
        changes = (await harness.client.changes(watermark))["Resources"]
        assert [(c["resourceType"], c["id"]) for c in changes] == [("Group", group["id"])]
        members = (await harness.client.get(f"/Groups/{group['id']}"))["members"]
        assert [m["value"] for m in members].count(user) == 1


async def test_duplicate_while_running_waits_for_the_first_copy() -> None:
    """A redelivery arriving while the first copy still runs gets its response instead of running again."""
    async with running_agent(memory={"latency": 1}) as harness:  # the first copy runs long enough to be seen
        signed = harness.client.request("POST", "/Users", body=_new_user())
        copy = HandDelivery(signed.encode(), delivery_count=2)
        first = asyncio.create_task(harness.client.send(signed))
        await wait_until(lambda: len(harness.agent.dispatcher.running) > 0)
        await harness.agent.dispatcher.process(copy)
        assert copy.response.status == 201
        assert copy.response.body == (await first).body


async def test_poison_is_dead_lettered_without_running() -> None:
    """A delivery handed out more than max_deliveries times is dead-lettered unread; its DELETE never runs."""
    async with running_agent(dispatcher={"max_deliveries": 3}) as harness:
        user = await harness.user_id()
        signed = harness.client.request("DELETE", f"/Users/{user}")
        poison = HandDelivery(signed.encode(), delivery_count=4)
        await harness.agent.dispatcher.process(poison)
        assert poison.settlement is Settlement.DEAD_LETTER
        assert "delivered 4 times" in poison.reason
        assert poison.replies == []
        assert await _still_there(harness, f"/Users/{user}")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00not json", "malformed envelope: request is not valid JSON"),
        (b"[]", "malformed envelope: request must be a JSON object"),
        (b'{"v": 1, "id": "x", "domain": "example.com", "deadline": 1}', "'op' must be dict"),
    ],
)
async def test_malformed_payload_is_dead_lettered_and_serving_goes_on(payload: bytes, reason: str) -> None:
    """A payload that is no envelope is dead-lettered with the reason, and the next request is answered."""
    async with running_agent() as harness:
        lost = asyncio.create_task(harness.requester.request(DOMAIN, "bad-1", payload, timeout=10))
        await harness.dead_letter_count(1)
        letter = harness.broker.dead_letters(DOMAIN)[0]
        assert letter.payload == payload
        assert reason in letter.reason
        lost.cancel()
        assert (await harness.client.call("GET", "/ServiceProviderConfig")).status == 200
        assert harness.agent.dispatcher.counters.dead_lettered == 1


async def test_oversized_payload_is_dead_lettered() -> None:
    """A message over scim.max_body_bytes is dead-lettered before it is parsed."""
    async with running_agent(scim={"max_body_bytes": 2048}) as harness:
        request = harness.client.request("POST", "/Users", body={**_new_user(), "title": "x" * 4096})
        lost = asyncio.create_task(harness.client.send(request))
        await harness.dead_letter_count(1)
        assert "exceeds the 2048-byte limit" in harness.broker.dead_letters(DOMAIN)[0].reason
        lost.cancel()
        found = await harness.client.search("/Users", 'userName eq "grace.hopper"')
        assert found["totalResults"] == 0


async def test_wrong_domain_is_answered_421() -> None:
    """A request for a domain the agent does not serve (misrouted onto its queue) is answered 421."""
    async with running_agent() as harness:
        elsewhere = ScimClient(harness.requester, harness.signer, "other.example", timeout=10)
        request = elsewhere.request("GET", "/Users")
        raw = await harness.requester.request(DOMAIN, request.id, request.encode(), timeout=10)
        assert json.loads(raw)["status"] == 421
        assert "other.example" in json.loads(raw)["body"]["detail"]


async def test_wrong_domain_on_a_shared_queue_is_answered_421() -> None:
    """An agent whose transport also consumes another domain's queue answers that domain's requests 421."""

    def both_domains(broker: str) -> LocalTransport:
        return LocalTransport([DOMAIN, "other.example"], LocalSettings(broker=broker))

    async with running_agent(transport=both_domains) as harness:
        elsewhere = ScimClient(harness.requester, harness.signer, "other.example", timeout=10)
        response = await elsewhere.call("DELETE", f"/Users/{await harness.user_id()}")
        assert response.status == 421
        assert await _still_there(harness, f"/Users/{await harness.user_id()}")


async def test_unavailable_directory_is_retried_then_answered_503() -> None:
    """With the directory down, the delivery is given back until max_deliveries, then answered 503.

    The redeliveries are not refused as replays (that would answer 409).
    """
    async with running_agent(memory={"faults": {"error_rate": 1.0}}, dispatcher={"max_deliveries": 3}) as harness:
        response = await harness.client.call("GET", "/Users")
        assert response.status == 503
        counters = harness.agent.dispatcher.counters
        assert counters.retried == 2
        assert counters.answered == 1
        assert harness.broker.dead_letters(DOMAIN) == []


async def test_max_in_flight_bounds_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    """No more than max_in_flight requests are handled at once, and the bound is reached under load."""
    running = 0
    peak = 0

    class Counted(ScimHandler):
        async def handle(self, op: ScimOperation) -> Result:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                return await super().handle(op)
            finally:
                running -= 1

    monkeypatch.setattr(runtime, "ScimHandler", Counted)  # the handler the agent makes
    async with running_agent(memory={"latency": 0.02}, dispatcher={"max_in_flight": 3}) as harness:
        responses = await asyncio.gather(
            *(harness.client.call("GET", "/Users", {"filter": f'userName eq "user{i:05d}"'}) for i in range(1, 21))
        )
        assert [r.status for r in responses] == [200] * 20
    assert peak == 3


_CALLER = contextvars.ContextVar[str]("caller")


async def test_requests_handed_over_run_in_the_agents_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local transport hands a request to the dispatcher in the callback that publishes it, on the
    requester's side; the request still runs in a context of the agent's (no log fields, no context
    variables of the caller), one of its own per request, and is handled at once, not a turn later."""
    seen: list[str | None] = []

    class Observing(ScimHandler):
        async def handle(self, op: ScimOperation) -> Result:
            seen.append(_CALLER.get(None))
            _CALLER.set("set by a request")  # stays in this request's context
            return await super().handle(op)

    monkeypatch.setattr(runtime, "ScimHandler", Observing)  # the handler the agent makes
    async with running_agent() as harness:
        _CALLER.set("the requester")
        responses = await asyncio.gather(*(harness.client.call("GET", "/ServiceProviderConfig") for _ in range(3)))
        assert [r.status for r in responses] == [200] * 3
        assert harness.agent.dispatcher.counters.answered == 3
    assert seen == [None, None, None]


async def test_handler_outliving_the_deadline_gets_504() -> None:
    """A request still running at its deadline is answered 504 instead of waiting for the directory."""
    async with running_agent(memory={"latency": 5.0}) as harness:
        request = harness.client.request("GET", "/Users/anything", timeout=0.3)
        response = await harness.client.send(request, timeout=10)
        assert response.status == 504
        assert "deadline" in response.body["detail"]


async def test_trusted_delivery_skips_signature_checks() -> None:
    """A delivery the transport authenticated itself (HTTP bearer) needs no envelope signature."""
    async with running_agent() as harness:
        signed = harness.client.request("GET", "/ServiceProviderConfig")
        bare = dataclasses.replace(signed, key_id=None, signature=None)
        delivery = HandDelivery(bare.encode(), trusted=True)
        await harness.agent.dispatcher.process(delivery)
        assert delivery.response.status == 200


async def test_agent_error_gives_the_delivery_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error while processing gives the delivery back; its redelivery is answered."""
    failures = [RuntimeError("bug")]

    class Flaky(ScimHandler):
        async def handle(self, op: ScimOperation) -> Result:
            if failures:
                raise failures.pop()
            return await super().handle(op)

    monkeypatch.setattr(runtime, "ScimHandler", Flaky)  # the handler the agent makes
    async with running_agent() as harness:
        response = await harness.client.call("GET", "/ServiceProviderConfig")
        assert response.status == 200
        assert harness.agent.dispatcher.counters.errors == 1


async def test_client_helpers_raise_on_errors_and_page_with_cursors() -> None:
    """``ScimClient.ok`` raises ``ScimCallError`` on an error status; ``read_all`` reads every user in pages."""
    async with running_agent() as harness:
        with pytest.raises(ScimCallError, match="SCIM 404") as caught:
            await harness.client.get("/Users/does-not-exist")
        assert caught.value.response.status == 404
        pages = [page async for page in harness.client.read_all("/Users", page_size=4)]
        assert [len(page) for page in pages] == [4, 4, 2]
        assert len({user["id"] for page in pages for user in page}) == 10


class _ListTransport(Transport):
    """Hands out the deliveries it was given, at once (no turn of the loop between them), then ends."""

    def __init__(self, deliveries: list[HandDelivery]) -> None:
        self._deliveries = deliveries

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def stop_consuming(self) -> None:
        pass

    async def deliveries(self) -> AsyncIterator[Delivery]:
        for delivery in self._deliveries:
            yield delivery


async def test_each_delivery_leaves_the_in_flight_count_and_frees_its_slot_as_it_ends() -> None:
    """Finished deliveries are no longer in flight and give their slots back, whatever their outcome."""
    async with running_agent(dispatcher={"max_in_flight": 2}) as harness:
        dispatcher = harness.agent.dispatcher
        signed = harness.client.request("GET", "/ServiceProviderConfig").encode()
        deliveries = [HandDelivery(signed if n % 2 else b"not an envelope") for n in range(6)]
        await dispatcher.consume(_ListTransport(deliveries))  # waits for slots: two at a time
        await wait_until(lambda: dispatcher.in_flight == 0)
        assert [d.settlement for d in deliveries].count(Settlement.DEAD_LETTER) == 3
        assert dispatcher._slots.take()  # both slots free again
        assert dispatcher._slots.take()
        dispatcher._slots.release()
        dispatcher._slots.release()


async def test_a_delivery_cancelled_before_it_started_is_forgotten_by_the_drain() -> None:
    """A task that never ran (cancelled before its first step) still leaves the in-flight count and its slot."""
    async with running_agent(dispatcher={"max_in_flight": 1}) as harness:
        dispatcher = harness.agent.dispatcher
        transport = _ListTransport([HandDelivery(b"not an envelope")])
        await dispatcher.consume(transport)  # made the delivery's task, which has not run yet
        (task,) = dispatcher._by_transport[id(transport)]
        task.cancel()
        assert await dispatcher.drain(5.0, transport) == 0  # it ended (cancelled) within the grace period
        assert dispatcher.in_flight == 0
        assert dispatcher._slots.take()
        dispatcher._slots.release()
