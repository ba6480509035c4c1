"""Benchmark: a full read of N users through the SCIM layer vs a raw bonsai paged dump, in one run.

    .venv/bin/python -m bench.ldap_full_read [--users 100000] [--page-size 1000]

A throwaway slapd (``bench/slapd.py``) is loaded with ``--users`` users by slapadd. Then:
  - raw: a bonsai paged search of ou=people (pages of ``--page-size``, manual paging, the attributes
    the openldap profile reads), stock bonsai and with our readable-only connection class;
  - SCIM: ``ScimClient.read_all("/Users")`` — cursor-paged ListResponses of ``--page-size`` through
    the local transport, the dispatcher, the SCIM handler and the LDAP plugin.
The SCIM read runs in a child process (agent and client together, pages dropped as they arrive), so
its peak RSS is measured alone: ``ru_maxrss`` of that process, interpreter and imports included,
an upper bound on the agent's own. The read's CPU time in that process, and the part of it the
garbage collector took (with its count of full passes), show where the time went when the machine is
busy. Prints result lines (ratio target <= 2x raw, RSS <= 150 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import time

import bonsai

from agent.scim.profile import load_profile
from bench.common import result
from bench.slapd import ROOT_DN, ROOT_PW, SUFFIX, ThrowawaySlapd, local_agent
from plugins.ldap import LdapSettings
from plugins.ldap.connection import ReadableOnlyConnection


async def raw_dump(url: str, page_size: int, cls: type | None) -> tuple[int, float]:
    made = bonsai.LDAPClient(url)
    made.set_credentials("SIMPLE", user=ROOT_DN, password=ROOT_PW)
    made.set_auto_page_acquire(False)
    if cls is not None:
        made.set_async_connection_class(cls)
    attrs = list(load_profile("openldap").users.ldap_attributes)
    conn = await made.connect(is_async=True)
    start = time.perf_counter()
    base, scope = f"ou=people,{SUFFIX}", bonsai.LDAPSearchScope.ONELEVEL
    page = await conn.paged_search(base, scope, "(objectClass=inetOrgPerson)", attrs, page_size=page_size)
    count = 0
    while True:
        count += sum(1 for _ in page)
        msg_id = page.acquire_next_page()
        if msg_id is None:
            break
        page = await conn.get_result(msg_id)
    elapsed = time.perf_counter() - start
    conn.close()
    return count, elapsed


class GcClock:
    """CPU seconds the garbage collector takes, and how many of its passes are full (generation 2)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.seconds += time.process_time() - self._started
        self.full += info["generation"] == 2


async def scim_read(settings: LdapSettings, page_size: int) -> dict[str, float]:
    """Read every user through the agent; runs in the child process."""
    clock = GcClock()
    async with local_agent(settings) as scim:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start, cpu = time.perf_counter(), time.process_time()
        gc.callbacks.append(clock)
        count = pages = 0
        async for page in scim.read_all("/Users", page_size=page_size):
            count += len(page)
            pages += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        gc.callbacks.remove(clock)
    return {
        "count": count,
        "pages": pages,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "gc_seconds": clock.seconds,
        "gc_full": clock.full,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args: argparse.Namespace) -> None:
    url, state = args.child.split(" ", 1)
    settings = LdapSettings.model_validate(
        {
            "urls": (url,),
            "bind_dn": ROOT_DN,
            "password": ROOT_PW,
            "base_dns": (SUFFIX,),
            "page_size": min(args.page_size, 10_000),
            "state_dir": state,
        }
    )
    print(json.dumps(asyncio.run(scim_read(settings, args.page_size))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--port", type=int, default=3394)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark slapd running")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with ThrowawaySlapd(args.users, args.port, keep=args.keep) as slapd:
        print(f"loaded {args.users} users with slapadd in {slapd.load_seconds:.1f} s (state {slapd.state})")
        stock_count, stock = asyncio.run(raw_dump(slapd.url, args.page_size, None))
        readable_count, readable = asyncio.run(raw_dump(slapd.url, args.page_size, ReadableOnlyConnection))
        command = [sys.executable, "-m", "bench.ldap_full_read", "--page-size", str(args.page_size)]
        out = subprocess.run(
            [*command, "--child", f"{slapd.url} {slapd.state}"], check=True, capture_output=True, text=True, timeout=900
        ).stdout
        scim = json.loads(out.strip().splitlines()[-1])
        result(
            f"ldap_full_read users={args.users} page_size={args.page_size}",
            raw_stock_s=round(stock, 2),
            raw_readable_only_s=round(readable, 2),
            scim_s=round(scim["seconds"], 2),
            scim_over_raw_stock=round(scim["seconds"] / stock, 2),
            scim_over_raw_readable_only=round(scim["seconds"] / readable, 2),
            counts=[stock_count, readable_count, scim["count"]],
            scim_pages=scim["pages"],
            scim_process_cpu_s=round(scim["cpu_seconds"], 2),
            scim_process_gc_s=round(scim["gc_seconds"], 2),
            scim_process_gc_full_passes=scim["gc_full"],
            agent_process_rss_before_read_mb=round(scim["rss_before_mb"], 1),
            agent_process_peak_rss_mb=round(scim["peak_rss_mb"], 1),
            target_ratio_max=2.0,
            target_rss_mb=150,
        )


if __name__ == "__main__":
    main()
