"""What lies outside the handler's bases is no SCIM resource: not through a group's members, a cached id, or the
change feed (a rename out of them is a deletion); what lies in any of them is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.directory import Modification, ModOp
from plugins.memory import MemoryDirectory, MemorySettings
from protocol.envelope import ScimOperation

BASE = "dc=example,dc=com"
INSIDE = f"ou=sync,{BASE}"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
async def directory() -> AsyncIterator[MemoryDirectory]:
    async with MemoryDirectory(MemorySettings(seed_users=0, seed_groups=0)) as opened:
        for ou in (INSIDE, f"ou=people,{INSIDE}", f"ou=groups,{INSIDE}", f"ou=elsewhere,{BASE}"):
            await opened.add(ou, {"objectClass": ["top", "organizationalUnit"], "ou": [ou.split(",")[0][3:]]})
        yield opened


async def _person(directory: MemoryDirectory, dn: str, uid: str) -> str:
    await directory.add(dn, {"objectClass": ["top", "inetOrgPerson"], "uid": [uid], "cn": [uid], "sn": [uid]})
    entry = await directory.get(dn, ["entryUUID"])
    assert entry is not None
    return str(entry.first("entryUUID"))


async def test_a_member_outside_the_base_is_not_shown_nor_reachable_by_its_id(directory: MemoryDirectory) -> None:
    """A group in the base that names a member outside it shows only the member inside; the outside one's id
    stays a 404 for GET and PATCH, also after the group was read (its DN was looked up then)."""
    inside = await _person(directory, f"uid=alice,ou=people,{INSIDE}", "alice")
    outside = await _person(directory, f"uid=bob,ou=elsewhere,{BASE}", "bob")
    members = [f"uid=alice,ou=people,{INSIDE}", f"uid=bob,ou=elsewhere,{BASE}"]
    await directory.add(
        f"cn=team,ou=groups,{INSIDE}", {"objectClass": ["top", "groupOfNames"], "cn": ["team"], "member": members}
    )
    handler = ScimHandler(directory, load_profile("openldap"), base=INSIDE)
    for _ in range(2):  # the second time from the references cached by the first
        listed = await handler.handle(ScimOperation("GET", "/Groups", {"filter": 'displayName eq "team"'}))
        assert [m["value"] for m in listed.body["Resources"][0]["members"]] == [inside]
        assert (await handler.handle(ScimOperation("GET", f"/Users/{outside}"))).status == 404
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "reached"}]}
        assert (await handler.handle(ScimOperation("PATCH", f"/Users/{outside}", body=body))).status == 404
        assert (await handler.handle(ScimOperation("GET", f"/Users/{inside}"))).status == 200
    bob = await directory.get(f"uid=bob,ou=elsewhere,{BASE}", ["title"])
    assert bob is not None
    assert not bob.get("title")


async def test_a_rename_out_of_the_base_is_a_deletion_in_the_change_feed(directory: MemoryDirectory) -> None:
    """An entry moved out of the base comes out of /Changes as a deletion (it was skipped: the target kept it)."""
    handler = ScimHandler(directory, load_profile("openldap"), base=INSIDE)
    moved = await _person(directory, f"uid=carol,ou=people,{INSIDE}", "carol")
    start = (await handler.handle(ScimOperation("GET", "/Changes"))).body["watermark"]
    await directory.rename(f"uid=carol,ou=people,{INSIDE}", "uid=carol", new_superior=f"ou=elsewhere,{BASE}")
    changes = await handler.handle(ScimOperation("GET", "/Changes", {"watermark": start}))
    assert [(r["op"], r["id"]) for r in changes.body["Resources"]] == [("delete", moved)]


async def test_every_base_is_served_and_nothing_outside_them(directory: MemoryDirectory) -> None:
    """With two bases, lists, GET by id, group members and the change feed take in both; an entry under
    neither stays out; a base inside another is searched once."""
    second = f"ou=contractors,{BASE}"
    await directory.add(second, {"objectClass": ["top", "organizationalUnit"], "ou": ["contractors"]})
    alice = await _person(directory, f"uid=alice,ou=people,{INSIDE}", "alice")
    carl = await _person(directory, f"uid=carl,{second}", "carl")
    await _person(directory, f"uid=bob,ou=elsewhere,{BASE}", "bob")
    members = [f"uid=alice,ou=people,{INSIDE}", f"uid=carl,{second}", f"uid=bob,ou=elsewhere,{BASE}"]
    await directory.add(
        f"cn=team,ou=groups,{INSIDE}", {"objectClass": ["top", "groupOfNames"], "cn": ["team"], "member": members}
    )
    handler = ScimHandler(directory, load_profile("openldap"), bases=[INSIDE, second, f"ou=people,{INSIDE}"])
    assert handler.bases.dns == (INSIDE, second)
    listed = await handler.handle(ScimOperation("GET", "/Users", {"sortBy": "userName"}))
    assert [r["userName"] for r in listed.body["Resources"]] == ["alice", "carl"]
    cursor = await handler.handle(ScimOperation("GET", "/Users", {"cursor": "", "count": "1"}))
    following = await handler.handle(
        ScimOperation("GET", "/Users", {"cursor": cursor.body["nextCursor"], "count": "1"})
    )
    assert {cursor.body["Resources"][0]["id"], following.body["Resources"][0]["id"]} == {alice, carl}
    assert (await handler.handle(ScimOperation("GET", f"/Users/{carl}"))).status == 200
    team = await handler.handle(ScimOperation("GET", "/Groups", {"filter": 'displayName eq "team"'}))
    assert sorted(m["value"] for m in team.body["Resources"][0]["members"]) == sorted([alice, carl])
    start = (await handler.handle(ScimOperation("GET", "/Changes"))).body["watermark"]
    await directory.modify(f"uid=carl,{second}", [Modification(ModOp.REPLACE, "title", ("x",))])
    await directory.modify(f"uid=bob,ou=elsewhere,{BASE}", [Modification(ModOp.REPLACE, "title", ("x",))])
    changes = await handler.handle(ScimOperation("GET", "/Changes", {"watermark": start}))
    assert [(r["op"], r["id"]) for r in changes.body["Resources"]] == [("upsert", carl)]


async def test_open_cursors_keep_half_the_directorys_connections_at_most(directory: MemoryDirectory) -> None:
    """Each open cursor holds a connection of the directory: with 4, at most 2 stay open; opening a third closes
    the one least lately used (its next page is 400 invalidCursor), not the newest, nor one just read from."""
    for number in range(6):
        await _person(directory, f"uid=u{number},ou=people,{INSIDE}", f"u{number}")
    directory.max_concurrency = 4
    handler = ScimHandler(directory, load_profile("openldap"), base=INSIDE)

    async def start() -> str:
        first = await handler.handle(ScimOperation("GET", "/Users", {"cursor": "", "count": "1"}))
        return str(first.body["nextCursor"])

    async def next_page(cursor: str) -> int:
        return (await handler.handle(ScimOperation("GET", "/Users", {"cursor": cursor, "count": "1"}))).status

    oldest, used = await start(), await start()
    assert await next_page(oldest) == 200  # now the most lately used
    newest = await start()
    assert [await next_page(c) for c in (oldest, newest)] == [200, 200]
    refused = await handler.handle(ScimOperation("GET", "/Users", {"cursor": used, "count": "1"}))
    assert (refused.status, refused.body["scimType"]) == (400, "invalidCursor")
