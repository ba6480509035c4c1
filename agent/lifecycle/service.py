"""The agent's lifecycle services: bootstrap (with endpoint refresh and renewal) and heartbeat.

What it is
    ``Lifecycle.of(agent)`` is the one lifecycle of an agent; ``bootstrap_service`` and
    ``heartbeat_service`` are ``Agent.services`` (``install(agent)`` appends both and the readiness
    check). Bootstrap runs at start and every ``bootstrap_interval`` (the control plane's value
    once it has answered, ± ``jitter``); a failed bootstrap is retried with exponential backoff
    from ``initial_backoff`` to ``max_backoff``, while the agent keeps serving where it is.

Settings
    ``AgentSettings.control_plane`` (see ``agent.config.ControlPlaneSection``).

Guarantees
    - Settings from a bootstrap (a new ``settings_version``) are laid over the file settings and
      the live ones applied at once (``agent.lifecycle.remote``); the others are logged as skipped.
    - Signing keys from a bootstrap replace the trusted keys (a key left out is revoked at once);
      an empty key list is never applied (it would refuse every request).
    - New endpoints or domains: the new transport connects and consumes first (each endpoint of
      the ordered list tried in turn), then the old one is retired (``Agent.replace_transport``);
      if none connects, the agent stays on the old endpoints and the bootstrap counts as failed.
      Domains whose endpoints the control plane does not name are served on the current endpoint.
    - An endpoint that would serve without authentication (``allow_anonymous``) is never used, from
      a bootstrap or from the cached one: it is logged as refused and the agent keeps its transport.
    - At start the keys and domains of the last successful bootstrap (``bootstrap.json``) are
      restored, so a restart while the control plane is down still serves.
    - A revoked agent stops taking requests, stops bootstrapping and says why in its readiness.
    - Readiness: not ready until a bootstrap succeeded, when the last success is older than
      ``stale_after``, when revoked, or when no domain is assigned.
    - The certificate is renewed (new key, ``/v1/renew`` over mTLS) once it expires within
      ``renew_before``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
import weakref
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import structlog

from agent.config import AgentSettings, ControlPlaneSection
from agent.lifecycle.client import ControlPlaneRefusedError, LifecycleError, call
from agent.lifecycle.identity import Identity, new_key_and_csr
from agent.lifecycle.remote import overlay
from protocol.signing import load_public_key
from transports.base import Transport
from transports.registry import create_transport

if TYPE_CHECKING:
    from agent.runtime import Agent

_log = structlog.get_logger("cloudprov.lifecycle")
_lifecycles: weakref.WeakKeyDictionary[Agent, Lifecycle] = weakref.WeakKeyDictionary()


def agent_version() -> str:
    try:
        return version("cloudprov")
    except PackageNotFoundError:
        return "0+unknown"


def identity_of(settings: AgentSettings) -> Identity:
    section = settings.control_plane
    return Identity(section.state_dir or settings.agent.state_dir, section.ca_file)


def _endpoint_key(url: str, options: dict[str, Any], domains: list[str]) -> str:
    return json.dumps([url, options, sorted(domains)], sort_keys=True)


def choose_endpoints(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The ordered endpoints to use for the assigned domains (those of the first domain that has any)."""
    endpoints: dict[str, list[dict[str, Any]]] = document.get("endpoints") or {}
    lists = [endpoints[d] for d in sorted(document.get("domains") or []) if endpoints.get(d)]
    if not lists:
        return []
    if any(other != lists[0] for other in lists[1:]):
        _log.warning("assigned domains list different endpoints; using the first domain's", endpoints=endpoints)
    return list(lists[0])


def _anonymous(transport: Transport) -> bool:
    """Whether ``transport`` would answer callers without credentials (the http transport's ``allow_anonymous``)."""
    return getattr(getattr(transport, "settings", None), "allow_anonymous", False) is True


def _refuse_anonymous(url: str) -> str:
    problem = "allow_anonymous is not accepted from the control plane: it would serve SCIM without authentication"
    _log.warning("endpoint refused; keeping the current transport", endpoint=url.split("@")[-1], problem=problem)
    return problem


def initial_transport(settings: AgentSettings) -> Transport | None:
    """A transport on the last known endpoints (from the cached bootstrap), for a restart; None if none."""
    if not settings.control_plane.enabled:
        return None
    document = identity_of(settings).last_bootstrap()
    if not document or not document.get("domains"):
        return None
    chosen = choose_endpoints(document)
    if not chosen:
        return None
    first = chosen[0]
    transport = create_transport(first["url"], domains=document["domains"], options=first.get("options") or {})
    if _anonymous(transport):
        _refuse_anonymous(first["url"])
        return None
    return transport


