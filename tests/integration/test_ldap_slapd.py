"""The LDAP plugin against a real OpenLDAP slapd (scripts/servers.sh start slapd)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import bonsai
import pytest
import pytest_asyncio

from plugins import dn as dnlib
from plugins.directory import (
    AlreadyExistsError,
    ChangeKind,
    ConstraintError,
    Directory,
    DirectoryTimeoutError,
    InsufficientAccessError,
    InvalidFilterError,
    LimitExceededError,
    Modification,
    ModOp,
    NoSuchObjectError,
    NotAllowedError,
    PoolExhaustedError,
    Scope,
    UnavailableError,
    WriteOutcomeUnknownError,
)
from plugins.ldap import LdapDirectory
from plugins.ldap.errors import WatermarkExpiredError
from plugins.ldapfilter import escape_value
from tests.contract.directory_suite import DirectoryBehaviour, OpenLdapShapes, Shapes
from tests.integration.ldap_support import (
    OwnSlapd,
    Paused,
    collect,
    delete_tree,
    make_ou,
    restart_slapd,
    slapd_pid,
    slapd_settings,
    unique,
)
from tests.servers.env import server_env

pytestmark = pytest.mark.slapd


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[LdapDirectory]:
    async with LdapDirectory(slapd_settings(tmp_path)) as opened:
        yield opened


@pytest.fixture
async def ou(directory: LdapDirectory) -> AsyncIterator[str]:
    dn = await make_ou(directory, directory.base_dn)
    yield dn
    await delete_tree(directory, dn)


@pytest.fixture(scope="module")
def own_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnSlapd]:
    """A slapd of this module's own, for the tests that pause it or load it heavily (not the shared one)."""
    slapd_settings(tmp_path_factory.getbasetemp())  # skips (fails in CI) where the test servers are missing
    with OwnSlapd(tmp_path_factory.mktemp("own-slapd")) as slapd:
        yield slapd


def person(uid: str, **extra: list[str | bytes]) -> dict[str, list[str | bytes]]:
    return {"objectClass": ["inetOrgPerson"], "uid": [uid], "cn": [uid], "sn": ["Test"], **extra}


# ---------------------------------------------------------------- basics
async def test_detects_openldap_and_base(directory: LdapDirectory) -> None:
    """The rootDSE says OpenLDAP, and the configured base DN is the one searches start from."""
    assert directory.flavor == "openldap"
    assert directory.base_dn == server_env()["CLOUDPROV_SLAPD_BASE"]


async def test_add_get_modify_rename_delete(directory: LdapDirectory, ou: str) -> None:
    """A full write cycle lands on the server exactly as asked."""
    dn = f"uid=alice,{ou}"
    await directory.add(dn, person("alice", mail=["a@example.com"]))
    entry = await directory.get(dn)
    assert entry is not None
    assert entry.text("entryUUID")
    await directory.modify(
        dn,
        [
            Modification(ModOp.REPLACE, "sn", ("Liddell",)),
            Modification(ModOp.ADD, "mail", ("b@example.com",)),
            Modification(ModOp.DELETE, "mail", ("a@example.com",)),
            Modification(ModOp.ADD, "description", ("x",)),
            Modification(ModOp.DELETE, "description", ()),
        ],
    )
    entry = await directory.get(dn)
    assert entry is not None
    assert entry.get("sn") == ["Liddell"]
    assert entry.get("mail") == ["b@example.com"]
    assert "description" not in entry.attributes
    new_dn = await directory.rename(dn, "uid=alice2")
    assert dnlib.normalize(new_dn) == dnlib.normalize(f"uid=alice2,{ou}")
    moved = await directory.get(new_dn)
    assert moved is not None
    assert moved.get("uid") == ["alice2"]  # the old RDN value is gone
    assert await directory.get(dn) is None
    await directory.delete(new_dn)
    assert await directory.get(new_dn) is None


async def test_rename_moves_under_new_superior(directory: LdapDirectory, ou: str) -> None:
    """modrdn with a new superior moves the entry."""
    other = await make_ou(directory, ou)
    dn = f"uid=mover,{ou}"
    await directory.add(dn, person("mover"))
    new_dn = await directory.rename(dn, "uid=mover", new_superior=other)
    assert await directory.get(new_dn) is not None
    assert await directory.get(dn) is None


async def test_paged_search_streams_pages(directory: LdapDirectory, ou: str) -> None:
    """25 entries with page size 10 arrive as pages of 10, 10 and 5."""
    await asyncio.gather(*(directory.add(f"uid=p{i:02d},{ou}", person(f"p{i:02d}")) for i in range(25)))
    sizes = [len(page) async for page in directory.search(ou, "(objectClass=inetOrgPerson)", page_size=10)]
    assert sizes == [10, 10, 5]


