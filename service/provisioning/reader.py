"""Reading a domain through its agents, with the engine's retry rules (``SourceReader``).

Settings: ``JobSettings.timeout`` (seconds per request, default 600) and ``attempts`` (default 3).

Guarantees
    A request that times out, finds the transport broken, or gets a 5xx from the agent is sent
    again as a **new** request (fresh id, fresh deadline) on the domain's queue, so whichever agent
    of the domain is alive takes it. A cursor lives on the agent that opened it: when a paged read
    loses its agent (timeout, ``invalidCursor``), the read starts over from the first page, which is
    harmless because applying a resource twice changes nothing the second time. A 410 from
    ``/Changes`` raises ``WatermarkExpiredError``; other SCIM errors raise ``ScimCallError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog

from protocol.envelope import Response
from service.client import ScimCallError, ScimClient
from transports.base import RequestTimeoutError, TransportBrokenError

_log = structlog.get_logger("cloudprov.provisioning")
RETRYABLE = (RequestTimeoutError, TransportBrokenError, TimeoutError)


class WatermarkExpiredError(Exception):
    """The agent no longer has history back to the stored watermark: run a full sync."""


class SourceUnavailableError(Exception):
    """No agent of the domain answered within the retries."""


class SourceReader:
    def __init__(self, client: ScimClient, *, timeout: float = 600.0, attempts: int = 3) -> None:
        self.client = client
        self.timeout = timeout
        self.attempts = attempts
        self.requests = 0
        self.retries = 0

    async def _call(self, method: str, path: str, query: Mapping[str, str] | None = None) -> Any:
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            self.requests += 1
            try:
                response: Response = await self.client.call(method, path, query, timeout=self.timeout)
            except RETRYABLE as error:
                last = error
            else:
                if response.status < 500:
                    if response.status >= 400:
                        raise ScimCallError(response)
                    return response.body
                last = ScimCallError(response)
            self.retries += attempt < self.attempts
            _log.warning("source request failed", path=path, attempt=attempt, error=str(last))
        raise SourceUnavailableError(f"{path}: no agent answered after {self.attempts} tries ({last})") from last

    async def pages(
        self, endpoint: str, page_size: int, scim_filter: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every resource of ``endpoint`` (that ``scim_filter`` selects), page by page; the read restarts if
        its cursor's agent is lost.

        The next page is asked for before the current one is handed out, so the agent reads it while
        the caller works on this one (at most two pages held).
        """
        restarts = 0
        while True:
            params = {"count": str(page_size), "cursor": ""} | ({"filter": scim_filter} if scim_filter else {})
            following: asyncio.Task[Any] | None = None
            try:
                body = await self._call("GET", endpoint, params)
                while True:
                    cursor = body.get("nextCursor")
                    if cursor:
                        following = asyncio.create_task(self._call("GET", endpoint, {**params, "cursor": cursor}))
                    yield list(body.get("Resources", []))
                    if following is None:
                        return
                    body, following = await following, None
            except (ScimCallError, SourceUnavailableError) as error:
                lost = isinstance(error, SourceUnavailableError) or _scim_type(error) == "invalidCursor"
                if not lost or restarts >= self.attempts:
                    raise
                restarts += 1
                _log.warning("paged read restarts", endpoint=endpoint, restarts=restarts, error=str(error))
            finally:
                if following is not None:  # the caller stopped early, or this read failed
                    following.cancel()
                    following.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def current_watermark(self) -> str | None:
        body = await self._call("GET", "/Changes", {"count": "1"})
        watermark = body.get("watermark")
        return str(watermark) if watermark is not None else None

    async def changes(self, watermark: str, count: int) -> dict[str, Any]:
        try:
            body: dict[str, Any] = await self._call("GET", "/Changes", {"watermark": watermark, "count": str(count)})
        except ScimCallError as error:
            if error.response.status == 410:
                raise WatermarkExpiredError(str(error)) from error
            raise
        return body

    async def get(self, endpoint: str, resource_id: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = await self._call("GET", f"{endpoint}/{resource_id}")
        except ScimCallError as error:
            if error.response.status == 404:
                return None
            raise
        return body

    async def find_by_dn(self, dn: str) -> tuple[str, dict[str, Any]] | None:
        """The resource (and its type) whose DN is ``dn``, looked up by filter then by scan."""
        escaped = dn.replace("\\", "\\\\").replace('"', '\\"')
        attr = 'urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry:distinguishedName eq "' + escaped + '"'
        for resource_type, endpoint in (("User", "/Users"), ("Group", "/Groups")):
            try:
                body = await self._call("GET", endpoint, {"filter": attr})
            except ScimCallError:
                body = None
            if body and body.get("Resources"):
                return resource_type, body["Resources"][0]
        wanted = dn.lower()
        for resource_type, endpoint in (("User", "/Users"), ("Group", "/Groups")):
            async for page in self.pages(endpoint, 1000):
                for resource in page:
                    entry = resource.get("urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry") or {}
                    if str(entry.get("distinguishedName", "")).lower() == wanted:
                        return resource_type, resource
        return None


def _scim_type(error: ScimCallError) -> str | None:
    body = error.response.body
    return body.get("scimType") if isinstance(body, dict) else None
