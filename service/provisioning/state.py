"""The provisioning state store: jobs, leases, watermarks, the provisioning log, staged deletions, cycle stats.

Connection URL
    ``sqlite:///service-state/provisioning.db`` (the embedded default; may be the control plane's
    file too: the tables and the schema-version table are separate) or ``postgresql://…`` for
    replicas. The drivers are the control-plane store's (``service.store.sqlite`` /
    ``service.store.postgres``) with this module's migrations: same transactions, same locking.

Guarantees
    * A job runs on one replica at a time: ``acquire_lease`` is one conditional ``UPDATE`` (free,
      ours, or expired), so two replicas racing for a job see exactly one winner; a dead replica's
      lease expires and the next ``acquire_lease`` takes the job over.
    * Writes a cycle makes on behalf of a job (watermark, state, staged deletions) are **fenced** by
      the lease: they name the owner and change nothing (``LeaseLostError``) once another replica
      took the job, so a replica that stalled past its lease never moves a watermark back.
    * The watermark is only ever written by ``advance_watermark``, which the engine calls after the
      target has every change up to it.
    * Log rows are written in batches (one multi-row ``INSERT`` per up to 400 rows).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

from protocol.redaction import redact_text
from service.store import POSTGRES_SCHEMES, Store, StoreError
from service.store.base import Tx

T = TypeVar("T")
JobState = Literal["active", "paused-for-approval", "quarantined"]

DEFAULT_URL = "sqlite:///service-state/provisioning.db"
VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS provisioning_schema_version (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "jobs with leases and watermarks, provisioning log, staged deletions, cycles",
        [
            """CREATE TABLE prov_jobs (
                id TEXT PRIMARY KEY,
                domain TEXT NOT NULL,
                target_url TEXT NOT NULL,
                schedule DOUBLE PRECISION NOT NULL,
                settings TEXT NOT NULL,
                state TEXT NOT NULL,
                failures BIGINT NOT NULL DEFAULT 0,
                quarantine_until DOUBLE PRECISION,
                quarantine_reason TEXT,
                watermark TEXT,
                full_sync BOOLEAN NOT NULL DEFAULT TRUE,
                lease_owner TEXT,
                lease_expires DOUBLE PRECISION,
                next_run DOUBLE PRECISION NOT NULL DEFAULT 0,
                progress TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE prov_log (
                id TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                cycle_id TEXT NOT NULL,
                change_id TEXT,
                anchor TEXT,
                resource_type TEXT,
                dn TEXT,
                action TEXT NOT NULL,
                steps TEXT NOT NULL,
                outcome TEXT NOT NULL,
                error TEXT,
                at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX prov_log_job_at ON prov_log (job_id, at)",
            "CREATE INDEX prov_log_job_anchor ON prov_log (job_id, anchor)",
            """CREATE TABLE prov_staged_deletes (
                job_id TEXT NOT NULL,
                anchor TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                target_id TEXT NOT NULL,
                dn TEXT,
                reason TEXT NOT NULL,
                staged_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (job_id, anchor)
            )""",
            """CREATE TABLE prov_cycles (
                id TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                replica TEXT NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                finished_at DOUBLE PRECISION,
                outcome TEXT,
                counts TEXT NOT NULL,
                objects BIGINT NOT NULL DEFAULT 0,
                rate DOUBLE PRECISION,
                lag DOUBLE PRECISION,
                error TEXT
            )""",
            "CREATE INDEX prov_cycles_job ON prov_cycles (job_id, started_at)",
        ],
    ),
    (
        2,
        "objects to retry: those a cycle could not write",
        [
            """CREATE TABLE prov_retries (
                job_id TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                anchor TEXT NOT NULL,
                error TEXT,
                since DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (job_id, resource_type, anchor)
            )""",
        ],
    ),
    (
        3,
        "objects to retry: failures in a row and when the next try is due",
        [
            "ALTER TABLE prov_retries ADD COLUMN failures INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE prov_retries ADD COLUMN next_at DOUBLE PRECISION NOT NULL DEFAULT 0",
        ],
    ),
]
LOG_BATCH = 400
_LOG_COLUMNS = "id, job_id, cycle_id, change_id, anchor, resource_type, dn, action, steps, outcome, error, at"