async def test_stopping_a_paged_search_early_leaves_the_pool_usable(tmp_path: Path, ou: str) -> None:
    """A consumer that stops after the first page (the next one already asked for) leaves no stray
    answer behind: later searches on the one pooled connection return exactly their own entries."""
    async with LdapDirectory(slapd_settings(tmp_path, pool_size=1)) as directory:
        await asyncio.gather(*(directory.add(f"uid=e{i:02d},{ou}", person(f"e{i:02d}")) for i in range(25)))
        for _ in range(3):
            stream = directory.search(ou, "(objectClass=inetOrgPerson)", page_size=10)
            async for page in stream:
                assert len(page) == 10
                break
            await stream.aclose()
            sizes = [len(page) async for page in directory.search(ou, "(objectClass=inetOrgPerson)", page_size=10)]
            assert sizes == [10, 10, 5]
            assert [e.text("uid") for e in await collect(directory.search(ou, "(uid=e07)"))] == ["e07"]


async def test_search_nothing_matches_yields_one_empty_page(directory: LdapDirectory, ou: str) -> None:
    """No match: one empty page, not an error."""
    pages = [page async for page in directory.search(ou, "(uid=nobody)")]
    assert pages == [[]]


async def test_search_scopes(directory: LdapDirectory, ou: str) -> None:
    """base, one level and subtree scopes select what LDAP says they select."""
    sub = await make_ou(directory, ou)
    await directory.add(f"uid=top,{ou}", person("top"))
    await directory.add(f"uid=deep,{sub}", person("deep"))
    one = await collect(directory.search(ou, "(uid=*)", scope=Scope.ONELEVEL))
    tree = await collect(directory.search(ou, "(uid=*)", scope=Scope.SUBTREE))
    base = await collect(directory.search(ou, scope=Scope.BASE))
    assert [e.text("uid") for e in one] == ["top"]
    assert sorted(e.text("uid") or "" for e in tree) == ["deep", "top"]
    assert [dnlib.normalize(e.dn) for e in base] == [dnlib.normalize(ou)]


async def test_missing_base_and_bad_filter(directory: LdapDirectory, ou: str) -> None:
    """A missing base is NoSuchObjectError; a malformed filter is InvalidFilterError."""
    with pytest.raises(NoSuchObjectError):
        await collect(directory.search(f"ou=missing,{ou}"))
    with pytest.raises(InvalidFilterError):
        await collect(directory.search(ou, "(((uid=x"))


async def test_result_codes_map_to_directory_errors(directory: LdapDirectory, ou: str, tmp_path: Path) -> None:
    """entryAlreadyExists, noSuchObject, objectClass/syntax violations, notAllowedOnNonLeaf, access rights."""
    dn = f"uid=dup,{ou}"
    await directory.add(dn, person("dup"))
    with pytest.raises(AlreadyExistsError):
        await directory.add(dn, person("dup"))
    with pytest.raises(NoSuchObjectError):
        await directory.delete(f"uid=ghost,{ou}")
    with pytest.raises(NoSuchObjectError):
        await directory.modify(f"uid=ghost,{ou}", [Modification(ModOp.REPLACE, "sn", ("x",))])
    with pytest.raises(ConstraintError):
        await directory.add(f"uid=nosn,{ou}", {"objectClass": ["inetOrgPerson"], "uid": ["nosn"], "cn": ["x"]})
    with pytest.raises(ConstraintError):
        await directory.modify(dn, [Modification(ModOp.REPLACE, "uidNumber", ("not-a-number",))])
    with pytest.raises(NotAllowedError):
        await directory.delete(ou)
    env = server_env()
    reader = slapd_settings(
        tmp_path, bind_dn=env["CLOUDPROV_SLAPD_READER_DN"], password=env["CLOUDPROV_SLAPD_READER_PASSWORD"]
    )
    async with LdapDirectory(reader) as read_only:
        assert await read_only.get(dn) is not None
        with pytest.raises(InsufficientAccessError):
            await read_only.modify(dn, [Modification(ModOp.REPLACE, "sn", ("x",))])
    wrong = slapd_settings(tmp_path, password="wrong")
    with pytest.raises(InsufficientAccessError):
        async with LdapDirectory(wrong):
            pass


