"""The control-plane store: one behaviour suite run against SQLite and the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.store import (
    AgentIdTakenError,
    AgentRevokedError,
    AgentServesOtherDomainsError,
    SigningKeyRecord,
    Store,
    TokenRefusedError,
    UnknownAgentError,
    open_store,
)
from service.store.migrations import MIGRATIONS
from tests.conftest import server_missing

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
NOW = 1_000_000.0


async def _pg_database() -> AsyncIterator[str]:
    asyncpg = pytest.importorskip("asyncpg")
    name = f"cloudprov_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        server_missing(f"PostgreSQL on 127.0.0.1:5432 ({exc})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/control.db"
        return
    async for url in _pg_database():
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as opened:
        yield opened


def _key(key_id: str, now: float = NOW) -> SigningKeyRecord:
    return SigningKeyRecord(key_id, f"pub-{key_id}", f"priv-{key_id}", "active", now)


async def test_migrations_are_applied_once_and_recorded(store_url: str) -> None:
    """Opening a store applies every migration and records it; opening it again changes nothing."""
    async with open_store(store_url) as first:
        assert await first.schema_version() == MIGRATIONS[-1][0]
    async with open_store(store_url) as second:
        assert await second.schema_version() == MIGRATIONS[-1][0]


async def test_replicas_starting_together_migrate_once(store_url: str) -> None:
    """Several replicas opening one fresh database at once all end up on the latest schema without errors."""
    stores = [open_store(store_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = await asyncio.gather(*(s.schema_version() for s in stores))
        assert set(versions) == {MIGRATIONS[-1][0]}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_registration_consumes_the_token_once(store: Store) -> None:
    """A token registers one agent, is assigned its domain, and is refused as 'used' afterwards."""
    await store.create_token("h1", "example.com", NOW, NOW + 60)
    assert await store.register_agent("h1", "agent-1", "aa", NOW + 3600, NOW) == "example.com"
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert (agent.cert_serial, agent.domains) == ("aa", ("example.com",))
    with pytest.raises(TokenRefusedError) as refused:
        await store.register_agent("h1", "agent-2", "bb", NOW + 3600, NOW + 1)
    assert refused.value.reason == "used"
    assert await store.get_agent("agent-2") is None


async def test_expired_and_unknown_tokens_are_refused_without_change(store: Store) -> None:
    """An expired or unknown token registers nothing and says which it was."""
    await store.create_token("old", "example.com", NOW, NOW + 60)
    for token, reason in (("old", "expired"), ("nope", "unknown")):
        with pytest.raises(TokenRefusedError) as refused:
            await store.register_agent(token, "agent-x", "cc", NOW + 3600, NOW + 61)
        assert refused.value.reason == reason
    assert await store.list_agents() == []


async def test_racing_replicas_consume_a_token_exactly_once(store_url: str) -> None:
    """Two replicas registering with the same token at the same time: exactly one succeeds."""
    async with open_store(store_url) as a, open_store(store_url) as b:
        await a.create_token("race", "example.com", NOW, NOW + 60)
        results = await asyncio.gather(
            *(s.register_agent("race", f"agent-{i}", f"{i}", NOW + 3600, NOW) for i, s in enumerate((a, b) * 3)),
            return_exceptions=True,
        )
    assert sum(1 for r in results if r == "example.com") == 1
    assert all(isinstance(r, TokenRefusedError) for r in results if r != "example.com")


async def test_a_revoked_agent_cannot_register_again_and_keeps_the_token(store: Store) -> None:
    """Re-registering a revoked id is refused and the token stays unused."""
    await store.create_token("t1", "example.com", NOW, NOW + 60)
    await store.register_agent("t1", "agent-1", "aa", NOW + 3600, NOW)
    assert await store.revoke_agent("agent-1", "stolen laptop", NOW)
    await store.create_token("t2", "example.com", NOW, NOW + 60)
    with pytest.raises(AgentRevokedError):
        await store.register_agent("t2", "agent-1", "bb", NOW + 3600, NOW)
    assert await store.register_agent("t2", "agent-2", "cc", NOW + 3600, NOW) == "example.com"


async def test_a_token_of_another_domain_cannot_take_over_an_agent_id(store: Store) -> None:
    """An agent registers again (a new certificate) with a token of a domain it serves; a token of another
    domain is refused for that id, and changes nothing: the certificate, the domains and the token stay."""
    await store.create_token("victim", "victim.example", NOW, NOW + 60)
    await store.register_agent("victim", "agent-1", "aa", NOW + 3600, NOW)
    await store.create_token("other", "tenant-b.example", NOW, NOW + 60)
    with pytest.raises(AgentIdTakenError, match="agent-1"):
        await store.register_agent("other", "agent-1", "bb", NOW + 3600, NOW)
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert (agent.cert_serial, agent.domains) == ("aa", ("victim.example",))
    assert await store.register_agent("other", "agent-2", "cc", NOW + 3600, NOW) == "tenant-b.example"
    await store.create_token("again", "victim.example", NOW, NOW + 60)
    assert await store.register_agent("again", "agent-1", "dd", NOW + 3600, NOW) == "victim.example"
    renewed = await store.get_agent("agent-1")
    assert renewed is not None
    assert renewed.cert_serial == "dd"


async def test_a_token_cannot_re_register_an_agent_that_serves_other_domains_too(store: Store) -> None:
    """A token of one of an agent's domains re-issues it only while it serves no other: else nothing changes."""
    await store.create_token("a1", "a.example", NOW, NOW + 60)
    await store.register_agent("a1", "agent-1", "aa", NOW + 3600, NOW)
    await store.assign("agent-1", "b.example", NOW)
    await store.create_token("a2", "a.example", NOW, NOW + 60)
    with pytest.raises(AgentServesOtherDomainsError, match="also serves other domains"):
        await store.register_agent("a2", "agent-1", "bb", NOW + 3600, NOW)
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert (agent.cert_serial, agent.domains) == ("aa", ("a.example", "b.example"))
    await store.unassign("agent-1", "b.example")
    assert await store.register_agent("a2", "agent-1", "cc", NOW + 3600, NOW) == "a.example"  # the token was kept
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert agent.cert_serial == "cc"


