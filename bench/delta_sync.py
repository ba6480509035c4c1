"""Benchmark: delta sync of slapd → agent over RabbitMQ → engine → embedded store, at two directory sizes.

Usage: ``.venv/bin/python -m bench.delta_sync [--users 100000] [--small 10000] [--changes 10]``

For each size (``--small`` then ``--users`` users, a group per 100 users, the first holding half of
them) a throwaway slapd is loaded (``bench/sync_setup.py``: own state dir and a free port; the test
slapd is not touched), the agent runs in a child process, and a full sync fills the embedded store.
Then:

* **cost**: the wall time of delta cycles with nothing to do (``--idle-cycles`` of them, median) and
  of one delta cycle carrying ``--changes`` changes (adds, modifies, deletes made just before);
* **latency** (largest size only): the real ``Scheduler`` runs the job on a 1-second schedule
  (``--schedule``) while ``--changes`` changes are made one at a time straight in LDAP (bonsai, as an
  administrator would); each one's time from the LDAP write to its effect being in the target
  (polled every 5 ms) is recorded.

Targets: change → target ≤ 1 s with a 1-second schedule; a delta cycle's cost does not grow with
the directory (the 100k / 10k ratio is printed). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import result, summary_ms
from bench.sync_setup import MAX_USERS, SUFFIX, Service, ldap_client, loaded_slapd, system

Check = Callable[[], Awaitable[bool]]


class Changer:
    """Makes adds, modifies and deletes straight in LDAP, each with a check that it reached the target."""

    def __init__(self, conn: Any, service: Service, users: int, seed: int) -> None:
        self.conn = conn
        self.service = service
        self.users = users
        self.rng = random.Random(seed)
        self.added = 0
        self.touched: set[int] = set()

    def _pick(self) -> int:
        while True:
            number = self.rng.randrange(1, self.users)  # user 0 is in every size's big group: leave it
            if number not in self.touched:
                self.touched.add(number)
                return number

    async def _uuid(self, dn: str) -> str:
        import bonsai

        found = await self.conn.search(dn, bonsai.LDAPSearchScope.BASE, attrlist=["entryUUID"])
        return str(found[0]["entryUUID"][0])

    async def _object(self, anchor: str) -> Any:
        return await self.service.target.get_by_anchor("User", anchor)

    async def add(self, tag: str) -> Check:
        import bonsai

        self.added += 1
        uid = f"delta-{tag}-{self.added:04d}"
        entry = bonsai.LDAPEntry(f"uid={uid},ou=people,{SUFFIX}")
        entry["objectClass"] = ["inetOrgPerson"]
        entry["uid"], entry["cn"], entry["sn"], entry["mail"] = uid, f"Delta {uid}", "Delta", f"{uid}@example.com"
        await self.conn.add(entry)
        anchor = await self._uuid(str(entry.dn))

        async def check() -> bool:
            return await self._object(anchor) is not None

        return check

    async def modify(self, tag: str) -> Check:
        import bonsai

        dn = f"uid=user{self._pick():06d},ou=people,{SUFFIX}"
        anchor = await self._uuid(dn)
        title = f"Retitled {tag} {self.rng.randrange(10**6)}"
        entry: Any = bonsai.LDAPEntry(dn)  # bonsai's stubs type change_attribute's values as tuples
        entry.connection = self.conn
        entry.change_attribute("title", bonsai.LDAPModOp.REPLACE, title)
        await entry.modify()

        async def check() -> bool:
            obj = await self._object(anchor)
            return obj is not None and obj.attributes.get("title") == title

        return check

    async def delete(self, tag: str) -> Check:
        dn = f"uid=user{self._pick():06d},ou=people,{SUFFIX}"
        anchor = await self._uuid(dn)
        await self.conn.delete(dn)

        async def check() -> bool:
            return await self._object(anchor) is None

        return check

    def plan(self, count: int) -> list[Callable[[str], Awaitable[Check]]]:
        kinds = [self.add, self.modify, self.delete]
        return [kinds[i % 3] for i in range(count)]


async def wait_until(check: Check, limit: float = 30.0) -> float | None:
    """Seconds until ``check`` holds (polled every 5 ms), or None after ``limit``."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if await check():
            return time.perf_counter() - started
        await asyncio.sleep(0.005)
    return None