async def test_binary_values_round_trip(directory: LdapDirectory, ou: str) -> None:
    """Binary attributes (jpegPhoto) come back as the exact bytes, text attributes as exact text."""
    blob = bytes(range(256)) * 4
    dn = f"uid=photo,{ou}"
    await directory.add(dn, person("photo", jpegPhoto=[blob], employeeNumber=["007"], description=["TRUE", "12"]))
    entry = await directory.get(dn)
    assert entry is not None
    assert entry.get("jpegPhoto") == [blob]
    assert entry.get("employeeNumber") == ["007"]
    assert sorted(entry.get("description")) == ["12", "TRUE"]  # not bool / int


async def test_binary_values_come_back_as_bytes_whatever_a_search_asks_for(tmp_path: Path, ou: str) -> None:
    """A search naming its attributes keeps binary ones as bytes; the next operation on the same
    connection (one in the pool) asking for every attribute does too."""
    blob = b"12345"  # would parse as the number 12345 if treated as text
    async with LdapDirectory(slapd_settings(tmp_path, pool_size=1)) as one:
        await one.add(f"uid=blob,{ou}", person("blob", jpegPhoto=[blob], employeeNumber=["12345"]))
        named = await collect(one.search(ou, "(uid=blob)", attributes=["cn", "JPEGPHOTO", "employeeNumber"]))
        assert named[0].get("jpegPhoto") == [blob]
        assert named[0].get("employeeNumber") == ["12345"]
        others = await collect(one.search(ou, "(uid=blob)", attributes=["cn", "employeeNumber"]))
        assert "jpegPhoto" not in others[0].attributes
        again = await one.get(f"uid=blob,{ou}")
        assert again is not None
        assert again.get("jpegPhoto") == [blob]
        listed = await collect(one.search(ou, "(uid=blob)"))
        assert listed[0].get("jpegPhoto") == [blob]


async def test_named_attributes_come_back_as_stored_even_when_they_look_like_numbers(
    directory: LdapDirectory, ou: str
) -> None:
    """Phone numbers in E.164 form and other number-like text keep their exact spelling (bonsai would
    read ``+14155552671`` as the integer 14155552671) in searches and reads that name the attributes."""
    texts = ["0x10", "1_000", "-0", " 42", "TRUE"]
    dn = f"uid=numbers,{ou}"
    await directory.add(
        dn, person("numbers", telephoneNumber=["+14155552671"], employeeNumber=["+7"], description=texts)
    )
    wanted = ["telephoneNumber", "employeeNumber", "description", "uid"]
    found = await collect(directory.search(ou, "(uid=numbers)", attributes=wanted))
    read = await directory.get(dn, wanted)
    for entry in (found[0], read):
        assert entry is not None
        assert entry.get("telephoneNumber") == ["+14155552671"]
        assert entry.get("employeeNumber") == ["+7"]
        assert sorted(entry.get("description")) == sorted(texts)


async def test_named_attributes_stay_as_stored_after_the_name_order_is_learned(tmp_path: Path, ou: str) -> None:
    """The first entry a search returns reorders the names bonsai keeps as bytes (``RawNames.learn``);
    later searches, reads and pages with that attribute list, over entries whose attributes differ
    from the first one's, still get every named value exactly as stored."""
    wanted = ["title", "mobile", "employeeNumber", "uid", "description", "telephoneNumber"]
    async with LdapDirectory(slapd_settings(tmp_path, pool_size=1)) as one:
        await one.add(f"uid=first,{ou}", person("first", employeeNumber=["+1"]))
        await one.add(
            f"uid=second,{ou}",
            person("second", telephoneNumber=["+2"], mobile=["0x3"], title=["1_000"], description=["TRUE", " 5"]),
        )
        first = await collect(one.search(ou, "(uid=first)", attributes=wanted))
        assert first[0].get("employeeNumber") == ["+1"]
        raw = one._raw_for(wanted)
        assert raw is not None
        assert raw.ordered
        assert raw[:2] == [b"uid", b"employeeNumber"]
        paged = await collect(one.search(ou, "(uid=*)", attributes=wanted, page_size=1))
        assert sorted(e.text("uid") or "" for e in paged) == ["first", "second"]
        for entry in [
            *await collect(one.search(ou, "(uid=second)", attributes=wanted)),
            await one.get(f"uid=second,{ou}", wanted),
            *[e for e in paged if e.text("uid") == "second"],
        ]:
            assert entry is not None
            assert entry.get("telephoneNumber") == ["+2"]
            assert entry.get("mobile") == ["0x3"]
            assert entry.get("title") == ["1_000"]
            assert sorted(entry.get("description")) == [" 5", "TRUE"]