async def test_domains_are_kept_and_compared_normalised(store: Store) -> None:
    """Domains are stored lower case without blanks, and rows written before that are still found by lookups."""
    await store.create_token("t", " Example.ORG ", NOW, NOW + 60)
    assert await store.register_agent("t", "agent-1", "aa", NOW + 3600, NOW) == "example.org"
    await store.set_endpoints("EXAMPLE.org", [{"url": "local://x"}], NOW)
    async with store.transaction() as tx:  # as an older control plane wrote them
        await tx.execute("INSERT INTO domains (domain, endpoints, updated_at) VALUES ('Old.Example', '[]', $1)", NOW)
        await tx.execute(
            "INSERT INTO domain_assignments (agent_id, domain, assigned_at) VALUES ('agent-1', 'Old.Example', $1)", NOW
        )
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert agent.domains == ("example.org", "old.example")
    assert await store.endpoints(["Example.org", "old.example", "other.example"]) == {
        "Example.org": [{"url": "local://x"}],  # keyed as asked
        "old.example": [],
    }
    assert await store.unassign("agent-1", "OLD.example")
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert agent.domains == ("example.org",)


async def test_assignments_bootstrap_and_heartbeat_are_recorded(store: Store) -> None:
    """Assign/unassign change the agent's domains; bootstrap and heartbeat set its times, version and status."""
    await store.create_token("t", "a.example", NOW, NOW + 60)
    await store.register_agent("t", "agent-1", "aa", NOW + 3600, NOW)
    assert await store.assign("agent-1", "b.example", NOW)
    assert not await store.assign("agent-1", "b.example", NOW)
    assert await store.unassign("agent-1", "a.example")
    with pytest.raises(UnknownAgentError):
        await store.assign("ghost", "b.example", NOW)
    await store.record_bootstrap("agent-1", "1.2.3", "10.0.0.1", NOW + 5)
    await store.record_heartbeat("agent-1", {"in_flight": 3}, None, "10.0.0.2", NOW + 10)
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert agent.domains == ("b.example",)
    assert (agent.version, agent.last_bootstrap_at, agent.last_status) == ("1.2.3", NOW + 5, {"in_flight": 3})
    assert agent.status(NOW + 20, active_window=60) == "active"
    assert agent.status(NOW + 100, active_window=60) == "inactive"


