"""The SCIM target: provision into any SCIM 2.0 service (RFC 7643/7644) over HTTP(S) with aiohttp.

What it is
    ``ScimTarget`` writes Users and Groups with POST, PATCH and DELETE and reads them with GET. The
    anchor travels in ``externalId`` (``anchor_attribute`` picks another attribute path for services
    that do not keep ``externalId``); ``get_by_anchor`` is ``filter=externalId eq "…"``. Attribute keys
    are SCIM paths: a create builds the resource from them (``name.givenName`` → ``name``,
    ``emails[type eq "work"].value`` → an element of ``emails``, ``urn:…:User:department`` → the
    extension), an update sends one PATCH of ``replace``/``remove`` operations on those paths, and
    objects read back carry the same flattened keys. Membership changes are PATCH ``add`` with
    ``members`` values and ``remove`` with ``members[value eq "…"]``, ``member_batch`` values per
    request; a group's member list is never replaced whole. ``disable`` is PATCH ``active`` false.

Connection URL / options
    ``https://host/scim/v2`` or ``http://…``. Options (URL query or mapping): ``token`` / ``token_file``
    (bearer), ``tls_ca`` (CA bundle verifying the service), ``tls_cert`` / ``tls_key`` (client
    certificate), ``max_connections`` (pooled, 20), ``request_timeout`` (60 s), ``attempts`` (6 tries of
    a throttled or failing call), ``initial_backoff`` (0.5 s) / ``max_backoff`` (30 s),
    ``max_retry_after`` (300 s: the longest ``Retry-After`` honoured), ``member_batch`` (100),
    ``page_size`` (200, listing), ``anchor_attribute`` (``externalId``).

Guarantees
    429 and 5xx answers (except 501) and connection failures are retried by a bounded tenacity policy
    that waits what ``Retry-After`` says (seconds or an HTTP-date) or else backs off exponentially with
    jitter; when the tries run out they surface as ``TargetUnavailableError``. 404 is
    ``TargetNotFoundError``, 409 ``TargetConflictError``, any other 4xx ``TargetRejectedError`` with
    the service's SCIM ``detail`` and ``scimType``. A create retried after a failure the service may
    have acted on, and then refused as a conflict, returns the object it created (found by anchor)
    instead of failing. Removing a member the group does not have is not an error.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from service.provisioning.targets.base import (
    Target,
    TargetConflictError,
    TargetError,
    TargetNotFoundError,
    TargetObject,
    TargetRejectedError,
    TargetUnavailableError,
)
from service.provisioning.targets.registry import TargetSettingsError, read_target_settings

SCIM_JSON = "application/scim+json"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
CORE_SCHEMAS = {
    "User": "urn:ietf:params:scim:schemas:core:2.0:User",
    "Group": "urn:ietf:params:scim:schemas:core:2.0:Group",
}
ENDPOINTS = {"User": "/Users", "Group": "/Groups"}
#: Attributes a target object does not carry among its ``attributes``.
_NOT_ATTRIBUTES = {"schemas", "id", "meta", "members"}
_NAME = r"[A-Za-z_$][\w$-]*"
_PATH = re.compile(rf'^(?P<attr>{_NAME})(?:\[type eq "(?P<type>[^"]*)"\])?(?:\.(?P<sub>{_NAME}))?$')

log = structlog.get_logger("cloudprov.provisioning.target.scim")
Sleep = Callable[[float], Awaitable[None]]


class ScimUnavailableError(TargetUnavailableError):
    """A throttled (429), failing (5xx) or unreachable service; ``retry_after`` is what it asked for."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ScimTargetSettings:
    base_url: str = ""
    token: str | None = None
    token_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = 20
    request_timeout: float = 60.0
    attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0
    member_batch: int = 100
    page_size: int = 200
    anchor_attribute: str = "externalId"

    def __post_init__(self) -> None:
        if urlsplit(self.base_url).scheme not in {"http", "https"}:
            raise TargetSettingsError(f"base_url must be http(s)://host/path, not {self.base_url!r}")
        for name in ("attempts", "member_batch", "page_size", "max_connections"):
            if getattr(self, name) < 1:
                raise TargetSettingsError(f"{name} must be at least 1, not {getattr(self, name)}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date (None if unreadable)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


# ---------------------------------------------------------------------- paths ↔ resources


def _split_extension(key: str) -> tuple[str | None, str]:
    """``urn:…:User:department`` → (``urn:…:User``, ``department``); a core path → (None, path)."""
    if not key.lower().startswith("urn:"):
        return None, key
    head = key.split("[", 1)[0]
    cut = head.rfind(":")
    return key[:cut], key[cut + 1 :]


def _put(container: dict[str, Any], path: str, value: Any) -> None:
    match = _PATH.match(path)
    if match is None:
        raise TargetRejectedError(f"cannot place attribute path {path!r} in a SCIM resource")
    attr, kind, sub = match["attr"], match["type"], match["sub"]
    if kind is not None:
        elements = container.setdefault(attr, [])
        element = next((e for e in elements if isinstance(e, dict) and e.get("type") == kind), None)
        if element is None:
            element = {"type": kind}
            elements.append(element)
        element[sub or "value"] = value
    elif sub is not None:
        container.setdefault(attr, {})[sub] = value
    else:
        container[attr] = value


def build_resource(resource_type: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A SCIM resource body from attributes keyed by SCIM path (``schemas`` lists the extensions used)."""
    resource: dict[str, Any] = {"schemas": [CORE_SCHEMAS.get(resource_type, CORE_SCHEMAS["User"])]}
    for key, value in attributes.items():
        if value is None:
            continue
        extension, path = _split_extension(key)
        if extension is None:
            _put(resource, path, value)
        else:
            if extension not in resource:
                resource["schemas"].append(extension)
            _put(resource.setdefault(extension, {}), path, value)
    return resource


def _flatten_into(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, item in value.items():
            out[f"{key}.{sub}"] = item
        return
    if isinstance(value, list) and value and all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in value):
        types = [e["type"] for e in value]
        if len(set(types)) == len(types):
            for element in value:
                for sub, item in element.items():
                    if sub != "type":
                        out[f'{key}[type eq "{element["type"]}"].{sub}'] = item
            return
    out[key] = value


def flatten(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's attributes keyed by SCIM path (the inverse of ``build_resource``), without id/meta/members."""
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key in _NOT_ATTRIBUTES:
            continue
        if key.lower().startswith("urn:") and isinstance(value, dict):
            for name, item in value.items():
                _flatten_into(out, f"{key}:{name}", item)
        else:
            _flatten_into(out, key, value)
    return out


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escaping is SCIM filter escaping
    raise TypeError(f"cannot compare a SCIM attribute with a {type(value).__name__}")


def equality_filter(path: str, value: Any) -> str:
    """``path eq value`` as a SCIM filter; a typed path becomes ``emails[type eq "work" and value eq …]``."""
    extension, rest = _split_extension(path)
    match = _PATH.match(rest)
    if match is not None and match["type"] is not None:
        prefix = f"{extension}:" if extension else ""
        kind = json.dumps(match["type"], ensure_ascii=False)
        return f"{prefix}{match['attr']}[type eq {kind} and {match['sub'] or 'value'} eq {_literal(value)}]"
    return f"{path} eq {_literal(value)}"


# ---------------------------------------------------------------------- the target


class ScimTarget(Target):
    """Any SCIM 2.0 service as a provisioning target (see the module docstring)."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (TargetUnavailableError,)

    def __init__(
        self, settings: ScimTargetSettings, *, sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._sleep = sleep
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        parts = urlsplit(url)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(read_target_settings(ScimTargetSettings, url, options, base_url=base))

    # ------------------------------------------------------------------ connection

    def _ssl(self) -> ssl.SSLContext | bool:
        s = self.settings
        if not (s.tls_ca or s.tls_cert):
            return True
        context = ssl.create_default_context(cafile=s.tls_ca)
        if s.tls_cert:
            context.load_cert_chain(s.tls_cert, s.tls_key)
        return context

    def _headers(self) -> dict[str, str]:
        s = self.settings
        headers = {"Accept": SCIM_JSON}
        token = Path(s.token_file).read_text().strip() if s.token_file else s.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def open(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self.settings.max_connections, ssl=self._ssl())
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers())

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise TargetError("the SCIM target is not open: use 'async with' or call open() first")
        return self._session

    # ------------------------------------------------------------------ requests

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ScimUnavailableError) and error.retry_after is not None:
            return min(error.retry_after, self.settings.max_retry_after)
        s = self.settings
        backoff = min(s.max_backoff, s.initial_backoff * 2.0 ** (state.attempt_number - 1))
        return min(s.max_backoff, backoff + random.uniform(0, s.initial_backoff))

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("scim target unavailable, retrying", error=str(error), attempt=state.attempt_number, wait=wait)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        recover_conflict: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Send one SCIM call (retried while the service is unavailable) and return its JSON body or None."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TargetUnavailableError),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await self._once(method, path, params, body)
                except TargetConflictError:
                    if recover_conflict is None or attempt.retry_state.attempt_number == 1:
                        raise
                    recovered = await recover_conflict()  # an earlier try may have succeeded unseen
                    if recovered is None:
                        raise
                    return recovered
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _once(self, method: str, path: str, params: Mapping[str, str] | None, body: Any) -> Any:
        url = self.base_url + path
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": SCIM_JSON} if data is not None else None
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                async with self.session.request(method, url, params=params, data=data, headers=headers) as answer:
                    status, raw = answer.status, await answer.read()
                    retry_after = answer.headers.get("Retry-After")
        except TimeoutError:
            raise ScimUnavailableError(f"{method} {url}: no answer within {self.settings.request_timeout} s") from None
        except aiohttp.ClientError as exc:
            raise ScimUnavailableError(f"{method} {url}: {exc}") from exc
        parsed: Any = None
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                parsed = {"detail": raw.decode(errors="replace")[:500]}
        if 200 <= status < 300:
            return parsed
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
        scim_type = parsed.get("scimType") if isinstance(parsed, dict) else None
        message = f"{method} {path}: {status}{f' {scim_type}' if scim_type else ''}: {detail or 'no detail'}"
        if status == 429 or (status >= 500 and status != 501):
            wait = parse_retry_after(retry_after, self._clock())
            raise ScimUnavailableError(message, status=status, retry_after=wait)
        if status == 404:
            raise TargetNotFoundError(message)
        if status == 409:
            raise TargetConflictError(message)
        raise TargetRejectedError(message)

    async def _patch(self, obj: TargetObject, operations: list[dict[str, Any]]) -> Any:
        body = {"schemas": [PATCH_SCHEMA], "Operations": operations}
        return await self._request("PATCH", self._location(obj), body=body)

    @staticmethod
    def _endpoint(resource_type: str) -> str:
        return ENDPOINTS.get(resource_type, f"/{resource_type}s")

    def _location(self, obj: TargetObject) -> str:
        return f"{self._endpoint(obj.resource_type)}/{obj.id}"

    def _object(self, resource_type: str, resource: Any) -> TargetObject:
        if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
            raise TargetRejectedError(f"the service answered with something that is not a {resource_type} resource")
        attributes = flatten(resource)
        anchor = attributes.pop(self.settings.anchor_attribute, None)
        members = frozenset(
            str(m["value"]) for m in resource.get("members") or () if isinstance(m, dict) and "value" in m
        )
        active = resource.get("active") is not False
        return TargetObject(resource["id"], resource_type, anchor, attributes, members, active)

    async def _search(self, resource_type: str, filter_: str) -> TargetObject | None:
        params = {"filter": filter_, "startIndex": "1", "count": "2"}
        answer = await self._request("GET", self._endpoint(resource_type), params=params)
        resources = answer.get("Resources") if isinstance(answer, dict) else None
        if not resources:
            return None
        if len(resources) > 1:
            log.warning("scim target: more than one match", resource_type=resource_type, filter=filter_)
        return self._object(resource_type, resources[0])

    async def _fetch(self, obj: TargetObject) -> TargetObject:
        return self._object(obj.resource_type, await self._request("GET", self._location(obj)))

    # ------------------------------------------------------------------ the Target interface

    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        return await self._search(resource_type, equality_filter(self.settings.anchor_attribute, anchor))

    async def find_by_attribute(self, resource_type: str, attribute: str, value: Any) -> TargetObject | None:
        return await self._search(resource_type, equality_filter(attribute, value))

    async def objects(self, resource_type: str) -> AsyncIterator[TargetObject]:
        start, size = 1, self.settings.page_size
        while True:
            params = {"startIndex": str(start), "count": str(size)}
            answer = await self._request("GET", self._endpoint(resource_type), params=params)
            resources = (answer.get("Resources") if isinstance(answer, dict) else None) or []
            for resource in resources:
                yield self._object(resource_type, resource)
            total = answer.get("totalResults", 0) if isinstance(answer, dict) else 0
            start += len(resources)
            if not resources or start > total:
                return

    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        body = build_resource(resource_type, {**attributes, self.settings.anchor_attribute: anchor})

        async def created_before() -> TargetObject | None:
            return await self.get_by_anchor(resource_type, anchor)

        answer = await self._request("POST", self._endpoint(resource_type), body=body, recover_conflict=created_before)
        if isinstance(answer, TargetObject):
            return answer
        if isinstance(answer, dict) and "id" in answer:
            return self._object(resource_type, answer)
        found = await self.get_by_anchor(resource_type, anchor)  # a service that answered 201 without a body
        if found is None:
            raise TargetRejectedError(f"the service accepted the {resource_type} but cannot find it by its anchor")
        return found

    async def update(
        self, obj: TargetObject, attributes: Mapping[str, Any], *, anchor: str | None = None
    ) -> TargetObject:
        operations: list[dict[str, Any]] = []
        for key, value in attributes.items():
            typed = "[" in key
            if value is None:
                if not typed or key in obj.attributes:  # a value filter matching nothing is an error (noTarget)
                    operations.append({"op": "remove", "path": key})
            elif typed and key not in obj.attributes:
                partial = build_resource(obj.resource_type, {key: value})
                del partial["schemas"]
                operations.append({"op": "add", "value": partial})  # no element of that type yet: add one
            else:
                operations.append({"op": "replace", "path": key, "value": value})
        if anchor is not None and anchor != obj.anchor:
            operations.append({"op": "replace", "path": self.settings.anchor_attribute, "value": anchor})
        if not operations:
            return obj
        answer = await self._patch(obj, operations)
        if isinstance(answer, dict) and "id" in answer:
            return self._object(obj.resource_type, answer)
        return await self._fetch(obj)

    async def change_members(self, group: TargetObject, add: Collection[str], remove: Collection[str]) -> None:
        adding = list(dict.fromkeys(add))
        wanted = set(adding)
        removing = [m for m in dict.fromkeys(remove) if m not in wanted]
        size = self.settings.member_batch
        for start in range(0, len(adding), size):
            values = [{"value": member} for member in adding[start : start + size]]
            await self._patch(group, [{"op": "add", "path": "members", "value": values}])
        for start in range(0, len(removing), size):
            chunk = removing[start : start + size]
            operations = [{"op": "remove", "path": f"members[value eq {_literal(m)}]"} for m in chunk]
            try:
                await self._patch(group, operations)
            except TargetRejectedError:
                # Some services refuse to remove a value that is not there (noTarget): drop those, try once more.
                present = (await self._fetch(group)).members
                remaining = [m for m in chunk if m in present]
                if len(remaining) == len(chunk):
                    raise
                if remaining:
                    operations = [{"op": "remove", "path": f"members[value eq {_literal(m)}]"} for m in remaining]
                    await self._patch(group, operations)

    async def disable(self, obj: TargetObject) -> None:
        await self._patch(obj, [{"op": "replace", "path": "active", "value": False}])

    async def delete(self, obj: TargetObject) -> None:
        await self._request("DELETE", self._location(obj))
