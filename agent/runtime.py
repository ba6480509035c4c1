"""The agent's lifecycle: one TaskGroup, started and stopped in a fixed order.

Start: open the directory, build the SCIM handler and dispatcher, connect the transport, consume,
then start the background services (health, bootstrap, heartbeat, … each an ``async`` callable
taking the agent). Stop (SIGTERM, or ``stop`` set): take no new work, let in-flight requests finish
within ``dispatcher.grace_period`` (the rest are cancelled and, unsettled, go back to the queue),
stop the services, close the transports, close the directory.

``replace_transport`` switches endpoints without losing work: the new transport connects and starts
consuming first, then the old one stops taking work, finishes and settles what it holds, and closes.
``Agent.status()`` and ``Agent.readiness()`` report what health checks and heartbeats need.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from cryptography.exceptions import UnsupportedAlgorithm

import protocol
from agent import replays
from agent.config import AgentSettings, ConfigError
from agent.dispatcher import Dispatcher
from agent.logging import set_level
from agent.scim.handler import ScimHandler
from agent.scim.profile import Profile, ProfileError, load_profile
from plugins.directory import Directory
from plugins.registry import PluginSettingsError, UnknownPluginError, create_directory
from protocol.redaction import redact_text
from protocol.signing import Verifier, load_public_key
from transports.base import Transport
from transports.registry import TransportSettingsError, UnknownTransportError, create_transport

_log = structlog.get_logger("cloudprov.agent")

#: A background service: runs while the agent serves, cancelled at shutdown.
Service = Callable[["Agent"], Coroutine[Any, Any, None]]
#: A readiness check: returns None when fine, else the reason the agent is not ready.
ReadinessCheck = Callable[["Agent"], str | None]


async def settle_heap(agent: Agent) -> None:
    """Service: once the agent has started, freeze what is alive and collect young objects less often.

    Modules, settings, the profile and a seeded directory live as long as the process: frozen
    (``gc.freeze``), the collector's full passes no longer walk them. A page of a list answer makes
    tens of thousands of acyclic containers that die by reference counting; a young generation of
    100,000 lets most of them go before a pass walks and promotes them. A 100k-user read: GC CPU
    ~2.4 s -> ~0 s, peak RSS unchanged. ``cloudprov agent run`` runs it; an agent embedded in a
    larger program leaves the collector alone.
    """
    await agent.started.wait()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class AgentNotStartedError(RuntimeError):
    """The agent's parts exist only while ``run`` is running."""


def build_verifier(settings: AgentSettings) -> Verifier:
    """The signature checker of ``signing``; ``ConfigError`` names a key that cannot be read."""
    keys = {}
    for key_id, text in settings.signing.public_keys.items():
        try:
            keys[key_id] = load_public_key(text)
        except (ValueError, UnsupportedAlgorithm) as exc:  # UnsupportedAlgorithm: a PEM key of another kind
            raise ConfigError(f"signing.public_keys.{key_id}: {exc}") from None
    signing = settings.signing
    return Verifier(
        keys, clock_skew=signing.clock_skew, max_lifetime=signing.max_lifetime, replay_memory=signing.replay_memory
    )


def build_profile(settings: AgentSettings) -> Profile:
    """The SCIM ↔ LDAP mapping of ``scim``; ``ConfigError`` names ``scim.profile`` or ``scim.profile_overrides``."""
    try:
        profile = load_profile(settings.scim.profile)
    except ProfileError as exc:
        raise ConfigError(f"scim.profile: {exc}") from None
    if not settings.scim.profile_overrides:
        return profile
    try:
        return load_profile(settings.scim.profile, settings.scim.profile_overrides)
    except ProfileError as exc:
        raise ConfigError(f"scim.profile_overrides: {exc}") from None


def build_directory(settings: AgentSettings) -> Directory:
    """The unopened directory of ``directory``; ``ConfigError`` names the plugin or the faulty setting."""
    try:
        return create_directory(settings.directory.plugin, settings.directory.plugin_settings())
    except UnknownPluginError as exc:
        raise ConfigError(f"directory.plugin: {exc}") from None
    except PluginSettingsError as exc:  # its message names each directory.<key>
        raise ConfigError(str(exc)) from None


def build_transport(settings: AgentSettings) -> Transport:
    """The unconnected transport of ``transport``; ``ConfigError`` names the URL's scheme or the faulty option."""
    url, options = settings.transport.url, settings.transport.options
    try:
        return create_transport(url, domains=settings.agent.domains, options=options)
    except UnknownTransportError as exc:
        raise ConfigError(f"transport.url: {redact_text(str(exc))}") from None
    except TransportSettingsError as exc:
        raise ConfigError(f"transport.options: {redact_text(str(exc))}") from None


#: What ``Agent`` builds from its settings before it connects, in that order.
BUILDERS: tuple[Callable[[AgentSettings], object], ...] = (
    build_directory,
    build_transport,
    build_verifier,
    build_profile,
)


def check_settings(settings: AgentSettings) -> list[str]:
    """Build what ``Agent`` builds before connecting (nothing is opened); one line per problem, empty if none."""
    problems = []
    for build in BUILDERS:
        try:
            build(settings)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


