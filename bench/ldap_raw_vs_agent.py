"""Benchmark: raw bonsai search rates against slapd vs ``LdapDirectory.search`` at the same concurrency.

Usage: ``.venv/bin/python bench/ldap_raw_vs_agent.py [--users 10000] [--queries 4000] [--concurrency 16]``
It starts its own throwaway slapd (``scripts/servers.sh`` with a separate state dir and port), loads
``--users`` inetOrgPerson entries with slapadd, measures, and stops it (``--keep`` leaves it running).
Also measures the CPU burnt while a reply is pending (slapd paused 2 s): stock bonsai vs our
readable-only connection. Prints result lines; asserts nothing. (The SCIM-through-agent part is to come.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bonsai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.directory import Entry
from plugins.ldap import LdapDirectory, LdapSettings
from plugins.ldap.connection import ReadableOnlyConnection

REPO = Path(__file__).resolve().parents[1]
SUFFIX = "dc=example,dc=com"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "secret"


def write_ldif(path: Path, users: int) -> None:
    with path.open("w") as out:
        for i in range(users):
            uid = f"user{i:06d}"
            out.write(
                f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Test User {i}\n"
                f"sn: User{i}\ngivenName: Test\nmail: {uid}@example.com\nemployeeNumber: {i}\n\n"
            )


def servers(state: Path, port: int, *args: str) -> None:
    env = {
        **os.environ,
        "CLOUDPROV_SERVERS_DIR": str(state),
        "CLOUDPROV_SLAPD_PORT": str(port),
        "CLOUDPROV_SLAPD_TLS_PORT": str(port + 1),
    }
    subprocess.run([str(REPO / "scripts" / "servers.sh"), *args], check=True, env=env, capture_output=True)


def client(url: str, cls: type | None = None) -> bonsai.LDAPClient:
    made = bonsai.LDAPClient(url)
    made.set_credentials("SIMPLE", user=ROOT_DN, password=ROOT_PW)
    if cls is not None:
        made.set_async_connection_class(cls)
    return made


async def raw_rate(url: str, uids: list[str], concurrency: int) -> float:
    conns = [await client(url).connect(is_async=True) for _ in range(concurrency)]
    queue = list(uids)

    async def worker(conn: bonsai.asyncio.AIOLDAPConnection) -> None:
        while queue:
            uid = queue.pop()
            await conn.search(f"ou=people,{SUFFIX}", bonsai.LDAPSearchScope.ONELEVEL, f"(uid={uid})")

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return len(uids) / elapsed


async def agent_rate(directory: LdapDirectory, uids: list[str], concurrency: int) -> float:
    queue = list(uids)

    async def worker() -> None:
        while queue:
            uid = queue.pop()
            found: list[Entry] = []
            async for page in directory.search(f"ou=people,{SUFFIX}", f"(uid={uid})"):
                found.extend(page)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(uids) / (time.perf_counter() - start)


async def wait_cpu(url: str, pid: int, cls: type | None) -> float:
    """CPU seconds burnt while one search waits 2 s on a paused slapd."""
    conn = await client(url, cls).connect(is_async=True)
    os.kill(pid, signal.SIGSTOP)
    try:
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


async def measure(url: str, pid: int, users: int, queries: int, concurrency: int, state: Path) -> None:
    rng = random.Random(7)
    uids = [f"user{rng.randrange(users):06d}" for _ in range(queries)]
    settings = LdapSettings(
        urls=(url,), bind_dn=ROOT_DN, password=ROOT_PW, base_dns=(SUFFIX,), pool_size=concurrency, state_dir=state
    )
    async with LdapDirectory(settings) as directory:
        await agent_rate(directory, uids[:200], concurrency)  # warm the pool
        for conc in (1, concurrency):
            raw = await raw_rate(url, uids, conc)
            ours = await agent_rate(directory, uids, conc)
            print(
                f"RESULT search users={users} concurrency={conc}: raw bonsai {raw:,.0f}/s, "
                f"LdapDirectory {ours:,.0f}/s, ratio {ours / raw:.2f}"
            )
    stock = await wait_cpu(url, pid, None)
    fixed = await wait_cpu(url, pid, ReadableOnlyConnection)
    print(f"RESULT wait CPU over 2 s on a paused server: stock bonsai {stock:.2f} s, ours {fixed:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=3390)
    parser.add_argument("--keep", action="store_true", help="leave the benchmark slapd running")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="cloudprov-bench-"))
    ldif = state / "users.ldif"
    write_ldif(ldif, args.users)
    started = time.perf_counter()
    servers(state, args.port, "load-slapd", str(ldif))
    print(f"loaded {args.users} users with slapadd in {time.perf_counter() - started:.1f} s (state {state})")
    pid = int((state / "slapd" / "slapd.pid").read_text())
    try:
        asyncio.run(measure(f"ldap://127.0.0.1:{args.port}", pid, args.users, args.queries, args.concurrency, state))
    finally:
        if not args.keep:
            servers(state, args.port, "stop", "slapd")


if __name__ == "__main__":
    main()