async def test_plain_search_asks_and_answers_as_bonsai_search_does(directory: LdapDirectory, ou: str) -> None:
    """``ReadableOnlyConnection.plain_search`` (bonsai's C search called directly, names encoded) returns
    what bonsai's ``search`` returns for the same arguments, and fails the same way past the size limit."""
    for i in range(3):
        await directory.add(f"uid=plain{i},{ou}", person(f"plain{i}", employeeNumber=[f"+{i}"]))
    wanted = ["uid", "employeeNumber", "cn", "entryUUID"]
    async with directory.pool.connection() as conn:
        for scope, ldap_filter in ((Scope.SUBTREE, "(uid=plain1)"), (Scope.ONELEVEL, "(uid=plain*)")):
            general = await conn.search(ou, int(scope), ldap_filter, wanted, timeout=5.0, sizelimit=10)
            direct = await conn.plain_search(ou, int(scope), ldap_filter, [n.encode() for n in wanted], 5.0, 10)
            assert [(str(e.dn), dict(e.items())) for e in direct] == [(str(e.dn), dict(e.items())) for e in general]
            assert len(direct) == (1 if scope is Scope.SUBTREE else 3)
        with pytest.raises(bonsai.SizeLimitError):
            await conn.search(ou, int(Scope.ONELEVEL), "(uid=plain*)", wanted, timeout=5.0, sizelimit=2)
        with pytest.raises(bonsai.SizeLimitError):
            await conn.plain_search(ou, int(Scope.ONELEVEL), "(uid=plain*)", [b"uid"], 5.0, 2)


