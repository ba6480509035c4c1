"""Ranged retrieval (``member;range=…``) over a fake connection that hands out AD-style chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bonsai

from plugins.ldap import LdapDirectory, LdapSettings
from tests.integration.ldap_support import OneConnectionPool

GROUP = "CN=big,CN=Users,DC=example,DC=test"


class _Found(dict[str, list[Any]]):
    """What bonsai returns for one entry: a mapping with ``dn`` and ``items(exclude_dn=True)``."""

    def __init__(self, dn: str, attributes: dict[str, list[Any]]) -> None:
        super().__init__(attributes)
        self.dn = dn

    def items(self, exclude_dn: bool = False) -> Any:  # type: ignore[override]
        return super().items()


class ChunkingConnection:
    """Answers base searches of one group like AD: at most ``chunk`` values of ``member`` per answer."""

    def __init__(self, members: list[str], chunk: int) -> None:
        self.members, self.chunk = members, chunk
        self.searches: list[list[str]] = []

    async def search(self, base: str, scope: int, ldap_filter: str, attrs: list[str], timeout: float) -> list[_Found]:
        assert (base, scope) == (GROUP, bonsai.LDAPSearchScope.BASE)
        self.searches.append(attrs)
        ranged = [a for a in attrs if a.lower().startswith("member;range=")]
        low = int(ranged[0].split("=")[1].split("-")[0]) if ranged else 0
        high = low + self.chunk - 1
        last = high >= len(self.members) - 1
        name = f"member;range={low}-{'*' if last else high}"
        attributes: dict[str, list[Any]] = {name: self.members[low : high + 1]}
        if not ranged:
            attributes["cn"] = ["big"]
        return [_Found(GROUP, attributes)]


def _directory(tmp_path: Path, conn: Any, **settings: Any) -> LdapDirectory:
    directory = LdapDirectory(LdapSettings(auth="anonymous", flavor="ad", state_dir=tmp_path, **settings))
    directory._pool = OneConnectionPool(conn)
    return directory


async def test_a_group_of_50000_members_reads_completely(tmp_path: Path) -> None:
    """A 50,000-member group handed out in AD's 1,500-value chunks comes back whole, in order, under ``member``."""
    members = [f"CN=m{i:05d},CN=Users,DC=example,DC=test" for i in range(50_000)]
    conn = ChunkingConnection(members, 1_500)
    entry = await _directory(tmp_path, conn).get(GROUP, ["cn", "member"])
    assert entry is not None
    assert list(entry.attributes) == ["cn", "member"]
    assert entry.get("member") == members
    assert len(conn.searches) == 34  # ceil(50,000 / 1,500): one search per chunk
    assert conn.searches[1] == ["member;range=1500-*"]


async def test_small_chunks_and_an_exactly_full_last_chunk(tmp_path: Path) -> None:
    """Many small chunks, the last one exactly full, lose and repeat nothing."""
    members = [f"CN=m{i},DC=x" for i in range(300)]
    conn = ChunkingConnection(members, 100)
    entry = await _directory(tmp_path, conn).get(GROUP, ["member"])
    assert entry is not None
    assert entry.get("member") == members
    assert len(conn.searches) == 3


async def test_the_retrieval_limit_bounds_the_reads(tmp_path: Path) -> None:
    """range_retrieval_limit stops fetching further chunks once that many values are in hand."""
    conn = ChunkingConnection([f"CN=m{i},DC=x" for i in range(10_000)], 1_000)
    entry = await _directory(tmp_path, conn, range_retrieval_limit=2_500).get(GROUP, ["member"])
    assert entry is not None
    assert len(entry.get("member")) == 3_000
    assert len(conn.searches) == 3
