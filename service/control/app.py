"""The control plane over HTTPS (aiohttp): agent endpoints with mutual TLS, admin endpoints with a token.

What it is
    ``ControlPlaneServer(settings)`` is an async context manager: it opens the store, loads or
    creates the CA, issues the listener's server certificate into the state folder, ensures a
    request-signing key and serves ``create_app(plane, admin_token)`` until closed.

Endpoints (JSON in, JSON out; every refusal is ``{"error": code, "detail": sentence}``)
    ``GET  /v1/ca``                                  the CA certificate (PEM text; public)
    ``POST /v1/register``   {token, agent_id, csr}  → certificate, CA certificate, domain
    ``POST /v1/bootstrap``  mTLS {agent_id, nonce, sent_at, version} → endpoints, keys, settings…
    ``POST /v1/renew``      mTLS {agent_id, nonce, sent_at, csr}     → new certificate
    ``POST /v1/heartbeat``  mTLS {agent_id, nonce, sent_at, version, status}
    admin (``Authorization: Bearer <admin.token>``):
    ``POST /v1/admin/tokens`` {domain, ttl?} · ``GET /v1/admin/agents`` ·
    ``POST /v1/admin/agents/{id}/domains`` {domain} · ``DELETE /v1/admin/agents/{id}/domains/{domain}`` ·
    ``POST /v1/admin/agents/{id}/revoke`` {reason} · ``GET /v1/admin/keys`` ·
    ``POST /v1/admin/keys/rotate`` {grace?} · ``PUT /v1/admin/domains/{domain}/endpoints`` {endpoints} ·
    ``PATCH /v1/admin/settings`` {key: value|null}

Guarantees
    The listener asks for a client certificate but does not require one (registration and admin
    calls have none); a certificate from another CA fails the TLS handshake, and the agent endpoints
    refuse a request without a valid, current, unrevoked certificate before reading its body. The
    admin token is compared in constant time; with no token configured the admin API answers 503.
    A body must be a UTF-8 JSON object (256 KiB at most, ``MAX_DEPTH`` levels of nesting at most)
    without NaN, infinities or lone surrogates: anything else is a 400 ``invalid_json``, never a
    failure of the control plane.
"""

from __future__ import annotations

import hmac
import json
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, Self

import structlog
from aiohttp import web
from cryptography import x509

from service.config import ServiceSettings
from service.control.ca import CertificateAuthority
from service.control.plane import ControlError, ControlPlane
from service.store import Store, open_store

