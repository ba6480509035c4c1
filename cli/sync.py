"""``cloudprov sync …``: jobs (create, list), status, log, restart, approve-deletes, run-once, on-demand.

Settings: ``--state URL`` (default ``$CLOUDPROV_STATE``, else the ``provisioning.state_url`` of
``-c service.yaml``, else ``sqlite:///service-state/provisioning.db``), the store the provisioning
service writes. ``run-once`` and ``on-demand`` reach the job's agents as the service does: the
domain's endpoints and the active signing key from the control plane's store of ``-c service.yaml``
(or the defaults). Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from service.provisioning.settings import JobSettings
from service.provisioning.state import DEFAULT_URL, StateError, StateStore, UnknownJobError

Action = Callable[[StateStore, argparse.Namespace], Awaitable[int]]


async def _status(state: StateStore, args: argparse.Namespace) -> int:
    now = time.time()
    jobs = await state.jobs()
    if not jobs:
        print("no provisioning jobs")
    for job in jobs:
        running = job.progress is not None and (job.lease_expires or 0) > now
        print(f"{job.id}: {job.domain} → {job.target_url}  state {job.state}, every {job.schedule:g} s")
        if running and job.progress:
            p = job.progress
            print(f"  running: {p.get('kind')} cycle, {p.get('phase')}, {p.get('objects')} objects, {p.get('rate')}/s")
        else:
            print("  not running" + (f"; next in {max(job.next_run - now, 0):.0f} s" if job.next_run else ""))
        for cycle in (await state.cycles(job.id, limit=1))[:1]:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(cycle.counts.items()) if v) or "no changes"
            rate = f"{cycle.rate:,.0f}/s" if cycle.rate else "-"
            lag = f"{now - (cycle.finished_at or now) + (cycle.lag or 0):.0f} s" if cycle.outcome != "failed" else "-"
            print(f"  last cycle: {cycle.kind} {cycle.outcome}, {cycle.objects} objects ({rate}): {counts}; lag {lag}")
            if cycle.error:
                print(f"  error: {cycle.error}")
        retries = await state.retries(job.id)
        if retries:
            due = min(retry.next_at for retry in retries.values())
            print(
                f"  {len(retries)} object(s) failed and wait to be retried (`sync log {job.id} --failed`); "
                f"the next in {max(due - now, 0):.0f} s"
            )
        if job.state == "quarantined":
            print(
                f"  quarantined: {job.quarantine_reason}; "
                f"next try in {max((job.quarantine_until or now) - now, 0):.0f} s"
            )
    return 0


async def _log(state: StateStore, args: argparse.Namespace) -> int:
    await state.job(args.job)
    obj = args.object
    by_dn = obj is not None and "=" in obj
    entries = await state.log(
        args.job, anchor=None if by_dn else obj, dn=obj if by_dn else None, failed=args.failed, limit=args.limit
    )
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        print(
            f"{when} {e.outcome:<6} {e.action:<8} {e.resource_type or '':<6} {e.dn or e.anchor}  cycle {e.cycle_id[:8]}"
        )
        for step in e.steps:
            print(f"    {step.get('step'):<7} {step.get('outcome')}: {step.get('detail')}")
        if e.error:
            print(f"    error: {e.error}")
    return 0


async def _restart(state: StateStore, args: argparse.Namespace) -> int:
    await state.restart(args.job, args.scope)
    print(f"{args.job}: restarted ({args.scope}); the next cycle runs now")
    return 0


async def _approve(state: StateStore, args: argparse.Namespace) -> int:
    count = await state.approve_deletes(args.job)
    print(f"{args.job}: {count} staged deletion(s) approved; the next cycle applies them")
    return 0


async def _job_create(state: StateStore, args: argparse.Namespace) -> int:
    try:
        settings = JobSettings.model_validate(json.loads(args.settings or "{}"))
    except (ValueError, ValidationError) as error:
        print(f"sync: --settings: {error}", file=sys.stderr)
        return 2
    job_id = args.id or args.domain
    job = await state.put_job(
        job_id, args.domain, args.target, schedule=args.schedule, settings=settings.model_dump(mode="json")
    )
    print(f"{job.id}: {job.domain} → {job.target_url}, every {job.schedule:g} s ({job.state})")
    return 0


async def _job_list(state: StateStore, args: argparse.Namespace) -> int:
    jobs = await state.jobs()
    if not jobs:
        print("no provisioning jobs")
    for job in jobs:
        print(f"{job.id}\t{job.domain}\t{job.target_url}\tevery {job.schedule:g} s\t{job.state}")
    return 0


async def _with_scheduler(state: StateStore, args: argparse.Namespace, use: Callable[[Any], Awaitable[int]]) -> int:
    """A scheduler wired as the service wires it (control plane store: endpoints, active key)."""
    from service.config import load_service_settings
    from service.provisioning.jobs import Scheduler
    from service.provisioning.wiring import JobWiring, store_sources
    from service.store import open_store

    settings = load_service_settings(args.config)
    await state.job(args.job)
    store = open_store(settings.store_url)
    await store.open()
    try:
        secret = settings.store.key_secret
        endpoints, signer = store_sources(store, secret.get_secret_value() if secret else None)
        async with JobWiring(endpoints=endpoints, signer=signer) as wiring:
            scheduler = Scheduler(
                state,
                client_for=wiring.client_for,
                target_for=wiring.target_for,
                rules_for=wiring.rules_for,
                replica=f"cli-{os.getpid()}",
            )
            try:
                return await use(scheduler)
            finally:
                await scheduler.aclose()
    finally:
        await store.close()


async def _run_once(state: StateStore, args: argparse.Namespace) -> int:
    async def use(scheduler: Any) -> int:
        report = await scheduler.run_once(args.job)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()) if v) or "no changes"
        print(f"{args.job}: {report.kind} cycle {report.outcome}, {report.objects} objects: {counts}")
        if report.error:
            print(f"  error: {report.error}")
        return 1 if report.outcome == "failed" else 0

    return await _with_scheduler(state, args, use)


async def _on_demand(state: StateStore, args: argparse.Namespace) -> int:
    async def use(scheduler: Any) -> int:
        steps = await scheduler.on_demand(args.job, args.dn, apply=not args.dry_run)
        for step in steps:
            print(f"{step.name.capitalize():<7} {step.outcome}: {step.detail}")
        return 1 if steps and steps[0].outcome == "not found" else 0

    return await _with_scheduler(state, args, use)


def _state_url(args: argparse.Namespace) -> str:
    if args.state:
        return str(args.state)
    if os.environ.get("CLOUDPROV_STATE"):
        return os.environ["CLOUDPROV_STATE"]
    if args.config:
        from service.config import load_service_settings

        return load_service_settings(args.config).provisioning_state_url
    return DEFAULT_URL


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from service.config import ServiceConfigError
        from service.provisioning.wiring import WiringError

        async def go() -> int:
            async with StateStore(_state_url(args)) as state:
                return await action(state, args)

        try:
            return asyncio.run(go())
        except (UnknownJobError, StateError, ServiceConfigError, WiringError) as error:
            print(f"sync: {error}", file=sys.stderr)
            return 2

    return run


def add_sync_commands(commands: Any) -> None:
    """``cloudprov sync job create|list``, ``status|log|restart|approve-deletes|run-once|on-demand``."""
    sync = commands.add_parser("sync", help="provisioning jobs", epilog="example: cloudprov sync status")
    sync.add_argument(
        "--state",
        help="the provisioning state store (default $CLOUDPROV_STATE, the -c file's, "
        "or sqlite:///service-state/provisioning.db)",
    )
    sync.add_argument("-c", "--config", help="the service's YAML (state store, control plane store)")
    actions = sync.add_subparsers(dest="action", required=True)
    job = actions.add_parser(
        "job", help="create or list jobs", epilog="example: cloudprov sync job list"
    ).add_subparsers(dest="what", required=True)
    create = job.add_parser(
        "create",
        help="create (or update) a job: a domain synced into a target",
        epilog="example: cloudprov sync job create --domain example.com --target sqlite:///target.db --schedule 120",
    )
    create.add_argument("--domain", required=True, help="the source domain (served by its agents)")
    create.add_argument("--target", required=True, metavar="URL", help="sqlite:///…, embedded:, https://…/scim/v2")
    create.add_argument("--schedule", type=float, default=120.0, help="seconds between cycles (default 120)")
    create.add_argument("--id", help="the job's id (default: the domain)")
    create.add_argument("--settings", help="JobSettings as JSON, e.g. '{\"deletion_threshold\": 100}'")
    create.set_defaults(func=_run(_job_create))
    job.add_parser("list", help="every job", epilog="example: cloudprov sync job list").set_defaults(
        func=_run(_job_list)
    )
    once = actions.add_parser(
        "run-once", help="run one cycle of a job now", epilog="example: cloudprov -c service.yaml sync run-once J"
    )
    once.add_argument("job")
    once.set_defaults(func=_run(_run_once))
    demand = actions.add_parser(
        "on-demand",
        help="provision one object now: Import → Scope → Match → Action, with reasons",
        epilog="example: cloudprov sync on-demand J --dn 'CN=Ada,OU=People,DC=example,DC=com'",
    )
    demand.add_argument("job")
    demand.add_argument("--dn", required=True, help="the object's DN in the source directory")
    demand.add_argument("--dry-run", action="store_true", help="show the steps, change nothing")
    demand.set_defaults(func=_run(_on_demand))
    status = actions.add_parser(
        "status", help="running?, progress, last cycle, lag", epilog="example: cloudprov sync status"
    )
    status.set_defaults(func=_run(_status))
    log = actions.add_parser(
        "log", help="the provisioning log of a job", epilog="example: cloudprov sync log J --failed"
    )
    log.add_argument("job")
    log.add_argument("--object", help="an anchor or a DN")
    log.add_argument("--failed", action="store_true", help="only failed changes")
    log.add_argument("--limit", type=int, default=100)
    log.set_defaults(func=_run(_log))
    restart = actions.add_parser(
        "restart", help="restart a job", epilog="example: cloudprov sync restart J --scope full"
    )
    restart.add_argument("job")
    restart.add_argument("--scope", choices=["watermark", "full", "quarantine"], default="watermark")
    restart.set_defaults(func=_run(_restart))
    approve = actions.add_parser(
        "approve-deletes", help="apply the staged deletions", epilog="example: cloudprov sync approve-deletes J"
    )
    approve.add_argument("job")
    approve.set_defaults(func=_run(_approve))
