"""Benchmark: raw bonsai searches against slapd vs the same lookups through our stack, in one run.

    .venv/bin/python -m bench.ldap_raw_vs_agent [--users 10000] [--queries 20000] [--concurrency 16] [--rounds 5]

A throwaway slapd (``bench/slapd.py``: own state folder and port, ``--users`` loaded with slapadd) is
started and stopped. For concurrency 1 and ``--concurrency`` it measures lookups of one user by uid:
  - raw bonsai: one connection per worker, ``(uid=…)`` under ou=people, no paging, default attributes
    (stock bonsai, the baseline of the ratios; also with our readable-only connection class);
  - ``LdapDirectory.search``: the plugin (pool, paging, entry conversion), same filter, asking for the
    attributes the SCIM GET asks for (the openldap profile's user attributes);
  - SCIM: ``GET /Users?filter=userName eq "…"`` signed, through the local transport, the dispatcher,
    the SCIM handler and the plugin (requester and agent share this process and its one core). Lookups
    that arrive together are read with one LDAP search (``agent.scim.lookups``), as for any client:
    ``scim_searches_per_lookup`` says how many searches the agent made per lookup;
and prints each rate and its ratio to raw (target for SCIM at ``--concurrency``: >= 0.7), and the CPU
this process spent per lookup (``*_cpu_us``: for raw, bonsai alone; the differences are our layers).
The variants take turns, ``--rounds`` times over a share of the queries each, and each figure is
the median over the rounds: on a shared, noisy machine a variant measured minutes after another
is not comparable, turns a few seconds apart are. A turn is long (4,000 lookups by default) because
its workers start together: through SCIM their first few hundred lookups move as one cohort, sharing
signatures and loop turns, before they spread out into the steady state a running agent sees (with
turns of 800, SCIM measured 0.47 of raw at 110 µs per lookup where the steady state is 0.40-0.41 at
127 µs; raw bonsai has no such start). It also
measures the CPU burnt while a reply is pending (slapd paused 2 s): stock bonsai vs our
readable-only connection. Prints result lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import bonsai

from agent.scim.profile import PROFILES
from bench.common import result
from bench.slapd import ROOT_DN, ROOT_PW, SUFFIX, ThrowawaySlapd, local_agent, uid
from plugins.directory import Entry
from plugins.ldap import LdapDirectory
from plugins.ldap.connection import ReadableOnlyConnection
from service.client import ScimClient


def client(url: str, cls: type | None = None) -> bonsai.LDAPClient:
    made = bonsai.LDAPClient(url)
    made.set_credentials("SIMPLE", user=ROOT_DN, password=ROOT_PW)
    if cls is not None:
        made.set_async_connection_class(cls)
    return made


class Timing(NamedTuple):
    per_s: float
    cpu_us: float  # CPU of this process per lookup


async def timed(count: int, workers: list[Coroutine[Any, Any, None]]) -> Timing:
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*workers)
    return Timing(count / (time.perf_counter() - start), (time.process_time() - cpu) / count * 1e6)


async def raw_rate(url: str, uids: list[str], concurrency: int, cls: type | None = None) -> Timing:
    conns = [await client(url, cls).connect(is_async=True) for _ in range(concurrency)]
    queue = iter(uids)

    async def worker(conn: bonsai.asyncio.AIOLDAPConnection) -> None:
        for name in queue:
            found = await conn.search(f"ou=people,{SUFFIX}", bonsai.LDAPSearchScope.ONELEVEL, f"(uid={name})")
            assert len(found) == 1

    timing = await timed(len(uids), [worker(c) for c in conns])
    for conn in conns:
        conn.close()
    return timing


async def plugin_rate(directory: LdapDirectory, uids: list[str], concurrency: int) -> Timing:
    queue = iter(uids)
    attributes = PROFILES["openldap"].users.ldap_attributes

    async def worker() -> None:
        for name in queue:
            found: list[Entry] = []
            async for page in directory.search(f"ou=people,{SUFFIX}", f"(uid={name})", attributes=attributes):
                found.extend(page)
            assert len(found) == 1

    return await timed(len(uids), [worker() for _ in range(concurrency)])


class CountedLdapDirectory(LdapDirectory):
    """The agent's directory, counting its searches (all instances together)."""

    searches = 0

    def search(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[Entry]]:
        CountedLdapDirectory.searches += 1
        return super().search(*args, **kwargs)


