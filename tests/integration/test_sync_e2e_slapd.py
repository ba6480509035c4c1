"""End to end: slapd → agents (openldap profile) over RabbitMQ → provisioning service → embedded store.

Each test gets a throwaway OU in slapd (people and groups below it, the agents' base DN) and queues
of its own on the test vhost. Faults are real: an agent cancelled mid-cycle, RabbitMQ stopped and
started, slapd restarted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.exceptions
import pytest

from plugins.directory import Modification, ModOp
from plugins.ldap import LdapDirectory
from protocol.signing import Signer
from service.provisioning.state import Job
from service.provisioning.targets.base import Target
from service.provisioning.targets.registry import create_target
from tests.conftest import server_missing
from tests.integration.ldap_support import delete_tree, make_ou, restart_slapd, slapd_settings
from tests.integration.sync_support import (
    AgentRunner,
    FaultyTarget,
    SyncService,
    agent_settings,
    source_view,
    sync_service,
    target_view,
)
from transports.amqp import AmqpSettings

pytestmark = [pytest.mark.slapd, pytest.mark.rabbitmq]

VHOST = os.environ.get("CLOUDPROV_RABBITMQ_VHOST", "cloudprov-test")
URL = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
PERSON = ["top", "person", "organizationalPerson", "inetOrgPerson"]
USERS = 40


def _rabbit_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


def _rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", command], check=True, timeout=120, capture_output=True)
    if command == "start_app":
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120, capture_output=True)


@pytest.fixture
async def options() -> AsyncIterator[dict[str, Any]]:
    """Queue names of this test's own on the test vhost; deleted afterwards."""
    if not _rabbit_up():
        server_missing("RabbitMQ on 127.0.0.1:5672")
    prefix = f"e2e{uuid.uuid4().hex[:10]}"
    opts: dict[str, Any] = {
        "request_queue": prefix + ".requests.{domain}",
        "reply_prefix": prefix + ".replies.",
        "reply_queue_expires": 120,
        "backoff_initial": 0.2,
        "backoff_max": 2,
    }
    yield opts
    if shutil.which("rabbitmqctl") and not _rabbit_up():
        await asyncio.to_thread(_rabbitmqctl, "start_app")
    settings = AmqpSettings(**{k: v for k, v in opts.items() if k in AmqpSettings.__dataclass_fields__})
    try:
        connection = await aio_pika.connect(URL, timeout=5)
    except (aiormq.exceptions.AMQPConnectionError, OSError):
        return
    async with connection:
        channel = await connection.channel()
        for name in (settings.queue_name("example.com"), settings.dead_letter_queue("example.com")):
            try:
                await channel.queue_delete(name)
            except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
                break


