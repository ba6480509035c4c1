"""Benchmark fixtures: a throwaway slapd loaded with N users, and an agent over it on the local transport.

``ThrowawaySlapd(users, port)`` runs ``scripts/servers.sh`` with its own state folder and port (the
shared test slapd on 3389 is never touched), loads ``users`` inetOrgPerson entries offline with
slapadd (``uid=userNNNNNN,ou=people``), and stops and removes everything on exit (``keep=True`` leaves
it running). ``local_agent(settings)`` runs a real ``Agent`` (signature checks, dispatcher, SCIM
handler, the LDAP plugin) on a ``local://`` broker and yields a signed ``ScimClient`` to it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.config import AgentSettings
from agent.runtime import Agent, settle_heap
from bench.common import agent_state
from plugins.ldap import LdapDirectory, LdapSettings
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from transports.local import LocalRequester

REPO = Path(__file__).resolve().parents[1]
SUFFIX = "dc=example,dc=com"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "secret"


def uid(index: int) -> str:
    return f"user{index:06d}"


def write_ldif(path: Path, users: int) -> None:
    with path.open("w") as out:
        for i in range(users):
            name = uid(i)
            out.write(
                f"dn: uid={name},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: Test User {i}\n"
                f"sn: User{i}\ngivenName: Test\nmail: {name}@example.com\nemployeeNumber: {i}\n"
                f"title: Engineer\nentryUUID: {uuid.UUID(int=i + 1)}\n\n"
            )


class ThrowawaySlapd:
    """``with ThrowawaySlapd(users=10_000, port=3390) as slapd:`` — ``slapd.url``, ``slapd.pid``."""

    def __init__(self, users: int, port: int, *, keep: bool = False) -> None:
        self.users, self.port, self.keep = users, port, keep
        self.state = Path(tempfile.mkdtemp(prefix="cloudprov-bench-"))
        self.url = f"ldap://127.0.0.1:{port}"
        self.load_seconds = 0.0

    def servers(self, *args: str) -> None:
        env = {
            **os.environ,
            "CLOUDPROV_SERVERS_DIR": str(self.state),
            "CLOUDPROV_SLAPD_PORT": str(self.port),
            "CLOUDPROV_SLAPD_TLS_PORT": str(self.port + 1),
        }
        subprocess.run([str(REPO / "scripts" / "servers.sh"), *args], check=True, env=env, capture_output=True)

    @property
    def pid(self) -> int:
        return int((self.state / "slapd" / "slapd.pid").read_text())

    def __enter__(self) -> ThrowawaySlapd:
        ldif = self.state / "users.ldif"
        write_ldif(ldif, self.users)
        started = time.perf_counter()
        self.servers("load-slapd", str(ldif))
        self.load_seconds = time.perf_counter() - started
        ldif.unlink()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if not self.keep:
            self.servers("stop", "slapd")

    def settings(self, **overrides: Any) -> LdapSettings:
        values: dict[str, Any] = {
            "urls": (self.url,),
            "bind_dn": ROOT_DN,
            "password": ROOT_PW,
            "base_dns": (SUFFIX,),
            "state_dir": self.state,
        }
        values.update(overrides)
        return LdapSettings.model_validate(values)


@asynccontextmanager
async def local_agent(
    directory: LdapSettings,
    *,
    max_in_flight: int = 64,
    profile: str = "openldap",
    directory_class: type[LdapDirectory] = LdapDirectory,
) -> AsyncIterator[ScimClient]:
    """A running agent over ``directory`` on a fresh local broker, and a signed client to it."""
    signer = Signer.generate("bench")
    broker = f"bench-{uuid.uuid4().hex[:8]}"
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "bench", "domains": ["example.com"], "state_dir": agent_state()},
            "transport": {"url": f"local://{broker}"},
            "signing": {"public_keys": {"bench": public_key_text(signer.public_key)}},
            "dispatcher": {"max_in_flight": max_in_flight},
            "scim": {"profile": profile},
            "logging": {"level": "error"},
        }
    )
    agent = Agent(settings, directory=directory_class(directory), services=[settle_heap])  # as `agent run` does
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    started = asyncio.create_task(agent.started.wait())
    await asyncio.wait([runner, started], return_when=asyncio.FIRST_COMPLETED)
    if runner.done():  # it failed to start (e.g. the bind was refused): say why
        started.cancel()
        await runner
        raise RuntimeError("the agent stopped before it started")
    try:
        async with LocalRequester.from_url(f"local://{broker}") as requester:
            yield ScimClient(requester, signer, "example.com", timeout=600)
    finally:
        stop.set()
        await runner
