"""Prometheus metrics of one agent, in a registry of its own (``/metrics`` of the health server).

What it is
    ``DispatcherMetrics`` is the no-op interface the dispatcher calls where it bumps its ``Counters``
    (``NO_METRICS`` is its default). ``AgentMetrics`` implements it with ``prometheus-client`` in a
    per-agent ``CollectorRegistry`` (never the global one: tests and several agents in one process
    do not collide) and adds what is read at scrape time from the agent: in-flight requests,
    readiness, transport and directory state, LDAP pool figures and bootstrap age.
    ``metrics_for(agent)`` returns the one ``AgentMetrics`` of an agent, made on first use.

Hooks for other parts
    * Bootstrap (``agent/lifecycle/``): ``metrics_for(agent).bootstrap_succeeded()`` after each
      successful bootstrap feeds ``bootstrap_age_seconds`` (readiness stays the lifecycle's own check).
    * Directory plugins: a directory object may offer ``pool_stats() -> Mapping[str, float]`` with any
      of the keys ``size`` (connections open), ``in_use``, ``max_size`` and ``errors`` (a running
      count of connection errors); it is read at every scrape, nothing is pushed.
    * Transports: a ``Delivery`` may carry ``enqueued_at`` (Unix seconds when the request was
      queued); the dispatcher then observes the ``transport_wait`` stage.

Guarantees
    Label values are bounded: operations are a method and one of the known SCIM endpoints (anything
    else is ``other``), outcomes a status class, refusal and dead-letter reasons short fixed words.
    Every metric name is in ``METRIC_NAMES`` (the Grafana dashboard in ``deploy/`` is tested against it).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.runtime import Agent

PREFIX = "cloudprov_agent"
#: Latency buckets (seconds) for every stage: 1 ms … 30 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("transport_wait", "directory", "reply")
ENDPOINTS = frozenset(
    {"Users", "Groups", "Changes", ".search", "ServiceProviderConfig", "ResourceTypes", "Schemas", "Bulk", "Me"}
)


def operation_label(method: str, path: str) -> str:
    """``GET /Users/123?x`` → ``GET /Users``; an unknown endpoint or method becomes ``other``."""
    endpoint = path.split("?", 1)[0].strip("/").split("/", 1)[0]
    method = method.upper()
    if method not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
        method = "other"
    return f"{method} /{endpoint if endpoint in ENDPOINTS else 'other'}"


class DispatcherMetrics:
    """What the dispatcher reports; this base class records nothing."""

    def received(self, delivery: Any) -> None:
        """A delivery arrived (``delivery.delivery_count`` > 1: a redelivery)."""

    def answered(self, method: str, path: str, status: int) -> None:
        """A SCIM response with ``status`` was produced for an operation."""

    def stage(self, stage: str, seconds: float) -> None:
        """One stage of a request (``STAGES``) took ``seconds``."""

    def refused(self, reason: str) -> None:
        """A request was refused before it touched the directory (signature, deadline, domain…)."""

    def dead_lettered(self, reason: str) -> None:
        """A delivery was dead-lettered (``poison``, ``too_large``, ``malformed``)."""

    def retried(self) -> None:
        """A delivery was given back to the transport for a later try (directory unavailable)."""

    def replayed(self) -> None:
        """A redelivered request was answered from the response store."""

    def errored(self) -> None:
        """Processing a delivery failed with an unexpected error."""


NO_METRICS = DispatcherMetrics()


class AgentMetrics(DispatcherMetrics):
    """Prometheus metrics of one agent; ``render()`` is the ``/metrics`` body."""

    def __init__(self, agent: Agent | None = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.last_bootstrap: float | None = None
        self.directory_up: bool | None = None
        self.loop_lag = 0.0
        r = self.registry
        self._requests = Counter(
            f"{PREFIX}_requests", "SCIM requests answered, by operation and outcome (status class).",
            ["operation", "outcome"], registry=r,
        )  # fmt: skip
        self._stages = Histogram(
            f"{PREFIX}_stage_duration_seconds", "Time spent per request stage.", ["stage"], buckets=BUCKETS, registry=r
        )
        self._received = Counter(f"{PREFIX}_deliveries", "Deliveries received from the transport.", registry=r)
        self._redeliveries = Counter(f"{PREFIX}_redeliveries", "Deliveries handed out more than once.", registry=r)
        self._refused = Counter(
            f"{PREFIX}_refused", "Requests refused before touching the directory, by reason.", ["reason"], registry=r
        )
        self._dead_letters = Counter(f"{PREFIX}_dead_letters", "Deliveries dead-lettered, by reason.", ["reason"],
                                     registry=r)  # fmt: skip
        self._retries = Counter(f"{PREFIX}_retries", "Deliveries given back for a later try.", registry=r)
        self._replays = Counter(f"{PREFIX}_replays", "Redeliveries answered from the response store.", registry=r)
        self._errors = Counter(f"{PREFIX}_errors", "Deliveries whose processing failed unexpectedly.", registry=r)
        # Labelled children are looked up once: a ``labels()`` call costs more than the observation.
        self._stage_of = {stage: self._stages.labels(stage) for stage in (*STAGES, "other")}
        self._answered: dict[tuple[str, int], Counter] = {}
        if agent is not None:
            r.register(_AgentStateCollector(agent, self))

    # ------------------------------------------------------------------ DispatcherMetrics

    def received(self, delivery: Any) -> None:
        self._received.inc()
        if getattr(delivery, "delivery_count", 1) > 1:
            self._redeliveries.inc()
        enqueued = getattr(delivery, "enqueued_at", None)
        if isinstance(enqueued, (int, float)) and math.isfinite(enqueued):
            self._stage_of["transport_wait"].observe(max(time.time() - enqueued, 0.0))

    def answered(self, method: str, path: str, status: int) -> None:
        key = (operation_label(method, path), status // 100)  # bounded: known endpoints, status classes
        counter = self._answered.get(key)
        if counter is None:
            counter = self._answered[key] = self._requests.labels(key[0], f"{key[1]}xx")
        counter.inc()

    def stage(self, stage: str, seconds: float) -> None:
        self._stage_of.get(stage, self._stage_of["other"]).observe(seconds)

    def refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def dead_lettered(self, reason: str) -> None:
        self._dead_letters.labels(reason).inc()

    def retried(self) -> None:
        self._retries.inc()

    def replayed(self) -> None:
        self._replays.inc()

    def errored(self) -> None:
        self._errors.inc()

    # ------------------------------------------------------------------ hooks

    def bootstrap_succeeded(self, when: float | None = None) -> None:
        """Record a successful bootstrap (Unix seconds; now by default)."""
        self.last_bootstrap = time.time() if when is None else when

    def bootstrap_age(self, now: float | None = None) -> float | None:
        """Seconds since the last successful bootstrap (None: never)."""
        if self.last_bootstrap is None:
            return None
        return max((time.time() if now is None else now) - self.last_bootstrap, 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AgentStateCollector(Collector):
    """Gauges read from the agent at scrape time (nothing to keep in step)."""

    def __init__(self, agent: Agent, metrics: AgentMetrics) -> None:
        self._agent = weakref.ref(agent)
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        agent = self._agent()
        if agent is None:
            return
        m = self._metrics
        dispatcher = agent._dispatcher  # None before the agent runs: no AgentNotStartedError
        yield _gauge("requests_in_flight", "Requests being processed now.", dispatcher.in_flight if dispatcher else 0)
        yield _gauge("ready", "1 when /readyz answers 200.", 0 if agent.not_ready_reasons() else 1)
        yield _gauge("transport_connected", "1 while the transport is connected.", int(agent.transport.connected))
        if m.directory_up is not None:
            yield _gauge("directory_up", "1 when the last directory ping succeeded.", int(m.directory_up))
        yield _gauge("event_loop_lag_seconds", "Lateness of the last event-loop heartbeat.", m.loop_lag)
        yield _gauge("uptime_seconds", "Seconds since the agent was created.", time.time() - agent.started_at)
        replays = agent.verifier.replays
        yield _gauge(
            "replay_memory_ids", "Accepted request ids remembered exactly, until their deadline.", len(replays)
        )
        yield _gauge(
            "replay_spill_bytes", "Bloom filters of live ids the exact replay memory let go.", replays.spill_bytes
        )
        age = m.bootstrap_age()
        if age is not None:
            yield _gauge("bootstrap_age_seconds", "Seconds since the last successful bootstrap.", age)
        yield from _pool_metrics(getattr(agent.directory, "pool_stats", None))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _pool_metrics(pool_stats: Any) -> Iterable[Metric]:
    if not callable(pool_stats):
        return
    stats: Mapping[str, float] = pool_stats()
    for key, doc in (
        ("size", "LDAP connections open."),
        ("in_use", "LDAP connections busy with an operation."),
        ("max_size", "Most LDAP connections the pool may open."),
    ):
        if key in stats:
            yield _gauge(f"ldap_pool_{key}", doc, float(stats[key]))
    if "errors" in stats:
        yield CounterMetricFamily(f"{PREFIX}_ldap_errors", "LDAP connection errors.", value=float(stats["errors"]))


#: Every metric name an agent exposes (as scraped: counters carry ``_total``, histograms ``_bucket`` …).
METRIC_NAMES = frozenset(
    {
        f"{PREFIX}_{name}"
        for name in (
            "requests_total",
            "stage_duration_seconds_bucket",
            "stage_duration_seconds_count",
            "stage_duration_seconds_sum",
            "deliveries_total",
            "redeliveries_total",
            "refused_total",
            "dead_letters_total",
            "retries_total",
            "replays_total",
            "errors_total",
            "requests_in_flight",
            "ready",
            "transport_connected",
            "directory_up",
            "event_loop_lag_seconds",
            "uptime_seconds",
            "replay_memory_ids",
            "replay_spill_bytes",
            "bootstrap_age_seconds",
            "ldap_pool_size",
            "ldap_pool_in_use",
            "ldap_pool_max_size",
            "ldap_errors_total",
        )
    }
)

_BY_AGENT: weakref.WeakKeyDictionary[Agent, AgentMetrics] = weakref.WeakKeyDictionary()


def metrics_for(agent: Agent) -> AgentMetrics:
    """The one ``AgentMetrics`` of ``agent`` (made on first use)."""
    metrics = _BY_AGENT.get(agent)
    if metrics is None:
        metrics = _BY_AGENT[agent] = AgentMetrics(agent)
    return metrics
