"""``cloudprov sync …``: status, log, restart, approve-deletes of provisioning jobs (reads the state store).

Settings: ``--state URL`` (default ``$CLOUDPROV_STATE`` or ``sqlite:///service-state/provisioning.db``),
the store the provisioning service writes. Errors a user can fix print one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from service.provisioning.state import DEFAULT_URL, StateStore, UnknownJobError

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


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            async with StateStore(args.state) as state:
                return await action(state, args)

        try:
            return asyncio.run(go())
        except UnknownJobError as error:
            print(f"sync: {error}", file=sys.stderr)
            return 2

    return run


def add_sync_commands(commands: Any) -> None:
    """``cloudprov sync status|log|restart|approve-deletes``."""
    sync = commands.add_parser("sync", help="provisioning jobs", epilog="example: cloudprov sync status")
    sync.add_argument(
        "--state",
        default=os.environ.get("CLOUDPROV_STATE") or DEFAULT_URL,
        help="the provisioning state store (default $CLOUDPROV_STATE or sqlite:///service-state/provisioning.db)",
    )
    actions = sync.add_subparsers(dest="action", required=True)
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