# ---------------------------------------------------------------- hostile data
HOSTILE = [
    'comma, plus+ quote" backslash\\ less< greater> semi; equals= hash#',
    "#leading hash",
    " leading and trailing spaces ",
    "Zoë Ångström 日本語 😀",
    "nul\x00inside",
    "trailing backslash\\",
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_names_survive_add_search_rename(directory: LdapDirectory, ou: str, value: str) -> None:
    """Names with every DN special character, unicode and edge spaces: add, find by filter, rename, delete."""
    dn = dnlib.join(f"cn={dnlib.escape_value(value)}", ou)
    await directory.add(dn, {"objectClass": ["person"], "cn": [value], "sn": ["x"]})
    await directory.add(f"cn=decoy,{ou}", {"objectClass": ["person"], "cn": ["decoy"], "sn": ["x"]})
    found = await collect(directory.search(ou, f"(cn={escape_value(value)})"))
    assert len(found) == 1
    assert found[0].get("cn") == [value]
    assert dnlib.normalize(found[0].dn) == dnlib.normalize(dn)
    renamed = await directory.rename(dn, f"cn={dnlib.escape_value(value + ' 2')}")
    again = await directory.get(renamed)
    assert again is not None
    assert again.get("cn") == [value + " 2"]
    await directory.delete(renamed)


async def test_filter_metacharacters_match_exactly(directory: LdapDirectory, ou: str) -> None:
    """Filter values with * ( ) \\ NUL, escaped with the project's function, match only their entry."""
    values = ["a*b", "a(b)", "a\\b", "a\x00b", "a)(uid=*", "*"]
    decoys = ["axb", "ab", "a(b", "a", "b"]
    for i, value in enumerate(values + decoys):
        await directory.add(f"uid=f{i},{ou}", person(f"f{i}", description=[value]))
    for value in values:
        found = await collect(directory.search(ou, f"(description={escape_value(value)})"))
        assert [e.get("description") for e in found] == [[value]], value


# ---------------------------------------------------------------- TLS, SASL, pool
async def test_ldaps_and_starttls_verify_the_certificate(tmp_path: Path) -> None:
    """ldaps:// and StartTLS work with the CA file; without it, verification (on by default) refuses."""
    env = server_env()
    for settings in (
        slapd_settings(tmp_path, urls=(env["CLOUDPROV_SLAPD_LDAPS_URL"],)),
        slapd_settings(tmp_path, starttls=True),
    ):
        async with LdapDirectory(settings) as secure:
            assert await secure.get(secure.base_dn) is not None
            assert secure.settings.encrypted
    untrusted = slapd_settings(tmp_path, urls=(env["CLOUDPROV_SLAPD_LDAPS_URL"],), ca_file=None, retry={"attempts": 1})
    with pytest.raises(UnavailableError):
        async with LdapDirectory(untrusted):
            pass


async def test_sasl_external_over_ldapi(tmp_path: Path) -> None:
    """SASL EXTERNAL over the ldapi socket binds as the mapped identity and may write."""
    env = server_env()
    settings = slapd_settings(tmp_path, urls=(env["CLOUDPROV_SLAPD_LDAPI_URL"],), auth="external")
    async with LdapDirectory(settings) as local:
        dn = f"uid={unique()},ou=people,{local.base_dn}"
        await local.add(dn, person(dn.split(",")[0][4:]))
        await local.delete(dn)


async def test_pool_holds_one_connection_per_concurrent_operation(tmp_path: Path, ou: str) -> None:
    """80 concurrent reads through a pool of 4 open at most 4 connections and all succeed."""
    async with LdapDirectory(slapd_settings(tmp_path, pool_size=4)) as small:
        results = await asyncio.gather(*(small.get(ou) for _ in range(80)))
        assert all(r is not None for r in results)
        assert small.pool.opened <= 4


async def test_failover_to_the_next_url(tmp_path: Path) -> None:
    """A dead first URL is skipped and the next one serves."""
    env = server_env()
    settings = slapd_settings(tmp_path, urls=("ldap://127.0.0.1:1", env["CLOUDPROV_SLAPD_URL"]))
    async with LdapDirectory(settings) as failing_over:
        assert await failing_over.get(failing_over.base_dn) is not None
        assert failing_over.pool.last_url == env["CLOUDPROV_SLAPD_URL"]


# ---------------------------------------------------------------- faults
async def test_pool_recovers_after_slapd_restart(directory: LdapDirectory, ou: str) -> None:
    """After a restart every pooled connection is stale; the next reads reconnect transparently."""
    await asyncio.gather(*(directory.get(ou) for _ in range(8)))
    opened = directory.pool.opened
    restart_slapd()
    results = await asyncio.gather(*(directory.get(ou) for _ in range(8)))
    assert all(r is not None for r in results)
    assert directory.pool.opened > opened


async def test_restart_during_paged_search_fails_cleanly_then_recovers(directory: LdapDirectory, ou: str) -> None:
    """A restart between pages ends the stream with UnavailableError (never a silent short read); only
    the page asked for in advance, if it arrived before the restart, is read first."""
    await asyncio.gather(*(directory.add(f"uid=s{i:02d},{ou}", person(f"s{i:02d}")) for i in range(30)))
    seen = 0

    async def read_all() -> None:
        nonlocal seen
        async for page in directory.search(ou, "(uid=s*)", page_size=5):
            seen += len(page)
            if seen == 5:
                restart_slapd()

    with pytest.raises(UnavailableError):
        await read_all()
    assert seen in (5, 10)
    assert len(await collect(directory.search(ou, "(uid=s*)", page_size=5))) == 30


async def test_restart_during_write_burst_applies_each_write_whole_or_not(tmp_path: Path, ou: str) -> None:
    """Adds and two-attribute modifies racing a crash (SIGKILL) and restart: each succeeds, or fails with
    UnavailableError or WriteOutcomeUnknownError, and every entry on the server is complete (no
    half-applied write)."""
    outcomes: dict[str, str] = {}
    # a dying slapd still accepts TCP connections for a moment: keep the connect timeout short
    directory = LdapDirectory(slapd_settings(tmp_path, connect_timeout=1.0, operation_timeout=5.0))
    await directory.open()

    async def write(i: int) -> None:
        dn = f"uid=w{i:03d},{ou}"
        try:
            await directory.add(dn, person(f"w{i:03d}", mail=[f"w{i}@x"], description=["full"]))
            await directory.modify(
                dn,
                [Modification(ModOp.REPLACE, "sn", (f"sn{i}",)), Modification(ModOp.REPLACE, "title", (f"t{i}",))],
            )
            outcomes[dn] = "ok"
        except (UnavailableError, WriteOutcomeUnknownError):
            outcomes[dn] = "unavailable"

    async def crash_soon() -> None:
        for _ in range(200):
            if len(outcomes) >= 60:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(restart_slapd, hard=True)

    await asyncio.gather(crash_soon(), *(write(i) for i in range(400)))
    assert set(outcomes.values()) <= {"ok", "unavailable"}
    print("burst outcomes:", sorted(outcomes.values()).count("ok"), "ok of", len(outcomes))
    found = {dnlib.normalize(e.dn): e for e in await collect(directory.search(ou, "(uid=w*)"))}
    for dn, outcome in outcomes.items():
        entry = found.get(dnlib.normalize(dn))
        if outcome == "ok":
            assert entry is not None
        if entry is not None:
            assert entry.get("mail")
            assert entry.get("description") == ["full"]
            i = int(dnlib.rdn(dn).removeprefix("uid=w"))
            assert [entry.get("sn"), entry.get("title")] in ([["Test"], []], [[f"sn{i}"], [f"t{i}"]])
    assert await directory.get(ou) is not None  # the pool works again
    await directory.close()


async def test_operation_timeout_raises_and_connection_is_replaced(tmp_path: Path, ou: str) -> None:
    """A server that stops answering yields DirectoryTimeoutError within the limit; afterwards all is well."""
    settings = slapd_settings(tmp_path, operation_timeout=2, retry={"attempts": 1})
    async with LdapDirectory(settings) as impatient:
        assert await impatient.get(ou) is not None
        with Paused(slapd_pid()), pytest.raises(DirectoryTimeoutError):
            await impatient.get(ou)
        assert await impatient.get(ou) is not None


async def test_a_write_lost_in_flight_has_an_unknown_outcome_and_is_not_repeated(
    own_slapd: OwnSlapd, tmp_path: Path
) -> None:
    """An add sent to a server that stops answering raises WriteOutcomeUnknownError after one try (not
    UnavailableError, which callers retry); the server, resumed, applies it: repeating it would fail."""
    settings = own_slapd.settings(tmp_path, operation_timeout=1, pool_size=1)
    async with LdapDirectory(settings) as directory:
        ou = await make_ou(directory, directory.base_dn)
        dn = f"uid=inflight,{ou}"
        with Paused(own_slapd.pid):
            started = time.monotonic()
            with pytest.raises(WriteOutcomeUnknownError, match="may or may not have applied the write"):
                await directory.add(dn, person("inflight"))
            assert time.monotonic() - started < 2.5  # one try of 1 s: the write was not sent again
        for _ in range(50):
            if await directory.get(dn) is not None:
                break
            await asyncio.sleep(0.1)
        assert await directory.get(dn) is not None
        with pytest.raises(AlreadyExistsError):
            await directory.add(dn, person("inflight"))


async def test_an_error_result_on_a_later_page_is_raised_as_itself(tmp_path: Path, ou: str) -> None:
    """A non-privileged identity reading past slapd's size limit (olcSizeLimit 500) gets the pages before
    it, then LimitExceededError naming the limit (SCIM 4xx), not bonsai's SystemError; the pool goes on."""
    password = unique("pw")
    async with LdapDirectory(slapd_settings(tmp_path, pool_size=8)) as admin:
        await admin.add(f"uid=limited,{ou}", person("limited", userPassword=[password]))
        await asyncio.gather(*(admin.add(f"uid=n{i:03d},{ou}", person(f"n{i:03d}")) for i in range(510)))
    limited = slapd_settings(tmp_path, bind_dn=f"uid=limited,{ou}", password=password, pool_size=1)
    async with LdapDirectory(limited) as directory:
        seen: list[int] = []

        async def read_all() -> None:
            async for page in directory.search(ou, "(uid=n*)", attributes=["uid"], page_size=100):
                seen.append(len(page))  # noqa: PERF401 - the pages that arrived before the error

        with pytest.raises(LimitExceededError, match="sizeLimitExceeded"):
            await read_all()
        assert len(seen) >= 2
        assert sum(seen) <= 500
        assert [e.text("uid") for e in await collect(directory.search(ou, "(uid=n007)"))] == ["n007"]


async def test_waiting_for_a_pooled_connection_is_bounded(tmp_path: Path, ou: str) -> None:
    """With the only pooled connection held by a paged search between pages (as a SCIM cursor holds one),
    another operation fails with PoolExhaustedError (an UnavailableError: SCIM 503) after one
    operation_timeout, not retried, instead of waiting forever."""
    settings = slapd_settings(tmp_path, pool_size=1, operation_timeout=1)
    async with LdapDirectory(settings) as directory:
        for i in range(5):
            await directory.add(f"uid=c{i},{ou}", person(f"c{i}"))
        stream = directory.search(ou, "(uid=c*)", page_size=2)
        assert len(await anext(stream)) == 2  # the connection stays with the stream, the next page asked for
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError, match="no LDAP connection became free within 1 s"):
            await asyncio.wait_for(directory.get(ou), 10)
        assert time.monotonic() - started < 1.9  # one wait: the plugin's retry policy left it alone
        await stream.aclose()
        await asyncio.sleep(0.05)  # the page stream inside is closed by the event loop's finalizer
        assert await directory.get(ou) is not None