class StateError(StoreError):
    """Root of the provisioning state store's errors."""


class UnknownJobError(StateError, LookupError):
    """No job has this id."""


class LeaseLostError(StateError):
    """The job's lease is no longer ours: another replica took it over."""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    domain: str
    target_url: str
    schedule: float = 120.0
    settings: Mapping[str, Any] = field(default_factory=dict)
    state: JobState = "active"
    failures: int = 0
    quarantine_until: float | None = None
    quarantine_reason: str | None = None
    watermark: str | None = None
    full_sync: bool = True
    lease_owner: str | None = None
    lease_expires: float | None = None
    next_run: float = 0.0
    progress: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LogEntry:
    cycle_id: str
    action: str
    outcome: str
    anchor: str | None = None
    resource_type: str | None = None
    dn: str | None = None
    change_id: str | None = None
    steps: Sequence[Mapping[str, Any]] = ()
    error: str | None = None
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Retry:
    """An object a cycle could not write: why, how many times in a row, and when it is tried again."""

    error: str | None
    failures: int = 1
    next_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StagedDelete:
    anchor: str
    resource_type: str
    target_id: str
    dn: str | None
    reason: str
    staged_at: float


@dataclass(frozen=True, slots=True)
class Cycle:
    id: str
    job_id: str
    kind: str
    replica: str
    started_at: float
    finished_at: float | None
    outcome: str | None
    counts: Mapping[str, int]
    objects: int
    rate: float | None
    lag: float | None
    error: str | None


class _Migrations(Store):
    """Control-store drivers, migrated with this module's schema instead of the control plane's."""

    async def _migrate(self, now: float) -> list[int]:
        async with self.transaction() as tx:
            await tx.execute(VERSION_TABLE)
        applied: list[int] = []
        for version, description, statements in MIGRATIONS:
            async with self.transaction() as tx:
                await self._lock(tx, "provisioning.migrations")
                if await tx.fetch("SELECT 1 AS x FROM provisioning_schema_version WHERE version = $1", version):
                    continue
                for statement in statements:
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO provisioning_schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
                    version,
                    description,
                    now,
                )
                applied.append(version)
        return applied


def _driver(url: str) -> Store:
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from service.store.sqlite import SqliteStore

        class SqliteState(_Migrations, SqliteStore):
            pass

        return SqliteState(url)
    if scheme in POSTGRES_SCHEMES:
        try:
            from service.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:
            raise StateError(
                f"a postgresql:// state store needs asyncpg: pip install 'cloudprov[postgres]' ({exc})"
            ) from exc

        class PostgresState(_Migrations, PostgresStore):
            pass

        return PostgresState(url)
    raise StateError(f"{redact_text(url)!r}: the state store URL must start with sqlite:/// or postgresql://")


def _shielded(cls: type[T]) -> type[T]:
    """Run every public coroutine method to completion even if its caller is cancelled.

    The SQLite driver runs each statement in a worker thread: a caller cancelled while ``BEGIN``
    runs would leave the shared connection inside a transaction. Shielded, the operation commits (or
    rolls back) on its own and only the caller's wait is cancelled.
    """
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue

        def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            @functools.wraps(method)
            async def shielded(*args: Any, **kwargs: Any) -> Any:
                return await asyncio.shield(asyncio.ensure_future(method(*args, **kwargs)))

            return shielded

        setattr(cls, name, wrap(member))
    return cls


