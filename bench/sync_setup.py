"""Shared parts of the sync benchmarks: a throwaway slapd loaded with users and groups, the agent in a
subprocess over RabbitMQ, and the provisioning service (engine + embedded store) in this process.

The slapd is started by ``scripts/servers.sh`` with its **own** state dir and port (as
``bench/ldap_raw_vs_agent.py`` does), so the test slapd on 3389 and its data are never touched; it
is stopped and removed at the end. The agent runs in a child process (``python -m
bench.sync_setup agent CONFIG.json``) and writes its peak RSS to a file when it stops, so the
service's and the agent's peak RSS are measured separately (``ru_maxrss`` of each process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SUFFIX = "dc=example,dc=com"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "secret"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/cloudprov-test"
DOMAIN = "example.com"
MAX_USERS = 1_000_000


def write_ldif(path: Path, users: int, groups: int, big_group: int) -> None:
    """``users`` inetOrgPersons; ``groups`` groupOfNames: group0000 holds ``big_group`` members,
    the others 10 members each (spread over the users)."""
    with path.open("w") as out:
        for i in range(users):
            uid = f"user{i:06d}"
            out.write(
                f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Test User {i}\n"
                f"sn: User{i}\ngivenName: Test\nmail: {uid}@example.com\nemployeeNumber: {i}\n"
                f"title: Engineer {i % 50}\ndisplayName: Test User {i}\n\n"
            )
        for g in range(groups):
            out.write(f"dn: cn=group{g:04d},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: group{g:04d}\n")
            members = range(min(big_group, users)) if g == 0 else ((g * 97 + k * 7919) % users for k in range(10))
            for m in members:
                out.write(f"member: uid=user{m:06d},ou=people,{SUFFIX}\n")
            out.write("\n")


def free_port_pair() -> int:
    """A port whose successor is free too (slapd listens on PORT and its TLS port PORT+1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def servers(state: Path, port: int, *args: str) -> None:
    env = {
        **os.environ,
        "CLOUDPROV_SERVERS_DIR": str(state),
        "CLOUDPROV_SLAPD_PORT": str(port),
        "CLOUDPROV_SLAPD_TLS_PORT": str(port + 1),
    }
    subprocess.run([str(REPO / "scripts" / "servers.sh"), *args], check=True, env=env, capture_output=True)


@contextlib.contextmanager
def loaded_slapd(users: int, groups: int, big_group: int, port: int, keep: bool = False) -> Any:
    """A throwaway slapd on ``port`` (0: a free one) holding the generated entries; yields (url, state dir)."""
    port = port or free_port_pair()
    state = Path(tempfile.mkdtemp(prefix="cloudprov-bench-sync-"))
    ldif = state / "entries.ldif"
    started = time.perf_counter()
    try:
        write_ldif(ldif, users, groups, big_group)
        servers(state, port, "load-slapd", str(ldif))
        ldif.unlink()
        print(f"slapd on {port}: {users} users, {groups} groups loaded in {time.perf_counter() - started:.1f} s")
        yield f"ldap://127.0.0.1:{port}", state
    finally:
        if not keep:
            servers(state, port, "stop", "slapd")
            with contextlib.suppress(OSError):
                state.rmdir()


def ldap_client(url: str) -> Any:
    import bonsai

    from plugins.ldap.connection import ReadableOnlyConnection

    client = bonsai.LDAPClient(url)
    client.set_credentials("SIMPLE", user=ROOT_DN, password=ROOT_PW)
    client.set_async_connection_class(ReadableOnlyConnection)
    client.set_auto_page_acquire(False)
    return client


async def raw_dump(url: str, base: str, ldap_filter: str, attributes: list[str], page_size: int = 1000) -> int:
    """The raw limit: one bonsai paged search of the same entries (readable-only connection)."""
    import bonsai

    conn = await ldap_client(url).connect(is_async=True)
    count = 0
    try:
        pages = await conn.paged_search(
            base, bonsai.LDAPSearchScope.SUBTREE, ldap_filter, attrlist=attributes, page_size=page_size
        )
        while True:
            count += len(pages)
            msg_id = pages.acquire_next_page()
            if msg_id is None:
                break
            pages = await conn.get_result(msg_id)
    finally:
        conn.close()
    return count


# ---------------------------------------------------------------- the agent, in a child process
def agent_config(url: str, state: Path, queue_prefix: str, public_key: str) -> dict[str, Any]:
    return {
        "agent": {"id": "bench-agent", "domains": [DOMAIN], "state_dir": str(state / "agent")},
        "transport": {
            "url": AMQP_URL,
            "options": {"request_queue": f"{queue_prefix}.{{domain}}", "reply_prefix": f"{queue_prefix}.replies."},
        },
        "directory": {
            "plugin": "ldap",
            "urls": [url],
            "bind_dn": ROOT_DN,
            "password": ROOT_PW,
            "base_dns": [SUFFIX],
            "state_dir": str(state / "agent"),
        },
        "scim": {"profile": "openldap"},
        "signing": {"public_keys": {"bench": public_key}},
        "logging": {"level": "error"},
        "health": {"enabled": False},
    }


async def _agent_main(config: dict[str, Any]) -> None:
    from agent.config import AgentSettings
    from agent.runtime import Agent
    from bench.common import peak_rss_mb

    settings = AgentSettings.model_validate(config["settings"])
    agent = Agent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(agent.run(stop))
    await agent.started.wait()
    await asyncio.to_thread(Path(config["ready_file"]).write_text, "ready")
    await runner
    await asyncio.to_thread(Path(config["rss_file"]).write_text, str(peak_rss_mb()))


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    rss_file: Path

    def stop(self) -> float | None:
        """Stop the agent; its peak RSS in MB."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            return float(self.rss_file.read_text())
        except (OSError, ValueError):
            return None


def spawn_agent(url: str, state: Path, queue_prefix: str, public_key: str) -> tuple[AgentProcess, Path]:
    """Start the agent's process; the agent and the file it writes once it serves."""
    (state / "agent").mkdir(exist_ok=True)
    config_file = state / "agent.json"
    ready, rss = state / "agent.ready", state / "agent.rss"
    config = {
        "settings": agent_config(url, state, queue_prefix, public_key),
        "ready_file": str(ready),
        "rss_file": str(rss),
    }
    config_file.write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sync_setup", "agent", str(config_file)], cwd=str(REPO), env=os.environ.copy()
    )
    return AgentProcess(process, rss), ready


