"""Health and metrics over HTTP, on a port of its own: ``/healthz``, ``/readyz``, ``/metrics``.

What it is
    ``health_service`` is an ``Agent.services`` entry (``cloudprov agent run`` adds it when
    ``health.enabled``). It runs three things while the agent serves: an event-loop ``Heartbeat``, a
    ``DirectoryProbe`` that pings the directory and caches the answer (registered as one of the
    agent's readiness checks), and an aiohttp server:

    * ``GET /healthz`` — 200 while the process runs and its event loop is responsive (the heartbeat
      is at most ``max_loop_lag`` seconds overdue), else 503. Liveness: a failure means restart.
    * ``GET /readyz`` — 200 when ``agent.not_ready_reasons()`` is empty (running, transport connected,
      directory answered its last ping, and whatever other services check: bootstrap freshness is
      ``agent/lifecycle``'s ``control_plane.stale_after``), else 503 with
      ``{"ready": false, "reasons": [...]}``. Readiness: a failure means "send no work".
    * ``GET /metrics`` — the agent's Prometheus metrics (``agent.metrics``), text format 0.0.4.

Settings
    ``AgentSettings.health``: ``enabled``, ``host`` (0.0.0.0: a kubelet probes the pod IP), ``port``
    (8081; 0 picks a free port, logged as ``health server listening``), ``heartbeat_interval``,
    ``max_loop_lag``, ``directory_check_interval``, ``directory_check_timeout``.

Guarantees
    Probes never touch the directory: ``/readyz`` reads the cached ping result, so a burst of probes
    costs the directory nothing and a hung directory cannot hang a probe. Bodies are small JSON
    documents without secrets. The server closes when the service is cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent.config import HealthSection
from agent.metrics import AgentMetrics, metrics_for

if TYPE_CHECKING:
    from agent.runtime import Agent

_log = structlog.get_logger("cloudprov.health")
Clock = Callable[[], float]


class Heartbeat:
    """Ticks every ``interval`` seconds; its lateness tells whether the event loop keeps up."""

    def __init__(self, interval: float, max_lag: float, clock: Clock = time.monotonic) -> None:
        self.interval = interval
        self.max_lag = max_lag
        self.clock = clock
        self.last_beat = clock()
        self.lag = 0.0

    async def run(self, on_beat: Callable[[float], None] | None = None) -> None:
        while True:
            before = self.clock()
            await asyncio.sleep(self.interval)
            now = self.clock()
            self.lag = max(now - before - self.interval, 0.0)
            self.last_beat = now
            if on_beat is not None:
                on_beat(self.lag)

    def problem(self) -> str | None:
        """None when the loop is responsive, else why not."""
        overdue = self.clock() - self.last_beat - self.interval
        if overdue > self.max_lag:
            return f"event loop unresponsive: heartbeat {overdue:.1f}s overdue (limit {self.max_lag:g}s)"
        return None


class DirectoryProbe:
    """Pings the directory every ``interval`` seconds; ``check`` reports the cached result."""

    def __init__(self, agent: Agent, settings: HealthSection, metrics: AgentMetrics) -> None:
        self.agent = agent
        self.interval = settings.directory_check_interval
        self.timeout = settings.directory_check_timeout
        self.metrics = metrics
        self.error: str | None = "directory not checked yet"

    async def ping_once(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.agent.directory.ping()
        except TimeoutError:
            error: str | None = f"directory did not answer a ping within {self.timeout:g}s"
        except Exception as exc:  # any failure means "not reachable"; the reason is reported
            error = f"directory unreachable: {type(exc).__name__}: {exc}"
        else:
            error = None
        if error != self.error:
            if error is None:
                _log.info("directory reachable")
            else:
                _log.warning("directory check failed", reason=error)
        self.error = error
        self.metrics.directory_up = error is None

    async def run(self) -> None:
        while True:
            await self.ping_once()
            await asyncio.sleep(self.interval)

    def check(self, _agent: Agent) -> str | None:
        return self.error


def build_app(agent: Agent, heartbeat: Heartbeat, metrics: AgentMetrics) -> web.Application:
    """The aiohttp application serving the three endpoints."""

    async def healthz(_request: web.Request) -> web.Response:
        problem = heartbeat.problem()
        body: dict[str, object] = {"alive": problem is None, "loop_lag_s": round(heartbeat.lag, 4)}
        if problem:
            body["reason"] = problem
        return web.json_response(body, status=503 if problem else 200)

    async def readyz(_request: web.Request) -> web.Response:
        reasons = agent.not_ready_reasons()
        return web.json_response({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` until the block ends; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        addresses = runner.addresses
        yield int(addresses[0][1]) if addresses else port
    finally:
        await runner.cleanup()


async def health_service(
    agent: Agent, *, clock: Clock = time.monotonic, on_listening: Callable[[int], object] | None = None
) -> None:
    """``Agent.services`` entry: heartbeat, directory probe and the HTTP server, until cancelled.

    ``on_listening`` is called with the bound port (useful with ``port: 0``).
    """
    settings = agent.settings.health
    metrics = metrics_for(agent)
    agent.dispatcher.metrics = metrics  # deliveries are processed in tasks scheduled after this first step
    heartbeat = Heartbeat(settings.heartbeat_interval, settings.max_loop_lag, clock)
    probe = DirectoryProbe(agent, settings, metrics)
    agent.readiness_checks.append(probe.check)

    def on_beat(lag: float) -> None:
        metrics.loop_lag = lag

    try:
        app = build_app(agent, heartbeat, metrics)
        async with serving(app, settings.host, settings.port) as port, asyncio.TaskGroup() as group:
            _log.info("health server listening", host=settings.host, port=port)
            if on_listening is not None:
                on_listening(port)
            group.create_task(heartbeat.run(on_beat))
            group.create_task(probe.run())
    finally:
        with contextlib.suppress(ValueError):
            agent.readiness_checks.remove(probe.check)
