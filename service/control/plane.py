"""The control plane's rules, independent of HTTP: registration, identity, bootstrap, renewal, admin.

What it is
    ``ControlPlane(store, ca, settings)`` turns requests into store changes and JSON-ready answers;
    ``app`` only moves them over HTTPS. Every refusal is a ``ControlError`` carrying the HTTP status,
    a stable ``error`` code and a sentence for the operator.

Guarantees
    - A registration token works once and expires; a refused registration changes nothing.
    - An agent is identified only by a client certificate signed by our CA whose serial is the
      agent's current one; revoked agents are refused with the reason given at revocation.
    - A bootstrap must name the agent its certificate names (else ``forged``), be sent within
      ``clock_skew`` seconds of now (else ``stale``) and carry a nonce not seen before (else
      ``replayed``); a refused bootstrap records nothing. A nonce is remembered for as long as its
      request is fresh: an agent sending more than ``NONCES_PER_AGENT`` requests within that time is
      refused (429) without crowding out the others' nonces.
    - After a key rotation, the old and new keys are both handed out until ``key_grace_period``
      ends; afterwards only the new one (the old one is dropped from the store). A rotation's grace
      also bounds the keys still retiring from earlier rotations.
    - Durations are finite: a registration token lives at most ``MAX_TOKEN_TTL``, a rotated-out key
      at most ``MAX_KEY_GRACE``. Domain names are kept lower case without surrounding blanks.
    - Endpoints never carry ``allow_anonymous``: an agent told to serve SCIM over HTTP must
      authenticate its callers (a token or client certificates).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from cryptography import x509

from protocol.signing import Signer
from service.config import ControlSection
from service.control.ca import AGENT_ID, CertificateAuthority, CsrError, agent_id_of, serial_hex
from service.control.keys import new_signing_key, signer_of
from service.store import (
    AgentIdTakenError,
    AgentRecord,
    AgentRevokedError,
    AgentServesOtherDomainsError,
    Store,
    TokenRefusedError,
    UnknownAgentError,
    normal_domain,
)

_log = structlog.get_logger("cloudprov.control")
TOKEN_PREFIX = "cpr_"  # noqa: S105 (a recognisable prefix of registration tokens, not a secret)
DAY = 86400.0
#: The longest a registration token may live, and a rotated-out signing key stay trusted (seconds).
MAX_TOKEN_TTL, MAX_KEY_GRACE = 30 * DAY, 7 * DAY
#: A domain name once normalised: dot-separated labels of letters, digits, '-' and '_' (253 characters at most).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")


class ControlError(Exception):
    """A refused request: HTTP ``status``, a stable ``code``, and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "detail": str(self)}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Live nonces one agent may hold: an agent sends a bootstrap every few minutes and a heartbeat a minute,
#: a few within any clock-skew window; a thousand is a flood.
NONCES_PER_AGENT = 1_000
#: Live nonces of all agents together.
MAX_NONCES = 100_000
#: The longest nonce accepted (an agent sends 32 hex digits).
MAX_NONCE_LENGTH = 128


class NonceCache:
    """Bootstrap nonces seen within the clock-skew window, by agent (per replica).

    Bounded without ever forgetting a nonce whose request is still fresh (which would let a copy of that
    request through): an agent holding ``per_agent`` live nonces is refused (``agent_busy``) while the
    others go on, and once all together hold ``max_entries`` every new one is refused (``busy``). Nonces
    are dropped in the order they expire, and ``horizon`` is the latest expiry dropped: a request fresh
    no longer than that (its send time plus the skew) is refused (``stale``), whatever the clock did
    since, so a forgotten nonce is never taken for a new one."""

    def __init__(self, max_entries: int = MAX_NONCES, per_agent: int = NONCES_PER_AGENT) -> None:
        self._seen: dict[tuple[str, str], float] = {}  # (agent, nonce) -> until
        self._due: list[tuple[float, str, str]] = []  # a heap of (until, agent, nonce)
        self._held: dict[str, int] = {}  # live nonces per agent
        self._max = max_entries
        self.per_agent = per_agent
        self.horizon = -math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, agent_id: str, nonce: str, until: float, now: float) -> str | None:
        """Remember ``agent_id``'s ``nonce`` until ``until``; None if it is new, else why it is refused:
        ``stale``, ``replayed``, ``agent_busy`` or ``busy``."""
        seen, due, held = self._seen, self._due, self._held
        while due and due[0][0] <= now:
            expiry, dropped_agent, dropped = heapq.heappop(due)
            del seen[dropped_agent, dropped]
            left = held[dropped_agent] - 1
            if left:
                held[dropped_agent] = left
            else:
                del held[dropped_agent]
            self.horizon = max(self.horizon, expiry)
        if until <= self.horizon:
            return "stale"
        if (agent_id, nonce) in seen:
            return "replayed"
        if held.get(agent_id, 0) >= self.per_agent:
            return "agent_busy"
        if len(seen) >= self._max:
            return "busy"
        seen[agent_id, nonce] = until
        heapq.heappush(due, (until, agent_id, nonce))
        held[agent_id] = held.get(agent_id, 0) + 1
        return None


