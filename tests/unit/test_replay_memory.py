"""The agent's replay memory across a restart: a copy of a request accepted before it is still a replay after."""

from __future__ import annotations

import json
import re
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import replays
from agent.idempotency import ResponseStore
from protocol.envelope import decode_response
from protocol.replayguard import ReplayGuard
from protocol.signing import Signer
from tests.agent_support import DOMAIN, PATCH_SCHEMA, AgentHarness, HandDelivery, running_agent
from transports.base import Settlement
from transports.local import LocalBroker


def agent_on(broker: str, signer: Signer, state: Path) -> AbstractAsyncContextManager[AgentHarness]:
    """An agent with its state in ``state`` on local broker ``broker`` (both outlive it), and a client."""
    return running_agent(broker=broker, signer=signer, state_dir=state, memory={"seed_users": 3, "seed_groups": 0})


def _title(title: str) -> dict[str, object]:
    return {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": title}]}


async def test_a_write_copied_or_redelivered_after_a_restart_is_not_applied_again(tmp_path: Path) -> None:
    """A PATCH answered before the agent restarted does not run again after it: a fresh copy (published again)
    is dropped without an answer, a redelivered copy gets the answer it had, and a copy whose answer is no
    longer kept is refused 409. (Without the saved memory every copy ran again: after a later change, it
    undid that change.)"""
    broker, signer = "replay-restart", Signer.generate("test")
    try:
        async with agent_on(broker, signer, tmp_path) as harness:
            client = harness.client
            found = await client.search("/Users", 'userName eq "user00001"')
            path = f"/Users/{found['Resources'][0]['id']}"
            first = client.request("PATCH", path, body=_title("first"))
            assert (await client.send(first)).status == 200
            assert (await client.call("PATCH", path, body=_title("second"))).status == 200
        assert replays.path_in(tmp_path).exists()
        async with agent_on(broker, signer, tmp_path) as harness:  # a memory directory seeded afresh
            agent, client = harness.agent, harness.client
            dispatcher = agent.dispatcher
            before = (await client.call("GET", path)).body["title"]
            copy, redelivered = HandDelivery(first.encode()), HandDelivery(first.encode(), delivery_count=2)
            await dispatcher.process(copy)
            await dispatcher.process(redelivered)
            assert (copy.settlement, copy.replies) == (Settlement.ACK, [])
            assert (redelivered.response.status, redelivered.response.body["title"]) == (200, "first")
            dispatcher.responses = ResponseStore()  # the answer no longer kept
            refused = decode_response(await client.requester.request(DOMAIN, first.id, first.encode(), timeout=10))
            assert refused.status == 409
            assert "replay" in refused.body["detail"]
            assert (await client.call("GET", path)).body["title"] == before != "first"
    finally:
        LocalBroker.discard(broker)


async def test_a_damaged_replay_memory_is_reported_and_the_agent_starts(tmp_path: Path) -> None:
    """A replay memory that is not what the agent wrote is named in a warning; the agent serves anyway."""
    replays.path_in(tmp_path).write_text('{"v": 1, "guard": {"ids": [["r1", "soon"]]}}')
    broker, signer = "replay-damaged", Signer.generate("test")
    try:
        with capture_logs() as logs:
            async with agent_on(broker, signer, tmp_path) as harness:
                assert (await harness.client.call("GET", "/Users")).status == 200
    finally:
        LocalBroker.discard(broker)
    warnings = [entry for entry in logs if entry["log_level"] == "warning" and "replay memory" in entry["event"]]
    assert warnings
    assert "the deadline of 'r1' is not a number" in warnings[0]["error"]


def test_the_saved_memory_holds_what_is_live_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    """``save`` writes the live ids and the responses kept (owner-only file); ``restore`` brings back those
    still live then, each response for the time it had left."""
    now = time.time()
    guard = ReplayGuard()
    guard.remember("gone", now - 1, now - 100)
    guard.remember("live", now + 60, now - 100)
    guard.remember("later", now + 600, now - 100)
    answers = ResponseStore(ttl=3600)
    answers.put("later", b'{"status":201}')
    answers.put("soon", b'{"status":200}', ttl=0.5)
    path = replays.path_in(tmp_path / "state")
    assert replays.save(guard, answers, path, now) == (2, 2)
    assert path.stat().st_mode & 0o777 == 0o600
    assert {item[0] for item in json.loads(path.read_text())["guard"]["ids"]} == {"live", "later"}
    restored, kept = ReplayGuard(), ResponseStore()
    time.sleep(0.6)  # "soon" has no time left once restored
    assert replays.restore(restored, kept, path, now + 120) == (1, 1)
    assert restored.seen("later")
    assert not restored.seen("live")
    assert not restored.unprovable("live", now + 60)
    assert kept.get("later") == b'{"status":201}'
    assert kept.get("soon") is None
    assert replays.restore(ReplayGuard(), ResponseStore(), tmp_path / "absent.json", now) == (0, 0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "is not JSON"),
        ('{"v": 2, "guard": {}}', "is not a version 1 replay memory"),
        ('{"v": 1, "guard": {"ids": [["r1"]]}}', "an entry is not [id, deadline]"),
        ('{"v": 1, "guard": {"ids": [["r1", NaN]]}}', "the deadline of 'r1' is not a number"),
        ('{"v": 1, "saved_at": 1, "guard": {"ids": []}, "responses": [["r1", 5]]}', "a response is not [id, seconds"),
        ('{"v": 1, "guard": {"ids": []}, "responses": [["r1", 5, "{}"]]}', "'saved_at' is not a time"),
    ],
)
def test_a_damaged_file_is_named_with_its_problem(tmp_path: Path, text: str, problem: str) -> None:
    """Each way a replay memory can be damaged is refused with the file and what is wrong with it."""
    path = tmp_path / "replay-memory.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        replays.restore(ReplayGuard(), ResponseStore(), path, 0.0)
    assert str(path) in str(caught.value)
