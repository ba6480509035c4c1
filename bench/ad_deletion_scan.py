"""Benchmark: the cost of AD deletion detection (the anchor scan) against the Samba AD DC.

    .venv/bin/python -m bench.ad_deletion_scan [--objects 10000] [--concurrency 8]

Creates ``--objects`` contacts in a throwaway OU of the running Samba AD DC (``scripts/servers.sh``),
then with ``base_dns`` = that OU measures: the first ``changes(None)`` (a full anchor scan that fills
the store), a poll after one deletion (uSNChanged search + full anchor scan + comparison), and an idle
poll (nothing changed: no scan). Deletes the OU afterwards. Prints result lines with per-object
costs and a linear extrapolation to 100,000 objects; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import result
from plugins.directory import Scope
from plugins.ldap import LdapDirectory, LdapSettings
from tests.servers.env import server_env


def settings(state: Path, **overrides: object) -> LdapSettings:
    env = server_env()
    values: dict[str, object] = {
        "urls": (env["CLOUDPROV_SAMBA_URL"],),
        "bind_dn": env["CLOUDPROV_SAMBA_BIND_DN"],
        "password": env["CLOUDPROV_SAMBA_PASSWORD"],
        "ca_file": env["CLOUDPROV_SAMBA_CA_FILE"],
        "state_dir": state,
        "page_size": 1000,
    }
    values.update(overrides)
    return LdapSettings.model_validate(values)


async def run(objects: int, concurrency: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="cloudprov-adscan-"))
    async with LdapDirectory(settings(state)) as admin:
        ou = f"OU=scan-{uuid.uuid4().hex[:8]},{admin.base_dn}"
        await admin.add(ou, {"objectClass": ["organizationalUnit"]})
        slots = asyncio.Semaphore(concurrency)

        async def add(index: int) -> None:
            async with slots:
                await admin.add(f"CN=c{index:06d},{ou}", {"objectClass": ["contact"], "cn": [f"c{index:06d}"]})

        started = time.perf_counter()
        await asyncio.gather(*(add(i) for i in range(objects)))
        add_seconds = time.perf_counter() - started
        try:
            async with LdapDirectory(settings(state, base_dns=(ou,))) as scoped:
                started = time.perf_counter()
                mark = (await scoped.changes(None)).watermark
                first = time.perf_counter() - started
                await admin.delete(f"CN=c{0:06d},{ou}")
                started = time.perf_counter()
                batch = await scoped.changes(mark)
                detect = time.perf_counter() - started
                started = time.perf_counter()
                idle = await scoped.changes(batch.watermark)
                idle_seconds = time.perf_counter() - started
            result(
                f"ad_deletion_scan objects={objects}",
                add_per_s=round(objects / add_seconds),
                first_scan_s=round(first, 2),
                poll_with_one_deletion_s=round(detect, 2),
                deletions_found=sum(1 for c in batch.changes if c.kind.name == "DELETE"),
                idle_poll_s=round(idle_seconds, 3),
                idle_changes=len(idle.changes),
                scan_us_per_object=round(detect / objects * 1e6, 1),
                extrapolated_100k_poll_s=round(detect / objects * 100_000, 1),
            )
        finally:
            started = time.perf_counter()
            dns = [e.dn async for page in admin.search(ou, scope=Scope.ONELEVEL, attributes=["1.1"]) for e in page]

            async def remove(dn: str) -> None:
                async with slots:
                    await admin.delete(dn)

            await asyncio.gather(*(remove(dn) for dn in dns))
            await admin.delete(ou)
            print(f"cleaned up {len(dns)} objects in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(run(args.objects, args.concurrency))


if __name__ == "__main__":
    main()