def _text(body: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise ControlError(400, "invalid_request", f"{key!r} must be a non-empty string")
    return value


def check_domain(value: Any) -> str:
    """``value`` as a domain name: lower case, without surrounding blanks; 400 when it is not one."""
    domain = normal_domain(value) if isinstance(value, str) else ""
    if not DOMAIN.fullmatch(domain):
        shown = value if isinstance(value, str) else type(value).__name__
        raise ControlError(
            400,
            "invalid_domain",
            f"{shown!r} is not a domain name (dot-separated labels of letters, digits, '-' and '_'; "
            "an internationalised name in its xn-- form)",
        )
    return domain


def check_seconds(value: float, name: str, *, maximum: float, zero: bool) -> float:
    """A finite duration in ``(0, maximum]`` (``[0, maximum]`` with ``zero``); 400 otherwise."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > maximum:
        low = "0 or more" if zero else "more than 0"
        raise ControlError(
            400, "invalid_request", f"{name!r} must be {low} seconds, at most {maximum:.0f} ({maximum / DAY:g} days)"
        )
    return value


def _anonymous(url: str, options: Mapping[str, Any]) -> bool:
    """Whether an endpoint sets ``allow_anonymous`` (in its URL query or its options), whatever the value."""
    names = [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)] + list(options)
    return any(str(name).strip().lower() == "allow_anonymous" for name in names)


def check_endpoints(value: Any) -> list[dict[str, Any]]:
    """An ordered, non-empty list of ``{"url": "scheme://…", "options": {…}}``, none with ``allow_anonymous``."""
    if not isinstance(value, list) or not value:
        raise ControlError(400, "invalid_request", "'endpoints' must be a non-empty list of {url, options}")
    endpoints = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or "://" not in item["url"]:
            raise ControlError(400, "invalid_request", f"endpoint {item!r} needs a 'url' like amqp://host/vhost")
        url, options = item["url"], item.get("options", {})
        if not isinstance(options, dict):
            raise ControlError(400, "invalid_request", f"endpoint {url!r}: 'options' must be a mapping")
        if _anonymous(url, options):
            raise ControlError(
                400,
                "anonymous_endpoint",
                f"endpoint {url.split('@')[-1]!r}: 'allow_anonymous' is not accepted from the control plane "
                "(agents would answer SCIM requests from anyone); give the http transport a 'token' or "
                "'tls_client_ca' instead",
            )
        endpoints.append({"url": url, "options": options})
    return endpoints


def _non_finite(value: Any) -> bool:
    """Whether a JSON-like value holds NaN or an infinity anywhere (iteratively: any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class ControlPlane:
    def __init__(
        self,
        store: Store,
        ca: CertificateAuthority,
        settings: ControlSection,
        *,
        key_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ca = ca
        self.settings = settings
        self.key_secret = key_secret
        self.clock = clock
        self.nonces = NonceCache()

    async def start(self) -> None:
        """Make sure a request-signing key exists (one, however many replicas start at once)."""
        if self.key_secret is None:
            _log.warning("store.key_secret is not set: request-signing private keys are stored unsealed")
        await self.store.ensure_signing_key(lambda: new_signing_key(self.clock(), self.key_secret))

    # ---- registration -----------------------------------------------------------------------
    async def create_token(self, domain: str, ttl: float | None = None) -> dict[str, Any]:
        domain = check_domain(domain)
        ttl = check_seconds(self.settings.token_ttl if ttl is None else ttl, "ttl", maximum=MAX_TOKEN_TTL, zero=False)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        await self.store.create_token(token_hash(token), domain, now, now + ttl)
        return {"token": token, "domain": domain, "expires_at": now + ttl, "ca_fingerprint": self.ca.fingerprint}

    async def register(self, body: Mapping[str, Any]) -> dict[str, Any]:
        token, csr = _text(body, "token"), _text(body, "csr")
        agent_id = _text(body, "agent_id")
        try:
            issued = self.ca.issue_client(csr, agent_id, self.settings.client_cert_lifetime)
        except CsrError as error:
            raise ControlError(400, "invalid_csr", str(error)) from None
        try:
            domain = await self.store.register_agent(
                token_hash(token), agent_id, issued.serial, issued.not_after, self.clock()
            )
        except TokenRefusedError as error:
            raise ControlError(401, f"token_{error.reason}", str(error)) from None
        except AgentRevokedError as error:
            raise ControlError(403, "agent_revoked", str(error)) from None
        except AgentServesOtherDomainsError as error:
            raise ControlError(409, "agent_serves_other_domains", str(error)) from None
        except AgentIdTakenError as error:
            raise ControlError(409, "agent_id_taken", str(error)) from None
        _log.info("agent registered", agent_id=agent_id, domain=domain, serial=issued.serial)
        return {
            "agent_id": agent_id,
            "domain": domain,
            "certificate": issued.pem,
            "ca_certificate": self.ca.cert_pem,
            "not_after": issued.not_after,
        }

    # ---- identity ---------------------------------------------------------------------------
    async def identify(self, cert: x509.Certificate | None) -> AgentRecord:
        """The agent a verified client certificate belongs to; ``ControlError`` when it may not talk."""
        if cert is None:
            raise ControlError(401, "certificate_required", "present the agent's client certificate (mutual TLS)")
        if not self.ca.verifies(cert):
            raise ControlError(401, "unknown_ca", "the client certificate was not issued by this control plane")
        agent_id = agent_id_of(cert)
        agent = await self.store.get_agent(agent_id) if agent_id else None
        if agent is None:
            raise ControlError(401, "unknown_agent", f"no registered agent {agent_id!r}; register it first")
        if agent.revoked:
            reason = agent.revoked_reason or "no reason given"
            raise ControlError(403, "agent_revoked", f"agent {agent.id!r} was revoked: {reason}")
        if serial_hex(cert) != agent.cert_serial:
            raise ControlError(
                401, "certificate_superseded", f"this certificate of agent {agent.id!r} was replaced by a newer one"
            )
        return agent

    def _check_fresh(self, agent: AgentRecord, body: Mapping[str, Any]) -> None:
        claimed = _text(body, "agent_id")
        if claimed != agent.id:
            raise ControlError(403, "forged", f"the certificate names agent {agent.id!r}, the request {claimed!r}")
        sent_at, nonce = body.get("sent_at"), _text(body, "nonce")
        now, skew = self.clock(), self.settings.clock_skew
        if (
            not isinstance(sent_at, int | float)
            or isinstance(sent_at, bool)
            or not math.isfinite(sent_at)  # NaN is never "more than skew away", and its nonce would not be kept
            or abs(now - sent_at) > skew
        ):
            raise ControlError(
                401, "stale", f"'sent_at' must be the sender's clock in epoch seconds, within {skew:g}s of ours"
            )
        if len(nonce) > MAX_NONCE_LENGTH or not (nonce.isascii() and nonce.isprintable()):
            raise ControlError(
                400, "invalid_request", f"'nonce' must be at most {MAX_NONCE_LENGTH} printable ASCII characters"
            )
        refused = self.nonces.add(agent.id, nonce, sent_at + skew, now)
        if refused == "stale":
            raise ControlError(401, "stale", "the request was sent too long ago to be told from a copy; send a new one")
        if refused == "replayed":
            raise ControlError(409, "replayed", f"nonce {nonce!r} was already used; every request needs a new one")
        if refused == "agent_busy":
            raise ControlError(
                429,
                "too_many_requests",
                f"agent {agent.id!r} sent more than {self.nonces.per_agent} requests within {skew:g}s; try again later",
            )
        if refused is not None:
            raise ControlError(503, "busy", "the control plane holds too many recent requests; try again later")

    # ---- agent calls (mTLS) -----------------------------------------------------------------
    async def bootstrap(self, agent: AgentRecord, body: Mapping[str, Any], address: str | None) -> dict[str, Any]:
        self._check_fresh(agent, body)
        version = body.get("version") if isinstance(body.get("version"), str) else None
        now = self.clock()
        keys = await self.store.signing_keys(now)
        settings, settings_version = await self.store.settings()
        endpoints = await self.store.endpoints(agent.domains)
        await self.store.record_bootstrap(agent.id, version, address, now)
        return {
            "agent_id": agent.id,
            "domains": list(agent.domains),
            "endpoints": endpoints,
            "signing_keys": {k.id: k.public_key for k in keys},
            "settings": settings,
            "settings_version": settings_version,
            "bootstrap_interval": self.settings.bootstrap_interval,
            "heartbeat_interval": self.settings.heartbeat_interval,
            "certificate": {"serial": agent.cert_serial, "not_after": agent.cert_not_after},
            "server_time": now,
        }

    async def renew(self, agent: AgentRecord, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check_fresh(agent, body)
        try:
            issued = self.ca.issue_client(_text(body, "csr"), agent.id, self.settings.client_cert_lifetime)
        except CsrError as error:
            raise ControlError(400, "invalid_csr", str(error)) from None
        if not await self.store.replace_certificate(agent.id, agent.cert_serial, issued.serial, issued.not_after):
            raise ControlError(409, "certificate_superseded", "the certificate changed meanwhile; bootstrap again")
        _log.info("agent certificate renewed", agent_id=agent.id, serial=issued.serial)
        return {"certificate": issued.pem, "not_after": issued.not_after, "ca_certificate": self.ca.cert_pem}

    async def heartbeat(self, agent: AgentRecord, body: Mapping[str, Any], address: str | None) -> dict[str, Any]:
        self._check_fresh(agent, body)
        status = body.get("status")
        if not isinstance(status, dict):
            raise ControlError(400, "invalid_request", "'status' must be a mapping")
        version = body.get("version") if isinstance(body.get("version"), str) else None
        await self.store.record_heartbeat(agent.id, status, version, address, self.clock())
        return {"heartbeat_interval": self.settings.heartbeat_interval}

    # ---- admin ------------------------------------------------------------------------------
    def describe(self, agent: AgentRecord) -> dict[str, Any]:
        return {
            "id": agent.id,
            "status": agent.status(self.clock(), self.settings.active_window),
            "version": agent.version,
            "domains": list(agent.domains),
            "last_bootstrap_at": agent.last_bootstrap_at,
            "last_bootstrap_address": agent.last_bootstrap_address,
            "last_heartbeat_at": agent.last_heartbeat_at,
            "last_status": agent.last_status,
            "cert_not_after": agent.cert_not_after,
            "revoked_reason": agent.revoked_reason,
        }

    async def list_agents(self) -> list[dict[str, Any]]:
        return [self.describe(a) for a in await self.store.list_agents()]

    async def assign(self, agent_id: str, domain: str, *, assigned: bool) -> dict[str, Any]:
        domain = check_domain(domain)
        try:
            if assigned:
                changed = await self.store.assign(agent_id, domain, self.clock())
            else:
                changed = await self.store.unassign(agent_id, domain)
        except UnknownAgentError as error:
            raise ControlError(404, "unknown_agent", str(error)) from None
        agent = await self.store.get_agent(agent_id)
        assert agent is not None
        return {"changed": changed, "agent": self.describe(agent)}

    async def revoke(self, agent_id: str, reason: str) -> dict[str, Any]:
        try:
            changed = await self.store.revoke_agent(agent_id, reason or "revoked by an admin", self.clock())
        except UnknownAgentError as error:
            raise ControlError(404, "unknown_agent", str(error)) from None
        _log.warning("agent revoked", agent_id=agent_id, reason=reason)
        return {"changed": changed}

    async def rotate_keys(self, grace: float | None = None) -> dict[str, Any]:
        """A new active key; the old one, and any still retiring, stay trusted ``grace`` seconds at most."""
        grace = self.settings.key_grace_period if grace is None else grace
        grace = check_seconds(grace, "grace", maximum=MAX_KEY_GRACE, zero=True)
        now = self.clock()
        new = new_signing_key(now, self.key_secret)
        dropped = await self.store.rotate_signing_key(new, grace, now)
        _log.info("request-signing key rotated", key_id=new.id, grace=grace, dropped=dropped)
        return {"active": new.id, "retiring_until": now + grace, "dropped": dropped, "keys": await self.keys()}

    async def keys(self) -> list[dict[str, Any]]:
        now = self.clock()
        await self.store.prune_signing_keys(now)
        return [
            {"id": k.id, "public_key": k.public_key, "state": k.state, "retire_at": k.retire_at}
            for k in await self.store.signing_keys(now)
        ]

    async def set_endpoints(self, domain: str, endpoints: Any) -> dict[str, Any]:
        domain = check_domain(domain)
        checked = check_endpoints(endpoints)
        await self.store.set_endpoints(domain, checked, self.clock())
        return {"domain": domain, "endpoints": checked}

    async def update_settings(self, values: Any) -> dict[str, Any]:
        if not isinstance(values, dict) or not values:
            raise ControlError(400, "invalid_request", "send a non-empty mapping of settings (null removes one)")
        if bad := sorted(key for key, value in values.items() if _non_finite(value)):
            raise ControlError(400, "invalid_request", f"{', '.join(bad)}: NaN and infinities are not setting values")
        version = await self.store.update_settings(values)
        settings, _ = await self.store.settings()
        return {"settings": settings, "settings_version": version}

    async def signer(self) -> Signer:
        """The active request-signing key, for the provisioning service's requests."""
        record = await self.store.ensure_signing_key(lambda: new_signing_key(self.clock(), self.key_secret))
        return signer_of(record, self.key_secret)


__all__ = [
    "AGENT_ID",
    "MAX_KEY_GRACE",
    "MAX_TOKEN_TTL",
    "ControlError",
    "ControlPlane",
    "check_domain",
    "check_endpoints",
    "check_seconds",
    "token_hash",
]
