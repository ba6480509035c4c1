"""The memory directory: the Directory behaviour suite (both flavors) plus memory-only features."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from plugins.directory import Directory
from plugins.memory import MemoryDirectory, MemorySettings
from tests.contract.directory_suite import (
    ActiveDirectoryShapes,
    DirectoryBehaviour,
    OpenLdapShapes,
    Shapes,
)


class TestMemoryOpenLdapBehaviour(DirectoryBehaviour):
    """The suite against the memory directory in its OpenLDAP flavor."""

    @pytest_asyncio.fixture
    async def directory(self) -> AsyncIterator[Directory]:
        async with MemoryDirectory(MemorySettings(flavor="openldap")) as directory:
            yield directory

    @pytest.fixture
    def shapes(self) -> Shapes:
        return OpenLdapShapes()


class TestMemoryActiveDirectoryBehaviour(DirectoryBehaviour):
    """The suite against the memory directory in its Active Directory flavor."""

    @pytest_asyncio.fixture
    async def directory(self) -> AsyncIterator[Directory]:
        async with MemoryDirectory(MemorySettings(flavor="ad", base_dn="DC=corp,DC=example,DC=com")) as directory:
            yield directory

    @pytest.fixture
    def shapes(self) -> Shapes:
        return ActiveDirectoryShapes()
