"""The service's health server: /healthz, /readyz flips with the state store and the scheduler, /metrics after
known sync cycles (scraped over HTTP and parsed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from service.client import ScimClient
from service.config import HealthSection
from service.control.app import ControlPlaneServer
from service.health import METRIC_NAMES, ServiceHealth
from service.provisioning.engine import CycleReport
from service.provisioning.jobs import Scheduler
from service.provisioning.state import Job, StateStore
from service.provisioning.targets.base import Target
from tests.agent_support import AgentHarness, running_agent
from tests.integration.control_support import service_settings
from tests.provisioning_support import MemoryTarget, source_view

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
NOW = 2_000_000_000.0


def _settings(**values: Any) -> HealthSection:
    return HealthSection.model_validate({"host": "127.0.0.1", "port": 0, **values})


async def _get(health: ServiceHealth, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{health.port}{path}") as response:
        body = await (response.json() if path != "/metrics" else response.text())
        return response.status, body


async def _scrape(health: ServiceHealth) -> Samples:
    status, text = await _get(health, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _until(health: ServiceHealth, status: int, reason: str = "") -> Any:
    """Poll /readyz until it answers ``status`` (and, for 503, a reason starting with ``reason``); its body.

    Bounded: the checks run every few ms here."""
    async with asyncio.timeout(10):
        while True:
            code, body = await _get(health, "/readyz")
            if code == status and (code == 200 or any(r.startswith(reason) for r in body["reasons"])):
                return body
            await asyncio.sleep(0.01)


@pytest.fixture
async def h() -> AsyncIterator[AgentHarness]:
    async with running_agent(memory={"seed_users": 12, "seed_groups": 2}) as harness:
        yield harness


async def test_healthz_answers_while_the_loop_beats() -> None:
    """/healthz is 200 with the loop lag while the heartbeat runs, and /metrics already exposes readiness."""
    health = ServiceHealth(_settings(heartbeat_interval=0.01, check_interval=0.01))
    async with health.serving():
        status, body = await _get(health, "/healthz")
        assert (status, body["alive"]) == (200, True)
        await _until(health, 200)  # nothing to check and no scheduler expected: ready
        assert (await _scrape(health))[("cloudprov_service_ready", ())] == 1


async def test_healthz_fails_when_the_heartbeat_is_overdue() -> None:
    """A heartbeat more than max_loop_lag overdue turns /healthz into 503 with the reason."""
    now = [100.0]
    health = ServiceHealth(_settings(heartbeat_interval=1, max_loop_lag=5), loop_clock=lambda: now[0])
    async with TestClient(TestServer(health.app())) as client:
        assert (await client.get("/healthz")).status == 200
        now[0] += 7
        response = await client.get("/healthz")
        assert response.status == 503
        assert "heartbeat 6.0s overdue" in (await response.json())["reason"]


async def test_readyz_flips_with_the_state_store_and_the_scheduler(tmp_path: Path) -> None:
    """Not ready until the scheduler runs; not ready while the state store is closed; ready again once reopened."""
    async with (
        ControlPlaneServer(service_settings(tmp_path / "control")) as server,
        StateStore(f"sqlite:///{tmp_path}/state.db") as state,
    ):
        health = ServiceHealth(_settings(check_interval=0.01), server=server, expect_scheduler=True)
        async with health.serving():
            body = await _until(health, 503, "provisioning scheduler")
            assert body == {"ready": False, "reasons": ["provisioning scheduler not running"]}
            health.attach(state)
            assert await _until(health, 200) == {"ready": True, "reasons": []}
            await state.__aexit__(None, None, None)
            body = await _until(health, 503, "provisioning state store")
            assert [r.split(":")[0] for r in body["reasons"]] == ["provisioning state store unreachable"]
            assert (await _scrape(health))[("cloudprov_service_ready", ())] == 0
            await state.__aenter__()
            await _until(health, 200)
            health.detach()
            body = await _until(health, 503, "provisioning scheduler")
            assert body["reasons"] == ["provisioning scheduler not running"]


async def test_readyz_reports_a_control_plane_that_stopped_listening(tmp_path: Path) -> None:
    """A control plane whose listener is gone makes /readyz name it."""
    server = ControlPlaneServer(service_settings(tmp_path / "control"))
    async with server:
        health = ServiceHealth(_settings(check_interval=0.01), server=server)
        async with health.serving():
            await _until(health, 200)
            assert server._runner is not None
            await server._runner.cleanup()  # the listener closes; the store stays open
            body = await _until(health, 503, "control plane")
            assert body["reasons"][0].startswith("control plane: ConnectionError: not listening on 127.0.0.1:")


async def test_metrics_after_known_cycles(h: AgentHarness, tmp_path: Path) -> None:
    """Cycles of three jobs (synced, staged, quarantined) leave exact counters, histograms and per-job gauges."""
    source = await source_view(h)
    users, groups = len(source["users"]), len(source["groups"])
    members = sum(len(m) for m in source["groups"].values())
    targets = {"a": MemoryTarget(), "b": MemoryTarget(), "c": MemoryTarget()}
    await targets["a"].create("User", "stray-1", {"userName": "stray1"})
    for n in (1, 2):
        await targets["b"].create("User", f"stray-{n}", {"userName": f"stray{n}"})
    targets["c"].fail_after = 0

    async def client_for(job: Job) -> ScimClient:
        return h.client

    async def target_for(job: Job) -> Target:
        return targets[job.id]

    health = ServiceHealth(_settings(check_interval=3600), clock=lambda: NOW)
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as state, health.serving():
        base = {"timeout": 5, "lease_ttl": 30}
        await state.put_job("a", "example.com", "memory:", settings=base)
        await state.put_job("b", "example.com", "memory:", settings={**base, "deletion_threshold": 1})
        await state.put_job("c", "example.com", "memory:", settings={**base, "quarantine_after": 1})
        reports: list[tuple[str, CycleReport]] = []

        def on_cycle(job_id: str, report: CycleReport) -> None:
            reports.append((job_id, report))
            health.on_cycle(job_id, report)

        scheduler = Scheduler(
            state, client_for=client_for, target_for=target_for, on_cycle=on_cycle, on_progress=health.on_progress
        )
        health.attach(state)
        for job_id in ("a", "a", "b", "b", "c"):
            await scheduler.run_once(job_id)
        await scheduler.aclose()
        await health.check_once()
        samples = await _scrape(health)
        await state.delete_job("a")
        await health.check_once()
        after_delete = await _scrape(health)

    outcomes = [(job_id, r.kind, r.outcome) for job_id, r in reports]
    assert outcomes == [
        ("a", "full", "ok"),
        ("a", "delta", "ok"),
        ("b", "full", "staged"),
        ("b", "none", "skipped"),
        ("c", "full", "failed"),
    ]

    def value(name: str, **labels: str) -> float:
        return samples.get((f"cloudprov_service_{name}", tuple(sorted(labels.items()))), 0.0)

    for job_id, kind, outcome in outcomes:
        assert value("cycles_total", job_id=job_id, kind=kind, outcome=outcome) == 1
    assert value("cycle_duration_seconds_count", kind="full") == 3  # the skipped cycle has no duration
    assert value("cycle_duration_seconds_count", kind="delta") == 1
    for job_id in ("a", "b"):
        assert value("changes_total", job_id=job_id, action="create") == users + groups
        assert value("changes_total", job_id=job_id, action="member_add") == members
    assert value("changes_total", job_id="a", action="delete") == 1
    assert value("changes_total", job_id="b", action="delete") == 0
    assert value("changes_total", job_id="c", action="create") == 0
    assert value("staged_deletions", job_id="a") == 0
    assert value("staged_deletions", job_id="b") == 2
    assert [value("job_quarantined", job_id=j) for j in "abc"] == [0, 0, 1]
    assert value("job_failures", job_id="c") == 1
    first, second = reports[0][1], reports[1][1]
    assert second.finished is not None
    assert second.lag is not None
    assert value("lag_seconds", job_id="a") == NOW - (second.finished - second.lag)
    assert ("cloudprov_service_lag_seconds", (("job_id", "c"),)) not in samples  # never synced
    assert value("objects_per_second", job_id="b") == reports[2][1].rate
    assert value("objects_per_second", job_id="a") == (second.rate if second.rate is not None else first.rate)
    names = {name for name, _labels in samples if not name.endswith("_created")}
    assert names <= METRIC_NAMES, names - METRIC_NAMES
    assert METRIC_NAMES - names <= {"cloudprov_service_change_failures_total"}
    gauges = {
        f"cloudprov_service_{name}"
        for name in ("objects_per_second", "lag_seconds", "job_quarantined", "job_failures", "staged_deletions")
    }
    left = {name for name, labels in after_delete if ("job_id", "a") in labels and name in gauges}
    assert left == set(), "a deleted job's gauges are gone (its counters stay)"


async def test_service_run_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`cloudprov service run` starts the health server: /readyz turns 200, /metrics answers, SIGTERM exits 0."""
    config = tmp_path / "service.yaml"
    config.write_text(
        f"control: {{port: 0, public_hosts: [127.0.0.1], state_dir: {tmp_path / 'state'}}}\n"
        "provisioning: {poll: 0.05}\n"
        "health: {host: 127.0.0.1, port: 0, check_interval: 0.05}\n"
        "logging: {format: json}\n"
    )
    script = Path(sys.executable).with_name("cloudprov")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]
    proc = await asyncio.create_subprocess_exec(
        *command, "service", "run", "-c", str(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        health = ServiceHealth(_settings())
        async with asyncio.timeout(30):
            while health.port is None:
                line = await proc.stdout.readline()
                assert line, "service run exited before its health server listened"
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "health server listening":
                        health.port = int(event["port"])
        rest = asyncio.create_task(proc.stdout.read())  # keep the pipe drained
        assert await _until(health, 200) == {"ready": True, "reasons": []}
        assert (await _get(health, "/healthz"))[0] == 200
        assert "cloudprov_service_ready 1.0" in (await _get(health, "/metrics"))[1]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
        await rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
