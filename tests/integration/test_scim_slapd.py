"""The SCIM behaviour suite against a real OpenLDAP slapd with the ``openldap`` profile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plugins.directory import Directory
from plugins.ldap import LdapDirectory
from tests.contract.scim_suite import ScimSuite
from tests.integration.ldap_support import slapd_settings

pytestmark = pytest.mark.slapd


class TestSlapdScim(ScimSuite):
    """Every SCIM case over inetOrgPerson / groupOfNames in slapd's ou=people and ou=groups."""

    profile_name = "openldap"

    @pytest.fixture
    async def directory(self, tmp_path: Path) -> AsyncIterator[Directory]:
        async with LdapDirectory(slapd_settings(tmp_path)) as opened:
            yield opened
