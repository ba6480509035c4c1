"""The SCIM behaviour suite over the memory directory: openldap flavor/profile and ad flavor/profile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.scim.profile import load_profile
from plugins import dn as dnlib
from plugins.directory import Directory
from plugins.memory import MemoryDirectory, MemorySettings
from tests.contract.scim_suite import ScimSuite


async def _with_containers(directory: MemoryDirectory, profile_name: str) -> None:
    """Create the profile's containers (ou=people / cn=Users, …) where the seed data did not."""
    for mapping in load_profile(profile_name).resources:
        dn = dnlib.join(mapping.container, directory.base_dn)
        if await directory.get(dn) is None:
            attribute, _, value = mapping.container.partition("=")
            object_class = "organizationalUnit" if attribute.lower() == "ou" else "container"
            await directory.add(dn, {"objectClass": ["top", object_class], attribute: [value]})


class SharingMemoryDirectory(MemoryDirectory):
    """The memory directory with lookups read together, as over LDAP (``Directory.shared_lookups``)."""

    shared_lookups = True


class TestMemoryOpenLdapScim(ScimSuite):
    """With lookups read together; the ``ad`` case below reads each alone."""

    profile_name = "openldap"

    @pytest.fixture
    async def directory(self) -> AsyncIterator[Directory]:
        # Seeded users and groups stand for the other tenants of a shared server.
        async with SharingMemoryDirectory(MemorySettings(seed_users=6, seed_groups=2)) as directory:
            await _with_containers(directory, self.profile_name)
            yield directory


class TestMemoryAdScim(ScimSuite):
    profile_name = "ad"

    @pytest.fixture
    async def directory(self) -> AsyncIterator[Directory]:
        async with MemoryDirectory(MemorySettings(flavor="ad", seed_users=6, seed_groups=2)) as directory:
            await _with_containers(directory, self.profile_name)
            yield directory