async def cycle_costs(service: Service, changer: Changer, idle_cycles: int, changes: int) -> dict[str, Any]:
    engine = service.engine
    idle: list[float] = []
    for _ in range(idle_cycles):
        started = time.perf_counter()
        report = await engine.run_cycle()
        idle.append(time.perf_counter() - started)
        assert report.kind == "delta", report.kind
    checks = [await make("cost") for make in changer.plan(changes)]
    started = time.perf_counter()
    report = await engine.run_cycle()
    busy = time.perf_counter() - started
    landed = sum([await check() for check in checks])
    return {
        "idle_delta_ms": round(statistics.median(idle) * 1000, 1),
        "delta_with_changes_ms": round(busy * 1000, 1),
        "changes_landed": landed,
        "delta_counts": dict(report.counts),
        "delta_kind": report.kind,
    }


async def latencies(service: Service, changer: Changer, changes: int, schedule: float) -> dict[str, Any]:
    from service.provisioning.jobs import Scheduler
    from service.provisioning.rules import rules_from_settings

    async def client_for(job: Any) -> Any:
        return service.client

    async def target_for(job: Any) -> Any:
        return service.target

    await service.state.put_job(
        "bench", "example.com", "embedded:bench", schedule=schedule, settings=service.engine.settings.model_dump()
    )
    scheduler = Scheduler(
        service.state,
        client_for=client_for,
        target_for=target_for,
        rules_for=lambda job, settings: rules_from_settings(settings),
        replica="bench",
        poll=0.02,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(scheduler.run(stop))
    samples: list[float] = []
    missed = 0
    rng = random.Random(11)
    try:
        await asyncio.sleep(1.5)  # the scheduler's first (delta) cycle
        for make in changer.plan(changes):
            await asyncio.sleep(rng.uniform(0, schedule))  # changes land at any point of the schedule
            started = time.perf_counter()
            check = await make("latency")
            seconds = await wait_until(check)
            if seconds is None:
                missed += 1
            else:
                samples.append(time.perf_counter() - started)
    finally:
        stop.set()
        await runner
    figures: dict[str, Any] = {"changes": changes, "missed": missed, "schedule_s": schedule}
    figures.update(summary_ms(samples))
    figures["max_ms"] = round(max(samples) * 1000, 1) if samples else None
    return figures


async def one_size(
    users: int, *, idle_cycles: int, changes: int, latency: bool, schedule: float, page_size: int
) -> dict[str, Any]:
    groups = max(users // 100, 1)
    with loaded_slapd(users, groups, users // 2, 0) as (url, state):
        async with system(url, state, page_size=page_size) as (service, agent):
            started = time.perf_counter()
            full = await service.engine.run_cycle()
            full_seconds = time.perf_counter() - started
            conn = await ldap_client(url).connect(is_async=True)
            try:
                changer = Changer(conn, service, users, seed=users)
                figures: dict[str, Any] = {"users": users, "full_sync_s": round(full_seconds, 1), "full": full.outcome}
                figures.update(await cycle_costs(service, changer, idle_cycles, changes))
                if latency:
                    figures["latency"] = await latencies(service, changer, changes, schedule)
            finally:
                conn.close()
        agent.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller directory for the cost ratio")
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--idle-cycles", type=int, default=10)
    parser.add_argument("--schedule", type=float, default=1.0)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    for value in (args.users, args.small):
        if not 10 <= value <= MAX_USERS:
            parser.error(f"sizes must be 10..{MAX_USERS}")
    if not 1 <= args.changes <= 1000 or not 1 <= args.idle_cycles <= 100:
        parser.error("--changes must be 1..1000 and --idle-cycles 1..100")
    options = {
        "idle_cycles": args.idle_cycles,
        "changes": args.changes,
        "schedule": args.schedule,
        "page_size": args.page_size,
    }
    small = asyncio.run(one_size(args.small, latency=False, **options))
    result(f"delta_sync.cost users={args.small}", **small)
    large = asyncio.run(one_size(args.users, latency=True, **options))
    latency = large.pop("latency")
    result(f"delta_sync.cost users={args.users}", **large)
    result(
        f"delta_sync.cost_ratio {args.users}/{args.small}",
        idle_delta_ratio=round(large["idle_delta_ms"] / max(small["idle_delta_ms"], 1e-3), 2),
        delta_with_changes_ratio=round(large["delta_with_changes_ms"] / max(small["delta_with_changes_ms"], 1e-3), 2),
    )
    result(f"delta_sync.latency users={args.users}", **latency, target_ms=1000)


if __name__ == "__main__":
    main()
