"""The memory directory evaluates filters as slapd does: the same entries in both, the same generated
filters sent to both, the same entries found (scripts/servers.sh start slapd).

The memory directory stands in for a directory in demos and load tests, so a filter the LDAP plugin sends
must select there what it selects on a real server. The values are drawn from characters where RFC 4518
and slapd 2.5 agree (letters of both cases, accented ones, full-width forms, digits, hyphens, runs of
spaces, no-break spaces); ``plugins/ldapfilter.py`` says where they part (``ß``, tabs), and ordering
and approximate matches are left out: slapd has no ordering rule for these attributes and matches ``~=``
phonetically.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from plugins.directory import AttrValue, Directory
from plugins.ldap import LdapDirectory
from plugins.ldapfilter import escape_value
from plugins.memory import MemoryDirectory, MemorySettings
from tests.contract.directory_suite import collect, normalized
from tests.integration.ldap_support import delete_tree, make_ou, slapd_settings

pytestmark = pytest.mark.slapd

PIECES = ["a", "B", "c", "É", "é", "\uff42", "1", "-", " ", "  ", "\u00a0"]  # \uff42: full-width b
ATTRIBUTES = ["title", "description"]


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, longest)))


def _value(rng: random.Random) -> str:
    while True:
        text = _text(rng, 5)
        if text.strip(" \u00a0"):  # a value of spaces only is invalid syntax on the server
            return text


def _item(rng: random.Random) -> str:
    attribute = rng.choice(ATTRIBUTES)
    kind = rng.random()
    if kind < 0.1:
        return f"({attribute}=*)"
    if kind < 0.45:
        return f"({attribute}={escape_value(_text(rng, 4))})"
    pieces = [_text(rng, 2) if rng.random() < 0.7 or 0 < index < 2 else "" for index in range(rng.randint(2, 4))]
    if not any(piece.strip(" \u00a0") for piece in pieces):
        pieces[0] = "a"
    for index in range(1, len(pieces) - 1):
        pieces[index] = pieces[index] or "a"  # an empty inner piece would be "**": not a filter
    return f"({attribute}={'*'.join(escape_value(piece) for piece in pieces)})"


def _filter(rng: random.Random, depth: int = 0) -> str:
    kind = rng.random()
    if depth >= 2 or kind < 0.6:
        return _item(rng)
    if kind < 0.7:
        return f"(!{_filter(rng, depth + 1)})"
    operator = "&" if kind < 0.85 else "|"
    return f"({operator}{''.join(_filter(rng, depth + 1) for _ in range(rng.randint(2, 3)))})"


@pytest_asyncio.fixture
async def twins(tmp_path: Path) -> AsyncIterator[tuple[LdapDirectory, MemoryDirectory, str, list[str]]]:
    """slapd and a memory directory holding the same generated people under the same OU."""
    rng = random.Random(4518)
    async with LdapDirectory(slapd_settings(tmp_path)) as server:
        ou = await make_ou(server, server.base_dn)
        async with MemoryDirectory(MemorySettings(base_dn=server.base_dn)) as memory:
            await memory.add(ou, {"objectClass": ["organizationalUnit"], "ou": [ou.split(",")[0][3:]]})
            dns = []
            for index in range(48):
                dn = f"uid=p{index},{ou}"
                attributes: dict[str, list[AttrValue]] = {
                    "objectClass": ["inetOrgPerson"],
                    "uid": [f"p{index}"],
                    "cn": [f"p{index}"],
                    "sn": ["parity"],
                }
                for attribute in ATTRIBUTES:
                    if rng.random() < 0.85:
                        attributes[attribute] = list({_value(rng) for _ in range(rng.randint(1, 2))})
                for directory in (server, memory):
                    await directory.add(dn, attributes)
                dns.append(dn)
            try:
                yield server, memory, ou, dns
            finally:
                await delete_tree(server, ou)


async def _found(directory: Directory, base: str, ldap_filter: str) -> set[str]:
    return set(normalized(await collect(directory, base, ldap_filter, attributes=["1.1"])))


async def test_generated_filters_find_the_same_entries_in_both(
    twins: tuple[LdapDirectory, MemoryDirectory, str, list[str]],
) -> None:
    server, memory, ou, dns = twins
    rng = random.Random(4515)
    differences = []
    nonempty = 0
    for _ in range(300):
        ldap_filter = f"(&(objectClass=inetOrgPerson){_filter(rng)})"
        on_server, in_memory = await _found(server, ou, ldap_filter), await _found(memory, ou, ldap_filter)
        nonempty += 0 < len(on_server) < len(dns)
        if on_server != in_memory:
            differences.append((ldap_filter, sorted(on_server ^ in_memory)[:3]))
    assert nonempty > 100, "the generated filters should mostly select some of the entries, not none or all"
    assert differences == []
