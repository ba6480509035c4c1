"""Benchmark: the cost of AD deletion detection (the anchor scan) against the Samba AD DC.

    .venv/bin/python -m bench.ad_deletion_scan [--objects 100000] [--keep] [--reuse] [--load local|ldap]

Fills ``OU=scan<objects>`` of the running Samba AD DC (``scripts/servers.sh start samba``) with
``--objects`` contacts (``CN=c000123,OU=g000,OU=scan<objects>``: 1,000 per sub-OU), then with
``base_dns`` = that OU and a fresh anchor store measures: a raw anchor-only paged search (no store:
what LDAP alone costs), the first ``changes(None)`` (a full anchor scan that fills the store), a poll
after one deletion (uSNChanged search + full anchor scan + comparison) and an idle poll (nothing
changed: no scan). Each phase reports wall time, the CPU seconds of this process (``getrusage``,
worker threads included) and of the Samba processes (``/proc`` of the DC's process tree), and this
process's RSS growth (peak and kept), per object in scope; plus the anchor store's size on disk.
Asserts nothing.

Loading: ``--load local`` (the default when the DC's state directory is on this machine and we are
root) adds the contacts straight into the running DC's ``sam.ldb`` with Samba's own Python bindings
(``samba.samdb.SamDB`` under ``--samba-python``: the full DSDB module stack, so objectGUID, USNs,
metadata and security descriptors are the DC's own) in batch mode, 5,000 per transaction: 100k in
107 s on a fresh DC, against ~50/s for LDAP adds (one transaction each, costlier as the partition grows).
``--load ldap`` adds over LDAP with ``--concurrency`` connections. ``--reuse`` keeps an OU that
already exists and only adds the contacts it misses; ``--keep`` leaves the OU in place afterwards
(the deleted contact is re-added) so the next ``--reuse`` run starts measuring at once. Otherwise
the OU is deleted at the end (``scripts/servers.sh stop samba`` discards the whole DC faster).
Afterwards, restart the DC from scratch (``scripts/servers.sh stop samba; … start samba``) before
the Samba tests: every LDAP add on Samba costs O(objects in the partition) (the objectClass and
objectCategory index lists; tombstones stay in them), so with 100k loaded, or deleted, adds fall
from ~50/s to ~12/s and ``-m samba`` tests that create 1,600 objects hit their 120 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import result
from plugins.directory import Scope
from plugins.ldap import LdapDirectory, LdapSettings
from tests.servers.env import env_file, server_env

# Runs under the system python3 with Samba's bindings, against the DC's own sam.ldb (the DC keeps
# running: ldb's tdb locking serialises us with it). argv: smb.conf, sam.ldb, OU, mode (add|delete),
# objects per transaction; stdin: the contact numbers to add. batch_mode:1 (what provision and join
# use) drops ldb's per-operation sub-transaction, whose commit copies every index list the operation
# touched (objectClass top/person/... and objectCategory: one entry per object in the partition), so
# an add costs O(objects) without it: 22-50 adds/s at 10-17k objects, ~600/s with it.
_SAMDB_SCRIPT = r"""
import sys, time
import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

conf, url, ou, mode, chunk = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
lp = LoadParm()
lp.load(conf)
db = SamDB(url=url, session_info=system_session(), lp=lp, options=["batch_mode:1"])
started = time.time()
if mode == "delete":
    db.transaction_start()
    db.delete(ou, ["tree_delete:1"])
    db.transaction_commit()
    print(f"0 {time.time() - started:.1f}", flush=True)
    sys.exit(0)


def ensure(dn):
    try:
        db.search(dn, scope=ldb.SCOPE_BASE, attrs=["1.1"])
    except ldb.LdbError:
        db.add({"dn": dn, "objectClass": "organizationalUnit"})


numbers = [int(x) for x in sys.stdin.read().split()]
ensure(ou)
for first in range(0, len(numbers), chunk):
    db.transaction_start()
    try:
        group = None
        for i in numbers[first : first + chunk]:
            if group != f"OU=g{i // GROUP:03d},{ou}":
                group = f"OU=g{i // GROUP:03d},{ou}"
                ensure(group)
            db.add({"dn": f"CN=c{i:06d},{group}", "objectClass": "contact", "cn": f"c{i:06d}"})
    except BaseException:
        db.transaction_cancel()
        raise
    db.transaction_commit()
    print(f"{min(first + chunk, len(numbers))} {time.time() - started:.1f}", flush=True)
