"""Paged searches over a fake connection: an error result on a later page, and a page asked for in
advance that cannot be abandoned, surface as what they are (never bonsai's ``SystemError``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import bonsai
import pytest
from structlog.testing import capture_logs

from plugins.directory import ConstraintError, LimitExceededError
from plugins.ldap import LdapDirectory, LdapSettings
from tests.integration.ldap_support import OneConnectionPool

BASE = "DC=example,DC=test"


class _Found(dict[str, list[Any]]):
    """What bonsai returns for one entry: a mapping with ``dn``."""

    def __init__(self, dn: str, attributes: dict[str, list[Any]]) -> None:
        super().__init__(attributes)
        self.dn = dn


class _Page(list[_Found]):
    """A page of a manually paged bonsai search: its entries and the id of the next page it asks for."""

    def __init__(self, number: int, next_id: int | None) -> None:
        super().__init__(_Found(f"CN=u{number}-{i},{BASE}", {"cn": [f"u{number}-{i}"]}) for i in range(2))
        self.next_id = next_id

    def acquire_next_page(self) -> int | None:
        return self.next_id


class LaterPageFails:
    """A connection whose first page arrives and whose second ends in ``error``; like bonsai, it refuses
    to abandon an operation whose result has been read (``SystemError``)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.read: set[int] = set()
        self.abandoned: list[int] = []
        self.closed = False
        self.raw: Any = None

    async def paged_search(self, *args: Any, timeout: float, page_size: int) -> _Page:
        return _Page(1, next_id=7)

    async def get_result(self, msg_id: int, timeout: float) -> _Page:
        self.read.add(msg_id)
        raise self.error

    def abandon(self, msg_id: int) -> None:
        if msg_id in self.read:
            raise SystemError("src/_bonsai/utils.c:456: bad argument to internal function")
        self.abandoned.append(msg_id)

    def close(self) -> None:
        self.closed = True


class NeverAbandons(LaterPageFails):
    """A connection whose advance page request cannot be abandoned at all."""

    def abandon(self, msg_id: int) -> None:
        raise SystemError("src/_bonsai/utils.c:456: bad argument to internal function")


def _directory(tmp_path: Path, conn: Any) -> LdapDirectory:
    settings = LdapSettings(auth="anonymous", flavor="ad", state_dir=tmp_path, retry={"attempts": 1})
    directory = LdapDirectory(settings)
    directory._pool = OneConnectionPool(conn)
    return directory


def _result(code: int, text: str) -> bonsai.LDAPError:
    """An LDAP error result as bonsai raises it (its own class for the code, the server's text)."""
    return type(f"Result{code}", (bonsai.LDAPError,), {"code": code})(text)


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (bonsai.SizeLimitError("Size limit exceeded."), "sizeLimitExceeded"),
        (_result(11, "Administrative limit exceeded."), "adminLimitExceeded"),
    ],
)
async def test_a_server_limit_on_a_later_page_is_a_limit_error(
    tmp_path: Path, error: BaseException, meaning: str
) -> None:
    """sizeLimitExceeded or adminLimitExceeded answering page 2 raises ``LimitExceededError`` (a 4xx-class
    ``ConstraintError``) that names the limit, and the completed page is not abandoned."""
    conn = LaterPageFails(error)
    pages: list[int] = []

    async def read_all() -> None:
        async for page in _directory(tmp_path, conn).search(BASE, "(cn=*)", page_size=2):
            pages.append(len(page))  # noqa: PERF401 - the pages that arrived before the error

    with pytest.raises(LimitExceededError) as raised:
        await read_all()
    assert pages == [2]
    assert isinstance(raised.value, ConstraintError)
    assert meaning in str(raised.value)
    assert raised.value.__cause__ is error
    assert conn.abandoned == []
    assert not conn.closed


async def test_a_page_that_cannot_be_abandoned_is_logged_and_its_connection_closed(tmp_path: Path) -> None:
    """A consumer stopping after page 1 abandons the page asked for in advance; when bonsai refuses, the
    refusal is logged, the connection closed, and the consumer sees no error."""
    conn = NeverAbandons(RuntimeError("page 2 is never read"))
    stream = _directory(tmp_path, conn).search(BASE, "(cn=*)", page_size=2)
    with capture_logs() as logs:
        async for page in stream:
            assert len(page) == 2
            break
        await stream.aclose()
        await asyncio.sleep(0.05)  # the inner page stream is closed by the event loop's finalizer, soon after
    assert conn.closed
    assert [log["event"] for log in logs] == ["could not abandon an LDAP operation; closing its connection"]
    assert "SystemError" in logs[0]["error"]