async def test_certificate_replacement_is_compare_and_set(store: Store) -> None:
    """A renewal swaps the serial only from the current one, never for a revoked agent."""
    await store.create_token("t", "a.example", NOW, NOW + 60)
    await store.register_agent("t", "agent-1", "aa", NOW + 3600, NOW)
    assert await store.replace_certificate("agent-1", "aa", "bb", NOW + 7200)
    assert not await store.replace_certificate("agent-1", "aa", "cc", NOW + 7200)
    await store.revoke_agent("agent-1", "gone", NOW)
    assert not await store.replace_certificate("agent-1", "bb", "dd", NOW + 7200)
    agent = await store.get_agent("agent-1")
    assert agent is not None
    assert (agent.cert_serial, agent.revoked, agent.revoked_reason) == ("bb", True, "gone")


async def test_signing_keys_rotate_with_a_grace_period(store: Store) -> None:
    """After a rotation the old and new keys are both valid until the grace ends; then only the new one."""
    first = await store.ensure_signing_key(lambda: _key("k1"))
    assert (await store.ensure_signing_key(lambda: _key("never"))).id == first.id == "k1"
    await store.rotate_signing_key(_key("k2", NOW + 10), grace=100, now=NOW + 10)
    assert [k.id for k in await store.signing_keys(NOW + 50)] == ["k1", "k2"]
    assert [k.id for k in await store.signing_keys(NOW + 111)] == ["k2"]
    assert await store.prune_signing_keys(NOW + 111) == ["k1"]


async def test_a_rotation_with_a_shorter_grace_shortens_keys_already_retiring(store: Store) -> None:
    """A key retiring after a long grace is brought forward by a later rotation with a shorter one."""
    await store.ensure_signing_key(lambda: _key("k1"))
    await store.rotate_signing_key(_key("k2", NOW + 10), grace=7 * 86400, now=NOW + 10)
    await store.rotate_signing_key(_key("k3", NOW + 20), grace=30, now=NOW + 20)
    assert [(k.id, k.retire_at) for k in await store.signing_keys(NOW + 21)] == [
        ("k1", NOW + 50),
        ("k2", NOW + 50),
        ("k3", None),
    ]
    await store.rotate_signing_key(_key("k4", NOW + 30), grace=0, now=NOW + 30)
    assert [k.id for k in await store.signing_keys(NOW + 30)] == ["k4"]


async def test_concurrent_key_creation_makes_one_active_key(store_url: str) -> None:
    """Replicas that all find no key at start agree on a single active key."""
    stores = [open_store(store_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        made = await asyncio.gather(*(s.ensure_signing_key(lambda i=i: _key(f"k{i}")) for i, s in enumerate(stores)))
        assert len({k.id for k in made}) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_settings_and_endpoints_are_versioned_and_kept(store: Store) -> None:
    """Each settings write raises the version (removals too); endpoints come back per domain, in order."""
    assert await store.settings() == ({}, 0)
    assert await store.update_settings({"log_level": "debug", "page": 50}) == 1
    assert await store.update_settings({"page": None}) == 2
    assert await store.settings() == ({"log_level": "debug"}, 2)
    endpoints = [{"url": "amqp://b/"}, {"url": "amqp://a/"}]
    await store.set_endpoints("a.example", endpoints, NOW)
    assert await store.endpoints(["a.example", "other"]) == {"a.example": endpoints}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away, so modes come from the code alone."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(folder: Path) -> dict[str, int]:
    return {path.name: _mode(path) for path in folder.iterdir()}


@pytest.mark.usefixtures("open_umask")
async def test_sqlite_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """A new SQLite store's folder is 0700 and its database, -wal and -shm files 0600, even with umask 000."""
    path = tmp_path / "state" / "control.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.update_settings({"a": 1})
        assert _mode(path.parent) == 0o700
        assert _modes(path.parent) == {"control.db": 0o600, "control.db-wal": 0o600, "control.db-shm": 0o600}


@pytest.mark.usefixtures("open_umask")
async def test_sqlite_files_found_readable_by_others_are_tightened(tmp_path: Path) -> None:
    """An existing database and its side files with wider modes are made 0600 when the store opens."""
    path = tmp_path / "control.db"
    async with open_store(f"sqlite:///{path}"):
        pass
    for name in ("control.db", "control.db-wal", "control.db-journal"):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(0o644)
    async with open_store(f"sqlite:///{path}") as store:
        await store.update_settings({"a": 1})
        assert _modes(tmp_path) == {
            "control.db": 0o600,
            "control.db-wal": 0o600,
            "control.db-shm": 0o600,
            "control.db-journal": 0o600,
        }
