"""The provisioning state store on SQLite and PostgreSQL: jobs, leases, fencing, log, staged deletions, cycles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.provisioning import state as state_module
from service.provisioning.state import LeaseLostError, LogEntry, Retry, StagedDelete, StateError, StateStore
from tests.conftest import server_missing

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/provisioning.db"
        return
    asyncpg = pytest.importorskip("asyncpg")
    name = f"cloudprov_state_{uuid.uuid4().hex[:12]}"
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


async def test_jobs_are_created_updated_and_validated(state_url: str) -> None:
    """A job keeps its state and watermark when its definition is updated; a sub-second schedule is refused."""
    async with StateStore(state_url) as state:
        job = await state.put_job("j1", "example.com", "embedded:///t.db")
        assert (job.schedule, job.state, job.full_sync) == (120.0, "active", True)
        await state.advance_watermark("j1", None, "w1")
        job = await state.put_job("j1", "example.com", "embedded:///t.db", schedule=5, settings={"a": 1})
        assert (job.schedule, job.watermark, job.full_sync, dict(job.settings)) == (5.0, "w1", False, {"a": 1})
        with pytest.raises(StateError):
            await state.put_job("j2", "example.com", "x", schedule=0.5)


async def test_a_lease_has_one_holder_and_expires_to_a_takeover(state_url: str) -> None:
    """Two replicas racing for a job: one wins; after expiry the other takes over and the first is fenced out."""
    async with StateStore(state_url) as a, StateStore(state_url) as b:
        await a.put_job("j", "example.com", "t")
        won = await asyncio.gather(a.acquire_lease("j", "A", 30, now=100), b.acquire_lease("j", "B", 30, now=100))
        assert sorted(won) == [False, True]
        holder, other = ("A", "B") if won[0] else ("B", "A")
        assert not await a.acquire_lease("j", other, 30, now=120)
        assert await a.acquire_lease("j", other, 30, now=131)
        with pytest.raises(LeaseLostError):
            await a.advance_watermark("j", holder, "stale")
        with pytest.raises(LeaseLostError):
            await a.renew_lease("j", holder, 30)
        await b.advance_watermark("j", other, "fresh")
        assert (await a.job("j")).watermark == "fresh"


async def test_log_staged_deletes_restart_and_cycles(state_url: str) -> None:
    """Log rows filter by object and failure; staged deletions pause until approved; restart clears what it names."""
    async with StateStore(state_url) as state:
        await state.put_job("j", "example.com", "t")
        entries = [LogEntry("c1", "create", "ok", anchor=f"a{i}", resource_type="User", at=i + 1.0) for i in range(900)]
        entries.append(LogEntry("c1", "update", "failed", anchor="a5", dn="CN=x", error="boom", at=1000.0))
        await state.write_log("j", entries)
        assert [e.action for e in await state.log("j", anchor="a5")] == ["create", "update"]
        assert [e.error for e in await state.log("j", failed=True)] == ["boom"]
        assert len(await state.log("j", limit=1000)) == 901
        await state.stage_deletes("j", None, [StagedDelete("a1", "User", "t1", None, "deleted in source", 1.0)])
        assert (await state.job("j")).state == "paused-for-approval"
        assert await state.approve_deletes("j") == 1
        assert (await state.job("j")).state == "active"
        assert [d.reason for d in await state.staged_deletes("j")] == ["approved"]
        await state.quarantine("j", None, 5000.0, "target down")
        assert (await state.job("j")).state == "quarantined"
        await state.restart("j", "full")
        job = await state.job("j")
        assert (job.state, job.full_sync, job.watermark) == ("active", True, None)
        assert await state.staged_deletes("j") == []
        cycle = await state.start_cycle("j", "full", "A", now=10)
        await state.finish_cycle(cycle, outcome="ok", counts={"create": 3}, objects=3, rate=1.5, lag=0.1, now=12)
        (last,) = await state.cycles("j")
        assert (last.outcome, dict(last.counts), last.finished_at) == ("ok", {"create": 3}, 12)


async def test_objects_to_retry_keep_their_failures_and_next_try(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before the failure counts (schema 2) keeps its objects to retry, due now with one failure;
    later watermarks store each object's failures and next try, and keep when it first failed."""
    with monkeypatch.context() as old:
        old.setattr(state_module, "MIGRATIONS", state_module.MIGRATIONS[:2])
        async with StateStore(state_url) as state:
            await state.put_job("j", "example.com", "t")
            async with state._tx() as tx:  # a row as schema 2 wrote it
                await tx.execute(
                    "INSERT INTO prov_retries (job_id, resource_type, anchor, error, since) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    *("j", "User", "a1", "taken", 100.0),
                )
    async with StateStore(state_url) as state:
        assert await state.retries("j") == {("User", "a1"): Retry("taken", 1, 0.0)}
        retries = {("User", "a1"): Retry("still taken", 2, 520.0), ("Group", "g1"): Retry(None, 1, 400.0)}
        await state.advance_watermark("j", None, "w2", retries, now=400.0)
        assert await state.retries("j") == retries
        await state.advance_watermark("j", None, "w3", {("Group", "g1"): Retry(None, 2, 640.0)}, now=520.0)
        assert await state.retries("j") == {("Group", "g1"): Retry(None, 2, 640.0)}
