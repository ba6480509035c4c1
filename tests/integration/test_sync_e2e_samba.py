"""End to end: Samba AD → agent (ad profile) over the Service Bus test peer → provisioning service → SCIM targets.

Two SCIM targets: our own ``http://`` transport in front of an in-process agent over a memory directory,
and ``scim2-server`` (a SCIM server we did not write) in a process of its own. The AD data is small: a
throwaway OU with 15 users and 2 groups, removed afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.directory import Modification, ModOp
from plugins.ldap import LdapDirectory
from protocol.signing import Signer
from service.provisioning.targets.registry import create_target
from tests.agent_support import running_agent
from tests.integration.ldap_support import delete_tree, make_ou, samba_settings
from tests.integration.sync_support import AgentRunner, agent_settings, source_view, sync_service, target_view
from tests.servicebus_peer import PeerProcess
from transports.http import HttpTransport
from transports.registry import create_transport

pytestmark = [pytest.mark.samba, pytest.mark.servicebus]

TOKEN = "e2e-target-token"
USERS = 15
#: The target agent (openldap profile over memory) keeps externalId and active somewhere it can store them.
ANCHOR_OVERRIDES = {
    "User": {"externalId": "employeeType", "active": {"ldap": "description", "kind": "boolean"}},
    "Group": {"externalId": "businessCategory"},
}


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProcess]:
    with PeerProcess(data_dir=tmp_path_factory.mktemp("sbpeer")) as running:
        yield running


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def scim2_server() -> Iterator[str]:
    """``scim2-server`` (PyPI) on loopback with a bearer token; its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "scim2_server.testserver.cli", "--port", str(port), "--bearer-token", TOKEN]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):  # ~20 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail("scim2-server exited at start")
                time.sleep(0.05)
        else:
            pytest.fail("scim2-server did not start listening")
        yield f"http://127.0.0.1:{port}/v2"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _user(name: str) -> dict[str, list[str | bytes]]:
    return {
        "objectClass": ["user"],
        "sAMAccountName": [name[:20]],
        "userPrincipalName": [f"{name}@example.test"],
        "givenName": ["Test"],
        "sn": [name],
        "displayName": [f"Test {name}"],
    }


@pytest.fixture
async def ad(tmp_path: Path) -> AsyncIterator[tuple[LdapDirectory, str]]:
    """A throwaway OU in Samba AD with OU=people (15 users) and OU=groups (2 groups)."""
    async with LdapDirectory(samba_settings(tmp_path / "admin")) as directory:
        ou = await make_ou(directory, directory.base_dn)
        try:
            for child in ("people", "groups"):
                await directory.add(f"OU={child},{ou}", {"objectClass": ["organizationalUnit"]})
            tag = uuid.uuid4().hex[:6]
            users = []
            for i in range(USERS):
                dn = f"CN=s{tag}{i:02},OU=people,{ou}"
                await directory.add(dn, _user(f"s{tag}{i:02}"))
                users.append(dn)
            for name, members in (("even", users[::2]), ("first", users[:5])):
                group = {"objectClass": ["group"], "sAMAccountName": [f"g{tag}{name}"], "member": members}
                await directory.add(f"CN=g{tag}{name},OU=groups,{ou}", group)
            yield directory, ou
        finally:
            await delete_tree(directory, ou)


@pytest.fixture
async def agent_target_url() -> AsyncIterator[str]:
    """Our agent over a memory directory, behind the http:// transport: a SCIM service to provision into."""

    def transport(_broker: str) -> HttpTransport:
        created = create_transport("http://127.0.0.1:0/scim/v2", domains=["example.com"], options={"token": TOKEN})
        assert isinstance(created, HttpTransport)
        return created

    async with running_agent(
        transport=transport, memory={"seed_users": 0, "seed_groups": 0}, scim={"profile_overrides": ANCHOR_OVERRIDES}
    ) as harness:
        directory = harness.agent.directory
        for name in ("people", "groups"):
            await directory.add(f"ou={name},{directory.base_dn}", {"objectClass": ["organizationalUnit"], "ou": [name]})
        http = harness.agent.transport
        assert isinstance(http, HttpTransport)
        yield f"{http.url}?token={TOKEN}"


async def _full_then_delta(tmp_path: Path, ad: tuple[LdapDirectory, str], peer: PeerProcess, target_url: str) -> None:
    directory, ou = ad
    signer = Signer.generate("e2e")
    options = {
        "request_queue": f"e2e{uuid.uuid4().hex[:8]}" + ".requests.{domain}",
        "reply_prefix": f"e2e{uuid.uuid4().hex[:8]}.replies.",
        "receive_wait": 1,
        "connect_timeout": 10,
    }
    settings = agent_settings(
        peer.url,
        signer,
        options=options,
        profile="ad",
        profile_overrides={"User": {"_container": "ou=people"}, "Group": {"_container": "ou=groups"}},
    )
    agent = await AgentRunner(settings, LdapDirectory(samba_settings(tmp_path / "agent", base_dns=(ou,)))).start()
    try:
        async with sync_service(
            f"sqlite:///{tmp_path}/state.db", [{"url": peer.url, "options": options}], signer, target_url, page_size=8
        ) as service:
            full = await service.cycle()
            assert (full.kind, full.outcome) == ("full", "ok"), full.error
            async with create_target(target_url) as target:
                have = await target_view(target)
                assert have == await source_view(await service.client())
            assert len(have["users"]) == USERS
            assert len(have["groups"]) == 2

            people = f"OU=people,{ou}"
            users = sorted(entry.dn for entry in await _children(directory, people))
            added = f"CN=added,{people}"
            await directory.add(added, _user(f"a{uuid.uuid4().hex[:8]}"))
            await directory.modify(users[1], [Modification(ModOp.REPLACE, "displayName", ("Changed Name",))])
            await directory.delete(users[-1])  # the last one: a member of "even"
            groups = await _children(directory, f"OU=groups,{ou}")
            even = next(g.dn for g in groups if g.dn.lower().startswith("cn=g") and "even," in g.dn.lower())
            await directory.modify(even, [Modification(ModOp.ADD, "member", (added,))])

            delta = await service.cycle()
            assert (delta.kind, delta.outcome) == ("delta", "ok"), delta.error
            assert delta.counts["delete"] == 1
            async with create_target(target_url) as target:
                have = await target_view(target)
                assert have == await source_view(await service.client())
            assert len(have["users"]) == USERS
            assert "Changed Name" in {v[1] for v in have["users"].values()}
    finally:
        await agent.stop()


async def _children(directory: LdapDirectory, base: str) -> list[Any]:
    from plugins.directory import Scope

    found = []
    async for page in directory.search(base, scope=Scope.ONELEVEL, attributes=["1.1"]):
        found.extend(page)
    return found


async def test_samba_over_service_bus_into_our_agent_behind_http(
    tmp_path: Path, ad: tuple[LdapDirectory, str], peer: PeerProcess, agent_target_url: str
) -> None:
    """Samba AD reaches a SCIM target (our agent over http://) equal after a full and a delta cycle."""
    await _full_then_delta(tmp_path, ad, peer, agent_target_url)


async def test_samba_over_service_bus_into_scim2_server(
    tmp_path: Path, ad: tuple[LdapDirectory, str], peer: PeerProcess, scim2_server: str
) -> None:
    """Samba AD reaches scim2-server (a SCIM service we did not write) equal after a full and a delta cycle."""
    await _full_then_delta(tmp_path, ad, peer, f"{scim2_server}?token={TOKEN}")
