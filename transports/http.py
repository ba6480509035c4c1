"""The ``http`` transport: plain SCIM 2.0 over HTTP, so any SCIM client can talk to the agent directly.

What it is
    ``HttpTransport`` runs an aiohttp server; every HTTP request below the base path becomes a
    ``Delivery`` whose payload is a request envelope (``protocol.envelope``) for the first configured
    domain, with a fresh id and a deadline ``request_timeout`` seconds ahead, marked ``trusted``
    because this layer authenticated the caller itself. ``reply`` turns the response envelope back
    into the HTTP answer (``application/scim+json``, ``Location`` and ``ETag`` from ``meta``).
    ``HttpRequester`` does the opposite: it sends a request envelope as the plain SCIM call and
    returns the answer as a response envelope, so requester-side code works over HTTP unchanged.

Connection URL / options
    ``http://127.0.0.1:8080/scim/v2`` (``https://`` needs ``tls_cert``/``tls_key``); port 0 picks a
    free port (read it back from ``transport.url``). Server settings: ``token`` or ``token_file``
    (bearer), ``tls_cert``, ``tls_key``, ``tls_client_ca`` (mTLS: client certificates signed by this CA
    are required), ``allow_anonymous`` (false), ``max_body_size`` (1 MiB), ``request_timeout`` (60 s).
    Requester settings: ``token`` / ``token_file``, ``tls_ca`` (to verify the server), ``tls_cert`` /
    ``tls_key`` (client certificate), ``max_connections`` (100).

Guarantees
    The server refuses to start without authentication (bearer token or mTLS) unless
    ``allow_anonymous: true`` is set: the transport is not even made, so ``cloudprov config check``
    reports it. Tokens are compared in constant time. The transport answers
    itself, without reaching the agent: 401 (bad or missing token), 404 (outside the base path),
    405, 413 (body over ``max_body_size``), 400 ``invalidSyntax`` (malformed JSON) and 503 (shutting
    down, no answer in time, or ``retry_later`` without a reply); ``dead_letter`` without a reply
    answers 400. There is no redelivery: a request not answered when the transport closes gets 503.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlunsplit
from uuid import uuid4

import aiohttp
import structlog
from aiohttp import web

from protocol.envelope import METHODS, EnvelopeError, Request, Response, ScimOperation, decode_request, decode_response
from protocol.errors import ScimError, invalid_syntax
from transports.base import (
    Delivery,
    Requester,
    RequestTimeoutError,
    Settlement,
    Transport,
    TransportBrokenError,
    TransportClosedError,
    TransportError,
)
from transports.registry import TransportSettingsError, read_settings, split_url

SCIM_JSON = "application/scim+json"
log = structlog.get_logger(__name__)


class AuthNotConfiguredError(TransportSettingsError):
    """The HTTP server would accept anyone: no token, no client CA, and ``allow_anonymous`` not set."""


@dataclass(frozen=True, slots=True)
class HttpServerSettings:
    host: str = "127.0.0.1"
    port: int = 80
    base_path: str = ""
    token: str | None = None
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    allow_anonymous: bool = False
    max_body_size: int = 1024 * 1024
    request_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class HttpClientSettings:
    token: str | None = None
    token_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = 100


def _read_token(token: str | None, token_file: str | None) -> str | None:
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise TransportSettingsError(f"token_file: cannot read {token_file!r}: {problem}") from None
    return token or None


def _error(error: ScimError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=error.status, body=json.dumps(error.to_body()).encode(), content_type=SCIM_JSON, headers=headers
    )


def _from_envelope(response: Response) -> web.Response:
    headers: dict[str, str] = {}
    meta = response.body.get("meta") if isinstance(response.body, dict) else None
    if isinstance(meta, dict):
        if isinstance(meta.get("location"), str) and response.status == 201:
            headers["Location"] = meta["location"]
        if isinstance(meta.get("version"), str):
            headers["ETag"] = meta["version"]
    if response.body is None or response.status == 204:
        return web.Response(status=response.status, headers=headers)
    body = json.dumps(response.body, ensure_ascii=False).encode()
    return web.Response(status=response.status, body=body, content_type=SCIM_JSON, headers=headers)


class HttpDelivery(Delivery):
    """One HTTP request waiting for its answer; settlement answers only if ``reply`` did not."""

    trusted = True

    def __init__(self, transport: HttpTransport, payload: bytes) -> None:
        self.payload = payload
        self._transport = transport
        self.answer: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()

    def answer_with(self, response: web.Response) -> None:
        if not self.answer.done():
            self.answer.set_result(response)

    async def reply(self, payload: bytes) -> None:
        if self._transport.closed:
            raise TransportClosedError("cannot reply: the HTTP transport is closed (the caller got 503)")
        try:
            response = decode_response(payload)
        except EnvelopeError as exc:
            self.answer_with(_error(ScimError(500, f"the agent produced an invalid response: {exc}")))
            raise
        self.answer_with(_from_envelope(response))

    async def _settle(self, outcome: Settlement, reason: str) -> None:
        if outcome is Settlement.RETRY:
            self.answer_with(_error(ScimError(503, reason or "try again later"), {"Retry-After": "1"}))
        elif outcome is Settlement.DEAD_LETTER:
            self.answer_with(_error(ScimError(400, reason or "the request cannot be processed")))


class HttpTransport(Transport):
    """Serve SCIM over HTTP; each request becomes a trusted delivery for ``domains[0]``."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (TransportBrokenError, OSError)

    def __init__(self, domains: Sequence[str], settings: HttpServerSettings, *, tls: bool = False) -> None:
        if isinstance(domains, str) or not domains:
            raise ValueError("domains must be a non-empty sequence of domain names")
        self.domains = tuple(domains)
        self.settings = settings
        self.tls = tls or settings.tls_cert is not None
        self._token = _read_token(settings.token, settings.token_file)
        if not (self._token or settings.tls_client_ca or settings.allow_anonymous):
            raise AuthNotConfiguredError(
                "the http transport refuses to start without authentication: set 'token' (or 'token_file') "
                "for bearer auth, or 'tls_client_ca' with 'tls_cert'/'tls_key' for mTLS; "
                "to serve anyone, set 'allow_anonymous: true' explicitly"
            )
        self._base = settings.base_path.rstrip("/")
        self._queue: asyncio.Queue[HttpDelivery | None] = asyncio.Queue()
        self._open: set[HttpDelivery] = set()
        self._runner: web.AppRunner | None = None
        self._port = settings.port
        self._stopping = False
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, domains: Sequence[str], options: Mapping[str, Any] | None = None) -> Self:
        parts = split_url(url)
        tls = parts.scheme == "https"
        settings = read_settings(
            HttpServerSettings,
            url,
            options,
            host=parts.hostname or "127.0.0.1",
            port=parts.port if parts.port is not None else (443 if tls else 80),
            base_path=parts.path,
        )
        return cls(domains, settings, tls=tls)

    @property
    def url(self) -> str:
        """Where the server listens (with the actual port once connected)."""
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self._port}{self._base}"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return self._runner is not None and not self._stopping

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not self.tls:
            if s.tls_client_ca:
                raise TransportSettingsError("tls_client_ca (mTLS) needs TLS: set tls_cert and tls_key")
            return None
        if not (s.tls_cert and s.tls_key):
            raise TransportSettingsError("https needs both tls_cert and tls_key (server certificate and key files)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(s.tls_cert, s.tls_key)
        if s.tls_client_ca:
            context.load_verify_locations(s.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def connect(self) -> None:
        if self._closed:
            raise TransportClosedError("HttpTransport cannot be restarted after close(); make a new one")
        if self._runner is not None:
            return
        s = self.settings
        context = self._ssl_context()
        app = web.Application(client_max_size=s.max_body_size)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
            sock = socket.create_server((s.host, s.port), family=family)
            await web.SockSite(runner, sock, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        self._runner = runner
        log.info("http.listening", url=self.url, mtls=bool(s.tls_client_ca), bearer=self._token is not None)

    async def stop_consuming(self) -> None:
        self._stopping = True
        while not self._queue.empty():
            waiting = self._queue.get_nowait()
            if waiting is not None:
                waiting.answer_with(_error(ScimError(503, "the agent is shutting down"), {"Retry-After": "1"}))
        self._queue.put_nowait(None)

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop_consuming()
        self._closed = True
        for delivery in self._open:
            delivery.answer_with(_error(ScimError(503, "the agent is shutting down"), {"Retry-After": "1"}))
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._runner is None and not self._stopping:
            raise TransportError("HttpTransport is not connected: use 'async with' or call connect() first")
        while True:
            delivery = await self._queue.get()
            if delivery is None:
                self._queue.put_nowait(None)  # wake the next iterator too
                return
            yield delivery

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token.encode())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            log.warning("http.unauthorized", remote=request.remote, path=request.path)
            return _error(ScimError(401, "a valid bearer token is required"), {"WWW-Authenticate": "Bearer"})
        path = request.path
        if path != self._base and not path.startswith(self._base + "/"):
            return _error(ScimError(404, f"{path} is outside {self._base or '/'}"))
        method = request.method.upper()
        if method not in METHODS:
            return _error(ScimError(405, f"method {method} is not part of SCIM"), {"Allow": ", ".join(sorted(METHODS))})
        if self._stopping:
            return _error(ScimError(503, "the agent is shutting down"), {"Retry-After": "1"})
        limit = self.settings.max_body_size
        too_large = ScimError(413, f"the request body exceeds {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            return _error(too_large, {"Connection": "close"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(too_large, {"Connection": "close"})
        try:
            body = json.loads(raw) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return _error(invalid_syntax(f"the request body is not valid JSON: {exc}"))
        timeout = self.settings.request_timeout
        envelope = Request(
            id=uuid4().hex,
            domain=self.domains[0],
            operation=ScimOperation(method, path[len(self._base) :] or "/", dict(request.query.items()), body),
            deadline=time.time() + timeout,
        )
        delivery = HttpDelivery(self, envelope.encode())
        self._open.add(delivery)
        self._queue.put_nowait(delivery)
        try:
            async with asyncio.timeout(timeout):
                return await delivery.answer
        except TimeoutError:
            return _error(ScimError(503, f"the agent did not answer within {timeout} s"), {"Retry-After": "1"})
        finally:
            self._open.discard(delivery)


class HttpRequester(Requester):
    """Send request envelopes as plain SCIM HTTP calls and return the answers as response envelopes."""

    def __init__(self, base_url: str, settings: HttpClientSettings | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpClientSettings()
        self._token = _read_token(self.settings.token, self.settings.token_file)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        parts = split_url(url)
        settings = read_settings(HttpClientSettings, url, options)
        scheme = parts.scheme if parts.scheme in {"http", "https"} else "https" if settings.tls_ca else "http"
        return cls(urlunsplit((scheme, parts.netloc, parts.path, "", "")), settings)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise TransportError("HttpRequester is not connected: use 'async with' or call connect() first")
        return self._session

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not (s.tls_ca or s.tls_cert):
            return None
        context = ssl.create_default_context(cafile=s.tls_ca)
        if s.tls_cert:
            context.load_cert_chain(s.tls_cert, s.tls_key)
        return context

    async def connect(self) -> None:
        if self._session is not None:
            return
        context = self._ssl_context()
        connector = aiohttp.TCPConnector(limit=self.settings.max_connections, ssl=context if context else True)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        operation = decode_request(payload).operation
        headers = {"Accept": SCIM_JSON}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if operation.body is not None:
            data = json.dumps(operation.body, ensure_ascii=False).encode()
            headers["Content-Type"] = SCIM_JSON
        url = self.base_url + operation.path
        try:
            async with asyncio.timeout(timeout):
                async with self.session.request(
                    operation.method, url, params=operation.query, data=data, headers=headers
                ) as answer:
                    status, raw = answer.status, await answer.read()
        except TimeoutError:
            raise RequestTimeoutError(f"no answer to {operation.method} {url} within {timeout} s") from None
        except aiohttp.ClientError as exc:
            raise TransportBrokenError(f"{operation.method} {url} failed: {exc}") from exc
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = ScimError(status, raw.decode(errors="replace")[:500]).to_body()
        return Response(request_id=request_id, status=status, body=body).encode()
