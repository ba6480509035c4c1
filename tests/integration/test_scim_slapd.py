"""The SCIM behaviour suite against a real OpenLDAP slapd with the ``openldap`` profile."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.scim.handler import ScimHandler
from agent.scim.profile import load_profile
from plugins.directory import Directory
from plugins.ldap import LdapDirectory
from protocol.envelope import ScimOperation
from tests.contract.scim_suite import ScimSuite
from tests.integration.ldap_support import delete_tree, make_ou, slapd_settings

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

pytestmark = pytest.mark.slapd


class TestSlapdScim(ScimSuite):
    """Every SCIM case over inetOrgPerson / groupOfNames in slapd's ou=people and ou=groups."""

    profile_name = "openldap"

    @pytest.fixture
    async def directory(self, tmp_path: Path) -> AsyncIterator[Directory]:
        async with LdapDirectory(slapd_settings(tmp_path)) as opened:
            yield opened


async def test_a_member_outside_the_scope_filter_is_no_resource(tmp_path: Path) -> None:
    """With a scope filter, a group member that does not match it is not among the group's members, and its id
    stays a 404 for GET and PATCH, also after the group was read (its DN was looked up then); the entry is
    left unchanged. (Members were read by DN without the filter, and their cached ids let a PATCH through.)"""
    tag = uuid.uuid4().hex[:8]
    plain_settings = slapd_settings(tmp_path / "plain")
    scoped_settings = slapd_settings(tmp_path / "scoped", scope_filter="(!(employeeType=contractor))")
    async with LdapDirectory(plain_settings) as plain, LdapDirectory(scoped_settings) as scoped:
        base = plain.base_dn
        alice, bob = (f"uid={name}-{tag},ou=people,{base}" for name in ("alice", "bob"))
        group = f"cn=team-{tag},ou=groups,{base}"
        for dn, extra in ((alice, {}), (bob, {"employeeType": ["contractor"]})):
            name = dn.split(",")[0][4:]
            await plain.add(dn, {"objectClass": ["inetOrgPerson"], "uid": [name], "cn": [name], "sn": [name], **extra})
        await plain.add(group, {"objectClass": ["groupOfNames"], "cn": [f"team-{tag}"], "member": [alice, bob]})
        try:
            ids = {}
            for dn in (alice, bob):
                entry = await plain.get(dn, ["entryUUID"])
                assert entry is not None
                ids[dn] = entry.text("entryUUID")
            handler = ScimHandler(scoped, load_profile("openldap"))
            patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "reached"}]}
            for _ in range(2):
                listed = await handler.handle(
                    ScimOperation("GET", "/Groups", {"filter": f'displayName eq "team-{tag}"'})
                )
                assert [m["value"] for m in listed.body["Resources"][0]["members"]] == [ids[alice]]
                assert (await handler.handle(ScimOperation("GET", f"/Users/{ids[bob]}"))).status == 404
                assert (await handler.handle(ScimOperation("PATCH", f"/Users/{ids[bob]}", body=patch))).status == 404
            left = await plain.get(bob, ["title"])
            assert left is not None
            assert not left.get("title")
        finally:
            for dn in (group, alice, bob):
                await plain.delete(dn)


async def test_every_one_of_base_dns_is_served(tmp_path: Path) -> None:
    """An agent given two base DNs finds users under both, by filter and by id; not those beside them."""
    tag = uuid.uuid4().hex[:8]
    async with LdapDirectory(slapd_settings(tmp_path / "plain")) as plain:
        top = plain.base_dn
        ous = [await make_ou(plain, top) for _ in range(3)]
        try:
            ids = []
            for number, ou in enumerate(ous):
                name = f"u{number}-{tag}"
                await plain.add(
                    f"uid={name},{ou}", {"objectClass": ["inetOrgPerson"], "uid": [name], "cn": [name], "sn": [name]}
                )
                entry = await plain.get(f"uid={name},{ou}", ["entryUUID"])
                assert entry is not None
                ids.append(entry.text("entryUUID"))
            async with LdapDirectory(slapd_settings(tmp_path / "two", base_dns=tuple(ous[:2]))) as scoped:
                handler = ScimHandler(scoped, load_profile("openldap"))
                found = await handler.handle(ScimOperation("GET", "/Users", {"filter": f'userName ew "-{tag}"'}))
                assert sorted(r["id"] for r in found.body["Resources"]) == sorted(ids[:2])
                assert (await handler.handle(ScimOperation("GET", f"/Users/{ids[1]}"))).status == 200
                assert (await handler.handle(ScimOperation("GET", f"/Users/{ids[2]}"))).status == 404
        finally:
            for ou in ous:
                await delete_tree(plain, ou)
