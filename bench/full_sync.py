"""Benchmark: a full sync of slapd → agent (LdapDirectory, openldap profile) over RabbitMQ → provisioning
engine → embedded store, next to the raw limit (one bonsai paged dump of the same entries) in the same run.

Usage: ``.venv/bin/python -m bench.full_sync [--users 100000] [--groups 1000] [--big-group 50000]``

A throwaway slapd (own state dir and port, ``scripts/servers.sh``; the test slapd is not touched) is
loaded with slapadd; the agent runs in a child process, the service (engine, state store, embedded
target) in this one; each process reports its own peak RSS (``ru_maxrss``); the raw dump runs in a
third process so its memory counts for neither. Targets: full sync ≤ 60 s for 100k users on a
2-core machine; agent + service peak RSS ≤ 300 MB together. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb, result
from bench.sync_setup import MAX_USERS, REPO, SUFFIX, loaded_slapd, raw_dump, system


def raw_in_child(url: str) -> tuple[float, int]:
    """Seconds and entries of the raw paged dump of users and groups, in a separate process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.full_sync", "--raw-child", url],
        cwd=str(REPO),
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, entries = out.stdout.split()
    return float(seconds), int(entries)


async def _raw(url: str) -> tuple[float, int]:
    from agent.scim.profile import load_profile

    profile = load_profile("openldap", {})
    started = time.perf_counter()
    entries = 0
    for mapping in profile.resources:
        entries += await raw_dump(url, SUFFIX, mapping.ldap_filter, list(mapping.ldap_attributes))
    return time.perf_counter() - started, entries


async def measure(url: str, state: Path, users: int, groups: int, page_size: int, cache_mb: int | None) -> None:
    raw_seconds, raw_entries = raw_in_child(url)
    async with system(url, state, page_size=page_size, target_cache_mb=cache_mb) as (service, agent):
        started = time.perf_counter()
        report = await service.engine.run_cycle()
        elapsed = time.perf_counter() - started
        counts = await service.target.counts() if hasattr(service.target, "counts") else {}
        reader = service.engine.reader
        requests = reader.requests
    agent_rss = agent.stop()
    service_rss = peak_rss_mb()
    rate = users / elapsed
    result(
        "full_sync",
        users=users,
        groups=groups,
        outcome=report.outcome,
        objects=report.objects,
        counts=dict(report.counts),
        target=counts,
        seconds=round(elapsed, 2),
        users_per_s=round(rate),
        raw_dump_seconds=round(raw_seconds, 2),
        raw_entries=raw_entries,
        ratio_to_raw=round(elapsed / raw_seconds, 2),
        requests=requests,
        page_size=page_size,
        target_cache_mb=cache_mb or "default",
        service_peak_rss_mb=service_rss,
        agent_peak_rss_mb=agent_rss,
        total_peak_rss_mb=round(service_rss + (agent_rss or 0), 1),
        target_seconds=60,
        target_rss_mb=300,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--big-group", type=int, default=50_000, help="members of the largest group")
    parser.add_argument("--page-size", type=int, default=1000, help="resources per page (the job default)")
    parser.add_argument(
        "--target-cache-mb", type=int, default=None, help="SQLite page cache of the embedded store (its default: 64)"
    )
    parser.add_argument("--port", type=int, default=0, help="slapd port (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark slapd running")
    parser.add_argument("--raw-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_child:
        seconds, entries = asyncio.run(_raw(args.raw_child))
        print(seconds, entries)
        return
    if not 1 <= args.users <= MAX_USERS or not 0 <= args.groups <= 10_000:
        parser.error(f"--users must be 1..{MAX_USERS} and --groups 0..10000")
    big = min(args.big_group, args.users)
    with loaded_slapd(args.users, args.groups, big, args.port, keep=args.keep) as (url, state):
        asyncio.run(measure(url, state, args.users, args.groups, args.page_size, args.target_cache_mb))


if __name__ == "__main__":
    main()
