"""Helpers for the real-server LDAP tests: settings from ``scripts/servers.sh``, throwaway OUs, slapd control,
and a slapd of a test's own (``OwnSlapd``) for tests that pause it or load it heavily."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.sync_setup import free_port_pair
from plugins import dn as dnlib
from plugins.directory import Entry, NoSuchObjectError, Scope
from plugins.ldap import LdapDirectory, LdapSettings
from plugins.ldap.pool import ConnectionPool
from tests.conftest import server_missing
from tests.servers.env import server_env, servers_script


def slapd_settings(tmp_path: Path, **overrides: Any) -> LdapSettings:
    env = server_env()
    if "CLOUDPROV_SLAPD_URL" not in env:
        server_missing("slapd (CLOUDPROV_SLAPD_URL)")
    values: dict[str, Any] = {
        "urls": (env["CLOUDPROV_SLAPD_URL"],),
        "bind_dn": env["CLOUDPROV_SLAPD_BIND_DN"],
        "password": env["CLOUDPROV_SLAPD_PASSWORD"],
        "base_dns": (env["CLOUDPROV_SLAPD_BASE"],),
        "ca_file": env.get("CLOUDPROV_SLAPD_CA_FILE"),
        "state_dir": tmp_path,
        "retry": {"attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.5, "jitter": 0.05},
    }
    values.update(overrides)
    return LdapSettings.model_validate(values)


def samba_settings(tmp_path: Path, **overrides: Any) -> LdapSettings:
    env = server_env()
    if "CLOUDPROV_SAMBA_URL" not in env:
        server_missing("Samba AD DC (CLOUDPROV_SAMBA_URL)")
    values: dict[str, Any] = {
        "urls": (env["CLOUDPROV_SAMBA_URL"],),
        "bind_dn": env["CLOUDPROV_SAMBA_BIND_DN"],
        "password": env["CLOUDPROV_SAMBA_PASSWORD"],
        "ca_file": env["CLOUDPROV_SAMBA_CA_FILE"],
        "state_dir": tmp_path,
        "retry": {"attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.5, "jitter": 0.05},
    }
    values.update(overrides)
    return LdapSettings.model_validate(values)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_ou(directory: LdapDirectory, parent: str) -> str:
    dn = f"ou={unique('test')},{parent}"
    await directory.add(dn, {"objectClass": ["organizationalUnit"]})
    return dn


async def delete_tree(directory: LdapDirectory, dn: str) -> None:
    """Remove ``dn`` and everything below it, deepest level first, a level's entries concurrently."""
    entries: list[Entry] = []
    try:
        async for page in directory.search(dn, scope=Scope.SUBTREE, attributes=["1.1"]):
            entries.extend(page)
    except NoSuchObjectError:
        return
    levels: dict[int, list[str]] = {}
    for entry in entries:
        levels.setdefault(len(dnlib.parse(entry.dn)), []).append(entry.dn)
    slots = asyncio.Semaphore(8)

    async def remove(target: str) -> None:
        async with slots:
            with contextlib.suppress(NoSuchObjectError):
                await directory.delete(target)

    for depth in sorted(levels, reverse=True):
        await asyncio.gather(*(remove(target) for target in levels[depth]))


async def collect(pages: AsyncIterator[list[Entry]]) -> list[Entry]:
    found: list[Entry] = []
    async for page in pages:
        found.extend(page)
    return found


def slapd_pid() -> int:
    return int(Path(server_env()["CLOUDPROV_SLAPD_PID_FILE"]).read_text().strip())


def restart_slapd(*, hard: bool = False) -> None:
    """Stop slapd (``hard``: SIGKILL, a crash) and start it again on the same data."""
    if hard:
        pid = slapd_pid()
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        subprocess.run([str(servers_script()), "start", "slapd"], check=True, capture_output=True, timeout=30)
        return
    subprocess.run([str(servers_script()), "restart", "slapd"], check=True, capture_output=True, timeout=30)


class Paused:
    """``with Paused(pid):`` — the process is stopped (SIGSTOP) inside the block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{self.pid}/stat")
        for _ in range(100):  # the signal is delivered asynchronously: wait until the process is stopped
            if stat.read_text().rsplit(")", 1)[1].split()[0] in {"T", "t"}:
                return
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


class OwnSlapd:
    """``with OwnSlapd(folder) as slapd:`` — a slapd of the test's own, configured as the shared one
    (``scripts/servers.sh`` with its own state folder and free ports), for a test that pauses it or
    loads it heavily; stopped and removed on exit. ``slapd.settings(tmp_path)``, ``slapd.pid``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port_pair()
        self.env: dict[str, str] = {}

    def _servers(self, *args: str) -> None:
        env = {
            **os.environ,
            "CLOUDPROV_SERVERS_DIR": str(self.folder),
            "CLOUDPROV_SLAPD_PORT": str(self.port),
            "CLOUDPROV_SLAPD_TLS_PORT": str(self.port + 1),
        }
        subprocess.run([str(servers_script()), *args], env=env, check=True, capture_output=True, timeout=60)

    def __enter__(self) -> OwnSlapd:
        self._servers("start", "slapd")
        for line in (self.folder / "env").read_text().splitlines():
            name, _, value = line.partition("=")
            self.env[name] = value
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._servers("stop", "slapd")

    @property
    def pid(self) -> int:
        return int(Path(self.env["CLOUDPROV_SLAPD_PID_FILE"]).read_text().strip())

    def settings(self, tmp_path: Path, **overrides: Any) -> LdapSettings:
        values: dict[str, Any] = {
            "urls": (self.env["CLOUDPROV_SLAPD_URL"],),
            "bind_dn": self.env["CLOUDPROV_SLAPD_BIND_DN"],
            "password": self.env["CLOUDPROV_SLAPD_PASSWORD"],
            "base_dns": (self.env["CLOUDPROV_SLAPD_BASE"],),
            "state_dir": tmp_path,
            "retry": {"attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.5, "jitter": 0.05},
        }
        values.update(overrides)
        return LdapSettings.model_validate(values)


class OneConnectionPool(ConnectionPool):
    """A pool that always lends the same fake connection."""

    def __init__(self, conn: Any) -> None:
        super().__init__([], size=1, connect_timeout=1, max_idle=1, failover_hold=0, wait_timeout=1)
        self.conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        yield self.conn