def _job(row: Mapping[str, Any]) -> Job:
    values = dict(row)
    values.pop("created_at", None)
    values.pop("updated_at", None)
    values["settings"] = json.loads(values["settings"] or "{}")
    values["progress"] = json.loads(values["progress"]) if values.get("progress") else None
    values["full_sync"] = bool(values["full_sync"])
    values["failures"] = int(values["failures"])
    return Job(**values)


@_shielded
class StateStore:
    """The provisioning state (``async with StateStore(url) as state``: connects and migrates)."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self._db = _driver(url)

    async def __aenter__(self) -> Self:
        await self._db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        return self._db.transaction()

    # ---- jobs -------------------------------------------------------------------------------
    async def put_job(
        self,
        job_id: str,
        domain: str,
        target_url: str,
        *,
        schedule: float = 120.0,
        settings: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> Job:
        """Create a job, or update its domain, target, schedule and settings (state and watermark kept)."""
        if schedule < 1:
            raise StateError(f"job {job_id!r}: schedule must be at least 1 second, got {schedule}")
        now = time.time() if now is None else now
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO prov_jobs (id, domain, target_url, schedule, settings, state, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, 'active', $6, $6) ON CONFLICT (id) DO UPDATE SET "
                "domain = excluded.domain, target_url = excluded.target_url, schedule = excluded.schedule, "
                "settings = excluded.settings, updated_at = excluded.updated_at",
                job_id,
                domain,
                target_url,
                float(schedule),
                json.dumps(dict(settings or {}), sort_keys=True),
                now,
            )
        return await self.job(job_id)

    async def job(self, job_id: str) -> Job:
        async with self._tx() as tx:
            rows = await tx.fetch("SELECT * FROM prov_jobs WHERE id = $1", job_id)
        if not rows:
            raise UnknownJobError(f"no provisioning job {job_id!r}")
        return _job(rows[0])

    async def jobs(self) -> list[Job]:
        async with self._tx() as tx:
            rows = await tx.fetch("SELECT * FROM prov_jobs ORDER BY id")
        return [_job(r) for r in rows]

    async def delete_job(self, job_id: str) -> None:
        async with self._tx() as tx:
            for table in ("prov_log", "prov_staged_deletes", "prov_cycles", "prov_retries"):
                await tx.execute(f"DELETE FROM {table} WHERE job_id = $1", job_id)  # noqa: S608 (fixed names)
            await tx.execute("DELETE FROM prov_jobs WHERE id = $1", job_id)

    # ---- leases -----------------------------------------------------------------------------
    async def acquire_lease(self, job_id: str, owner: str, ttl: float, now: float | None = None) -> bool:
        """Take (or renew) the job's lease if it is free, ours or expired; True when we hold it now."""
        now = time.time() if now is None else now
        async with self._tx() as tx:
            count = await tx.execute(
                "UPDATE prov_jobs SET lease_owner = $2, lease_expires = $3 WHERE id = $1 "
                "AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires IS NULL OR lease_expires <= $4)",
                job_id,
                owner,
                now + ttl,
                now,
            )
        return count == 1

    async def renew_lease(self, job_id: str, owner: str, ttl: float, now: float | None = None) -> None:
        """Extend our lease; ``LeaseLostError`` if another replica holds it now."""
        now = time.time() if now is None else now
        async with self._tx() as tx:
            count = await tx.execute(
                "UPDATE prov_jobs SET lease_expires = $3 WHERE id = $1 AND lease_owner = $2",
                job_id,
                owner,
                now + ttl,
            )
        if count != 1:
            raise LeaseLostError(f"job {job_id!r}: the lease is held by another replica")

    async def release_lease(self, job_id: str, owner: str) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "UPDATE prov_jobs SET lease_owner = NULL, lease_expires = NULL WHERE id = $1 AND lease_owner = $2",
                job_id,
                owner,
            )

    async def _fenced(self, tx: Tx, job_id: str, owner: str | None, sql: str, *args: Any) -> None:
        """Run an ``UPDATE prov_jobs … WHERE id = $1`` only while ``owner`` holds the lease (None: unfenced)."""
        if owner is None:
            await tx.execute(sql, job_id, *args)
            return
        count = await tx.execute(f"{sql} AND lease_owner = ${len(args) + 2}", job_id, *args, owner)
        if count != 1:
            raise LeaseLostError(f"job {job_id!r}: the lease is held by another replica")

    # ---- watermark, schedule, state ---------------------------------------------------------
    async def advance_watermark(
        self,
        job_id: str,
        owner: str | None,
        watermark: str | None,
        retries: Mapping[tuple[str, str], Retry] | None = None,
        now: float | None = None,
    ) -> None:
        """Record the watermark the target is complete up to, but for ``retries`` ((resource type, anchor) →
        ``Retry``: the objects still to write, which replace the job's earlier ones; None leaves those); the
        job leaves full-sync mode. One transaction: the changes a watermark passes are written or kept."""
        async with self._tx() as tx:
            await self._fenced(
                tx, job_id, owner, "UPDATE prov_jobs SET watermark = $2, full_sync = FALSE WHERE id = $1", watermark
            )
            if retries is None:
                return
            rows = await tx.fetch("SELECT resource_type, anchor, since FROM prov_retries WHERE job_id = $1", job_id)
            since = {(r["resource_type"], r["anchor"]): r["since"] for r in rows}
            await tx.execute("DELETE FROM prov_retries WHERE job_id = $1", job_id)
            now = time.time() if now is None else now
            for (resource_type, anchor), retry in retries.items():
                await tx.execute(
                    "INSERT INTO prov_retries (job_id, resource_type, anchor, error, since, failures, next_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    job_id,
                    resource_type,
                    anchor,
                    retry.error,
                    since.get((resource_type, anchor), now),
                    retry.failures,
                    retry.next_at,
                )

    async def retries(self, job_id: str) -> dict[tuple[str, str], Retry]:
        """The objects a cycle of the job could not write, oldest first: (resource type, anchor) → ``Retry``."""
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT resource_type, anchor, error, failures, next_at FROM prov_retries WHERE job_id = $1 "
                "ORDER BY since, anchor",
                job_id,
            )
        return {(r["resource_type"], r["anchor"]): Retry(r["error"], r["failures"], r["next_at"]) for r in rows}

    async def set_next_run(self, job_id: str, owner: str | None, when: float) -> None:
        async with self._tx() as tx:
            await self._fenced(tx, job_id, owner, "UPDATE prov_jobs SET next_run = $2 WHERE id = $1", when)

    async def set_progress(self, job_id: str, progress: Mapping[str, Any] | None) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "UPDATE prov_jobs SET progress = $2 WHERE id = $1",
                job_id,
                json.dumps(dict(progress), sort_keys=True) if progress is not None else None,
            )

    async def record_failure(self, job_id: str, owner: str | None) -> int:
        """Count one more failed cycle in a row; return the count."""
        async with self._tx() as tx:
            await self._fenced(tx, job_id, owner, "UPDATE prov_jobs SET failures = failures + 1 WHERE id = $1")
            rows = await tx.fetch("SELECT failures FROM prov_jobs WHERE id = $1", job_id)
        return int(rows[0]["failures"])

    async def record_success(self, job_id: str, owner: str | None) -> None:
        async with self._tx() as tx:
            await self._fenced(
                tx,
                job_id,
                owner,
                "UPDATE prov_jobs SET failures = 0, quarantine_until = NULL, quarantine_reason = NULL, "
                "state = CASE WHEN state = 'quarantined' THEN 'active' ELSE state END WHERE id = $1",
            )

    async def quarantine(self, job_id: str, owner: str | None, until: float, reason: str) -> None:
        async with self._tx() as tx:
            await self._fenced(
                tx,
                job_id,
                owner,
                "UPDATE prov_jobs SET state = 'quarantined', quarantine_until = $2, quarantine_reason = $3, "
                "next_run = $2 WHERE id = $1",
                until,
                reason,
            )

    async def set_state(self, job_id: str, state: JobState) -> None:
        async with self._tx() as tx:
            count = await tx.execute("UPDATE prov_jobs SET state = $2 WHERE id = $1", job_id, state)
        if not count:
            raise UnknownJobError(f"no provisioning job {job_id!r}")

    async def restart(self, job_id: str, scope: Literal["watermark", "full", "quarantine"]) -> None:
        """``watermark``: forget it (next cycle is a full sync, target kept); ``full``: also clear staged
        deletions and failures; ``quarantine``: leave quarantine and run now."""
        async with self._tx() as tx:
            if not await tx.fetch("SELECT 1 AS x FROM prov_jobs WHERE id = $1", job_id):
                raise UnknownJobError(f"no provisioning job {job_id!r}")
            if scope in {"watermark", "full"}:
                await tx.execute(
                    "UPDATE prov_jobs SET watermark = NULL, full_sync = TRUE, next_run = 0 WHERE id = $1", job_id
                )
            if scope == "full":
                await tx.execute("DELETE FROM prov_staged_deletes WHERE job_id = $1", job_id)
            if scope in {"full", "quarantine"}:
                await tx.execute(
                    "UPDATE prov_jobs SET state = 'active', failures = 0, quarantine_until = NULL, "
                    "quarantine_reason = NULL, next_run = 0 WHERE id = $1",
                    job_id,
                )

    # ---- staged deletions -------------------------------------------------------------------
    async def stage_deletes(self, job_id: str, owner: str | None, deletes: Iterable[StagedDelete]) -> None:
        """Park deletions awaiting approval and pause the job (fenced)."""
        async with self._tx() as tx:
            await self._fenced(tx, job_id, owner, "UPDATE prov_jobs SET state = 'paused-for-approval' WHERE id = $1")
            for d in deletes:
                await tx.execute(
                    "INSERT INTO prov_staged_deletes (job_id, anchor, resource_type, target_id, dn, reason, staged_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id, anchor) DO UPDATE SET "
                    "reason = excluded.reason, staged_at = excluded.staged_at",
                    job_id,
                    d.anchor,
                    d.resource_type,
                    d.target_id,
                    d.dn,
                    d.reason,
                    d.staged_at,
                )

    async def staged_deletes(self, job_id: str) -> list[StagedDelete]:
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT anchor, resource_type, target_id, dn, reason, staged_at FROM prov_staged_deletes "
                "WHERE job_id = $1 ORDER BY staged_at, anchor",
                job_id,
            )
        return [StagedDelete(**r) for r in rows]

    async def approve_deletes(self, job_id: str) -> int:
        """Mark the staged deletions approved (the next cycle applies them) and resume the job; their count."""
        async with self._tx() as tx:
            if not await tx.fetch("SELECT 1 AS x FROM prov_jobs WHERE id = $1", job_id):
                raise UnknownJobError(f"no provisioning job {job_id!r}")
            count = await tx.execute(
                "UPDATE prov_staged_deletes SET reason = 'approved' WHERE job_id = $1 AND reason <> 'approved'",
                job_id,
            )
            await tx.execute(
                "UPDATE prov_jobs SET state = 'active', next_run = 0 WHERE id = $1 AND state = 'paused-for-approval'",
                job_id,
            )
        return count

    async def drop_staged(self, job_id: str, anchors: Iterable[str]) -> None:
        async with self._tx() as tx:
            for anchor in anchors:
                await tx.execute("DELETE FROM prov_staged_deletes WHERE job_id = $1 AND anchor = $2", job_id, anchor)

    # ---- provisioning log -------------------------------------------------------------------
    async def write_log(self, job_id: str, entries: Sequence[LogEntry]) -> None:
        for start in range(0, len(entries), LOG_BATCH):
            batch = entries[start : start + LOG_BATCH]
            args: list[Any] = []
            rows = []
            for i, e in enumerate(batch):
                base = i * 12
                rows.append("(" + ", ".join(f"${base + k}" for k in range(1, 13)) + ")")
                args += [
                    uuid.uuid4().hex,
                    job_id,
                    e.cycle_id,
                    e.change_id,
                    e.anchor,
                    e.resource_type,
                    e.dn,
                    e.action,
                    json.dumps(list(e.steps), default=str),
                    e.outcome,
                    e.error,
                    e.at or time.time(),
                ]
            async with self._tx() as tx:
                await tx.execute(f"INSERT INTO prov_log ({_LOG_COLUMNS}) VALUES {', '.join(rows)}", *args)  # noqa: S608

    async def log(
        self, job_id: str, *, anchor: str | None = None, dn: str | None = None, failed: bool = False, limit: int = 100
    ) -> list[LogEntry]:
        """The newest entries of a job (oldest first), optionally of one object or only failures."""
        where = ["job_id = $1"]
        args: list[Any] = [job_id]
        if anchor is not None:
            args.append(anchor)
            where.append(f"anchor = ${len(args)}")
        if dn is not None:
            args.append(dn.lower())
            where.append(f"LOWER(dn) = ${len(args)}")
        if failed:
            where.append("outcome = 'failed'")
        args.append(limit)
        sql = (
            f"SELECT {_LOG_COLUMNS} FROM prov_log WHERE {' AND '.join(where)} "  # noqa: S608 (fixed fragments)
            f"ORDER BY at DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._tx() as tx:
            rows = await tx.fetch(sql, *args)
        entries = [
            LogEntry(
                cycle_id=r["cycle_id"],
                action=r["action"],
                outcome=r["outcome"],
                anchor=r["anchor"],
                resource_type=r["resource_type"],
                dn=r["dn"],
                change_id=r["change_id"],
                steps=json.loads(r["steps"]),
                error=r["error"],
                at=float(r["at"]),
            )
            for r in rows
        ]
        return entries[::-1]

    # ---- cycles -----------------------------------------------------------------------------
    async def start_cycle(self, job_id: str, kind: str, replica: str, now: float | None = None) -> str:
        cycle_id = uuid.uuid4().hex
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO prov_cycles (id, job_id, kind, replica, started_at, counts) "
                "VALUES ($1, $2, $3, $4, $5, '{}')",
                cycle_id,
                job_id,
                kind,
                replica,
                time.time() if now is None else now,
            )
        return cycle_id

    async def finish_cycle(
        self,
        cycle_id: str,
        *,
        outcome: str,
        counts: Mapping[str, int],
        objects: int,
        rate: float | None,
        lag: float | None,
        error: str | None = None,
        now: float | None = None,
    ) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "UPDATE prov_cycles SET finished_at = $2, outcome = $3, counts = $4, objects = $5, rate = $6, "
                "lag = $7, error = $8 WHERE id = $1",
                cycle_id,
                time.time() if now is None else now,
                outcome,
                json.dumps(dict(counts), sort_keys=True),
                objects,
                rate,
                lag,
                error,
            )

    async def cycles(self, job_id: str, limit: int = 10) -> list[Cycle]:
        """The newest cycles of a job, newest first."""
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT * FROM prov_cycles WHERE job_id = $1 ORDER BY started_at DESC, id LIMIT $2", job_id, limit
            )
        return [
            Cycle(
                **{
                    **r,
                    "counts": json.loads(r["counts"]),
                    "objects": int(r["objects"]),
                }
            )
            for r in rows
        ]


__all__ = [
    "DEFAULT_URL",
    "Cycle",
    "Job",
    "JobState",
    "LeaseLostError",
    "LogEntry",
    "StagedDelete",
    "StateError",
    "StateStore",
    "UnknownJobError",
]