class Lifecycle:
    def __init__(
        self,
        agent: Agent,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.agent = agent
        self.settings: ControlPlaneSection = agent.settings.control_plane
        self.identity = identity_of(agent.settings)
        self.clock = clock
        self._jitter = jitter
        self.version = agent_version()
        transport = agent.settings.transport
        self._endpoint = _endpoint_key(transport.url, dict(transport.options), list(agent.settings.agent.domains))
        self._current: dict[str, Any] = {"url": transport.url, "options": dict(transport.options)}
        self.domains: list[str] = list(agent.settings.agent.domains)
        self.bootstrap_interval = self.settings.bootstrap_interval
        self.heartbeat_interval = self.settings.heartbeat_interval
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.revoked: str | None = None
        self.settings_version: int | None = None
        self.remote_settings: dict[str, Any] = {}
        self.file_settings = agent.settings  # what remote settings are laid over (a dropped key returns to it)
        self.bootstraps = 0
        self.failures = 0
        self.refresh = asyncio.Event()
        self.changed = asyncio.Condition()

    @classmethod
    def of(cls, agent: Agent) -> Lifecycle:
        """The agent's lifecycle (made on first use; registers its readiness check)."""
        lifecycle = _lifecycles.get(agent)
        if lifecycle is None:
            lifecycle = _lifecycles[agent] = cls(agent)
            agent.readiness_checks.append(lambda _agent: lifecycle.not_ready_reason())
        return lifecycle

    # ---- readiness --------------------------------------------------------------------------
    def not_ready_reason(self) -> str | None:
        if self.revoked:
            return f"revoked by the control plane: {self.revoked}"
        if self.last_success is None:
            return f"no successful bootstrap yet ({self.last_error or 'not tried yet'})"
        age = self.clock() - self.last_success
        if age > self.settings.stale_after:
            return f"last successful bootstrap {age:.0f}s ago ({self.last_error or 'unknown error'})"
        if not self.domains:
            return "no domain is assigned to this agent"
        return None

    # ---- one bootstrap ----------------------------------------------------------------------
    async def _call(self, path: str, body: dict[str, Any]) -> Any:
        body = {"agent_id": self.agent.settings.agent.id, "nonce": uuid.uuid4().hex, "sent_at": self.clock(), **body}
        context = await asyncio.to_thread(self.identity.client_context)
        return await call(self.settings.url, "POST", path, body, context=context, timeout=self.settings.request_timeout)

    async def bootstrap_once(self) -> dict[str, Any]:
        """Bootstrap now and apply the answer; raises ``LifecycleError`` (or a transport error) on failure."""
        document = await self._call("/v1/bootstrap", {"version": self.version})
        if not isinstance(document, dict) or document.get("agent_id") != self.agent.settings.agent.id:
            raise LifecycleError(f"the bootstrap answer is for another agent: {document!r:.200}")
        await self.apply(document)
        self.last_success, self.last_error = self.clock(), None
        self.bootstraps += 1
        await asyncio.to_thread(self.identity.save_bootstrap, document)
        await self._renew_if_due(document)
        async with self.changed:
            self.changed.notify_all()
        return document

    async def apply(self, document: dict[str, Any]) -> None:
        keys = {key_id: load_public_key(text) for key_id, text in (document.get("signing_keys") or {}).items()}
        if keys:
            if sorted(keys) != self.agent.verifier.key_ids:
                _log.info("request-signing keys updated", key_ids=sorted(keys))
            self.agent.verifier.set_keys(keys)
        else:
            _log.warning("bootstrap listed no signing keys; keeping the current ones")
        self.bootstrap_interval = float(document.get("bootstrap_interval") or self.settings.bootstrap_interval)
        self.heartbeat_interval = float(document.get("heartbeat_interval") or self.settings.heartbeat_interval)
        self._apply_settings(document)
        domains = sorted(document.get("domains") or [])
        if not domains:
            if self.domains:
                _log.warning("no domain is assigned any more; refusing requests until one is")
            self.domains = []
            self.agent.dispatcher.domains = set()
            return
        await self._switch(domains, choose_endpoints(document))

    def _apply_settings(self, document: dict[str, Any]) -> None:
        if document.get("settings_version") == self.settings_version:
            return
        self.settings_version = document.get("settings_version")
        self.remote_settings = dict(document.get("settings") or {})
        settings, skipped = overlay(self.file_settings, self.remote_settings)
        self.agent.apply_settings(settings)
        applied = sorted(set(self.remote_settings) - set(skipped))
        _log.info("settings from the control plane", version=self.settings_version, applied=applied)
        for key, reason in skipped.items():
            _log.warning("control-plane setting skipped", key=key, reason=reason)

    async def _switch(self, domains: list[str], endpoints: list[dict[str, Any]]) -> None:
        if not endpoints:  # the control plane names no endpoints: stay where we are, with the new domains
            endpoints = [self._current]
        wanted = [_endpoint_key(e["url"], e.get("options") or {}, domains) for e in endpoints]
        if self._endpoint in wanted:  # already on one of the listed endpoints
            self._set_domains(domains)
            return
        self.agent.dispatcher.domains = {d.lower() for d in (*self.domains, *domains)}
        errors = []
        for endpoint, key in zip(endpoints, wanted, strict=True):
            try:
                transport = create_transport(endpoint["url"], domains=domains, options=endpoint.get("options") or {})
                if _anonymous(transport):
                    errors.append(f"{endpoint['url'].split('@')[-1]}: {_refuse_anonymous(endpoint['url'])}")
                    continue
                await self.agent.replace_transport(transport)
            except Exception as error:  # a transport's own errors differ; each is reported, the next tried
                errors.append(f"{endpoint['url'].split('@')[-1]}: {error}")
                continue
            self._endpoint, self._current = key, endpoint
            self._set_domains(domains)
            _log.info("switched to new transport endpoints", domains=domains)
            return
        self._set_domains(self.domains)
        raise LifecycleError("no new endpoint could be used: " + "; ".join(errors))

    def _set_domains(self, domains: list[str]) -> None:
        self.domains = list(domains)
        self.agent.dispatcher.domains = {d.lower() for d in domains}

    async def _renew_if_due(self, document: dict[str, Any]) -> None:
        not_after = float((document.get("certificate") or {}).get("not_after") or self.identity.not_after())
        if not_after - self.clock() <= self.settings.renew_before:
            await self.renew()

    async def renew(self) -> None:
        """A new key and certificate, over mTLS with the current one; the files are replaced after."""
        key_pem, csr = new_key_and_csr(self.agent.settings.agent.id)
        answer = await self._call("/v1/renew", {"csr": csr})
        await asyncio.to_thread(self.identity.save, key_pem, answer["certificate"], answer.get("ca_certificate"))
        _log.info("agent certificate renewed", not_after=answer.get("not_after"))

    # ---- the loops --------------------------------------------------------------------------
    def _jittered(self, interval: float) -> float:
        spread = self.settings.jitter * interval
        return max(0.0, interval - spread + 2 * spread * self._jitter())

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if someone asks for a bootstrap now (``refresh.set()``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh.wait(), seconds)
        self.refresh.clear()

    def restore(self) -> None:
        """Trust the signing keys and serve the domains of the last successful bootstrap (after a restart)."""
        document = self.identity.last_bootstrap()
        if not document or document.get("agent_id") != self.agent.settings.agent.id:
            return
        keys = {key_id: load_public_key(text) for key_id, text in (document.get("signing_keys") or {}).items()}
        if keys:
            self.agent.verifier.set_keys(keys)
        if document.get("domains"):
            self._set_domains(sorted(document["domains"]))
        self._apply_settings(document)
        _log.info("restored the last bootstrap", key_ids=sorted(keys), domains=self.domains)

    async def run_bootstrap(self) -> None:
        await asyncio.to_thread(self.restore)
        backoff = self.settings.initial_backoff
        while True:
            try:
                await self.bootstrap_once()
            except ControlPlaneRefusedError as error:
                if error.code == "agent_revoked":
                    await self._revoked(error.detail)
                    return
                wait, backoff = self._failed(error, backoff)
            except Exception as error:  # unreachable, a bad answer, no endpoint reachable: keep serving
                wait, backoff = self._failed(error, backoff)
            else:
                wait, backoff = self._jittered(self.bootstrap_interval), self.settings.initial_backoff
            await self._wait(wait)

    def _failed(self, error: Exception, backoff: float) -> tuple[float, float]:
        self.failures += 1
        self.last_error = str(error)
        _log.warning("bootstrap failed; serving on the current endpoints", error=str(error), retry_in=backoff)
        return self._jittered(backoff), min(backoff * 2, self.settings.max_backoff)

    async def _revoked(self, reason: str) -> None:
        self.revoked = reason
        _log.error("this agent was revoked by the control plane; it stops taking requests", reason=reason)
        await self.agent.transport.stop_consuming()
        async with self.changed:
            self.changed.notify_all()

    async def heartbeat_once(self) -> None:
        status = self.agent.status()
        status["version"] = self.version
        status["bootstrap_failures"] = self.failures
        await self._call("/v1/heartbeat", {"version": self.version, "status": status})

    async def run_heartbeat(self) -> None:
        while not self.revoked:
            await asyncio.sleep(self._jittered(self.heartbeat_interval))
            if self.revoked:
                return
            try:
                await self.heartbeat_once()
            except Exception as error:  # a heartbeat lost is reported by the next one
                _log.warning("heartbeat failed", error=str(error))


async def bootstrap_service(agent: Agent) -> None:
    """Agent service: bootstrap at start, then on the interval; see ``Lifecycle``."""
    await Lifecycle.of(agent).run_bootstrap()


async def heartbeat_service(agent: Agent) -> None:
    """Agent service: report version, uptime, in-flight and error counts on the heartbeat interval."""
    await Lifecycle.of(agent).run_heartbeat()


def install(agent: Agent) -> Lifecycle:
    """Add the bootstrap and heartbeat services and the readiness check to ``agent``."""
    lifecycle = Lifecycle.of(agent)
    agent.services.extend([bootstrap_service, heartbeat_service])
    return lifecycle
