"""Job wiring: the ``ScimClient`` and ``Target`` a provisioning job needs, built and owned in one place.

What it is
    ``JobWiring(endpoints=…, signer=…)`` gives the scheduler its ``client_for(job)`` and
    ``target_for(job)``, and the CLI the same for ``sync run-once`` / ``sync on-demand``.
    ``endpoints(domain)`` returns the domain's transport endpoints, most preferred first
    (``[{"url": "amqp://…", "options": {…}}]``, as the control plane stores them); ``signer()`` returns
    the control plane's **active** request-signing key. One ``Requester`` per endpoint URL is opened and
    shared by every job that reaches it; ``client_for`` takes the first endpoint. Clients follow key
    rotation: they ask ``signer()`` again every ``key_refresh`` seconds (``CurrentKeyClient``).
    ``rules_for(job, settings)`` is ``rules_from_settings(settings)``. ``store_sources(store, secret)``
    reads both from the control plane's store (what ``service run`` and the CLI use).

Guarantees
    A job whose domain has no endpoint raises ``WiringError`` naming it (the scheduler logs it and
    tries again next tick). ``aclose()`` (or leaving ``async with``) closes every requester it opened;
    targets are closed by whoever holds them (the scheduler).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from protocol.envelope import Response
from protocol.signing import Signer
from service.client import DEFAULT_BATCH_LINGER, ScimClient
from service.control.keys import new_signing_key, signer_of
from service.provisioning.rules import Rules, rules_from_settings
from service.provisioning.settings import JobSettings
from service.provisioning.state import Job
from service.provisioning.targets.base import Target
from service.provisioning.targets.registry import create_target
from service.store import Store
from transports.base import Requester
from transports.registry import create_requester

Endpoints = Callable[[str], Awaitable[Sequence[Mapping[str, Any]]]]
SignerSource = Callable[[], Awaitable[Signer]]


class WiringError(Exception):
    """A job cannot be wired: its domain has no transport endpoint."""


class CurrentKeyClient(ScimClient):
    """A ``ScimClient`` that follows key rotation: it asks ``signer_source`` for the active key again
    before a call once ``refresh`` seconds have passed since it last asked."""

    def __init__(
        self,
        requester: Requester,
        signer: Signer,
        domain: str,
        *,
        signer_source: SignerSource,
        timeout: float = 600.0,
        batch_linger: float = DEFAULT_BATCH_LINGER,
        refresh: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(requester, signer, domain, timeout=timeout, batch_linger=batch_linger)
        self.signer_source = signer_source
        self.refresh = refresh
        self.clock = clock
        self._next_refresh = clock() + refresh

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        now = self.clock()
        if now >= self._next_refresh:
            self.signer = await self.signer_source()
            self._next_refresh = now + self.refresh
        return await super().call(method, path, query, body, timeout=timeout)


class JobWiring:
    def __init__(
        self,
        *,
        endpoints: Endpoints,
        signer: SignerSource,
        requester_factory: Callable[[str, Mapping[str, Any]], Requester] | None = None,
        key_refresh: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = endpoints
        self.signer = signer
        self.key_refresh = key_refresh
        self.clock = clock
        self._make = requester_factory or (lambda url, options: create_requester(url, options=options))
        self._requesters: dict[str, Requester] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def requester(self, domain: str) -> Requester:
        """The opened requester of the domain's first endpoint (shared by jobs on the same URL)."""
        endpoints = list(await self.endpoints(domain))
        if not endpoints:
            raise WiringError(f"domain {domain!r} has no transport endpoint (cloudprov admin endpoints {domain} URL)")
        url = str(endpoints[0]["url"])
        requester = self._requesters.get(url)
        if requester is None:
            requester = self._make(url, dict(endpoints[0].get("options") or {}))
            await requester.connect()
            self._requesters[url] = requester
        return requester

    async def client_for(self, job: Job) -> CurrentKeyClient:
        settings = JobSettings.model_validate(dict(job.settings))
        requester = await self.requester(job.domain)
        return CurrentKeyClient(
            requester,
            await self.signer(),
            job.domain,
            signer_source=self.signer,
            timeout=settings.timeout,
            batch_linger=settings.batch_linger,
            refresh=self.key_refresh,
            clock=self.clock,
        )

    async def target_for(self, job: Job) -> Target:
        target = create_target(job.target_url)
        await target.open()
        return target

    @staticmethod
    def rules_for(job: Job, settings: JobSettings) -> Rules:
        return rules_from_settings(settings)

    async def aclose(self) -> None:
        requesters, self._requesters = list(self._requesters.values()), {}
        for requester in requesters:
            await requester.close()


def static_endpoints(table: Mapping[str, Sequence[Mapping[str, Any]] | str]) -> Endpoints:
    """``endpoints`` from a fixed table: domain → endpoint list, or domain → one URL."""

    async def endpoints(domain: str) -> Sequence[Mapping[str, Any]]:
        value = table.get(domain, [])
        return [{"url": value}] if isinstance(value, str) else value

    return endpoints


def store_sources(
    store: Store, key_secret: str | None, clock: Callable[[], float] = time.time
) -> tuple[Endpoints, SignerSource]:
    """``endpoints`` and ``signer`` read from the control plane's (opened) store, as its replicas do."""

    async def endpoints(domain: str) -> Sequence[Mapping[str, Any]]:
        return (await store.endpoints([domain])).get(domain, [])

    async def signer() -> Signer:
        record = await store.ensure_signing_key(lambda: new_signing_key(clock(), key_secret))
        return signer_of(record, key_secret)

    return endpoints, signer


def static_signer(signer: Signer) -> SignerSource:
    async def current() -> Signer:
        return signer

    return current


__all__ = [
    "CurrentKeyClient",
    "Endpoints",
    "JobWiring",
    "SignerSource",
    "WiringError",
    "static_endpoints",
    "static_signer",
    "store_sources",
]
