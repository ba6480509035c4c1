"""The control-plane store interface: records, errors, and every query written once over two primitives.

What it is
    ``Store`` holds agents, one-time registration tokens, domain assignments, domain endpoints,
    request-signing keys and versioned settings. Drivers (``sqlite``, ``postgres``) supply only
    ``open``/``close``, a ``transaction()`` yielding a ``Tx`` (``fetch`` rows as dicts, ``execute``
    returning the row count) and ``_lock`` (serialise one kind of write across replicas); the SQL
    lives here, with ``$1``-style parameters (the SQLite driver rewrites them to ``?1``).

Guarantees
    Each public method is one transaction: it changes everything it names or nothing. Consuming a
    registration token is a single conditional ``UPDATE … RETURNING`` (two replicas racing on one
    token: exactly one wins); a refused registration consumes nothing. Key rotation and settings
    writes run under a store-wide lock, so concurrent replicas never make two active keys or two
    settings with one version.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from service.store.migrations import MIGRATIONS, SCHEMA_VERSION_TABLE


class StoreError(Exception):
    """Root of the store's errors."""


class TokenRefusedError(StoreError):
    """A registration token is unknown, already used or expired (``reason`` says which)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownAgentError(StoreError, LookupError):
    """No agent has this id."""


class AgentRevokedError(StoreError):
    """The agent was revoked; it cannot register again under the same id."""


class AgentIdTakenError(StoreError):
    """The agent id belongs to an agent of other domains: a token for one domain cannot take it over."""


class AgentServesOtherDomainsError(AgentIdTakenError):
    """The agent serves the token's domain and others too: a token for one of them cannot re-issue it."""