async def scim_rate(scim: ScimClient, uids: list[str], concurrency: int) -> Timing:
    queue = iter(uids)

    async def worker() -> None:
        for name in queue:
            body = await scim.ok("GET", "/Users", {"filter": f'userName eq "{name}"'})
            assert body["totalResults"] == 1, body

    return await timed(len(uids), [worker() for _ in range(concurrency)])


def _stopped(pid: int) -> None:
    """Return once the process is stopped (SIGSTOP reaches a busy multi-threaded process a moment later)."""
    for _ in range(200):
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        if state in {"T", "t"}:
            return
        time.sleep(0.005)
    raise RuntimeError(f"slapd (pid {pid}) did not stop within 1 s of SIGSTOP")


async def wait_cpu(url: str, pid: int, cls: type | None) -> float:
    """CPU seconds burnt while one search waits 2 s on a paused slapd."""
    conn = await client(url, cls).connect(is_async=True)
    os.kill(pid, signal.SIGSTOP)
    try:
        _stopped(pid)  # a search sent before slapd has stopped is answered at once: nothing to wait for
        pending = asyncio.create_task(conn.search(SUFFIX, bonsai.LDAPSearchScope.BASE))
        await asyncio.sleep(0.1)
        cpu = time.process_time()
        await asyncio.sleep(2.0)
        used = time.process_time() - cpu
    finally:
        os.kill(pid, signal.SIGCONT)
    await pending
    conn.close()
    return used


async def measure(slapd: ThrowawaySlapd, queries: int, concurrency: int, rounds: int) -> None:
    rng = random.Random(7)
    uids = [uid(rng.randrange(slapd.users)) for _ in range(queries)]
    settings = slapd.settings(pool_size=concurrency)
    agent = local_agent(settings, directory_class=CountedLdapDirectory)
    async with LdapDirectory(settings) as directory, agent as scim:
        await plugin_rate(directory, uids[:200], concurrency)  # warm the pools
        await scim_rate(scim, uids[:200], concurrency)

        def variants(conc: int) -> dict[str, Callable[[list[str]], Awaitable[Timing]]]:
            return {
                "raw": lambda share: raw_rate(slapd.url, share, conc),
                "raw_readable_only": lambda share: raw_rate(slapd.url, share, conc, ReadableOnlyConnection),
                "plugin": lambda share: plugin_rate(directory, share, conc),
                "scim": lambda share: scim_rate(scim, share, conc),
            }

        for conc in (1, concurrency):
            timings: dict[str, list[Timing]] = {name: [] for name in variants(conc)}
            searches = lookups = 0
            for turn in range(rounds):
                share = uids[turn::rounds]
                for name, run in variants(conc).items():
                    before = CountedLdapDirectory.searches
                    timings[name].append(await run(share))
                    if name == "scim":
                        searches += CountedLdapDirectory.searches - before
                        lookups += len(share)
            rate = {name: statistics.median(t.per_s for t in got) for name, got in timings.items()}
            cpu = {name: statistics.median(t.cpu_us for t in got) for name, got in timings.items()}
            result(
                f"ldap_raw_vs_agent.lookup users={slapd.users} concurrency={conc}",
                raw_per_s=round(rate["raw"]),
                raw_readable_only_per_s=round(rate["raw_readable_only"]),
                plugin_per_s=round(rate["plugin"]),
                plugin_ratio=round(rate["plugin"] / rate["raw"], 2),
                scim_per_s=round(rate["scim"]),
                scim_ratio=round(rate["scim"] / rate["raw"], 2),
                scim_ratio_to_readable_only=round(rate["scim"] / rate["raw_readable_only"], 2),
                scim_searches_per_lookup=round(searches / lookups, 3),
                **({"target_scim_ratio": 0.7} if conc == concurrency else {}),
                **{f"{name}_cpu_us": round(us) for name, us in cpu.items()},
            )
    stock = await wait_cpu(slapd.url, slapd.pid, None)
    fixed = await wait_cpu(slapd.url, slapd.pid, ReadableOnlyConnection)
    result("ldap_raw_vs_agent.wait_cpu_2s", stock_bonsai_s=round(stock, 2), ours_s=round(fixed, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="turns each variant takes (medians reported)")
    parser.add_argument("--port", type=int, default=3390)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark slapd running")
    args = parser.parse_args()
    with ThrowawaySlapd(args.users, args.port, keep=args.keep) as slapd:
        print(f"loaded {args.users} users with slapadd in {slapd.load_seconds:.1f} s (state {slapd.state})")
        asyncio.run(measure(slapd, args.queries, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
