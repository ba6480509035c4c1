"""The scheduler: runs every job's cycles on its schedule, on exactly one replica at a time.

What it is
    ``Scheduler(state, replica=…, client_for=…, target_for=…)`` polls the state store every
    ``poll`` seconds; a job that is due (``next_run`` passed, not paused for approval) and whose lease
    this replica can take (free, ours, or expired) gets a cycle. Leases are **sticky**: a replica keeps
    renewing the leases of the jobs it runs (every ``lease_ttl / 3``), so a job's in-memory caches stay
    valid; a replica that stops (or dies) lets them lapse and another replica takes the job over.
    ``client_for(job)`` returns the ``ScimClient`` that reaches the job's domain (through whichever
    transport its agents use) and ``target_for(job)`` an opened ``Target``: the composition (CLI,
    tests) decides both. ``run_once(job_id)`` runs one cycle now under the lease (CLI, benches);
    ``on_demand(job_id, dn)`` runs one object through the pipeline and returns its steps.

Guarantees
    A lease that cannot be renewed (another replica took the job) cancels the running cycle; its
    fenced writes could not land anyway. On stop, running cycles are cancelled (their watermark is not
    advanced), leases released and targets closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from service.client import ScimClient
from service.provisioning.engine import CycleReport, SyncEngine
from service.provisioning.pipeline import Step
from service.provisioning.reader import SourceReader
from service.provisioning.rules import Rules
from service.provisioning.settings import JobSettings
from service.provisioning.state import Job, LeaseLostError, StateStore
from service.provisioning.targets.base import Target

_log = structlog.get_logger("cloudprov.provisioning")

ClientFactory = Callable[[Job], Awaitable[ScimClient]]
TargetFactory = Callable[[Job], Awaitable[Target]]
RulesFactory = Callable[[Job, JobSettings], Rules | None]
#: Seconds before a job whose client or target could not be built is tried again (at most).
UNWIRED_RETRY = 30.0


@dataclass
class _Held:
    engine: SyncEngine
    target: Target
    settings: JobSettings
    task: asyncio.Task[CycleReport] | None = None


class Scheduler:
    def __init__(
        self,
        state: StateStore,
        *,
        client_for: ClientFactory,
        target_for: TargetFactory,
        rules_for: RulesFactory | None = None,
        replica: str | None = None,
        poll: float = 1.0,
        on_progress: Callable[[str, Mapping[str, Any]], None] | None = None,
        on_cycle: Callable[[str, CycleReport], None] | None = None,
    ) -> None:
        self.state = state
        self.client_for = client_for
        self.target_for = target_for
        self.rules_for = rules_for
        self.replica = replica or f"replica-{uuid.uuid4().hex[:8]}"
        self.poll = poll
        self.on_progress = on_progress
        self.on_cycle = on_cycle
        self.held: dict[str, _Held] = {}
        self._not_before: dict[str, float] = {}  # jobs that could not be wired: when to try again

    async def _engine(self, job: Job) -> _Held:
        held = self.held.get(job.id)
        if held is not None:
            return held
        settings = JobSettings.model_validate(dict(job.settings))
        client = await self.client_for(job)
        target = await self.target_for(job)
        reader = SourceReader(client, timeout=settings.timeout, attempts=settings.attempts)
        progress = None
        if self.on_progress is not None:
            report = self.on_progress

            def progress(event: Mapping[str, Any], job_id: str = job.id) -> None:
                report(job_id, event)

        engine = SyncEngine(
            job.id,
            self.state,
            reader,
            target,
            settings=settings,
            rules=self.rules_for(job, settings) if self.rules_for else None,
            owner=self.replica,
            on_progress=progress,
        )
        held = self.held[job.id] = _Held(engine, target, settings)
        return held

    async def run_once(self, job_id: str) -> CycleReport:
        """One cycle of a job now, under its lease (``LeaseLostError`` if another replica holds it)."""
        job = await self.state.job(job_id)
        settings = JobSettings.model_validate(dict(job.settings))
        if not await self.state.acquire_lease(job_id, self.replica, settings.lease_ttl):
            raise LeaseLostError(f"job {job_id!r} is running on another replica")
        held = await self._engine(job)
        return await self._cycle(job, held)

    async def on_demand(self, job_id: str, dn: str, *, apply: bool = True) -> list[Step]:
        """One object of a job, by DN, through Import → Scope → Match → Action now; each step."""
        held = await self._engine(await self.state.job(job_id))
        return await held.engine.on_demand(dn, apply=apply)

    async def _cycle(self, job: Job, held: _Held) -> CycleReport:
        try:
            report = await held.engine.run_cycle()
            if self.on_cycle is not None:
                self.on_cycle(job.id, report)
        finally:  # also when the cycle raised: a job that stays due would start again at once, and again
            after = await self.state.job(job.id)
            if after.state != "quarantined" and after.lease_owner == self.replica:
                with contextlib.suppress(LeaseLostError):
                    await self.state.set_next_run(job.id, self.replica, time.time() + after.schedule)
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule cycles until ``stop`` is set; then cancel what runs, release leases, close targets."""
        renewer = asyncio.create_task(self._renew_forever())
        try:
            while not stop.is_set():
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        finally:
            renewer.cancel()
            await self.aclose()

    async def aclose(self) -> None:
        for job_id, held in list(self.held.items()):
            if held.task is not None and not held.task.done():
                held.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await held.task
            await asyncio.shield(self.state.release_lease(job_id, self.replica))
            await held.target.close()
        self.held.clear()

    async def _tick(self) -> None:
        now = time.time()
        for job in await self.state.jobs():
            held = self.held.get(job.id)
            if held is not None and held.task is not None and not held.task.done():
                continue
            if job.state == "paused-for-approval" or job.next_run > now:
                continue
            settings = JobSettings.model_validate(dict(job.settings))
            if not await self.state.acquire_lease(job.id, self.replica, settings.lease_ttl, now):
                await self._drop(job.id)  # another replica runs it: our caches are stale
                continue
            if self._not_before.get(job.id, 0.0) > now:
                continue
            try:
                held = await self._engine(job)
            except Exception as error:  # a job whose domain or target cannot be reached now
                retry_in = min(job.schedule, UNWIRED_RETRY)
                self._not_before[job.id] = now + retry_in
                _log.warning("job cannot start", job=job.id, error=str(error), retry_in=retry_in)
                continue
            self._not_before.pop(job.id, None)
            held.task = asyncio.create_task(self._cycle(job, held), name=f"cycle {job.id}")

    async def _drop(self, job_id: str) -> None:
        held = self.held.pop(job_id, None)
        if held is not None:
            await held.target.close()

    async def _renew_forever(self) -> None:
        while True:
            ttl = min((h.settings.lease_ttl for h in self.held.values()), default=30.0)
            await asyncio.sleep(ttl / 3)
            for job_id, held in list(self.held.items()):
                try:
                    await self.state.renew_lease(job_id, self.replica, held.settings.lease_ttl)
                except LeaseLostError:
                    _log.warning("lease lost: another replica took the job", job=job_id)
                    if held.task is not None:
                        held.task.cancel()
                    await self._drop(job_id)