class Source:
    """The test's OU in slapd and a directory handle to change it behind the agents' backs."""

    def __init__(self, directory: LdapDirectory, ou: str) -> None:
        self.directory = directory
        self.ou = ou

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.ou}"

    async def add_user(self, uid: str, title: str = "Engineer") -> str:
        dn = self.user_dn(uid)
        await self.directory.add(
            dn,
            {
                "objectClass": PERSON,
                "uid": [uid],
                "cn": [uid],
                "sn": ["Tester"],
                "displayName": [uid.title()],
                "title": [title],
            },
        )
        return dn

    async def add_group(self, name: str, members: list[str]) -> str:
        dn = f"cn={name},ou=groups,{self.ou}"
        await self.directory.add(dn, {"objectClass": ["top", "groupOfNames"], "cn": [name], "member": members})
        return dn


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Source]:
    async with LdapDirectory(slapd_settings(tmp_path / "admin")) as directory:
        ou = await make_ou(directory, directory.base_dn)
        try:
            for child in ("people", "groups"):
                await directory.add(f"ou={child},{ou}", {"objectClass": ["organizationalUnit"]})
            src = Source(directory, ou)
            users = [await src.add_user(f"u{i:03}", "Manager" if i % 5 == 0 else "Engineer") for i in range(USERS)]
            await src.add_group("staff", users[: USERS // 2])
            await src.add_group("managers", users[::5])
            await src.add_group("all", [f"cn=staff,ou=groups,{ou}", f"cn=managers,ou=groups,{ou}"])
            yield src
        finally:
            await delete_tree(directory, ou)


def _agent(tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer, name: str) -> AgentRunner:
    settings = agent_settings(URL, signer, options=options, profile="openldap", agent_id=name)
    directory = LdapDirectory(slapd_settings(tmp_path / name, base_dns=(source.ou,)))
    return AgentRunner(settings, directory)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("e2e")


async def _service(tmp_path: Path, options: dict[str, Any], signer: Signer, **settings: Any) -> Any:
    return sync_service(
        f"sqlite:///{tmp_path}/state.db",
        [{"url": URL, "options": options}],
        signer,
        f"sqlite:///{tmp_path}/target.db",
        **{"page_size": 10, **settings},
    )


async def _equal(service: SyncService, target_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async with create_target(target_url) as target:
        return await source_view(await service.client()), await target_view(target)


async def test_full_then_delta_with_add_modify_rename_delete_and_membership(
    tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer
) -> None:
    """A full cycle and a delta cycle (add, modify, rename, delete, membership change) leave the target equal."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    agent = await _agent(tmp_path, source, options, signer, "agent-a").start()
    try:
        async with await _service(tmp_path, options, signer) as service:
            full = await service.cycle()
            assert (full.kind, full.outcome) == ("full", "ok")
            want, have = await _equal(service, target_url)
            assert have == want
            assert len(have["users"]) == USERS
            assert len(have["groups"]) == 3

            d = source.directory
            new = await source.add_user("newbie")
            await d.modify(source.user_dn("u001"), [Modification(ModOp.REPLACE, "displayName", ("Renamed Display",))])
            await d.rename(source.user_dn("u002"), "uid=u002-moved")
            await d.delete(source.user_dn("u003"))
            staff = f"cn=staff,ou=groups,{source.ou}"
            await d.modify(staff, [Modification(ModOp.ADD, "member", (new,))])
            await d.modify(staff, [Modification(ModOp.DELETE, "member", (source.user_dn("u004"),))])

            delta = await service.cycle()
            assert (delta.kind, delta.outcome) == ("delta", "ok"), delta.error
            want, have = await _equal(service, target_url)
            assert have == want
            assert len(have["users"]) == USERS  # one added, one deleted
            names = {v[0] for v in have["users"].values()}
            assert {"newbie", "u002-moved"} <= names
            assert not {"u002", "u003"} & names
            assert delta.counts["delete"] == 1
    finally:
        await agent.stop()


async def test_an_agent_killed_mid_full_sync_leaves_the_cycle_to_the_other_agent(
    tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer
) -> None:
    """HA: two agents serve the domain; one is killed in the middle of a full sync; the cycle still completes."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    first = await _agent(tmp_path, source, options, signer, "agent-a").start()
    second = await _agent(tmp_path, source, options, signer, "agent-b").start()
    killed = asyncio.Event()
    try:
        async with await _service(tmp_path, options, signer, page_size=5, timeout=5) as service:

            def on_progress(job_id: str, event: Any) -> None:
                if event.get("objects", 0) >= 10 and not killed.is_set():
                    killed.set()
                    asyncio.get_running_loop().create_task(first.kill())

            service.scheduler.on_progress = on_progress
            report = await service.cycle()
            assert killed.is_set(), "the agent was killed during the cycle"
            assert first.task is not None
            assert first.task.done()
            failed = await service.state.log("job", failed=True)
            assert (report.kind, report.outcome) == ("full", "ok"), [(e.dn, e.error) for e in failed][:3]
            want, have = await _equal(service, target_url)
            assert have == want
            assert len(have["users"]) == USERS
    finally:
        await first.kill()
        await second.stop()


async def _fault_mid_cycle(
    tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer, fault: Callable[[], Awaitable[None]]
) -> None:
    """A full sync with ``fault`` awaited before its 15th target write, a source change, then cycles until ok."""
    target_url = f"sqlite:///{tmp_path}/target.db"
    agent = await _agent(tmp_path, source, options, signer, "agent-a").start()
    fired: list[int] = []

    async def before_write(n: int) -> None:
        if n == 15 and not fired:
            fired.append(n)
            await fault()

    try:
        async with await _service(tmp_path, options, signer, page_size=5, timeout=8) as service:
            wiring = service.wiring

            async def target_for(job: Job) -> Target:
                return FaultyTarget(await wiring.target_for(job), before_write)

            service.scheduler.target_for = target_for
            first = await service.cycle()
            assert fired, "the fault happened during the cycle"
            assert first.outcome in {"ok", "failed"}
            await source.add_user("after-fault")
            report = await service.converge()
            assert report.outcome == "ok", report.error
            want, have = await _equal(service, target_url)
            assert have == want
            assert len(have["users"]) == USERS + 1
    finally:
        await agent.stop()


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to restart the broker")
async def test_rabbitmq_restarted_mid_cycle_the_next_cycle_converges(
    tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer
) -> None:
    """RabbitMQ stopped and started during a full sync: the next cycles converge, nothing lost or duplicated."""

    async def restart() -> None:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        await asyncio.sleep(0.5)  # the cycle's next requests find the broker gone
        await asyncio.to_thread(_rabbitmqctl, "start_app")

    await _fault_mid_cycle(tmp_path, source, options, signer, restart)


async def test_slapd_restarted_mid_cycle_the_next_cycle_converges(
    tmp_path: Path, source: Source, options: dict[str, Any], signer: Signer
) -> None:
    """slapd restarted during a full sync: the next cycles converge, nothing lost or duplicated."""

    async def restart() -> None:
        await asyncio.to_thread(restart_slapd)

    await _fault_mid_cycle(tmp_path, source, options, signer, restart)
