"""The ``ad`` profile's own rules over the memory directory (AD flavor): logon names and externalId."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agent.scim.profile import LDAP_ENTRY, Kind, load_profile
from agent.scim.values import to_ldap, to_scim
from plugins.memory import MemoryDirectory, MemorySettings
from tests.contract.scim_suite import Scim
from tests.unit.test_scim_memory import _with_containers


@pytest.fixture
async def scim() -> AsyncIterator[Scim]:
    async with MemoryDirectory(MemorySettings(flavor="ad")) as directory:
        await _with_containers(directory, "ad")
        yield Scim(directory, load_profile("ad"))


async def _account(scim: Scim, created: dict[str, object]) -> str | None:
    dn = created[LDAP_ENTRY]["distinguishedName"]  # type: ignore[index]
    entry = await scim.directory.get(dn, ["sAMAccountName"])
    assert entry is not None
    return entry.text("sAMAccountName")


async def test_sam_account_names_are_short_clean_and_unique(scim: Scim) -> None:
    """sAMAccountName is userName's local part without refused characters, at most 20 characters, numbered
    when taken; a group's may be longer (64)."""
    first = await scim.user("x" * 30 + "@example.test")
    second = await scim.user("x" * 30 + "@other.example")
    third = await scim.user("x" * 31)
    odd = await scim.user('a"b[c]d:e;f|g=h,i+j*k?l<m>n o')
    stem = (scim.ns + "x" * 30)[:20]
    assert [await _account(scim, u) for u in (first, second, third)] == [stem, stem[:19] + "1", stem[:19] + "2"]
    assert await _account(scim, odd) == f"{scim.ns}abcdefghijklmno"[:20]
    group = await scim.group("g" * 40)
    assert await _account(scim, group) == scim.ns + "g" * 40


async def test_external_id_falls_back_to_the_object_guid(scim: Scim) -> None:
    """externalId is the objectGUID until one is given; a given one is stored as ms-DS-ConsistencyGuid."""
    plain = await scim.user("plain")
    assert plain["externalId"] == plain["id"]
    anchor = str(uuid.uuid4())
    anchored = await scim.user("anchored", externalId=anchor)
    assert anchored["externalId"] == anchor
    found = await scim.listed("/Users", f'externalId eq "{anchor.upper()}"')
    assert found["totalResults"] == 0  # externalId is caseExact
    found = await scim.listed("/Users", "externalId pr")
    assert found["totalResults"] == 2
    result = await scim.call(
        "POST", "/Users", body={"schemas": plain["schemas"][:1], "userName": "x", "externalId": "n"}
    )
    assert (result.status, result.body.get("scimType")) == (400, "invalidValue")


def test_guid_values() -> None:
    """A GUID value converts between AD's 16 little-endian-layout bytes and its string form."""
    guid = uuid.uuid4()
    assert to_ldap(Kind.GUID, str(guid)) == guid.bytes_le
    assert to_scim(Kind.GUID, guid.bytes_le) == str(guid)
    with pytest.raises(ValueError, match="expected a GUID"):
        to_ldap(Kind.GUID, "not-a-guid")
