"""The control-plane store, chosen by URL: ``sqlite:///path`` (embedded default) or ``postgresql://…``.

``open_store(url)`` returns an unopened ``Store`` (``async with`` opens it and applies migrations);
the PostgreSQL driver is imported only when a ``postgresql://`` URL asks for it, so asyncpg is
needed only there (``pip install 'cloudprov[postgres]'``).
"""

from __future__ import annotations

from protocol.redaction import redact_text
from service.store.base import (
    AgentIdTakenError,
    AgentRecord,
    AgentRevokedError,
    AgentServesOtherDomainsError,
    SigningKeyRecord,
    Store,
    StoreError,
    TokenRefusedError,
    UnknownAgentError,
    normal_domain,
)

#: The URL schemes of the PostgreSQL driver, and of every store (``open_store``, the provisioning state).
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
STORE_SCHEMES = POSTGRES_SCHEMES | {"sqlite"}


def open_store(url: str) -> Store:
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from service.store.sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in POSTGRES_SCHEMES:
        try:
            from service.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            raise StoreError(f"a postgresql:// store needs asyncpg: pip install 'cloudprov[postgres]' ({exc})") from exc
        return PostgresStore(url)
    raise StoreError(f"{redact_text(url)!r}: the store URL must start with sqlite:/// or postgresql://")


__all__ = [
    "POSTGRES_SCHEMES",
    "STORE_SCHEMES",
    "AgentIdTakenError",
    "AgentRecord",
    "AgentRevokedError",
    "AgentServesOtherDomainsError",
    "SigningKeyRecord",
    "Store",
    "StoreError",
    "TokenRefusedError",
    "UnknownAgentError",
    "normal_domain",
    "open_store",
]