# ---------------------------------------------------------------- no busy waiting
async def test_waiting_on_a_stalled_server_uses_no_cpu(directory: LdapDirectory, ou: str) -> None:
    """A search pending for 2 s on a paused slapd costs < 0.3 s of CPU (bonsai's stock poll spins a core)."""
    assert await directory.get(ou) is not None
    with Paused(slapd_pid()):
        pending = asyncio.create_task(directory.get(ou))
        await asyncio.sleep(0.1)
        cpu = time.process_time()
        await asyncio.sleep(2.0)
        used = time.process_time() - cpu
        assert not pending.done()
    assert await pending is not None
    assert used < 0.3, f"{used:.2f} s of CPU while waiting"


async def test_idle_pool_uses_no_cpu(directory: LdapDirectory, ou: str) -> None:
    """An open pool with idle connections costs < 0.3 s of CPU over 2 s."""
    await asyncio.gather(*(directory.get(ou) for _ in range(8)))
    cpu = time.process_time()
    await asyncio.sleep(2.0)
    assert time.process_time() - cpu < 0.3


# ---------------------------------------------------------------- accesslog delta
async def test_accesslog_delta_reports_adds_modifies_renames_deletes(directory: LdapDirectory, ou: str) -> None:
    """Each write shows up once, in order; a deletion carries the entryUUID from reqOld."""
    start = (await directory.changes(None)).watermark
    dn = f"uid=delta,{ou}"
    await directory.add(dn, person("delta"))
    await directory.modify(dn, [Modification(ModOp.REPLACE, "sn", ("Changed",))])
    renamed = await directory.rename(dn, "uid=delta2")
    uuid_before = (await directory.get(renamed) or pytest.fail("renamed entry missing")).text("entryUUID")
    await directory.delete(renamed)
    result = await directory.changes(start)
    mine = [c for c in result.changes if dnlib.is_descendant(c.dn, ou)]
    assert [c.kind for c in mine] == [ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.RENAME, ChangeKind.DELETE]
    assert dnlib.normalize(mine[2].old_dn or "") == dnlib.normalize(dn)
    assert dnlib.normalize(mine[2].dn) == dnlib.normalize(renamed)
    deleted = mine[3].entry
    assert deleted is not None
    assert deleted.text("entryUUID") == uuid_before
    again = await directory.changes(result.watermark)
    assert [c for c in again.changes if dnlib.is_descendant(c.dn, ou)] == []


