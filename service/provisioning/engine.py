"""The sync engine: one job's cycles — full sync, delta sync, safety rails, log and stats.

What it is
    ``SyncEngine.run_cycle()`` runs one cycle of a job: a **full sync** the first time (or after a
    restart, or when the agent answers 410 for the watermark): cursor-paged reads of Groups (for
    the membership index) and Users, every object through ``Pipeline`` (Import → Scope → Match →
    Action), group memberships, then target objects whose anchor the source no longer has are
    deleted. Later cycles are **delta** syncs from ``/Changes`` since the stored watermark (a
    changed group falls back to a full sync when the scope looks at membership).
    ``on_demand(dn)`` runs one object through the pipeline now and returns each step.

Settings: ``JobSettings`` (timeouts and retries, out-of-scope action, deletion threshold, matching
attribute, quarantine, notifications, mapping, scoping).

Guarantees
    * The watermark advances only at the end of a cycle whose changes the target has (deletions
      applied, or staged in the store); a cycle that fails keeps the old one, and the next cycle
      redoes the same changes, which converges because each action is computed against the target.
    * An object the cycle could not write (refused, or its mapping failed) is kept in the store with
      the watermark, in one transaction, and delta cycles read it from the source again and retry it
      until it is written or gone: the next cycle after a first failure, then after ``retry_backoff``
      (2 minutes), doubling up to ``retry_backoff_max`` (6 hours); a change to it in the source is
      written at once. A full sync starts the list afresh.
    * A user that a delta creates (new, back in scope, or retried) is added to the groups that hold
      it in the source, which the change feed may not name again.
    * A deletion queued in a cycle is dropped when the same object is written later in that cycle
      (it came back); each object is queued once.
    * Writes on behalf of the job are fenced by the replica's lease (``owner``).
    * Deletions are collected for the whole cycle: more than ``deletion_threshold`` are staged and
      the job pauses until ``approve-deletes``; approved ones are applied by the next cycle.
    * A target error worth retrying (``Target.recoverable_errors``) or a source that no agent
      answers fails the cycle; after ``quarantine_after`` failures in a row the job is quarantined
      (backoff to hourly, then daily) and a notification goes out. A change the target refuses
      (conflict, rejected data), or an object whose mapping or scoping fails on its data (an
      expression given text it cannot take), is logged as failed and the cycle goes on. Any other
      error fails the cycle, which is recorded as failed and counts towards quarantine.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.provisioning.notify import notify
from service.provisioning.pipeline import AnchorIndex, Pipeline, Plan, Step
from service.provisioning.reader import SourceReader, SourceUnavailableError, WatermarkExpiredError
from service.provisioning.rules import Rules, default_rules, dn_of
from service.provisioning.settings import JobSettings
from service.provisioning.state import LeaseLostError, LogEntry, Retry, StagedDelete, StateStore
from service.provisioning.targets.base import Target, TargetError, TargetNotFoundError, TargetObject

_log = structlog.get_logger("cloudprov.provisioning")
ENDPOINTS = {"User": "/Users", "Group": "/Groups"}
LOG_FLUSH = 400
PROGRESS_EVERY = 1.0


@dataclass
class CycleReport:
    cycle_id: str
    kind: str
    outcome: str = "running"  # ok | partial | staged | failed | skipped
    counts: Counter[str] = field(default_factory=Counter)
    objects: int = 0
    started: float = 0.0
    finished: float | None = None
    lag: float | None = None
    error: str | None = None
    watermark: str | None = None

    @property
    def rate(self) -> float | None:
        if self.finished is None or self.finished <= self.started:
            return None
        return self.objects / (self.finished - self.started)


@dataclass(frozen=True, slots=True)
class _Delete:
    resource_type: str
    anchor: str
    target: TargetObject
    dn: str | None
    reason: str
    change_id: str | None = None


_ENDPOINTS = {"User": "/Users", "Group": "/Groups"}


class _FullSyncNeededError(Exception):
    """A delta cycle found a change it cannot apply incrementally."""


class _Cycle:
    def __init__(self, report: CycleReport) -> None:
        self.report = report
        self.log: list[LogEntry] = []
        self.deletes: dict[tuple[str, str], _Delete] = {}  # by (resource type, anchor), in the order queued
        self.groups: list[Plan] = []
        self.failed: dict[tuple[str, str], str | None] = {}  # objects to retry, with their error
        self.written: set[tuple[str, str]] = set()  # objects this cycle wrote (or found right)
        self.created_users: list[str] = []  # anchors of users a delta created: their groups get them
        self.phase = "starting"
        self.last_progress = 0.0


class SyncEngine:
    def __init__(
        self,
        job_id: str,
        state: StateStore,
        reader: SourceReader,
        target: Target,
        *,
        settings: JobSettings | None = None,
        rules: Rules | None = None,
        owner: str | None = None,
        on_progress: Callable[[Mapping[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.reader = reader
        self.target = target
        self.settings = settings or JobSettings()
        self.rules = rules or default_rules()
        self.owner = owner
        self.on_progress = on_progress
        self.clock = clock
        self.index = AnchorIndex(target)
        self.pipeline = Pipeline(target, self.rules, self.settings, self.index)
        self._membership: Any = None
        self.current: CycleReport | None = None

    # ---- one cycle --------------------------------------------------------------------------
    async def run_cycle(self) -> CycleReport:
        job = await self.state.job(self.job_id)
        if job.state == "paused-for-approval":
            return CycleReport("", "none", "skipped", error="deletions are staged: approve them first")
        kind = "full" if job.full_sync or job.watermark is None else "delta"
        started = self.clock()
        report = CycleReport(await self.state.start_cycle(self.job_id, kind, self.owner or "-", started), kind)
        report.started = started
        cycle = _Cycle(report)
        self.current = report
        try:
            await self._apply_approved(cycle)
            retries = await self.state.retries(self.job_id)
            if kind == "delta":
                assert job.watermark is not None
                try:
                    await self._retry(cycle, retries)
                    await self._delta(cycle, job.watermark)
                except (WatermarkExpiredError, _FullSyncNeededError) as why:
                    report.kind = "full"
                    _log.info("delta falls back to a full sync", job=self.job_id, reason=str(why) or type(why).__name__)
                    cycle.deletes.clear()  # the full sync finds them again: counted twice, they could stage it
                    cycle.groups.clear()
                    cycle.created_users.clear()
                    await self._full(cycle)
            else:
                await self._full(cycle)
            staged = await self._settle_deletes(cycle)
            await self._flush(cycle)
            now = self.clock()
            done = cycle.written | cycle.failed.keys()
            kept = {} if report.kind == "full" else {k: r for k, r in retries.items() if k not in done}
            known = {} if report.kind == "full" else retries  # a full sync starts the list afresh
            failed = {k: self._next_try(known.get(k), error, now) for k, error in cycle.failed.items()}
            await self.state.advance_watermark(self.job_id, self.owner, report.watermark, kept | failed, now=now)
            await self.state.record_success(self.job_id, self.owner)
            report.outcome = "staged" if staged else ("partial" if report.counts["failed"] else "ok")
        except LeaseLostError as error:
            report.outcome, report.error = "failed", str(error)
            await self._flush(cycle)
        except (SourceUnavailableError, TargetError, OSError, TimeoutError) as error:
            report.outcome, report.error = "failed", f"{type(error).__name__}: {error}"
            await self._flush(cycle)
            await self._failed(report)
        except Exception as error:  # a fault of ours: the cycle is failed and counted, never left "running"
            _log.exception("cycle failed", job=self.job_id)
            report.outcome, report.error = "failed", f"{type(error).__name__}: {error}"
            with contextlib.suppress(Exception):
                await self._flush(cycle)
            await self._failed(report)
        finally:
            report.finished = self.clock()
            self.current = None
            await self.state.set_progress(self.job_id, None)
            await self.state.finish_cycle(
                report.cycle_id,
                outcome=report.outcome,
                counts=report.counts,
                objects=report.objects,
                rate=report.rate,
                lag=report.lag,
                error=report.error,
                now=report.finished,
            )
        _log.info(
            "cycle finished",
            job=self.job_id,
            kind=report.kind,
            outcome=report.outcome,
            objects=report.objects,
            counts=dict(report.counts),
            error=report.error,
        )
        return report

    async def _failed(self, report: CycleReport) -> None:
        try:
            failures = await self.state.record_failure(self.job_id, self.owner)
        except LeaseLostError:
            return
        if failures < self.settings.quarantine_after:
            return
        job = await self.state.job(self.job_id)
        delay = self.settings.quarantine_delay(failures, job.schedule)
        await self.state.quarantine(self.job_id, self.owner, self.clock() + delay, report.error or "failed")
        _log.warning("job quarantined", job=self.job_id, failures=failures, retry_in=delay, error=report.error)
        if failures == self.settings.quarantine_after:
            await notify(
                self.settings.notify,
                self.job_id,
                "quarantined",
                f"{failures} cycles failed in a row; last error: {report.error}",
                failures=failures,
                retry_in=delay,
            )

    # ---- full sync --------------------------------------------------------------------------
    async def _full(self, cycle: _Cycle) -> None:
        report = cycle.report
        read_at = self.clock()
        report.watermark = await self.reader.current_watermark()
        self.index.clear()
        cycle.phase = "groups (reading)"
        by_id: dict[str, dict[str, Any]] = {}  # a read restarted on another agent repeats groups
        async for page in self.reader.pages("/Groups", self.settings.page_size):
            by_id.update((str(group["id"]), group) for group in page)
        groups = list(by_id.values())
        self._membership = self.rules.membership(groups)
        seen: dict[str, set[str]] = {"User": set(), "Group": set()}
        empty = {resource_type: await self._empty(resource_type) for resource_type in seen}
        cycle.phase = "users"
        async for page in self.reader.pages("/Users", self.settings.page_size):
            ids = [str(resource["id"]) for resource in page]
            if empty["User"] and not seen["User"].isdisjoint(ids):
                empty["User"] = False  # objects read twice (the read was restarted on another agent): look up
            seen["User"].update(ids)
            await self._page(cycle, "User", page, empty=empty["User"])
            await self._progress(cycle)
        cycle.phase = "groups"
        seen["Group"].update(str(resource["id"]) for resource in groups)
        await self._page(cycle, "Group", groups, empty=empty["Group"])
        await self._members(cycle)
        cycle.phase = "deletions"
        for resource_type in ("User", "Group"):
            async for obj in self.target.objects(resource_type):
                if obj.anchor is not None and obj.anchor not in seen[resource_type]:
                    self._queue_delete(
                        cycle, _Delete(resource_type, obj.anchor, obj, None, "not in the source any more")
                    )
        report.lag = self.clock() - read_at

    # ---- delta sync -------------------------------------------------------------------------
    async def _delta(self, cycle: _Cycle, watermark: str) -> None:
        report = cycle.report
        if self.rules.uses_membership and self._membership is None:
            groups = [g async for page in self.reader.pages("/Groups", self.settings.page_size) for g in page]
            self._membership = self.rules.membership(groups)
        cycle.phase = "changes"
        read_at = self.clock()
        while True:
            read_at = self.clock()
            body = await self.reader.changes(watermark, self.settings.change_batch)
            records = list(body.get("Resources", []))
            if self.rules.uses_membership and any(r.get("resourceType") == "Group" for r in records):
                raise _FullSyncNeededError("a group changed and the scope looks at group membership")
            for resource_type in ("User", "Group"):
                for record in records:
                    if record.get("op") == "upsert" and record.get("resourceType") == resource_type:
                        await self._one(cycle, resource_type, record["resource"], change_id=body.get("watermark"))
            await self._groups_of_created(cycle)
            await self._members(cycle)
            for record in records:
                if record.get("op") == "delete":
                    await self._source_deleted(cycle, record, body.get("watermark"))
            watermark = str(body.get("watermark") or watermark)
            report.watermark = watermark
            await self._progress(cycle)
            if not body.get("more"):
                break
        report.lag = self.clock() - read_at

    def _next_try(self, previous: Retry | None, error: str | None, now: float) -> Retry:
        """An object that failed again: the next cycle retries a first failure, then the wait doubles from
        ``retry_backoff`` up to ``retry_backoff_max``, so an object that keeps failing costs the source and
        the target a read and a write every few hours instead of every cycle."""
        failures = previous.failures + 1 if previous is not None else 1
        settings = self.settings
        doublings = min(failures - 2, 60)  # 2.0 ** 1024 overflows; 2 ** 60 waits outlast any bound anyway
        wait = 0.0 if failures == 1 else min(settings.retry_backoff * 2.0**doublings, settings.retry_backoff_max)
        return Retry(error, failures, now + wait)

    async def _retry(self, cycle: _Cycle, retries: Mapping[tuple[str, str], Retry]) -> None:
        """Objects earlier cycles could not write and whose next try is due, read from the source again and
        written (or deleted, when the source no longer has them)."""
        now = self.clock()
        due = [key for key, retry in retries.items() if retry.next_at <= now]
        if len(due) < len(retries):
            _log.info("objects waiting to be retried", job=self.job_id, due=len(due), waiting=len(retries) - len(due))
        if not due:
            return
        cycle.phase = "retries"
        for resource_type, anchor in due:
            resource = await self.reader.get(_ENDPOINTS[resource_type], anchor)
            if resource is not None:
                await self._one(cycle, resource_type, resource)
                continue
            cycle.written.add((resource_type, anchor))  # gone from the source: nothing to write
            obj = await self.target.get_by_anchor(resource_type, anchor)
            if obj is not None:
                self._queue_delete(cycle, _Delete(resource_type, anchor, obj, None, "deleted in the source"))
        await self._groups_of_created(cycle)
        await self._members(cycle)

    async def _groups_of_created(self, cycle: _Cycle) -> None:
        """The source groups holding users a delta created, planned so their memberships are synced: the change
        feed names a group when its members change, not when a member comes into scope or is written late."""
        created, cycle.created_users = cycle.created_users, []
        planned = {plan.anchor for plan in cycle.groups}
        for anchor in created:
            holding = f"members[value eq {json.dumps(anchor)}]"
            async for page in self.reader.pages("/Groups", self.settings.page_size, holding):
                for group in page:
                    if str(group["id"]) not in planned:
                        planned.add(str(group["id"]))
                        await self._one(cycle, "Group", group)

    def _queue_delete(self, cycle: _Cycle, delete: _Delete) -> None:
        cycle.deletes.setdefault((delete.resource_type, delete.anchor), delete)

    async def _source_deleted(self, cycle: _Cycle, record: Mapping[str, Any], change_id: str | None) -> None:
        anchor = str(record["id"])
        types = [record["resourceType"]] if record.get("resourceType") else ["User", "Group"]
        cycle.report.objects += 1
        for resource_type in types:
            obj = await self.target.get_by_anchor(resource_type, anchor)
            if obj is not None:
                self._queue_delete(cycle, _Delete(resource_type, anchor, obj, None, "deleted in the source", change_id))
                return
        cycle.report.counts["skip"] += 1

    # ---- objects ----------------------------------------------------------------------------
    async def _empty(self, resource_type: str) -> bool:
        """Whether the target holds no object of this type (a first sync need not look each one up)."""
        async for _ in self.target.objects(resource_type):
            return False
        return True

    async def _page(self, cycle: _Cycle, resource_type: str, resources: list[dict[str, Any]], *, empty: bool) -> None:
        """A page of a full sync: the writes in one target transaction where the target has them
        (``batch``), creates in one call (``create_many``), and objects of a type the target held none
        of at the start of the cycle are not looked up one by one."""
        batch: Any = getattr(self.target, "batch", None)
        create_many: Any = getattr(self.target, "create_many", None)
        creates: list[Plan] = []
        async with batch() if batch is not None else contextlib.nullcontext():
            for resource in resources:
                cycle.report.objects += 1
                plan = await self._plan(cycle, resource_type, resource, None, first_sync=True, absent=empty)
                if plan is None:
                    continue
                if plan.action == "create" and create_many is not None:
                    creates.append(plan)
                else:
                    await self._act(cycle, plan, None)
            if creates:
                try:
                    made = await create_many(resource_type, [(plan.anchor, plan.attributes) for plan in creates])
                except self.target.recoverable_errors:
                    raise
                except TargetError:  # one of them is refused: each on its own, so only that one fails
                    for plan in creates:
                        await self._act(cycle, plan, None)
                else:
                    for plan, obj in zip(creates, made, strict=True):
                        plan.target = obj
                        self.index.remember(plan.anchor, obj.id)
                        self._applied(cycle, plan, None)
        if len(cycle.log) >= LOG_FLUSH:
            await self._flush(cycle)

    async def _one(
        self,
        cycle: _Cycle,
        resource_type: str,
        resource: Mapping[str, Any],
        *,
        first_sync: bool = False,
        change_id: str | None = None,
    ) -> Plan | None:
        cycle.report.objects += 1
        plan = await self._plan(cycle, resource_type, resource, change_id, first_sync=first_sync)
        if plan is None or await self._act(cycle, plan, change_id) is None:
            return None
        if len(cycle.log) >= LOG_FLUSH:
            await self._flush(cycle)
        return plan

    async def _plan(
        self,
        cycle: _Cycle,
        resource_type: str,
        resource: Mapping[str, Any],
        change_id: str | None,
        *,
        first_sync: bool = False,
        absent: bool = False,
    ) -> Plan | None:
        """The pipeline's plan for one object; None, logged as failed, when its mapping or scoping fails
        on the object's data (``MappingError`` and the expression errors are ``ValueError``)."""
        try:
            return await self.pipeline.plan(
                resource_type, resource, self._membership, first_sync=first_sync, absent=absent
            )
        except ValueError as error:
            cycle.report.counts["failed"] += 1
            anchor, dn = str(resource.get("id")), dn_of(resource)
            cycle.failed[(resource_type, anchor)] = str(error)
            entry = self._entry(cycle, resource_type, anchor, dn, "map", "failed", str(error), [], change_id=change_id)
            cycle.log.append(entry)
            return None

    async def _act(self, cycle: _Cycle, plan: Plan, change_id: str | None) -> Plan | None:
        """Apply one plan (a deletion is only collected); None when the target refused it."""
        report = cycle.report
        resource_type = plan.resource_type
        if plan.action == "delete":
            assert plan.target is not None
            self._queue_delete(
                cycle, _Delete(resource_type, plan.anchor, plan.target, plan.dn, "left scope", change_id)
            )
            return plan
        try:
            await self.pipeline.apply(plan)
        except self.target.recoverable_errors:
            raise
        except TargetError as error:
            report.counts["failed"] += 1
            reason = cycle.failed[(resource_type, plan.anchor)] = f"{type(error).__name__}: {error}"
            self._log(cycle, plan, "failed", reason, change_id)
            return None
        self._applied(cycle, plan, change_id)
        return plan

    def _applied(self, cycle: _Cycle, plan: Plan, change_id: str | None) -> None:
        key = (plan.resource_type, plan.anchor)
        cycle.written.add(key)
        cycle.deletes.pop(key, None)  # queued for deletion earlier in the cycle, and back since
        if plan.action == "create" and plan.resource_type == "User" and cycle.report.kind == "delta":
            cycle.created_users.append(plan.anchor)
        cycle.report.counts[plan.action] += 1
        if plan.members is not None:
            cycle.groups.append(plan)
        if plan.action != "none" or change_id is not None:
            self._log(cycle, plan, "ok", None, change_id)

    async def _members(self, cycle: _Cycle) -> None:
        cycle.phase = "memberships"
        for plan in cycle.groups:
            try:
                added, removed = await self.pipeline.sync_members(plan)
            except self.target.recoverable_errors:
                raise
            except TargetError as error:
                cycle.report.counts["failed"] += 1
                reason = cycle.failed[(plan.resource_type, plan.anchor)] = f"members: {type(error).__name__}: {error}"
                self._log(cycle, plan, "failed", reason, None)
                continue
            if added or removed:
                cycle.report.counts["member_add"] += added
                cycle.report.counts["member_remove"] += removed
                self._log(cycle, plan, "ok", None, None, action="members")
        cycle.groups.clear()

    # ---- deletions --------------------------------------------------------------------------
    async def _apply_approved(self, cycle: _Cycle) -> None:
        approved = [d for d in await self.state.staged_deletes(self.job_id) if d.reason == "approved"]
        if not approved:
            return
        done = []
        for staged in approved:
            obj = await self.target.get_by_anchor(staged.resource_type, staged.anchor)
            if obj is not None:
                await self._delete(cycle, _Delete(staged.resource_type, staged.anchor, obj, staged.dn, "approved"))
            done.append(staged.anchor)
        await self.state.drop_staged(self.job_id, done)

    async def _settle_deletes(self, cycle: _Cycle) -> bool:
        """Apply the cycle's deletions, or stage them past the threshold; True when staged."""
        deletes = list(cycle.deletes.values())
        threshold = self.settings.deletion_threshold
        if threshold and len(deletes) > threshold:
            now = self.clock()
            await self.state.stage_deletes(
                self.job_id,
                self.owner,
                [StagedDelete(d.anchor, d.resource_type, d.target.id, d.dn, d.reason, now) for d in deletes],
            )
            cycle.report.counts["staged"] += len(deletes)
            for d in deletes:
                cycle.log.append(self._entry(cycle, d.resource_type, d.anchor, d.dn, "delete", "staged", None, []))
            reason = f"{len(deletes)} deletions in one cycle exceed the threshold of {threshold}"
            _log.warning("deletions staged", job=self.job_id, count=len(deletes), threshold=threshold)
            await notify(self.settings.notify, self.job_id, "deletions-staged", reason, count=len(deletes))
            return True
        for d in deletes:
            await self._delete(cycle, d)
        return False

    async def _delete(self, cycle: _Cycle, d: _Delete) -> None:
        steps = [Step("action", "delete", d.reason).as_dict()]
        try:
            await self.target.delete(d.target)
        except TargetNotFoundError:
            pass
        except self.target.recoverable_errors:
            raise
        except TargetError as error:
            cycle.report.counts["failed"] += 1
            error_text = f"{type(error).__name__}: {error}"
            cycle.log.append(self._entry(cycle, d.resource_type, d.anchor, d.dn, "delete", "failed", error_text, steps))
            return
        self.index.forget(d.anchor)
        cycle.report.counts["delete"] += 1
        cycle.log.append(
            self._entry(cycle, d.resource_type, d.anchor, d.dn, "delete", "ok", None, steps, change_id=d.change_id)
        )

    # ---- on demand --------------------------------------------------------------------------
    async def on_demand(self, dn: str, *, apply: bool = True) -> list[Step]:
        """One object, found by DN, through Import → Scope → Match → Action now; its steps."""
        found = await self.reader.find_by_dn(dn)
        if found is None:
            return [Step("import", "not found", f"no user or group with DN {dn!r} in the source")]
        resource_type, resource = found
        if self.rules.uses_membership:
            groups = [g async for page in self.reader.pages("/Groups", self.settings.page_size) for g in page]
            self._membership = self.rules.membership(groups)
        plan = await self.pipeline.plan(resource_type, resource, self._membership, first_sync=True)
        if not apply:
            plan.steps.append(Step("result", "not applied", "dry run"))
            return plan.steps
        cycle = _Cycle(CycleReport(f"on-demand-{uuid.uuid4().hex[:12]}", "on-demand"))
        if plan.action == "delete" and plan.target is not None:
            await self._delete(cycle, _Delete(resource_type, plan.anchor, plan.target, plan.dn, "left scope"))
        else:
            await self.pipeline.apply(plan)
            await self.pipeline.sync_members(plan)
            self._log(cycle, plan, "ok", None, None)
        await self._flush(cycle)
        plan.steps.append(Step("result", "applied", f"target {plan.target.id if plan.target else '-'}"))
        return plan.steps

    # ---- log and progress -------------------------------------------------------------------
    def _entry(
        self,
        cycle: _Cycle,
        resource_type: str,
        anchor: str,
        dn: str | None,
        action: str,
        outcome: str,
        error: str | None,
        steps: list[dict[str, str]],
        *,
        change_id: str | None = None,
    ) -> LogEntry:
        return LogEntry(
            cycle.report.cycle_id,
            action,
            outcome,
            anchor=anchor,
            resource_type=resource_type,
            dn=dn,
            change_id=change_id,
            steps=steps,
            error=error,
            at=self.clock(),
        )

    def _log(
        self,
        cycle: _Cycle,
        plan: Plan,
        outcome: str,
        error: str | None,
        change_id: str | None,
        *,
        action: str | None = None,
    ) -> None:
        steps = [s.as_dict() for s in plan.steps]
        cycle.log.append(
            self._entry(
                cycle,
                plan.resource_type,
                plan.anchor,
                plan.dn,
                action or plan.action,
                outcome,
                error,
                steps,
                change_id=change_id,
            )
        )

    async def _flush(self, cycle: _Cycle) -> None:
        entries, cycle.log = cycle.log, []
        if entries:
            await self.state.write_log(self.job_id, entries)

    async def _progress(self, cycle: _Cycle) -> None:
        report = cycle.report
        now = self.clock()
        elapsed = max(now - report.started, 1e-9)
        progress = {
            "cycle_id": report.cycle_id,
            "kind": report.kind,
            "phase": cycle.phase,
            "objects": report.objects,
            "rate": round(report.objects / elapsed, 1),
            "counts": dict(report.counts),
            "started": report.started,
        }
        if self.on_progress is not None:
            self.on_progress(progress)
        if now - cycle.last_progress >= PROGRESS_EVERY:
            cycle.last_progress = now
            await self.state.set_progress(self.job_id, progress)