async def start_agent(url: str, state: Path, queue_prefix: str, public_key: str) -> AgentProcess:
    agent, ready = spawn_agent(url, state, queue_prefix, public_key)
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(ready.exists):
        if agent.process.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"the agent did not start (exit {agent.process.poll()})")
        await asyncio.sleep(0.05)
    return agent


async def delete_queues(queue_prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    async with connection:
        channel = await connection.channel()
        for name in (f"{queue_prefix}.{DOMAIN}", f"{queue_prefix}.{DOMAIN}.dlq"):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)


# ---------------------------------------------------------------- the service, in this process
@dataclass
class Service:
    client: Any
    state: Any
    target: Any
    engine: Any
    folder: Path


@contextlib.asynccontextmanager
async def system(
    url: str,
    state_dir: Path,
    *,
    page_size: int = 1000,
    job_settings: dict[str, Any] | None = None,
    target_cache_mb: int | None = None,
) -> AsyncIterator[tuple[Service, AgentProcess]]:
    """The agent (child process) and the service (this process) over RabbitMQ, unique queue names."""
    from protocol.signing import Signer, public_key_text
    from service.client import ScimClient
    from service.provisioning.engine import SyncEngine
    from service.provisioning.rules import rules_from_settings
    from service.provisioning.settings import JobSettings
    from service.provisioning.state import StateStore
    from service.provisioning.targets.registry import create_target
    from transports.amqp import AmqpRequester

    signer = Signer.generate("bench")
    prefix = f"cloudprov.bench.{uuid.uuid4().hex[:10]}"
    agent = await start_agent(url, state_dir, prefix, public_key_text(signer.public_key))
    folder = Path(tempfile.mkdtemp(prefix="cloudprov-bench-service-"))
    options = {"reply_prefix": f"{prefix}.replies.", "request_queue": f"{prefix}.{{domain}}"}
    settings = JobSettings.model_validate({"page_size": page_size, "deletion_threshold": 0, **(job_settings or {})})
    target_url = f"embedded:///{folder}/target.db" + (f"?cache_mb={target_cache_mb}" if target_cache_mb else "")
    try:
        async with (
            AmqpRequester.from_url(AMQP_URL, options=options) as requester,
            StateStore(f"sqlite:///{folder}/provisioning.db") as state,
            create_target(target_url) as target,
        ):
            from service.provisioning.reader import SourceReader

            client = ScimClient(requester, signer, DOMAIN, timeout=600)
            await state.put_job("bench", DOMAIN, target_url, schedule=1, settings=settings.model_dump(mode="json"))
            engine = SyncEngine(
                "bench",
                state,
                SourceReader(client, timeout=settings.timeout, attempts=settings.attempts),
                target,
                settings=settings,
                rules=rules_from_settings(settings),
            )
            yield Service(client, state, target, engine, folder), agent
    finally:
        agent.stop()
        await delete_queues(prefix)
        await asyncio.to_thread(shutil.rmtree, folder, True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "agent":
        asyncio.run(_agent_main(json.loads(Path(sys.argv[2]).read_text())))
    else:
        sys.exit("usage: python -m bench.sync_setup agent CONFIG.json")
