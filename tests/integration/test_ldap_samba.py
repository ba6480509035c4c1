"""The LDAP plugin against a real Active Directory: a Samba AD DC (scripts/servers.sh start samba)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from plugins import dn as dnlib
from plugins.directory import (
    AlreadyExistsError,
    ChangeKind,
    ChangeSet,
    ConstraintError,
    Directory,
    Modification,
    ModOp,
    NotAllowedError,
)
from plugins.ldap import LdapDirectory
from plugins.ldap.delta_usn import UsnMark
from plugins.ldapfilter import escape_value
from tests.contract.directory_suite import ActiveDirectoryShapes, DirectoryBehaviour, Shapes
from tests.integration.ldap_support import collect, delete_tree, make_ou, samba_settings, unique
from tests.servers.env import server_env

pytestmark = pytest.mark.samba


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[LdapDirectory]:
    async with LdapDirectory(samba_settings(tmp_path)) as opened:
        yield opened


@pytest.fixture
async def ou(directory: LdapDirectory) -> AsyncIterator[str]:
    dn = await make_ou(directory, directory.base_dn)
    yield dn
    await delete_tree(directory, dn)


def contact(name: str) -> dict[str, list[str | bytes]]:
    return {"objectClass": ["contact"], "cn": [name]}


def user(name: str, password: str | None = None) -> dict[str, list[str | bytes]]:
    attributes: dict[str, list[str | bytes]] = {
        "objectClass": ["user"],
        "sAMAccountName": [name[:20]],
        "userPrincipalName": [f"{name}@example.test"],
        "givenName": ["Test"],
        "sn": [name],
    }
    if password is not None:
        attributes["unicodePwd"] = [password]
        attributes["userAccountControl"] = ["512"]
    return attributes


async def test_detects_active_directory(directory: LdapDirectory) -> None:
    """The rootDSE's AD capability selects the ad flavor; the base is the default naming context."""
    assert directory.flavor == "ad"
    assert dnlib.normalize(directory.base_dn) == dnlib.normalize(server_env()["CLOUDPROV_SAMBA_BASE"])


async def test_user_with_password_over_ldaps_and_binary_anchors(directory: LdapDirectory, ou: str) -> None:
    """An enabled user with unicodePwd is created over ldaps; objectGUID/objectSid come back as bytes and
    an escaped objectGUID filter finds exactly that user."""
    name = unique("u")
    dn = f"CN={name},{ou}"
    await directory.add(dn, user(name, password="Passw0rd!Us3r-x"))
    entry = await directory.get(dn)
    assert entry is not None
    guid, sid = entry.first("objectGUID"), entry.first("objectSid")
    assert isinstance(guid, bytes)
    assert len(guid) == 16
    assert isinstance(sid, bytes)
    assert sid[0] == 1
    assert entry.text("userAccountControl") == "512"
    assert str(uuid.UUID(bytes_le=guid)).count("-") == 4
    found = await collect(directory.search(directory.base_dn, f"(objectGUID={escape_value(guid)})"))
    assert [dnlib.normalize(e.dn) for e in found] == [dnlib.normalize(dn)]
    await directory.modify(dn, [Modification(ModOp.REPLACE, "unicodePwd", ("N3w-Passw0rd!x",))])


async def test_password_refused_over_plain_ldap(tmp_path: Path, directory: LdapDirectory, ou: str) -> None:
    """unicodePwd over plain ldap:// is refused before anything is sent; nothing is created."""
    plain = samba_settings(tmp_path, urls=(server_env()["CLOUDPROV_SAMBA_LDAP_URL"],))
    name = unique("u")
    async with LdapDirectory(plain) as unencrypted:
        with pytest.raises(NotAllowedError, match="encrypted"):
            await unencrypted.add(f"CN={name},{ou}", user(name, password="Passw0rd!Us3r-x"))
        await unencrypted.add(f"CN={name},{ou}", user(name))  # without a password plain LDAP is fine
    assert await directory.get(f"CN={name},{ou}") is not None


async def test_paging_when_the_last_page_is_exactly_full(directory: LdapDirectory, ou: str) -> None:
    """20 entries with page size 10 come back as [10, 10] (bonsai's automatic paging breaks here)."""
    await asyncio.gather(*(directory.add(f"CN=c{i:02d},{ou}", contact(f"c{i:02d}")) for i in range(20)))
    sizes = [len(p) async for p in directory.search(ou, "(objectClass=contact)", page_size=10)]
    assert sizes == [10, 10]