async def test_accesslog_delta_pages_with_limit(directory: LdapDirectory, ou: str) -> None:
    """limit caps a batch, ``more`` says so, and following the watermarks yields every change once."""
    start = (await directory.changes(None)).watermark
    for i in range(7):
        await directory.add(f"uid=l{i},{ou}", person(f"l{i}"))
    seen: list[str] = []
    mark, more, rounds = start, True, 0
    while more and rounds < 10:
        batch = await directory.changes(mark, limit=3)
        seen.extend(c.dn for c in batch.changes if dnlib.is_descendant(c.dn, ou))
        mark, more, rounds = batch.watermark, batch.more, rounds + 1
    assert [dnlib.rdn(d) for d in seen] == [f"uid=l{i}" for i in range(7)]


async def test_accesslog_delta_ignores_changes_outside_scope(tmp_path: Path, directory: LdapDirectory, ou: str) -> None:
    """With base_dns narrowed to one OU, writes elsewhere advance the watermark but yield nothing."""
    inside = await make_ou(directory, ou)
    outside = await make_ou(directory, ou)
    async with LdapDirectory(slapd_settings(tmp_path, base_dns=(inside,))) as scoped:
        start = (await scoped.changes(None)).watermark
        await scoped.add(f"uid=in,{inside}", person("in"))
        await scoped.add(f"uid=out,{outside}", person("out"))
        result = await scoped.changes(start)
        assert [dnlib.rdn(c.dn) for c in result.changes] == ["uid=in"]


async def test_scope_filter_applies_to_searches_and_the_accesslog(
    tmp_path: Path, directory: LdapDirectory, ou: str
) -> None:
    """scope_filter hides non-matching entries from every search in scope (not from the accesslog's own),
    and an entry that stops matching comes out of the delta as a deletion."""
    await directory.add(f"uid=kept,{ou}", person("kept", title=["in"]))
    await directory.add(f"uid=hidden,{ou}", person("hidden", title=["out"]))
    async with LdapDirectory(slapd_settings(tmp_path, base_dns=(ou,), scope_filter="(title=in)")) as scoped:
        assert [dnlib.rdn(e.dn) for e in await collect(scoped.search(ou, "(uid=*)"))] == ["uid=kept"]
        assert await collect(scoped.search(f"uid=hidden,{ou}", scope=Scope.BASE)) == []
        assert await scoped.get(f"uid=hidden,{ou}") is not None  # a read by DN is not filtered
        start = (await scoped.changes(None)).watermark
        await scoped.modify(f"uid=kept,{ou}", [Modification(ModOp.REPLACE, "title", ("out",))])
        await scoped.modify(f"uid=hidden,{ou}", [Modification(ModOp.REPLACE, "title", ("in",))])
        result = await scoped.changes(start)
        assert [(c.kind, dnlib.rdn(c.dn)) for c in result.changes] == [
            (ChangeKind.DELETE, "uid=kept"),
            (ChangeKind.MODIFY, "uid=hidden"),
        ]
        kept = result.changes[0].entry
        assert kept is not None
        assert kept.text("entryUUID")


