"""Numbered schema migrations of the control-plane store, the same SQL for SQLite and PostgreSQL.

Each migration is ``(version, description, statements)``; a store applies, in order, every version
newer than the highest row of ``schema_version``, each in its own transaction together with its
``schema_version`` row. Statements use only types both databases read the same way: ``TEXT``,
``BIGINT``, ``BOOLEAN`` and ``DOUBLE PRECISION`` (epoch seconds). Never edit a released migration:
append a new one.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "agents, registration tokens, domain assignments, domains, signing keys, settings",
        [
            """CREATE TABLE agents (
                id TEXT PRIMARY KEY,
                cert_serial TEXT NOT NULL,
                cert_not_after DOUBLE PRECISION NOT NULL,
                registered_at DOUBLE PRECISION NOT NULL,
                version TEXT,
                last_bootstrap_at DOUBLE PRECISION,
                last_bootstrap_address TEXT,
                last_heartbeat_at DOUBLE PRECISION,
                last_heartbeat_address TEXT,
                last_status TEXT,
                revoked BOOLEAN NOT NULL DEFAULT FALSE,
                revoked_at DOUBLE PRECISION,
                revoked_reason TEXT
            )""",
            """CREATE TABLE registration_tokens (
                token_hash TEXT PRIMARY KEY,
                domain TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION,
                used_by TEXT
            )""",
            """CREATE TABLE domain_assignments (
                agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
                domain TEXT NOT NULL,
                assigned_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (agent_id, domain)
            )""",
            """CREATE TABLE domains (
                domain TEXT PRIMARY KEY,
                endpoints TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE signing_keys (
                id TEXT PRIMARY KEY,
                public_key TEXT NOT NULL,
                private_key TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('active', 'retiring')),
                created_at DOUBLE PRECISION NOT NULL,
                retire_at DOUBLE PRECISION
            )""",
            """CREATE TABLE settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                version BIGINT NOT NULL
            )""",
        ],
    ),
]
