"""Health server and metrics: /healthz, /readyz flips with the directory, /metrics after a known workload."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentSettings
from agent.health import Heartbeat, health_service
from agent.metrics import METRIC_NAMES, AgentMetrics, metrics_for, operation_label
from agent.runtime import Agent
from protocol.envelope import Request
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from transports.base import RequestTimeoutError
from transports.local import LocalBroker, LocalRequester

DOMAIN = "example.com"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


@dataclass
class Running:
    agent: Agent
    client: ScimClient
    requester: LocalRequester
    base: str
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.text()

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path) as response:
            return response.status, await response.json()

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by name and sorted labels."""
        status, text = await self.get("/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def wait_ready(self, ready: bool) -> Any:
        """Poll /readyz until it says ``ready`` (bounded by the caller's timeout); return its body."""
        while True:
            status, body = await self.get_json("/readyz")
            if (status == 200) == ready:
                return body
            await asyncio.sleep(0.02)


def settings_for(broker: str, signer: Signer, **health: Any) -> AgentSettings:
    return AgentSettings.model_validate(
        {
            # a state folder of its own: the replay memory it restores is its own
            "agent": {"id": "health-test", "domains": [DOMAIN], "state_dir": tempfile.mkdtemp(prefix="cloudprov-")},
            "transport": {"url": f"local://{broker}"},
            "directory": {"plugin": "memory", "seed_users": 5, "seed_groups": 1},
            "signing": {"public_keys": {signer.key_id: public_key_text(signer.public_key)}},
            "retry": {"attempts": 1, "initial_backoff": 0, "max_backoff": 0, "jitter": 0},
            "health": {
                "host": "127.0.0.1",
                "port": 0,
                "heartbeat_interval": 0.05,
                "directory_check_interval": 0.05,
                **health,
            },
        }
    )


@asynccontextmanager
async def running_agent(**health: Any) -> AsyncIterator[Running]:
    broker = f"health-{uuid.uuid4().hex}"
    signer = Signer.generate("k1")
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    agent = Agent(
        settings_for(broker, signer, **health),
        services=[functools.partial(health_service, on_listening=port.set_result)],
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(10):
            bound = await port
        async with LocalRequester.from_url(f"local://{broker}") as requester, aiohttp.ClientSession() as http:
            client = ScimClient(requester, signer, DOMAIN, timeout=10)
            yield Running(agent, client, requester, f"http://127.0.0.1:{bound}", http)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await runner
        LocalBroker.discard(broker)


async def test_healthz_answers_while_the_loop_runs() -> None:
    """/healthz is 200 with the heartbeat's lag while the agent's event loop is responsive."""
    async with running_agent() as run:
        status, body = await run.get_json("/healthz")
    assert status == 200
    assert body["alive"] is True
    assert body["loop_lag_s"] >= 0


def test_heartbeat_overdue_means_not_alive() -> None:
    """A heartbeat overdue by more than max_loop_lag is reported as an unresponsive event loop."""
    now = [100.0]
    heartbeat = Heartbeat(interval=1.0, max_lag=5.0, clock=lambda: now[0])
    assert heartbeat.problem() is None
    now[0] += 5.5
    assert heartbeat.problem() is None
    now[0] += 1.0
    assert "event loop unresponsive" in (heartbeat.problem() or "")


async def test_healthz_fails_when_the_heartbeat_stalls() -> None:
    """/healthz answers 503 with the reason once the heartbeat is overdue (clock moved, no waiting)."""
    offset = [0.0]

    def clock() -> float:
        return time.monotonic() + offset[0]

    broker = f"health-{uuid.uuid4().hex}"
    signer = Signer.generate("k1")
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    service = functools.partial(health_service, clock=clock, on_listening=port.set_result)
    agent = Agent(settings_for(broker, signer, heartbeat_interval=60, max_loop_lag=5), services=[service])
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(10), aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{await port}/healthz"
            async with http.get(url) as response:
                assert response.status == 200
            offset[0] = 1000.0
            async with http.get(url) as response:
                assert response.status == 503
                assert "event loop unresponsive" in (await response.json())["reason"]
    finally:
        stop.set()
        await runner
        LocalBroker.discard(broker)


async def test_readyz_flips_when_the_directory_stops_answering() -> None:
    """/readyz turns 503 with the reason when the directory is closed, and 200 again once it reopens."""
    async with running_agent() as run, asyncio.timeout(20):
        body = await run.wait_ready(True)
        assert body == {"ready": True, "reasons": []}
        await run.agent.directory.close()
        body = await run.wait_ready(False)
        assert any("directory unreachable" in reason for reason in body["reasons"])
        assert (await run.scrape())[("cloudprov_agent_directory_up", ())] == 0
        await run.agent.directory.open()
        body = await run.wait_ready(True)
        assert body["reasons"] == []
        assert (await run.scrape())[("cloudprov_agent_directory_up", ())] == 1


async def test_readyz_flips_when_the_directory_times_out() -> None:
    """A directory ping that hangs past directory_check_timeout makes the agent not ready, never the probe hang."""
    async with running_agent(directory_check_timeout=0.05) as run, asyncio.timeout(20):
        await run.wait_ready(True)
        release = asyncio.Event()
        original = run.agent.directory.ping

        async def hanging_ping() -> None:
            await release.wait()

        run.agent.directory.ping = hanging_ping  # type: ignore[method-assign]
        body = await run.wait_ready(False)
        assert any("did not answer a ping" in reason for reason in body["reasons"])
        run.agent.directory.ping = original  # type: ignore[method-assign]
        release.set()
        await run.wait_ready(True)


async def test_bootstrap_age_is_exposed_once_reported() -> None:
    """bootstrap_age_seconds appears after the lifecycle hook reports a bootstrap, and counts from it."""
    async with running_agent() as run, asyncio.timeout(20):
        assert not any(name == "cloudprov_agent_bootstrap_age_seconds" for name, _ in await run.scrape())
        metrics_for(run.agent).bootstrap_succeeded(when=time.time() - 3600)
        assert (await run.scrape())[("cloudprov_agent_bootstrap_age_seconds", ())] >= 3600


async def test_metrics_count_a_known_workload() -> None:
    """After a scripted workload, the request, refusal, dead-letter and stage counts are exactly as sent."""
    async with running_agent() as run, asyncio.timeout(30):
        for _ in range(5):
            assert (await run.client.call("GET", "/Users", {"count": "2"})).status == 200
        created = await run.client.call(
            "POST", "/Users", body={"schemas": [USER_SCHEMA], "userName": "m.etric", "name": {"familyName": "Etric"}}
        )
        assert created.status == 201
        assert (await run.client.call("GET", "/Users/no-such-id")).status == 404
        unsigned = run.client.request("GET", "/Groups")
        bare = Request(unsigned.id, unsigned.domain, unsigned.operation, unsigned.deadline)
        await run.requester.request(DOMAIN, bare.id, bare.encode(), timeout=10)
        with pytest.raises(RequestTimeoutError):
            await run.requester.request(DOMAIN, "malformed-1", b"{not an envelope", timeout=0.2)
        samples = await run.scrape()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    requests = "cloudprov_agent_requests_total"
    assert value(requests, operation="GET /Users", outcome="2xx") == 5
    assert value(requests, operation="POST /Users", outcome="2xx") == 1
    assert value(requests, operation="GET /Users", outcome="4xx") == 1
    assert value(requests, operation="GET /Groups", outcome="4xx") == 1
    assert value("cloudprov_agent_refused_total", reason="UnsignedRequestError") == 1
    assert value("cloudprov_agent_dead_letters_total", reason="malformed") == 1
    assert value("cloudprov_agent_deliveries_total") == 9
    assert value("cloudprov_agent_redeliveries_total") == 0
    assert value("cloudprov_agent_stage_duration_seconds_count", stage="directory") == 7
    assert value("cloudprov_agent_stage_duration_seconds_count", stage="reply") == 8
    assert value("cloudprov_agent_stage_duration_seconds_bucket", stage="reply", le="+Inf") == 8
    assert value("cloudprov_agent_requests_in_flight") == 0
    assert value("cloudprov_agent_replay_memory_ids") == 7  # the requests that verified
    assert value("cloudprov_agent_replay_spill_bytes") == 0
    assert value("cloudprov_agent_ready") == 1
    assert value("cloudprov_agent_transport_connected") == 1
    exposed = {name for name, _labels in samples if name.startswith("cloudprov_agent_")}
    assert {name for name in exposed if not name.endswith("_created")} <= METRIC_NAMES


def test_redelivery_and_transport_wait_are_observed() -> None:
    """A delivery seen a second time counts as a redelivery; one with enqueued_at adds a transport_wait sample."""
    metrics = AgentMetrics()

    @dataclass
    class Seen:
        delivery_count: int
        enqueued_at: float | None = None

    metrics.received(Seen(1))
    metrics.received(Seen(2, enqueued_at=time.time()))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("cloudprov_agent_redeliveries_total", ())] == 1
    assert samples[("cloudprov_agent_deliveries_total", ())] == 2
    assert samples[("cloudprov_agent_stage_duration_seconds_count", (("stage", "transport_wait"),))] == 1


def test_registries_are_per_agent() -> None:
    """Two AgentMetrics in one process keep separate counts (no global registry)."""
    first, second = AgentMetrics(), AgentMetrics()
    first.retried()
    assert b"cloudprov_agent_retries_total 1.0" in first.render()
    assert b"cloudprov_agent_retries_total 0.0" in second.render()


def test_pool_stats_hook_is_read_at_scrape_time() -> None:
    """A directory offering pool_stats() shows up as LDAP pool gauges and an error counter."""

    class PooledDirectory:
        def pool_stats(self) -> dict[str, float]:
            return {"size": 3, "in_use": 1, "max_size": 8, "errors": 2}

    agent = Agent(AgentSettings(), directory=PooledDirectory())  # type: ignore[arg-type]
    text = AgentMetrics(agent).render().decode()
    assert "cloudprov_agent_ldap_pool_size 3.0" in text
    assert "cloudprov_agent_ldap_pool_in_use 1.0" in text
    assert "cloudprov_agent_ldap_errors_total 2.0" in text


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("GET", "/Users/abc?attributes=x", "GET /Users"),
        ("post", "/Groups/.search", "POST /Groups"),
        ("GET", "/Changes?watermark=w", "GET /Changes"),
        ("GET", "/../../etc/passwd", "GET /other"),
        ("BREW", "/Users", "other /Users"),
    ],
)
def test_operation_labels_are_bounded(method: str, path: str, label: str) -> None:
    """Operation labels keep only the method and a known endpoint, so hostile paths cannot grow the label set."""
    assert operation_label(method, path) == label
