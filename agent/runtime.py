"""The agent's lifecycle: one TaskGroup, started and stopped in a fixed order.

Start: open the directory, build the SCIM handler and dispatcher, connect the transport, then
consume. Stop (SIGTERM, or ``stop`` set): take no new work, let in-flight requests finish within
``dispatcher.grace_period`` (the rest are cancelled and, unsettled, go back to the queue), close the
transport, close the directory. ``Agent.status()`` reports what a health check or heartbeat needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from agent.config import AgentSettings
from agent.dispatcher import Dispatcher
from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.directory import Directory
from plugins.registry import create_directory
from protocol.signing import Verifier, load_public_key
from transports.base import Transport
from transports.registry import create_transport

_log = structlog.get_logger("cloudprov.agent")


class AgentNotStartedError(RuntimeError):
    """The agent's parts exist only while ``run`` is running."""


def build_verifier(settings: AgentSettings) -> Verifier:
    keys = {key_id: load_public_key(text) for key_id, text in settings.signing.public_keys.items()}
    return Verifier(keys, clock_skew=settings.signing.clock_skew, max_lifetime=settings.signing.max_lifetime)


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        directory: Directory | None = None,
        transport: Transport | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory or create_directory(settings.directory.plugin, settings.directory.plugin_settings())
        self.transport = transport or create_transport(
            settings.transport.url, domains=settings.agent.domains, options=settings.transport.options
        )
        self.verifier = verifier or build_verifier(settings)
        self.profile = load_profile(settings.scim.profile, settings.scim.profile_overrides)
        self.started_at = time.time()
        self.started = asyncio.Event()
        self._dispatcher: Dispatcher | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise AgentNotStartedError("the dispatcher exists once the agent runs")
        return self._dispatcher

    def status(self) -> dict[str, Any]:
        dispatcher = self._dispatcher
        return {
            "agent_id": self.settings.agent.id,
            "domains": list(self.settings.agent.domains),
            "uptime_s": round(time.time() - self.started_at, 1),
            "ready": self.started.is_set() and self.transport.connected,
            "in_flight": dispatcher.in_flight if dispatcher else 0,
            "counters": vars(dispatcher.counters) if dispatcher else {},
        }

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the transport ends), then shut down in order."""
        stop = stop or asyncio.Event()
        settings = self.settings
        log = _log.bind(agent_id=settings.agent.id, transport=settings.transport.url.split("://", 1)[0])
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
            await stack.enter_async_context(self.transport)
            log.info("agent started", domains=list(settings.agent.domains), directory=settings.directory.plugin)
            self.started.set()
            async with asyncio.TaskGroup() as group:
                consumer = group.create_task(self._dispatcher.consume(self.transport))
                stopper = group.create_task(stop.wait())
                await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
                log.info("agent stopping", in_flight=self._dispatcher.in_flight)
                await asyncio.shield(self._shutdown(log))
                stopper.cancel()
                consumer.cancel()
            self.started.clear()
        log.info("agent stopped", **{k: v for k, v in vars(self._dispatcher.counters).items() if v})

    async def _shutdown(self, log: Any) -> None:
        await self.transport.stop_consuming()
        cancelled = await self.dispatcher.drain(self.settings.dispatcher.grace_period)
        if cancelled:
            log.warning("grace period over: unfinished requests go back to the queue", cancelled=cancelled)
