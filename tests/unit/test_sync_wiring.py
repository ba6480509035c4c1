"""JobWiring: one requester per endpoint URL, clients that follow key rotation, targets opened, rules from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocol.envelope import Response, decode_request
from protocol.signing import Signer
from service.provisioning.state import Job
from service.provisioning.wiring import JobWiring, WiringError, static_endpoints
from transports.base import Requester


class RecordingRequester(Requester):
    """Answers every request with 200 and remembers the key id each was signed with."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key_ids: list[str | None] = []
        self.connected = False
        self.closed = False

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.closed = True

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        request = decode_request(payload)
        self.key_ids.append(request.key_id)
        return Response(request.id, 200, {"Resources": []}).encode()


def _job(domain: str = "a.example", **settings: Any) -> Job:
    return Job("job", domain, "embedded:", settings=settings)


async def test_jobs_on_one_endpoint_share_one_requester_closed_at_the_end() -> None:
    """Two domains on the same URL get one connected requester; aclose closes it; no endpoint is an error."""
    made: list[RecordingRequester] = []

    def factory(url: str, options: Any) -> Requester:
        made.append(RecordingRequester(url))
        return made[-1]

    signer = Signer.generate("k1")

    async def current() -> Signer:
        return signer

    table: dict[str, Any] = {"a.example": "amqp://mq/x", "b.example": [{"url": "amqp://mq/x"}]}
    async with JobWiring(endpoints=static_endpoints(table), signer=current, requester_factory=factory) as wiring:
        first = await wiring.client_for(_job("a.example", timeout=7))
        second = await wiring.client_for(_job("b.example"))
        assert first.requester is second.requester
        assert first.timeout == 7
        assert [r.connected for r in made] == [True]
        with pytest.raises(WiringError, match=r"c\.example"):
            await wiring.client_for(_job("c.example"))
    assert made[0].closed


async def test_clients_follow_the_active_key_after_a_rotation() -> None:
    """After a rotation, a client signs with the new active key once its refresh interval has passed."""
    keys = [Signer.generate("old")]

    async def current() -> Signer:
        return keys[-1]

    requester = RecordingRequester("local://x")
    now = [0.0]
    async with JobWiring(
        endpoints=static_endpoints({"a.example": "local://x"}),
        signer=current,
        requester_factory=lambda url, options: requester,
        key_refresh=30,
        clock=lambda: now[0],
    ) as wiring:
        client = await wiring.client_for(_job())
        await client.call("GET", "/Users")
        keys.append(Signer.generate("new"))
        await client.call("GET", "/Users")
        now[0] = 31.0
        await client.call("GET", "/Users")
    assert requester.key_ids == ["old", "old", "new"]


async def test_target_is_opened_and_rules_come_from_the_settings() -> None:
    """target_for opens the job's target; rules_for builds the job's scope."""
    wiring = JobWiring(endpoints=static_endpoints({}), signer=lambda: None)  # type: ignore[arg-type,return-value]
    target = await wiring.target_for(_job())
    try:
        assert [o async for o in target.objects("User")] == []
    finally:
        await target.close()
    from service.provisioning.settings import JobSettings

    rules = wiring.rules_for(_job(), JobSettings.model_validate({"scoping": {"groups": ["staff"]}}))
    assert rules.uses_membership


async def test_a_job_that_cannot_be_wired_is_retried_later_not_every_poll(tmp_path: Path) -> None:
    """A job whose domain has no endpoint logs once and waits before the scheduler tries it again."""
    from structlog.testing import capture_logs

    from service.provisioning.jobs import Scheduler
    from service.provisioning.state import StateStore

    signer = Signer.generate("k")

    async def current() -> Signer:
        return signer

    async with (
        StateStore(f"sqlite:///{tmp_path}/state.db") as state,
        JobWiring(endpoints=static_endpoints({}), signer=current) as wiring,
    ):
        await state.put_job("job", "nowhere.example", "embedded:", schedule=60)
        scheduler = Scheduler(state, client_for=wiring.client_for, target_for=wiring.target_for, replica="r")
        with capture_logs() as logs:
            for _ in range(3):
                await scheduler._tick()
        await scheduler.aclose()
    warnings = [e for e in logs if e["event"] == "job cannot start"]
    assert len(warnings) == 1
    assert "nowhere.example" in warnings[0]["error"]
    assert warnings[0]["retry_in"] == 30.0
