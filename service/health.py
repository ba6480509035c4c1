"""Health and metrics of ``cloudprov service run`` over HTTP, on a port of its own.

What it is
    ``ServiceHealth(settings.health, server=…)`` serves, while ``async with health.serving()`` runs:

    * ``GET /healthz`` — 200 while the event loop is responsive (an event-loop heartbeat is at most
      ``max_loop_lag`` seconds overdue), else 503. Liveness: a failure means restart.
    * ``GET /readyz`` — 200 when the control store and the provisioning state store answered their
      last check, the control plane's listener accepted a connection and the provisioning scheduler
      runs (when one is expected); else 503 with ``{"ready": false, "reasons": [...]}``.
    * ``GET /metrics`` — Prometheus text from a registry of its own, names ``cloudprov_service_*``
      (all listed in ``METRIC_NAMES``): cycles by outcome, cycle duration, changes by action, objects/s,
      lag, quarantine, failures in a row and staged deletions per job, readiness, event-loop lag.

    It is fed through the scheduler's existing hooks: ``Scheduler(on_cycle=health.on_cycle,
    on_progress=health.on_progress)``; ``attach(state)`` / ``detach()`` bracket the scheduler's run.

Settings
    ``ServiceSettings.health``: ``enabled``, ``host``, ``port`` (8082; 0: a free one, see ``port``),
    ``heartbeat_interval``, ``max_loop_lag``, ``check_interval``, ``check_timeout``.

Guarantees
    Probes and scrapes never touch a store: checks run every ``check_interval`` seconds (and right
    after each cycle) and their results are cached, so a hung store cannot hang a probe. Label values
    are bounded (job ids, fixed action/kind/outcome words); the job label is ``job_id`` so it does not
    collide with Prometheus' own ``job``. Bodies are small JSON documents without secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.config import HealthSection

if TYPE_CHECKING:
    from service.control.app import ControlPlaneServer
    from service.provisioning.engine import CycleReport
    from service.provisioning.state import StateStore

_log = structlog.get_logger("cloudprov.service.health")
PREFIX = "cloudprov_service"
#: Cycle duration buckets (seconds): a small delta … a full sync of a big directory.
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
ACTIONS = ("create", "update", "disable", "delete", "member_add", "member_remove")
SUCCEEDED = frozenset({"ok", "partial", "staged"})

#: Every metric name the service exposes, as scraped (counters end in ``_total``, histograms in ``_bucket`` …).
METRIC_NAMES = frozenset(
    f"{PREFIX}_{name}"
    for name in (
        "cycles_total",
        "cycle_duration_seconds_bucket",
        "cycle_duration_seconds_count",
        "cycle_duration_seconds_sum",
        "changes_total",
        "change_failures_total",
        "objects_per_second",
        "lag_seconds",
        "job_quarantined",
        "job_failures",
        "staged_deletions",
        "ready",
        "event_loop_lag_seconds",
    )
)


class ServiceHealth:
    """Readiness checks, metrics and the aiohttp app of one service process."""

    def __init__(
        self,
        settings: HealthSection,
        *,
        server: ControlPlaneServer | None = None,
        expect_scheduler: bool = False,
        clock: Callable[[], float] = time.time,
        loop_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.server = server
        self.expect_scheduler = expect_scheduler
        self.clock = clock
        self.loop_clock = loop_clock
        self.state: StateStore | None = None
        self.port: int | None = None
        self.problems: list[str] = ["not checked yet"]
        self.last_beat = loop_clock()
        self.loop_lag = 0.0
        self.rates: dict[str, float] = {}
        self.synced_as_of: dict[str, float] = {}  # job → when the source was read for its last good cycle
        self.jobs: dict[str, tuple[bool, int, int]] = {}  # job → quarantined, failures, staged deletions
        self._wake = asyncio.Event()
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._cycles = Counter(f"{PREFIX}_cycles", "Cycles finished, by kind and outcome.",
                               ["job_id", "kind", "outcome"], registry=r)  # fmt: skip
        self._duration = Histogram(f"{PREFIX}_cycle_duration_seconds", "Duration of finished cycles.", ["kind"],
                                   buckets=BUCKETS, registry=r)  # fmt: skip
        self._changes = Counter(f"{PREFIX}_changes", "Changes written to targets, by action.", ["job_id", "action"],
                                registry=r)  # fmt: skip
        self._failures = Counter(f"{PREFIX}_change_failures", "Changes a target refused.", ["job_id"], registry=r)
        r.register(_Snapshot(self))

    # ---- scheduler hooks --------------------------------------------------------------------
    def attach(self, state: StateStore) -> None:
        """The scheduler runs on ``state`` from now on (checked by /readyz, read for per-job gauges)."""
        self.state = state
        self._wake.set()

    def detach(self) -> None:
        """The scheduler stopped."""
        self.state = None
        self._wake.set()

    def on_progress(self, job_id: str, event: Mapping[str, Any]) -> None:
        """``Scheduler(on_progress=…)``: a running cycle's objects/s."""
        rate = event.get("rate")
        if isinstance(rate, (int, float)):
            self.rates[job_id] = float(rate)

    def on_cycle(self, job_id: str, report: CycleReport) -> None:
        """``Scheduler(on_cycle=…)``: a finished cycle's outcome, duration, changes, rate and lag."""
        self._cycles.labels(job_id, report.kind, report.outcome).inc()
        for action in ACTIONS:
            if report.counts[action]:
                self._changes.labels(job_id, action).inc(report.counts[action])
        if report.counts["failed"]:
            self._failures.labels(job_id).inc(report.counts["failed"])
        if report.finished is not None and report.outcome != "skipped":
            self._duration.labels(report.kind).observe(max(report.finished - report.started, 0.0))
            if report.rate is not None:
                self.rates[job_id] = report.rate
            if report.outcome in SUCCEEDED and report.lag is not None:
                self.synced_as_of[job_id] = report.finished - report.lag
        self._wake.set()  # refresh quarantine and staged deletions now

    # ---- checks -----------------------------------------------------------------------------
    async def check_once(self) -> None:
        """Check the stores and the listener, refresh the per-job gauges; cache the problems found."""
        problems: list[str] = []
        timeout = self.settings.check_timeout
        checks: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        plane = self.server.plane if self.server is not None else None
        if plane is not None:
            checks += [("control store unreachable", plane.store.schema_version), ("control plane", self._listening)]
        if self.state is not None:
            checks.append(("provisioning state store unreachable", self._refresh_jobs))
        elif self.expect_scheduler:
            problems.append("provisioning scheduler not running")
        for what, check in checks:
            try:
                async with asyncio.timeout(timeout):
                    await check()
            except TimeoutError:
                problems.append(f"{what}: no answer within {timeout:g}s")
            except Exception as error:  # any failure means "not ready"; the reason is reported
                problems.append(f"{what}: {type(error).__name__}: {error}")
        if problems != self.problems:
            if problems:
                _log.warning("service not ready", reasons=problems)
            else:
                _log.info("service ready")
        self.problems = problems

    async def _listening(self) -> None:
        assert self.server is not None
        host = self.server.settings.control.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (a wildcard bind: try loopback)
        try:
            _reader, writer = await asyncio.open_connection(host, self.server.port)
        except OSError as error:
            raise ConnectionError(f"not listening on {host}:{self.server.port} ({error.strerror})") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _refresh_jobs(self) -> None:
        assert self.state is not None
        jobs = {}
        for job in await self.state.jobs():
            staged = len(await self.state.staged_deletes(job.id))
            jobs[job.id] = (job.state == "quarantined", job.failures, staged)
        self.jobs = jobs
        for gone in (set(self.rates) | set(self.synced_as_of)) - set(jobs):  # deleted jobs leave no series
            self.rates.pop(gone, None)
            self.synced_as_of.pop(gone, None)

    def not_ready_reasons(self) -> list[str]:
        return list(self.problems)

    def loop_problem(self) -> str | None:
        overdue = self.loop_clock() - self.last_beat - self.settings.heartbeat_interval
        if overdue > self.settings.max_loop_lag:
            return f"event loop unresponsive: heartbeat {overdue:.1f}s overdue (limit {self.settings.max_loop_lag:g}s)"
        return None

    # ---- HTTP -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        async def healthz(_request: web.Request) -> web.Response:
            problem = self.loop_problem()
            body: dict[str, object] = {"alive": problem is None, "loop_lag_s": round(self.loop_lag, 4)}
            if problem:
                body["reason"] = problem
            return web.json_response(body, status=503 if problem else 200)

        async def readyz(_request: web.Request) -> web.Response:
            reasons = self.not_ready_reasons()
            return web.json_response({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        return app

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[ServiceHealth]:
        """Serve the endpoints and run the heartbeat and the checks until the block ends."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        tasks: list[asyncio.Task[None]] = []
        try:
            await web.TCPSite(runner, self.settings.host, self.settings.port).start()
            self.port = int(runner.addresses[0][1]) if runner.addresses else self.settings.port
            _log.info("health server listening", host=self.settings.host, port=self.port)
            tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._check_forever())]
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()

    async def _beat(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            before = self.loop_clock()
            await asyncio.sleep(interval)
            self.last_beat = self.loop_clock()
            self.loop_lag = max(self.last_beat - before - interval, 0.0)

    async def _check_forever(self) -> None:
        while True:
            self._wake.clear()
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.check_interval)


class _Snapshot(Collector):
    """Gauges read at scrape time from what the hooks and the last check left behind."""

    def __init__(self, health: ServiceHealth) -> None:
        self.health = health

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        h = self.health
        now = h.clock()
        yield _gauge("ready", "1 when /readyz answers 200.", 0 if h.problems else 1)
        yield _gauge("event_loop_lag_seconds", "Lateness of the last event-loop heartbeat.", h.loop_lag)
        yield _per_job("objects_per_second", "Objects per second of the running or last cycle.", h.rates.items())
        lag = ((job, max(now - as_of, 0.0)) for job, as_of in h.synced_as_of.items())
        yield _per_job("lag_seconds", "Seconds since the source was read for the job's last good cycle.", lag)
        jobs = h.jobs.items()
        yield _per_job("job_quarantined", "1 while the job is quarantined.", ((j, float(v[0])) for j, v in jobs))
        yield _per_job("job_failures", "Failed cycles in a row.", ((j, float(v[1])) for j, v in jobs))
        yield _per_job("staged_deletions", "Deletions staged, awaiting approval.", ((j, float(v[2])) for j, v in jobs))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _per_job(name: str, documentation: str, values: Iterable[tuple[str, float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=["job_id"])
    for job_id, value in sorted(values):
        family.add_metric([job_id], value)
    return family