# 1,600 entries made and deleted one by one: 19 s on an idle test machine, past the default 120 s limit
# when the machine is busy with other work
@pytest.mark.timeout(400)
async def test_group_bigger_than_max_val_range_reads_completely(directory: LdapDirectory, ou: str) -> None:
    """A group of 1,600 members (AD's MaxValRange is 1,500) reads completely, also when the server hands
    out ranges (member;range=0-99 …), and member changes are value adds/deletes."""
    sem = asyncio.Semaphore(8)

    async def make(i: int) -> None:
        async with sem:
            await directory.add(f"CN=m{i:05d},{ou}", contact(f"m{i:05d}"))

    await asyncio.gather(*(make(i) for i in range(1600)))
    members = [f"CN=m{i:05d},{ou}" for i in range(1600)]
    group = f"CN=big,{ou}"
    await directory.add(group, {"objectClass": ["group"], "sAMAccountName": [unique("g")], "member": members})
    whole = await directory.get(group, ["member"])
    ranged = await directory.get(group, ["member;range=0-99"])
    assert whole is not None
    assert ranged is not None
    assert len(whole.get("member")) == 1600
    assert list(ranged.attributes) == ["member"]
    assert {dnlib.normalize(str(m)) for m in ranged.get("member")} == {dnlib.normalize(m) for m in members}
    await directory.modify(
        group,
        [Modification(ModOp.DELETE, "member", (members[0],)), Modification(ModOp.ADD, "member", (members[0],))],
    )
    await directory.modify(group, [Modification(ModOp.DELETE, "member", (members[1],))])
    after = await directory.get(group, ["member"])
    assert after is not None
    assert len(after.get("member")) == 1599
    await directory.delete(group)  # first: deleting 1,600 linked members one by one is slow on Samba


async def test_errors_on_active_directory(directory: LdapDirectory, ou: str) -> None:
    """Duplicate DN → AlreadyExistsError; non-leaf delete → NotAllowedError; unknown attribute → ConstraintError."""
    await directory.add(f"CN=dup,{ou}", contact("dup"))
    with pytest.raises(AlreadyExistsError):
        await directory.add(f"CN=dup,{ou}", contact("dup"))
    with pytest.raises(NotAllowedError):
        await directory.delete(ou)
    with pytest.raises(ConstraintError):
        await directory.modify(f"CN=dup,{ou}", [Modification(ModOp.REPLACE, "noSuchAttributeX", ("1",))])


@pytest.mark.parametrize("value", ['a,b+c"d\\e<f>g;h=i#j', " spaced ", "Zoë 日本語"])
async def test_hostile_names_on_active_directory(directory: LdapDirectory, ou: str, value: str) -> None:
    """CNs with DN special characters, edge spaces and unicode: add, find by escaped filter, rename, delete."""
    dn = dnlib.join(f"CN={dnlib.escape_value(value)}", ou)
    await directory.add(dn, contact(value))
    found = await collect(directory.search(ou, f"(cn={escape_value(value)})"))
    assert [e.get("cn") for e in found] == [[value]]
    renamed = await directory.rename(dn, f"CN={dnlib.escape_value(value + 'x')}")
    entry = await directory.get(renamed)
    assert entry is not None
    assert entry.get("cn") == [value + "x"]
    await directory.delete(renamed)


# ---------------------------------------------------------------- USN delta
async def scoped(tmp_path: Path, ou: str) -> LdapDirectory:
    return LdapDirectory(samba_settings(tmp_path, base_dns=(ou,)))


def in_ou(result: ChangeSet, ou: str) -> list[tuple[ChangeKind, str]]:
    return [(c.kind, dnlib.rdn(c.dn)) for c in result.changes if dnlib.is_descendant(c.dn, ou)]