class Tx(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def execute(self, sql: str, *args: Any) -> int: ...


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: str
    cert_serial: str
    cert_not_after: float
    registered_at: float
    version: str | None = None
    last_bootstrap_at: float | None = None
    last_bootstrap_address: str | None = None
    last_heartbeat_at: float | None = None
    last_heartbeat_address: str | None = None
    last_status: dict[str, Any] | None = None
    revoked: bool = False
    revoked_at: float | None = None
    revoked_reason: str | None = None
    domains: tuple[str, ...] = field(default_factory=tuple)

    @property
    def last_seen(self) -> float | None:
        times = [t for t in (self.last_bootstrap_at, self.last_heartbeat_at) if t is not None]
        return max(times) if times else None

    def status(self, now: float, active_window: float) -> str:
        """``revoked``, ``active`` (bootstrap or heartbeat within ``active_window`` s) or ``inactive``."""
        if self.revoked:
            return "revoked"
        seen = self.last_seen
        return "active" if seen is not None and now - seen <= active_window else "inactive"


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    id: str
    public_key: str
    private_key: str  # as stored: sealed when the store has a key secret
    state: str  # "active" or "retiring"
    created_at: float
    retire_at: float | None = None


_AGENT_COLUMNS = (
    "id, cert_serial, cert_not_after, registered_at, version, last_bootstrap_at, last_bootstrap_address, "
    "last_heartbeat_at, last_heartbeat_address, last_status, revoked, revoked_at, revoked_reason"
)


class Store(abc.ABC):
    """A control-plane store; use ``async with open_store(url) as store`` (migrates on open)."""

    url: str

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- what a driver provides -------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations (serialised across replicas)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One transaction: committed when the block ends, rolled back if it raises."""

    @abc.abstractmethod
    async def _lock(self, tx: Tx, name: str) -> None:
        """Hold a store-wide lock called ``name`` until ``tx`` ends."""

    # ---- migrations (drivers call this under their migration lock) --------------------------
    async def _migrate(self, now: float) -> list[int]:
        async with self.transaction() as tx:
            await tx.execute(SCHEMA_VERSION_TABLE)
        applied: list[int] = []
        for version, description, statements in MIGRATIONS:
            async with self.transaction() as tx:
                rows = await tx.fetch("SELECT 1 AS x FROM schema_version WHERE version = $1", version)
                if rows:
                    continue
                for statement in statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
                    version,
                    description,
                    now,
                )
                applied.append(version)
        return applied

    async def schema_version(self) -> int:
        async with self.transaction() as tx:
            rows = await tx.fetch("SELECT MAX(version) AS v FROM schema_version")
        return int(rows[0]["v"] or 0)

    # ---- registration tokens ----------------------------------------------------------------
    async def create_token(self, token_hash: str, domain: str, now: float, expires_at: float) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO registration_tokens (token_hash, domain, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                token_hash,
                normal_domain(domain),
                now,
                expires_at,
            )

    async def register_agent(self, token_hash: str, agent_id: str, serial: str, not_after: float, now: float) -> str:
        """Consume the token and record the agent with its certificate and the token's domain; return it.

        An existing agent registers again (a new certificate) only with a token of the one domain it
        serves: a token of a domain it does not serve raises ``AgentIdTakenError``, and one of a domain it
        serves together with others ``AgentServesOtherDomainsError`` (or its certificate, and the other
        domains' endpoints, would go to whoever holds a token of any one of them). Raises
        ``TokenRefusedError``, ``AgentRevokedError`` or ``AgentIdTakenError``; then nothing changed.
        """
        async with self.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE registration_tokens SET used_at = $2, used_by = $3 "
                "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING domain",
                token_hash,
                now,
                agent_id,
            )
            if not rows:
                raise await _why_refused(tx, token_hash)
            domain = normal_domain(str(rows[0]["domain"]))
            existing = await tx.fetch("SELECT revoked FROM agents WHERE id = $1", agent_id)
            if existing and existing[0]["revoked"]:
                raise AgentRevokedError(f"agent {agent_id!r} was revoked; register it under a new id")
            if existing:
                assigned = await tx.fetch("SELECT domain FROM domain_assignments WHERE agent_id = $1", agent_id)
                served = {normal_domain(str(r["domain"])) for r in assigned}
                if domain not in served:
                    raise AgentIdTakenError(
                        f"agent id {agent_id!r} is registered and does not serve {domain!r}: register under a new id"
                    )
                if served != {domain}:  # the other domains are not named: the token holder may not know them
                    raise AgentServesOtherDomainsError(
                        f"agent id {agent_id!r} also serves other domains than {domain!r}, so a token for "
                        f"{domain!r} cannot re-register it: register under a new id, or ask an admin to "
                        "unassign the other domains first"
                    )
            await tx.execute(
                "INSERT INTO agents (id, cert_serial, cert_not_after, registered_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (id) DO UPDATE SET cert_serial = excluded.cert_serial, "
                "cert_not_after = excluded.cert_not_after, registered_at = excluded.registered_at",
                agent_id,
                serial,
                not_after,
                now,
            )
            await tx.execute(
                "INSERT INTO domain_assignments (agent_id, domain, assigned_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (agent_id, domain) DO NOTHING",
                agent_id,
                domain,
                now,
            )
        return domain

    # ---- agents -----------------------------------------------------------------------------
    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        async with self.transaction() as tx:
            agents = await _agents(tx, "WHERE id = $1", agent_id)
        return agents[0] if agents else None

    async def list_agents(self) -> list[AgentRecord]:
        async with self.transaction() as tx:
            return await _agents(tx, "ORDER BY id")

    async def record_bootstrap(self, agent_id: str, version: str | None, address: str | None, now: float) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE agents SET last_bootstrap_at = $2, last_bootstrap_address = $3, version = $4 WHERE id = $1",
                agent_id,
                now,
                address,
                version,
            )

    async def record_heartbeat(
        self, agent_id: str, status: Mapping[str, Any], version: str | None, address: str | None, now: float
    ) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE agents SET last_heartbeat_at = $2, last_heartbeat_address = $3, last_status = $4, "
                "version = COALESCE($5, version) WHERE id = $1",
                agent_id,
                now,
                address,
                json.dumps(dict(status), sort_keys=True),
                version,
            )

    async def replace_certificate(self, agent_id: str, old_serial: str, new_serial: str, not_after: float) -> bool:
        """Swap the agent's certificate if ``old_serial`` is still its current one and it is not revoked."""
        async with self.transaction() as tx:
            count = await tx.execute(
                "UPDATE agents SET cert_serial = $3, cert_not_after = $4 "
                "WHERE id = $1 AND cert_serial = $2 AND revoked = FALSE",
                agent_id,
                old_serial,
                new_serial,
                not_after,
            )
        return count == 1

    async def revoke_agent(self, agent_id: str, reason: str, now: float) -> bool:
        """Revoke an agent (False if it already was); ``UnknownAgentError`` if there is none."""
        async with self.transaction() as tx:
            count = await tx.execute(
                "UPDATE agents SET revoked = TRUE, revoked_at = $2, revoked_reason = $3 "
                "WHERE id = $1 AND revoked = FALSE",
                agent_id,
                now,
                reason,
            )
            if not count and not await tx.fetch("SELECT 1 AS x FROM agents WHERE id = $1", agent_id):
                raise UnknownAgentError(f"no agent {agent_id!r}")
        return count == 1

    async def assign(self, agent_id: str, domain: str, now: float) -> bool:
        """Assign ``domain`` to the agent (False if it already was)."""
        async with self.transaction() as tx:
            if not await tx.fetch("SELECT 1 AS x FROM agents WHERE id = $1", agent_id):
                raise UnknownAgentError(f"no agent {agent_id!r}")
            count = await tx.execute(
                "INSERT INTO domain_assignments (agent_id, domain, assigned_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (agent_id, domain) DO NOTHING",
                agent_id,
                normal_domain(domain),
                now,
            )
        return count == 1

    async def unassign(self, agent_id: str, domain: str) -> bool:
        """Take ``domain`` from the agent (False if it was not assigned)."""
        async with self.transaction() as tx:
            if not await tx.fetch("SELECT 1 AS x FROM agents WHERE id = $1", agent_id):
                raise UnknownAgentError(f"no agent {agent_id!r}")
            count = await tx.execute(  # rows written before domains were normalised are matched too
                "DELETE FROM domain_assignments WHERE agent_id = $1 AND LOWER(TRIM(domain)) = $2",
                agent_id,
                normal_domain(domain),
            )
        return count >= 1

    # ---- domain endpoints -------------------------------------------------------------------
    async def set_endpoints(self, domain: str, endpoints: Sequence[Mapping[str, Any]], now: float) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO domains (domain, endpoints, updated_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (domain) DO UPDATE SET endpoints = excluded.endpoints, updated_at = excluded.updated_at",
                normal_domain(domain),
                json.dumps([dict(e) for e in endpoints]),
                now,
            )

    async def endpoints(self, domains: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The ordered endpoint list of each of ``domains`` that has one, keyed as asked (compared normalised)."""
        async with self.transaction() as tx:
            rows = await tx.fetch("SELECT domain, endpoints FROM domains ORDER BY updated_at, domain")
        found = {normal_domain(str(r["domain"])): json.loads(r["endpoints"]) for r in rows}  # the newest wins
        return {d: found[normal_domain(d)] for d in sorted(domains) if normal_domain(d) in found}

    # ---- request-signing keys ---------------------------------------------------------------
    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        """The keys agents must trust now: the active one and those still within their grace period."""
        async with self.transaction() as tx:
            rows = await tx.fetch(
                "SELECT * FROM signing_keys WHERE state = 'active' OR retire_at > $1 ORDER BY created_at, id", now
            )
        return [SigningKeyRecord(**row) for row in rows]

    async def ensure_signing_key(self, make: Callable[[], SigningKeyRecord]) -> SigningKeyRecord:
        """The active key; made with ``make()`` when there is none (once, however many replicas start)."""
        async with self.transaction() as tx:
            await self._lock(tx, "signing_keys")
            rows = await tx.fetch("SELECT * FROM signing_keys WHERE state = 'active'")
            if rows:
                return SigningKeyRecord(**rows[0])
            key = make()
            await _insert_key(tx, key)
        return key

    async def rotate_signing_key(self, new: SigningKeyRecord, grace: float, now: float) -> list[str]:
        """Make ``new`` the active key; every other key retires within ``grace`` s. Returns the dropped ids.

        The old active key retires after ``grace``; keys already retiring later than that are brought
        forward to it (a rotation with a short grace also ends a long grace given before).
        """
        async with self.transaction() as tx:
            await self._lock(tx, "signing_keys")
            dropped = await tx.fetch(
                "DELETE FROM signing_keys WHERE state = 'retiring' AND retire_at <= $1 RETURNING id", now
            )
            await tx.execute(
                "UPDATE signing_keys SET state = 'retiring', retire_at = $1 "
                "WHERE state = 'active' OR (state = 'retiring' AND retire_at > $1)",
                now + grace,
            )
            await _insert_key(tx, new)
        return [str(r["id"]) for r in dropped]

    async def prune_signing_keys(self, now: float) -> list[str]:
        async with self.transaction() as tx:
            rows = await tx.fetch(
                "DELETE FROM signing_keys WHERE state = 'retiring' AND retire_at <= $1 RETURNING id", now
            )
        return [str(r["id"]) for r in rows]

    # ---- settings ---------------------------------------------------------------------------
    async def settings(self) -> tuple[dict[str, Any], int]:
        """The agents' settings and their version (the highest version of any key; 0 when empty)."""
        async with self.transaction() as tx:
            rows = await tx.fetch("SELECT key, value, version FROM settings ORDER BY key")
        version = max((int(r["version"]) for r in rows), default=0)
        return {str(r["key"]): json.loads(r["value"]) for r in rows if r["key"] != "_version"}, version

    async def update_settings(self, values: Mapping[str, Any]) -> int:
        """Set some settings (a value of None removes the key); return the new version."""
        async with self.transaction() as tx:
            await self._lock(tx, "settings")
            rows = await tx.fetch("SELECT MAX(version) AS v FROM settings")
            version = int(rows[0]["v"] or 0) + 1
            for key, value in values.items():
                if value is None:
                    await tx.execute("DELETE FROM settings WHERE key = $1", key)
                    continue
                await tx.execute(
                    "INSERT INTO settings (key, value, version) VALUES ($1, $2, $3) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
                    key,
                    json.dumps(value),
                    version,
                )
            await tx.execute(  # the version row: a removal raises the version too
                "INSERT INTO settings (key, value, version) VALUES ('_version', '0', $1) "
                "ON CONFLICT (key) DO UPDATE SET version = excluded.version",
                version,
            )
        return version


def normal_domain(domain: str) -> str:
    """A domain name as the store keeps and compares it: lower case, without surrounding blanks."""
    return domain.strip().lower()


async def _why_refused(tx: Tx, token_hash: str) -> TokenRefusedError:
    rows = await tx.fetch("SELECT used_at FROM registration_tokens WHERE token_hash = $1", token_hash)
    if not rows:
        return TokenRefusedError("unknown", "the registration token is not known (ask an admin for a new one)")
    if rows[0]["used_at"] is not None:
        return TokenRefusedError("used", "the registration token was already used; a token works once")
    return TokenRefusedError("expired", "the registration token has expired (ask an admin for a new one)")


async def _agents(tx: Tx, where: str, *args: Any) -> list[AgentRecord]:
    rows = await tx.fetch(f"SELECT {_AGENT_COLUMNS} FROM agents {where}", *args)  # noqa: S608 (fixed text)
    assignments = await tx.fetch("SELECT agent_id, domain FROM domain_assignments")
    domains: dict[str, set[str]] = {}
    for row in assignments:  # normalised again: rows written before domains were normalised
        domains.setdefault(str(row["agent_id"]), set()).add(normal_domain(str(row["domain"])))
    agents = []
    for row in rows:
        values = dict(row)
        values["revoked"] = bool(values["revoked"])
        values["last_status"] = json.loads(values["last_status"]) if values["last_status"] else None
        agents.append(AgentRecord(**values, domains=tuple(sorted(domains.get(str(row["id"]), ())))))
    return agents


async def _insert_key(tx: Tx, key: SigningKeyRecord) -> None:
    await tx.execute(
        "INSERT INTO signing_keys (id, public_key, private_key, state, created_at, retire_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        key.id,
        key.public_key,
        key.private_key,
        key.state,
        key.created_at,
        key.retire_at,
    )


__all__ = [
    "AgentIdTakenError",
    "AgentRecord",
    "AgentRevokedError",
    "AgentServesOtherDomainsError",
    "SigningKeyRecord",
    "Store",
    "StoreError",
    "TokenRefusedError",
    "Tx",
    "UnknownAgentError",
    "normal_domain",
]