"""

GROUP = 1000  # contacts per sub-OU: OU=g<number // GROUP> under the benchmark's OU


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


def samba_dir() -> Path:
    return env_file().parent / "samba"


def contact_name(number: int) -> str:
    return f"c{number:06d}"


def contact_dn(number: int, ou: str) -> str:
    return f"CN={contact_name(number)},{group_dn(number, ou)}"


def group_dn(number: int, ou: str) -> str:
    return f"OU=g{number // GROUP:03d},{ou}"


# ---------------------------------------------------------------- measuring


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [root], [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


def samba_cpu_seconds(root: int | None) -> float:
    """User + system CPU of the DC's process tree (waited-for children included)."""
    if root is None:
        return float("nan")
    ticks = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux 4.0+)


def samba_pid() -> int | None:
    try:
        pid = int((samba_dir() / "samba.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


@dataclass
class Phase:
    """Wall time, CPU of this process and of Samba, and RSS of this process over one block."""

    samba: int | None
    wall: float = 0.0
    ours: float = 0.0
    theirs: float = 0.0
    rss_before: int = 0
    fields: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> Phase:
        reset_peak_rss()
        self.rss_before = _status_kib("VmRSS")
        self.theirs = samba_cpu_seconds(self.samba)
        self.ours = own_cpu_seconds()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.ours = own_cpu_seconds() - self.ours
        self.theirs = samba_cpu_seconds(self.samba) - self.theirs
        self.fields = {
            "s": round(self.wall, 3),
            "agent_cpu_s": round(self.ours, 2),
            "samba_cpu_s": round(self.theirs, 2),
            "rss_peak_growth_mb": round((_status_kib("VmHWM") - self.rss_before) / 1024, 1),
            "rss_kept_growth_mb": round((_status_kib("VmRSS") - self.rss_before) / 1024, 1),
        }

    def report(self, prefix: str, objects: int) -> dict[str, float]:
        out = {f"{prefix}_{k}": v for k, v in self.fields.items()}
        out[f"{prefix}_us_per_object"] = round(self.wall / objects * 1e6, 1)
        out[f"{prefix}_agent_cpu_us_per_object"] = round(self.ours / objects * 1e6, 1)
        out[f"{prefix}_samba_cpu_us_per_object"] = round(self.theirs / objects * 1e6, 1)
        return out


# ---------------------------------------------------------------- loading


async def run_samdb(python: str, ou: str, mode: str, numbers: Iterable[int] = ()) -> None:
    """The Samba-side script above, its progress relayed to stderr."""
    state = samba_dir()
    proc = await asyncio.create_subprocess_exec(
        python,
        "-c",
        _SAMDB_SCRIPT.replace("GROUP", str(GROUP)),
        str(state / "etc" / "smb.conf"),
        str(state / "private" / "sam.ldb"),
        ou,
        mode,
        "5000",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(" ".join(map(str, numbers)).encode())
    proc.stdin.close()
    async for line in proc.stdout:
        done, seconds = line.decode().split()
        print(f"  samdb {mode}: {done} in {seconds} s", file=sys.stderr, flush=True)
    if await proc.wait() != 0:
        raise RuntimeError(f"{python} (samdb {mode}) failed with exit code {proc.returncode}")


async def present(admin: LdapDirectory, ou: str) -> set[int] | None:
    """The contact numbers under the OU, or None when the OU does not exist."""
    if await admin.get(ou, ["objectClass"]) is None:
        return None
    numbers: set[int] = set()
    async for page in admin.search(ou, "(objectClass=contact)", attributes=["1.1"], page_size=1000):
        for entry in page:
            rdn = entry.dn.split(",", 1)[0]
            if rdn[:4].upper() == "CN=C" and rdn[4:].isdigit():
                numbers.add(int(rdn[4:]))
    return numbers


def contact(number: int) -> dict[str, list[str | bytes]]:
    return {"objectClass": ["contact"], "cn": [contact_name(number)]}


async def add_over_ldap(admin: LdapDirectory, ou: str, numbers: list[int], concurrency: int) -> None:
    for dn in [ou, *sorted({group_dn(n, ou) for n in numbers})]:
        if await admin.get(dn, ["objectClass"]) is None:
            await admin.add(dn, {"objectClass": ["organizationalUnit"]})
    slots = asyncio.Semaphore(concurrency)

    async def add(number: int) -> None:
        async with slots:
            await admin.add(contact_dn(number, ou), contact(number))

    await asyncio.gather(*(add(n) for n in numbers))


async def delete_over_ldap(admin: LdapDirectory, ou: str, concurrency: int) -> None:
    pages = admin.search(ou, "(objectClass=contact)", attributes=["1.1"], page_size=1000)
    dns = [e.dn async for page in pages for e in page]
    slots = asyncio.Semaphore(concurrency)

    async def remove(dn: str) -> None:
        async with slots:
            await admin.delete(dn)

    await asyncio.gather(*(remove(dn) for dn in dns))
    groups = [e.dn async for page in admin.search(ou, scope=Scope.ONELEVEL, attributes=["1.1"]) for e in page]
    await asyncio.gather(*(remove(dn) for dn in groups))
    await admin.delete(ou)


async def remove_ou(args: argparse.Namespace, admin: LdapDirectory, ou: str, *, local: bool) -> None:
    if local:
        await run_samdb(args.samba_python, ou, "delete")
    else:
        await delete_over_ldap(admin, ou, args.concurrency)


def disk_size(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob("ad-anchors-*"))


# ---------------------------------------------------------------- the benchmark


async def run(args: argparse.Namespace) -> None:
    objects: int = args.objects
    state = Path(tempfile.mkdtemp(prefix="cloudprov-adscan-"))
    dc = samba_pid()
    local = args.load == "local" or (args.load == "auto" and dc is not None and os.geteuid() == 0)
    async with LdapDirectory(settings(state)) as admin:
        ou = f"OU={args.ou or f'scan{objects}'},{admin.base_dn}"
        have = await present(admin, ou)
        if have is not None and not args.reuse:
            started = time.perf_counter()
            await remove_ou(args, admin, ou, local=local)
            print(f"deleted the existing {ou} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            have = None
        missing = [n for n in range(objects) if have is None or n not in have]
        how = "local-samdb" if local else f"ldap-x{args.concurrency}"
        load: dict[str, object] = {"load": how, "loaded": len(missing)}
        if missing or have is None:
            started = time.perf_counter()
            if local:
                await run_samdb(args.samba_python, ou, "add", missing)
            else:
                await add_over_ldap(admin, ou, missing, args.concurrency)
            seconds = time.perf_counter() - started
            load |= {"load_s": round(seconds, 1), "load_per_s": round(len(missing) / seconds) if missing else 0}
        in_ou = len(await present(admin, ou) or ())
        print(f"{ou}: {in_ou} objects ({len(missing)} loaded)", file=sys.stderr, flush=True)
        try:
            async with LdapDirectory(settings(state, base_dns=(ou,))) as scoped:
                with Phase(dc) as raw:
                    count = 0
                    async for page in scoped.search(ou, attributes=["objectGUID"], page_size=1000):
                        count += sum(1 for e in page if isinstance(e.first("objectGUID"), bytes))
                scanned = count  # the contacts, their sub-OUs and the OU itself
                with Phase(dc) as first:
                    mark = (await scoped.changes(None)).watermark
                await admin.delete(contact_dn(0, ou))
                with Phase(dc) as detect:
                    batch = await scoped.changes(mark)
                with Phase(dc) as idle:
                    quiet = await scoped.changes(batch.watermark)
            on_disk = await asyncio.to_thread(disk_size, state)
            result(
                f"ad_deletion_scan objects={objects}",
                **load,
                objects_in_scope=scanned,
                **raw.report("raw_search", scanned),
                **first.report("first_scan", scanned),
                **detect.report("poll_one_deletion", scanned),
                deletions_found=sum(1 for c in batch.changes if c.kind.name == "DELETE"),
                **idle.report("idle_poll", scanned),
                idle_changes=len(quiet.changes),
                anchor_store_disk_mb=round(on_disk / 2**20, 1),
                agent_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                loadavg_1m=round(os.getloadavg()[0], 2),
                cpus=os.cpu_count(),
            )
        finally:
            started = time.perf_counter()
            if args.keep:
                if await admin.get(contact_dn(0, ou), ["1.1"]) is None:
                    await admin.add(contact_dn(0, ou), contact(0))
                print(f"kept {ou} for --reuse", file=sys.stderr)
            else:
                await remove_ou(args, admin, ou, local=local)
                print(f"deleted {ou} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="LDAP connections for --load ldap and deletes")
    parser.add_argument("--load", choices=["auto", "local", "ldap"], default="auto")
    parser.add_argument("--samba-python", default="/usr/bin/python3", help="a python3 with Samba's bindings")
    parser.add_argument("--ou", help="the OU's name (default scan<objects>)")
    parser.add_argument("--reuse", action="store_true", help="keep an existing OU, add only what it misses")
    parser.add_argument("--keep", action="store_true", help="leave the OU in place afterwards")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