class Agent:
    """The agent of ``settings``; ``ConfigError`` (naming the setting) when a part cannot be built from them."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        directory: Directory | None = None,
        transport: Transport | None = None,
        verifier: Verifier | None = None,
        services: list[Service] | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory or build_directory(settings)
        self.transport = transport or build_transport(settings)
        self.verifier = verifier or build_verifier(settings)
        self.profile = build_profile(settings)
        self.services: list[Service] = list(services or [])
        self.readiness_checks: list[ReadinessCheck] = []
        self.started_at = time.time()
        self.started = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._group: asyncio.TaskGroup | None = None
        self._consumers: dict[int, asyncio.Task[None]] = {}
        self._switching = asyncio.Lock()

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise AgentNotStartedError("the dispatcher exists once the agent runs")
        return self._dispatcher

    def apply_settings(self, settings: AgentSettings) -> None:
        """Put settings that may change while running to work (``agent.lifecycle.remote.LIVE_KEYS``)."""
        self.settings = settings
        set_level(settings.logging.level)
        self.verifier.clock_skew = settings.signing.clock_skew
        self.verifier.max_lifetime = settings.signing.max_lifetime
        if self._dispatcher is not None:
            self._dispatcher.settings = settings.dispatcher
            self._dispatcher.handler.settings = settings.scim

    def not_ready_reasons(self) -> list[str]:
        """Why the agent cannot take work now (empty: ready)."""
        reasons = []
        if not self.started.is_set():
            reasons.append("agent is not running")
        elif not self.transport.connected:
            reasons.append("transport is not connected")
        for check in self.readiness_checks:
            reason = check(self)
            if reason:
                reasons.append(reason)
        return reasons

    def status(self) -> dict[str, Any]:
        dispatcher = self._dispatcher
        return {
            "agent_id": self.settings.agent.id,
            "domains": list(self.settings.agent.domains),
            "uptime_s": round(time.time() - self.started_at, 1),
            "ready": not self.not_ready_reasons(),
            "in_flight": dispatcher.in_flight if dispatcher else 0,
            "counters": dataclasses.asdict(dispatcher.counters) if dispatcher else {},
        }

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the transport ends), then shut down in order."""
        stop = stop or asyncio.Event()
        settings = self.settings
        log = _log.bind(agent_id=settings.agent.id)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.directory)
            handler = ScimHandler(self.directory, self.profile, settings.scim, settings.retry)
            self._dispatcher = Dispatcher(
                handler,
                self.verifier,
                settings.dispatcher,
                agent_id=settings.agent.id,
                domains=settings.agent.domains,
                max_body_bytes=settings.scim.max_body_bytes,
            )
            state_dir, skew = settings.agent.state_dir, settings.signing.clock_skew
            answers = self._dispatcher.responses
            replays.restore_logged(self.verifier.replays, answers, state_dir, skew)
            stack.callback(replays.save_logged, self.verifier.replays, answers, state_dir, skew)
            self.transport.max_request_size = settings.scim.max_body_bytes  # before messages arrive
            await self.transport.connect()
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    self._consume(self.transport)
                    services = [group.create_task(service(self)) for service in self.services]
                    directory = type(self.directory).__name__
                    log.info(
                        "agent started",
                        domains=list(settings.agent.domains),
                        directory=directory,
                        compiled=protocol.compiled(),
                    )
                    self.started.set()
                    stopper = group.create_task(stop.wait())
                    await self._serve_until(stopper)
                    self.started.clear()
                    log.info("agent stopping", in_flight=self._dispatcher.in_flight)
                    for consumer in self._consumers.values():
                        consumer.cancel()  # before the drain: a delivery still waiting for a slot must not start
                    await asyncio.shield(self._shutdown(log))
                    for task in (stopper, *services, *self._consumers.values()):
                        task.cancel()
            finally:
                self._group = None
                await self.transport.close()
        log.info("agent stopped", **{k: v for k, v in dataclasses.asdict(self._dispatcher.counters).items() if v})

    async def _serve_until(self, stopper: asyncio.Task[Any]) -> None:
        """Return once ``stopper`` is done or the current transport ends (not a retired one)."""
        while not stopper.done():
            consumer = self._consumers.get(id(self.transport))
            await asyncio.wait({stopper, *([consumer] if consumer else [])}, return_when=asyncio.FIRST_COMPLETED)
            if consumer is not None and consumer.done() and consumer is self._consumers.get(id(self.transport)):
                return

    def _consume(self, transport: Transport) -> None:
        if self._group is None or self._dispatcher is None:
            raise AgentNotStartedError("transports are consumed only while the agent runs")
        self._consumers[id(transport)] = self._group.create_task(self._dispatcher.consume(transport))

    async def replace_transport(self, new: Transport) -> None:
        """Move to new endpoints without losing work: start the new transport, then retire the old."""
        async with self._switching:
            old = self.transport
            new.max_request_size = self.settings.scim.max_body_bytes  # before messages arrive
            await new.connect()
            self.transport = new
            self._consume(new)
            _log.info("consuming on new transport endpoints; retiring the old ones")
            await old.stop_consuming()
            consumer = self._consumers.pop(id(old), None)
            if consumer is not None:
                consumer.cancel()  # before the drain: a delivery still waiting for a slot must not start
            cancelled = await self.dispatcher.drain(self.settings.dispatcher.grace_period, old)
            await old.close()
            _log.info("old transport endpoints closed", unfinished_returned_to_queue=cancelled)

    async def _shutdown(self, log: Any) -> None:
        await self.transport.stop_consuming()
        cancelled = await self.dispatcher.drain(self.settings.dispatcher.grace_period)
        if cancelled:
            log.warning("grace period over: unfinished requests go back to the queue", cancelled=cancelled)