_log = structlog.get_logger("cloudprov.control")
PLANE: web.AppKey[ControlPlane] = web.AppKey("plane", ControlPlane)
ADMIN_TOKEN: web.AppKey[str | None] = web.AppKey("admin_token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Containers nested deeper than this in a request body are refused (no message of the API needs more; a body
#: the parser barely accepted could fail when written back or read again deeper in the stack).
MAX_DEPTH = 32


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as error:
        return web.json_response(error.to_json(), status=error.status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error(error.status, "http_error", error.reason)
    except Exception:
        _log.exception("control plane request failed", path=request.path)
        return _error(500, "internal_error", "the control plane failed on this request; see its log")


def _invalid(problem: str) -> ControlError:
    return ControlError(400, "invalid_json", f"the request body must be a JSON object: {problem}")


def _no_constant(name: str) -> NoReturn:
    raise _invalid(f"{name} is not a JSON number")


def _check_values(body: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH``, text that is not Unicode (a lone surrogate from a ``\\ud800``
    escape) and numbers too large for a float (``1e400``); iteratively, so any depth the parser accepted is fine."""
    stack = [(body, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            raise _invalid(f"it is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list):
            stack.extend((part, depth + 1) for part in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise _invalid("a number is too large")
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise _invalid("a string holds a lone surrogate (\\ud800-\\udfff), which is not text") from None


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw.decode(), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _invalid("it is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _invalid(f"{error.msg} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise _invalid("it is nested too deeply") from None
    if not isinstance(body, dict):
        raise _invalid(f"it is a {type(body).__name__}")
    _check_values(body)
    return body


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client certificate the TLS layer verified, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
    return x509.load_der_x509_certificate(der) if der else None


def _admin(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        expected = request.app[ADMIN_TOKEN]
        if expected is None:
            raise ControlError(503, "admin_disabled", "the admin API is disabled: set admin.token in service.yaml")
        given = request.headers.get("Authorization", "")  # undecodable bytes come as surrogate escapes
        if not hmac.compare_digest(given.encode(errors="surrogateescape"), f"Bearer {expected}".encode()):
            raise ControlError(401, "admin_unauthorized", "admin endpoints need 'Authorization: Bearer <admin token>'")
        return await handler(request)

    return guarded


async def _ca(request: web.Request) -> web.StreamResponse:
    return web.Response(text=request.app[PLANE].ca.cert_pem, content_type="application/x-pem-file")


async def _register(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[PLANE].register(await _body(request)))


def _agent_call(call: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        plane = request.app[PLANE]
        agent = await plane.identify(peer_certificate(request))
        body = await _body(request)
        if call == "bootstrap":
            return web.json_response(await plane.bootstrap(agent, body, request.remote))
        if call == "renew":
            return web.json_response(await plane.renew(agent, body))
        return web.json_response(await plane.heartbeat(agent, body, request.remote))

    return handle


async def _create_token(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    ttl = body.get("ttl")
    if ttl is not None and (not isinstance(ttl, int | float) or isinstance(ttl, bool)):
        raise ControlError(400, "invalid_request", "'ttl' must be a number of seconds")
    domain = body.get("domain")
    return web.json_response(await request.app[PLANE].create_token(domain if isinstance(domain, str) else "", ttl))


async def _list_agents(request: web.Request) -> web.StreamResponse:
    return web.json_response({"agents": await request.app[PLANE].list_agents()})


async def _assign(request: web.Request) -> web.StreamResponse:
    domain = (await _body(request)).get("domain")
    if not isinstance(domain, str) or not domain:
        raise ControlError(400, "invalid_request", "'domain' must be a domain name")
    return web.json_response(await request.app[PLANE].assign(request.match_info["agent"], domain, assigned=True))


async def _unassign(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    return web.json_response(await request.app[PLANE].assign(info["agent"], info["domain"], assigned=False))


async def _revoke(request: web.Request) -> web.StreamResponse:
    reason = (await _body(request)).get("reason", "")
    return web.json_response(await request.app[PLANE].revoke(request.match_info["agent"], str(reason)))


async def _keys(request: web.Request) -> web.StreamResponse:
    return web.json_response({"keys": await request.app[PLANE].keys()})


async def _rotate(request: web.Request) -> web.StreamResponse:
    grace = (await _body(request)).get("grace")
    if grace is not None and (not isinstance(grace, int | float) or isinstance(grace, bool)):
        raise ControlError(400, "invalid_request", "'grace' must be a number of seconds")
    return web.json_response(await request.app[PLANE].rotate_keys(grace))


async def _endpoints(request: web.Request) -> web.StreamResponse:
    endpoints = (await _body(request)).get("endpoints")
    return web.json_response(await request.app[PLANE].set_endpoints(request.match_info["domain"], endpoints))


async def _settings(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[PLANE].update_settings(await _body(request)))


def create_app(plane: ControlPlane, admin_token: str | None) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=256 * 1024)
    app[PLANE] = plane
    app[ADMIN_TOKEN] = admin_token
    app.router.add_get("/v1/ca", _ca)
    app.router.add_post("/v1/register", _register)
    for call in ("bootstrap", "renew", "heartbeat"):
        app.router.add_post(f"/v1/{call}", _agent_call(call))
    app.router.add_post("/v1/admin/tokens", _admin(_create_token))
    app.router.add_get("/v1/admin/agents", _admin(_list_agents))
    app.router.add_post("/v1/admin/agents/{agent}/domains", _admin(_assign))
    app.router.add_delete("/v1/admin/agents/{agent}/domains/{domain}", _admin(_unassign))
    app.router.add_post("/v1/admin/agents/{agent}/revoke", _admin(_revoke))
    app.router.add_get("/v1/admin/keys", _admin(_keys))
    app.router.add_post("/v1/admin/keys/rotate", _admin(_rotate))
    app.router.add_put("/v1/admin/domains/{domain}/endpoints", _admin(_endpoints))
    app.router.add_patch("/v1/admin/settings", _admin(_settings))
    return app


def server_ssl_context(ca: CertificateAuthority, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ with our server certificate; client certificates asked for and checked against our CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=ca.cert_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class ControlPlaneServer:
    """Store + CA + HTTPS listener; ``url`` is known once entered (``port: 0`` picks a free port)."""

    def __init__(self, settings: ServiceSettings, *, store: Store | None = None, clock: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = settings.control.port
        self.plane: ControlPlane | None = None

    @property
    def url(self) -> str:
        host = self.settings.control.public_hosts[0]
        return f"https://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        control = self.settings.control
        store = self._store or open_store(self.settings.store_url)
        await store.open()
        try:
            ca = CertificateAuthority.load_or_create(
                control.state_dir, cert_file=control.ca_cert_file, key_file=control.ca_key_file
            )
            cert_file, key_file = ca.write_server_files(control.state_dir, control.public_hosts)
            secret = self.settings.store.key_secret
            options: dict[str, Any] = {"clock": self._clock} if self._clock else {}
            plane = ControlPlane(
                store, ca, control, key_secret=secret.get_secret_value() if secret else None, **options
            )
            await plane.start()
            token = self.settings.admin.token
            app = create_app(plane, token.get_secret_value() if token else None)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            family = socket.AF_INET6 if ":" in control.host else socket.AF_INET
            sock = socket.create_server((control.host, control.port), family=family)
            await web.SockSite(self._runner, sock, ssl_context=server_ssl_context(ca, cert_file, key_file)).start()
        except BaseException:
            if self._runner is not None:
                await self._runner.cleanup()
            await store.close()
            raise
        self.port = sock.getsockname()[1]
        self.plane = plane
        self._opened_store = store
        _log.info("control plane listening", url=self.url, store=self.settings.store_url.partition("://")[0])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._opened_store.close()