async def test_usn_delta_adds_modifies_renames_deletes(tmp_path: Path, directory: LdapDirectory, ou: str) -> None:
    """Each poll reports what happened since the last: add, modify, rename (old DN) and delete (objectGUID)."""
    async with await scoped(tmp_path, ou) as delta:
        mark = (await delta.changes(None)).watermark
        await directory.add(f"CN=d1,{ou}", contact("d1"))
        result = await delta.changes(mark)
        assert in_ou(result, ou) == [(ChangeKind.ADD, "CN=d1")]
        guid = result.changes[0].entry.first("objectGUID") if result.changes[0].entry else None
        await directory.modify(f"CN=d1,{ou}", [Modification(ModOp.REPLACE, "description", ("x",))])
        result = await delta.changes(result.watermark)
        assert in_ou(result, ou) == [(ChangeKind.MODIFY, "CN=d1")]
        await directory.rename(f"CN=d1,{ou}", "CN=d2")
        result = await delta.changes(result.watermark)
        assert in_ou(result, ou) == [(ChangeKind.RENAME, "CN=d2")]
        assert dnlib.rdn(result.changes[0].old_dn or "") == "CN=d1"
        await directory.delete(f"CN=d2,{ou}")
        result = await delta.changes(result.watermark)
        assert [(c.kind, dnlib.rdn(c.dn)) for c in result.changes] == [(ChangeKind.DELETE, "CN=d2")]
        deleted = result.changes[0].entry
        assert deleted is not None
        assert deleted.first("objectGUID") == guid
        idle = await delta.changes(result.watermark)
        assert idle.changes == []
        assert idle.watermark == result.watermark


async def test_usn_deletions_survive_a_restart_and_replays(tmp_path: Path, directory: LdapDirectory, ou: str) -> None:
    """The anchor set lives in state_dir: a new instance still sees a deletion, and replaying an older
    watermark delivers that deletion again."""
    await directory.add(f"CN=keep,{ou}", contact("keep"))
    await directory.add(f"CN=gone,{ou}", contact("gone"))
    async with await scoped(tmp_path, ou) as first:
        mark = (await first.changes(None)).watermark
    await directory.delete(f"CN=gone,{ou}")
    async with await scoped(tmp_path, ou) as second:
        result = await second.changes(mark)
        assert in_ou(result, ou) == [(ChangeKind.DELETE, "CN=gone")]
        replay = await second.changes(mark)
        assert in_ou(replay, ou) == [(ChangeKind.DELETE, "CN=gone")]
        assert (await second.changes(result.watermark)).changes == []


async def test_usn_other_domain_controller_triggers_a_rescan(tmp_path: Path, directory: LdapDirectory, ou: str) -> None:
    """A watermark from another DC (other invocationId) re-reads the whole scope, in batches of ``limit``."""
    for i in range(5):
        await directory.add(f"CN=r{i},{ou}", contact(f"r{i}"))
    async with await scoped(tmp_path, ou) as delta:
        mark = UsnMark.decode((await delta.changes(None)).watermark)
        foreign = UsnMark(str(uuid.uuid4()), mark.usn, mark.seq, mark.store).encode()
        seen: list[str] = []
        more, rounds = True, 0
        while more and rounds < 10:
            batch = await delta.changes(foreign, limit=2)
            assert all(c.kind is ChangeKind.MODIFY for c in batch.changes)
            seen.extend(dnlib.rdn(c.dn) for c in batch.changes)
            foreign, more, rounds = batch.watermark, batch.more, rounds + 1
        assert sorted(seen) == sorted(["OU=" + dnlib.rdn(ou)[3:], *(f"CN=r{i}" for i in range(5))])
        assert UsnMark.decode(foreign).dc == mark.dc


# ---------------------------------------------------------------- the Directory behaviour suite
class TestSambaBehaviour(DirectoryBehaviour):
    """The Directory behaviour suite against the Samba AD DC (user / group)."""

    @pytest_asyncio.fixture
    async def directory(self, tmp_path: Path) -> AsyncIterator[Directory]:
        async with LdapDirectory(samba_settings(tmp_path)) as opened:
            yield opened

    @pytest.fixture
    def shapes(self) -> Shapes:
        return ActiveDirectoryShapes()

    @pytest.mark.xfail(
        reason="Samba cuts filter assertion values at NUL: (cn=x\\00y) matches x. Real AD does not; the plugin "
        "passes the escaped filter through unchanged",
        strict=True,
    )
    async def test_hostile_filter_values_match_exactly_the_intended_entries(
        self, directory: Directory, shapes: Shapes, container: str
    ) -> None:
        await super().test_hostile_filter_values_match_exactly_the_intended_entries(directory, shapes, container)