async def test_accesslog_unknown_watermark_is_expired(directory: LdapDirectory) -> None:
    """A watermark whose record is not in the log (purged) cannot be honoured."""
    with pytest.raises(WatermarkExpiredError):
        await directory.changes("accesslog:19700101000000.000001Z")
    with pytest.raises(WatermarkExpiredError):
        await directory.changes("usn:somewhere-else")


async def test_accesslog_refuses_watermarks_it_did_not_write(directory: LdapDirectory) -> None:
    """Values after ``accesslog:`` that are not the plugin's (NUL, DN syntax, bad dates, huge) are expired
    watermarks (SCIM 410) that never reach a DN or a filter; a reqEnd not the record's is expired too."""
    for value in ["\x00", "x,y=z", "", "a\\", "==", "9" * 100_000, "20241399000000.000000Z", "0:0"]:
        with pytest.raises(WatermarkExpiredError) as raised:
            await directory.changes(f"accesslog:{value}")
        assert "reqStart=" not in str(raised.value)
        assert len(str(raised.value)) < 200
    mark = (await directory.changes(None)).watermark
    start = mark.removeprefix("accesslog:").partition(":")[0]
    if start != "0":
        with pytest.raises(WatermarkExpiredError):
            await directory.changes(f"accesslog:{start}:{start}")


async def test_accesslog_reads_the_older_watermark(directory: LdapDirectory, ou: str) -> None:
    """A watermark of the older form (``accesslog:<reqStart>``) still reads what came after it."""
    await directory.add(f"uid=before,{ou}", person("before"))
    mark = (await directory.changes(None)).watermark
    older = mark.partition(":")[0] + ":" + mark.removeprefix("accesslog:").partition(":")[0]
    await directory.add(f"uid=after,{ou}", person("after"))
    result = await directory.changes(older)
    assert [dnlib.rdn(c.dn) for c in result.changes if dnlib.is_descendant(c.dn, ou)] == ["uid=after"]


async def test_accesslog_reports_a_slow_write_that_commits_after_a_later_quick_one(
    own_slapd: OwnSlapd, tmp_path: Path
) -> None:
    """A modify that began before a quick add but committed after it (slapd parses 150,000 values first)
    is reported by the next poll after the one that saw the add: none is skipped, commit order kept."""
    async with LdapDirectory(own_slapd.settings(tmp_path)) as directory:
        ou = await make_ou(directory, directory.base_dn)
        group = f"cn=big,{ou}"
        await directory.add(group, {"objectClass": ["groupOfNames"], "cn": ["big"], "member": [f"uid=m,{ou}"]})
        mark = (await directory.changes(None)).watermark
        members = tuple(f"uid=x{i:06d},{ou}" for i in range(150_000))
        slow = asyncio.create_task(directory.modify(group, [Modification(ModOp.ADD, "member", members)]))
        await asyncio.sleep(0.3)  # sent, and slapd busy parsing it
        await directory.add(f"uid=quick,{ou}", person("quick"))
        assert not slow.done(), "the modify was not slow enough to overlap the add"
        first = await directory.changes(mark)
        await slow
        second = await directory.changes(first.watermark)
        seen = [(c.kind, dnlib.rdn(c.dn)) for c in [*first.changes, *second.changes]]
        assert seen == [(ChangeKind.ADD, "uid=quick"), (ChangeKind.MODIFY, "cn=big")]
        log = {
            dnlib.rdn(e.text("reqDN") or ""): e
            for e in await collect(
                directory.search(
                    "cn=accesslog", "(reqType=*)", scope=Scope.ONELEVEL, attributes=["reqDN", "reqStart", "reqEnd"]
                )
            )
            if dnlib.is_descendant(e.text("reqDN") or "", ou)
        }
        modify, add = log["cn=big"], log["uid=quick"]
        assert (modify.text("reqStart") or "") < (add.text("reqStart") or "")  # began first ...
        assert (modify.text("reqEnd") or "") > (add.text("reqEnd") or "")  # ... and was logged last


# ---------------------------------------------------------------- the Directory behaviour suite
class TestSlapdBehaviour(DirectoryBehaviour):
    """The Directory behaviour suite against slapd (inetOrgPerson / groupOfNames)."""

    @pytest_asyncio.fixture
    async def directory(self, tmp_path: Path) -> AsyncIterator[Directory]:
        async with LdapDirectory(slapd_settings(tmp_path)) as opened:
            yield opened

    @pytest.fixture
    def shapes(self) -> Shapes:
        return OpenLdapShapes()
