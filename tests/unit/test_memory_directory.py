"""The memory directory: the Directory behaviour suite (both flavors) plus memory-only features."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from plugins import dn as dnlib
from plugins.directory import (
    AttrValue,
    ChangeKind,
    ConstraintError,
    Directory,
    DirectoryTimeoutError,
    Entry,
    Modification,
    ModOp,
    NotAllowedError,
    UnavailableError,
)
from plugins.ldapfilter import escape_value
from plugins.memory import (
    DirectoryClosedError,
    FaultSettings,
    FixedLatency,
    ForeignWatermarkError,
    MemoryDirectory,
    MemorySettings,
    WatermarkExpiredError,
)
from plugins.memory.ldif import LdifError, parse_ldif, write_ldif
from tests.contract.directory_suite import (
    ActiveDirectoryShapes,
    DirectoryBehaviour,
    OpenLdapShapes,
    Shapes,
    texts,
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


# ----------------------------------------------------------------------------------------- helpers


class RecordingSleep:
    """An injected sleep that records the delays it is asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fixed_clock() -> datetime:
    return datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


PERSON = {"objectClass": ["inetOrgPerson"], "uid": ["x"], "cn": ["X"], "sn": ["X"]}


async def everything(directory: MemoryDirectory, ldap_filter: str = "(objectClass=*)") -> list[Entry]:
    return [entry async for page in directory.search(directory.base_dn, ldap_filter) for entry in page]


# ----------------------------------------------------------------------------------------- seeding


async def test_generated_seed_is_deterministic_and_consistent() -> None:
    """The same seed settings give the same users and groups, and every group member exists."""
    settings = MemorySettings(seed_users=25, seed_groups=3, seed=7)
    async with MemoryDirectory(settings) as first, MemoryDirectory(settings) as second:
        users = await everything(first, "(objectClass=inetOrgPerson)")
        assert len(users) == 25
        assert [(e.dn, dict(e.attributes)) for e in users] == [
            (e.dn, dict(e.attributes)) for e in await everything(second, "(objectClass=inetOrgPerson)")
        ]
        assert users[0].dn == "uid=user00001,ou=people,dc=example,dc=com"
        for name in ("givenName", "sn", "cn", "displayName", "mail", "title", "telephoneNumber", "employeeNumber"):
            assert users[0].first(name), name
        groups = await everything(first, "(objectClass=groupOfNames)")
        assert [g.dn for g in groups] == [f"cn=group000{n},ou=groups,dc=example,dc=com" for n in (1, 2, 3)]
        for group in groups:
            assert group.get("member")
            for member in group.get("member"):
                assert await first.get(str(member)) is not None
    async with MemoryDirectory(MemorySettings(seed_users=25, seed=8)) as other:
        assert [dict(e.attributes) for e in await everything(other, "(uid=user00001)")] != [
            dict(e.attributes) for e in users[:1]
        ]


async def test_ad_flavor_seed_has_ad_shaped_entries() -> None:
    """flavor ad generates user/group entries with sAMAccountName, UPN, userAccountControl and binary ids."""
    async with MemoryDirectory(MemorySettings(flavor="ad", seed_users=2, seed_groups=1)) as directory:
        user = await directory.get("CN=user00002,OU=people,dc=example,dc=com")
        assert user is not None
        assert user.get("objectClass")[-1] == "user"
        assert user.first("sAMAccountName") == "user00002"
        assert user.first("userPrincipalName") == "user00002@example.com"
        assert user.first("userAccountControl") == "512"
        guid = user.first("objectGUID")
        assert isinstance(guid, bytes)
        assert len(guid) == 16
        sid = user.first("objectSid")
        assert isinstance(sid, bytes)
        assert sid[:2] == b"\x01\x05"
        [found] = await everything(directory, f"(objectGUID={escape_value(guid)})")
        assert found.dn == user.dn
        [group] = await everything(directory, "(&(objectClass=group)(groupType:1.2.840.113556.1.4.803:=2147483648))")
        assert group.first("sAMAccountName") == "group0001"


LDIF_SEED = """\
version: 1
# a comment that
  continues here

dn: ou=people,dc=example,dc=com
changetype: add
objectClass: organizationalUnit
ou: people

dn: uid=renee,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: renee
cn:: UmVuw6ll
sn: Long
 folded
description: first
description: second
"""


async def test_ldif_seed_is_loaded(tmp_path: Path) -> None:
    """An LDIF seed file with comments, folded lines, base64 and changetype add is loaded at open."""
    path = tmp_path / "seed.ldif"
    path.write_text(LDIF_SEED, encoding="utf-8")
    async with MemoryDirectory(MemorySettings(seed_ldif=path)) as directory:
        entry = await directory.get("uid=renee,ou=people,dc=example,dc=com")
        assert entry is not None
        assert entry.first("cn") == "Renée"
        assert entry.first("sn") == "Longfolded"
        assert entry.get("description") == ["first", "second"]
        assert entry.first("entryUUID")


def test_ldif_rejects_other_change_types_naming_the_line() -> None:
    """A seed file with changetype modify fails with an LdifError that names the line."""
    with pytest.raises(LdifError, match="line 2: changetype 'modify'"):
        list(parse_ldif("dn: cn=x,dc=example,dc=com\nchangetype: modify\nreplace: cn\n"))


LDIF_VALUES = st.lists(st.text(min_size=1), min_size=1, max_size=3)
LDIF_ATTRIBUTES = st.fixed_dictionaries(
    {"cn": LDIF_VALUES},
    optional={"description": LDIF_VALUES, "objectGUID": st.lists(st.binary(min_size=1), min_size=1, max_size=2)},
)
LDIF_DNS = st.text(min_size=1).map(lambda value: f"cn={dnlib.escape_value(value)},dc=example,dc=com")


@given(st.lists(st.tuples(LDIF_DNS, LDIF_ATTRIBUTES), max_size=4))
def test_ldif_write_then_read_round_trips(records: list[tuple[str, dict[str, list[AttrValue]]]]) -> None:
    """Whatever the values (spaces, colons, non-ASCII, newlines, bytes), writing then reading LDIF gives them back."""
    stream = io.StringIO()
    assert write_ldif(records, stream) == len(records)
    assert all(len(line) <= 76 for line in stream.getvalue().splitlines())
    assert list(parse_ldif(stream.getvalue())) == records


# ----------------------------------------------------------------------------------------- latency and faults


async def test_fixed_latency_awaits_the_injected_sleep_once_per_round_trip() -> None:
    """Each operation awaits the configured delay; a paged search pays it once per page."""
    sleep = RecordingSleep()
    settings = MemorySettings(latency=FixedLatency(seconds=0.25), seed_users=5, page_size_limit=2)
    async with MemoryDirectory(settings, sleep=sleep) as directory:
        await directory.get(directory.base_dn)
        assert sleep.delays == [0.25]
        pages = [page async for page in directory.search(directory.base_dn, "(objectClass=inetOrgPerson)")]
        assert [len(page) for page in pages] == [2, 2, 1]
        assert sleep.delays == [0.25] * 4


async def test_latency_distribution_is_seeded_and_bounded() -> None:
    """A uniform latency draws repeatable delays within its bounds for a given fault seed."""
    settings = MemorySettings.model_validate(
        {"latency": {"kind": "uniform", "low": 0.01, "high": 0.02}, "faults": {"seed": 3}}
    )
    runs = []
    for _ in range(2):
        sleep = RecordingSleep()
        async with MemoryDirectory(settings, sleep=sleep) as directory:
            for _ in range(20):
                await directory.ping()
        runs.append(sleep.delays)
    assert runs[0] == runs[1]
    assert all(0.01 <= delay <= 0.02 for delay in runs[0])
    assert len(set(runs[0])) > 1


@pytest.mark.parametrize(
    "latency",
    [
        {"kind": "normal", "mean": 0.01, "stddev": 0.05},
        {"kind": "lognormal", "median": 0.01, "sigma": 1.0},
        {"kind": "exponential", "mean": 0.01},
    ],
)
async def test_other_distributions_never_sleep_a_negative_time(latency: dict[str, object]) -> None:
    """Every latency distribution yields non-negative delays (a wide normal is clipped at zero)."""
    sleep = RecordingSleep()
    async with MemoryDirectory(MemorySettings.model_validate({"latency": latency}), sleep=sleep) as directory:
        for _ in range(200):
            await directory.ping()
    assert len(sleep.delays) == 200
    assert min(sleep.delays) >= 0


async def test_injected_errors_raise_unavailable_and_write_nothing() -> None:
    """With error_rate 1 every call raises UnavailableError (recoverable) and no write happens."""
    directory = MemoryDirectory(MemorySettings(faults=FaultSettings(error_rate=1.0)))
    async with directory:
        with pytest.raises(UnavailableError, match="injected failure"):
            await directory.add(f"uid=x,{directory.base_dn}", PERSON)
        assert len(directory) == 1
        assert issubclass(UnavailableError, directory.recoverable_errors)
        assert directory.stats.errors == 1


async def test_disconnect_closes_the_connection_until_the_next_call() -> None:
    """A disconnect raises UnavailableError and the following call reconnects first."""
    async with MemoryDirectory(MemorySettings(faults=FaultSettings(disconnect_rate=1.0))) as directory:
        for _ in range(2):
            with pytest.raises(UnavailableError, match="disconnect"):
                await directory.ping()
        assert directory.stats.disconnects == 2
        assert directory.stats.reconnects == 1


async def test_timeout_sleeps_then_raises_directory_timeout() -> None:
    """A timed-out call awaits timeout_seconds on the injected sleep, then raises DirectoryTimeoutError."""
    sleep = RecordingSleep()
    faults = FaultSettings(timeout_rate=1.0, timeout_seconds=3.5)
    async with MemoryDirectory(MemorySettings(faults=faults), sleep=sleep) as directory:
        with pytest.raises(DirectoryTimeoutError):
            await directory.get(directory.base_dn)
    assert sleep.delays == [3.5]


async def test_faults_are_repeatable_for_a_seed() -> None:
    """The same fault seed fails the same calls; another seed fails different ones."""

    async def outcomes(seed: int) -> list[bool]:
        faults = FaultSettings(error_rate=0.3, seed=seed)
        results = []
        async with MemoryDirectory(MemorySettings(faults=faults)) as directory:
            for _ in range(60):
                try:
                    await directory.ping()
                except UnavailableError:
                    results.append(False)
                else:
                    results.append(True)
        return results

    first = await outcomes(11)
    assert first == await outcomes(11)
    assert first != await outcomes(12)
    assert 5 < first.count(False) < 35


async def test_closed_directory_refuses_calls_and_keeps_its_data() -> None:
    """Calls before open or after close raise DirectoryClosedError; reopening finds the data again."""
    directory = MemoryDirectory()
    with pytest.raises(DirectoryClosedError):
        await directory.ping()
    async with directory:
        await directory.add(f"uid=x,{directory.base_dn}", PERSON)
    with pytest.raises(DirectoryClosedError):
        await directory.get(f"uid=x,{directory.base_dn}")
    async with directory:
        assert await directory.get(f"uid=x,{directory.base_dn}") is not None


# ----------------------------------------------------------------------------------------- change log


async def test_watermark_from_another_instance_is_refused() -> None:
    """A watermark issued by another instance (or malformed) raises ForeignWatermarkError: full sync."""
    async with MemoryDirectory() as first, MemoryDirectory() as second:
        watermark = (await first.changes(None)).watermark
        with pytest.raises(ForeignWatermarkError, match="another memory-directory instance"):
            await second.changes(watermark)
        with pytest.raises(WatermarkExpiredError, match="full sync"):
            await second.changes("ldap:whatever")


async def test_expired_watermark_asks_for_a_full_sync() -> None:
    """Once the change log has dropped changes after a watermark, changes() raises WatermarkExpiredError."""
    async with MemoryDirectory(MemorySettings(changelog_limit=3)) as directory:
        watermark = (await directory.changes(None)).watermark
        for index in range(3):
            await directory.add(f"uid=u{index},{directory.base_dn}", {**PERSON, "uid": [f"u{index}"]})
        assert len((await directory.changes(watermark)).changes) == 3
        await directory.add(f"uid=u9,{directory.base_dn}", {**PERSON, "uid": ["u9"]})
        with pytest.raises(WatermarkExpiredError, match="do a full sync"):
            await directory.changes(watermark)


async def test_changes_page_with_limit_and_more() -> None:
    """changes() returns at most limit changes, says when more remain, and resumes after the last one."""
    async with MemoryDirectory() as directory:
        watermark = (await directory.changes(None)).watermark
        for index in range(5):
            await directory.add(f"uid=u{index},{directory.base_dn}", {**PERSON, "uid": [f"u{index}"]})
        first = await directory.changes(watermark, limit=2)
        assert [c.dn for c in first.changes] == [f"uid=u{i},dc=example,dc=com" for i in (0, 1)]
        assert first.more
        rest = await directory.changes(first.watermark, limit=10)
        assert [c.dn for c in rest.changes] == [f"uid=u{i},dc=example,dc=com" for i in (2, 3, 4)]
        assert not rest.more
        assert (await directory.changes(rest.watermark)).changes == []


async def test_rename_of_a_container_reports_every_moved_entry() -> None:
    """Renaming an OU logs one RENAME for it and one for each entry that moved with it."""
    async with MemoryDirectory() as directory:
        base = directory.base_dn
        await directory.add(f"ou=a,{base}", {"objectClass": ["organizationalUnit"], "ou": ["a"]})
        await directory.add(f"uid=x,ou=a,{base}", PERSON)
        watermark = (await directory.changes(None)).watermark
        await directory.rename(f"ou=a,{base}", "ou=b")
        changes = (await directory.changes(watermark)).changes
        assert [(c.kind, c.old_dn, c.dn) for c in changes] == [
            (ChangeKind.RENAME, f"ou=a,{base}", f"ou=b,{base}"),
            (ChangeKind.RENAME, f"uid=x,ou=a,{base}", f"uid=x,ou=b,{base}"),
        ]


# ----------------------------------------------------------------------------------------- LDAP rules


async def test_equality_filters_are_planned_through_the_index() -> None:
    """Equality, AND and all-equality OR filters use the index; a substring needs a scan."""
    async with MemoryDirectory(MemorySettings(seed_users=2000)) as directory:
        assert directory.explain("(uid=user00042)") == 1
        assert directory.explain("(&(objectClass=inetOrgPerson)(uid=USER00042))") == 1
        assert directory.explain("(|(uid=user00001)(uid=user00002))") == 2
        assert directory.explain("(uid=user0004*)") is None
        assert directory.explain("(|(uid=user00001)(cn=*a*))") is None
        [found] = await everything(directory, "(&(objectClass=inetOrgPerson)(uid=USER00042))")
        assert found.first("uid") == "user00042"


async def test_operational_attributes_are_read_only_and_hidden_by_default() -> None:
    """entryUUID and timestamps cannot be written, only the anchor shows by default, '+' shows the rest."""
    async with MemoryDirectory(clock=fixed_clock) as directory:
        dn = f"uid=x,{directory.base_dn}"
        with pytest.raises(ConstraintError, match="maintained by the directory"):
            await directory.add(dn, {**PERSON, "entryUUID": ["00000000-0000-4000-8000-000000000000"]})
        await directory.add(dn, PERSON)
        with pytest.raises(ConstraintError, match="noUserModification"):
            await directory.modify(dn, [Modification(ModOp.REPLACE, "modifyTimestamp", ("20000101000000Z",))])
        plain = await directory.get(dn)
        assert plain is not None
        assert "entryUUID" in plain.attributes
        assert "createTimestamp" not in plain.attributes
        operational = await directory.get(dn, ["+"])
        assert operational is not None
        assert operational.first("createTimestamp") == "20240102030405Z"
        assert "uid" not in operational.attributes
        assert (await everything(directory, "(createTimestamp>=20240101000000Z)"))[-1].dn == dn


async def test_rdn_value_missing_from_the_entry_depends_on_flavor() -> None:
    """openldap refuses an entry without its RDN value (namingViolation); ad adds the value itself."""
    async with MemoryDirectory() as directory:
        with pytest.raises(ConstraintError, match="namingViolation"):
            await directory.add(f"uid=other,{directory.base_dn}", PERSON)
    async with MemoryDirectory(MemorySettings(flavor="ad")) as directory:
        await directory.add(f"CN=Named,{directory.base_dn}", {"objectClass": ["user"], "sn": ["x"]})
        assert texts(await directory.get(f"cn=named,{directory.base_dn}"), "cn") == ["Named"]


async def test_modify_cannot_remove_the_rdn_value_or_object_class() -> None:
    """Removing the naming value raises NotAllowedError; removing objectClass raises ConstraintError."""
    async with MemoryDirectory() as directory:
        dn = f"uid=x,{directory.base_dn}"
        await directory.add(dn, PERSON)
        with pytest.raises(NotAllowedError, match="notAllowedOnRDN"):
            await directory.modify(dn, [Modification(ModOp.DELETE, "uid")])
        with pytest.raises(ConstraintError, match="objectClass"):
            await directory.modify(dn, [Modification(ModOp.DELETE, "objectClass")])


async def test_page_size_is_clamped_to_the_server_limit() -> None:
    """A page size above page_size_limit yields pages of the limit, like AD's MaxPageSize."""
    async with MemoryDirectory(MemorySettings(seed_users=7, page_size_limit=3)) as directory:
        pages = [
            len(page)
            async for page in directory.search(directory.base_dn, "(objectClass=inetOrgPerson)", page_size=100)
        ]
        assert pages == [3, 3, 1]


async def test_a_search_that_fills_exactly_one_page_is_one_round_trip() -> None:
    """As many entries as the page size come as one page, after one round trip; one more makes two."""
    sleep = RecordingSleep()
    settings = MemorySettings(latency=FixedLatency(seconds=0.25), seed_users=4, page_size_limit=100)
    async with MemoryDirectory(settings, sleep=sleep) as directory:
        people = "(objectClass=inetOrgPerson)"
        assert [len(page) async for page in directory.search(directory.base_dn, people, page_size=4)] == [4]
        assert sleep.delays == [0.25]
        assert [len(page) async for page in directory.search(directory.base_dn, people, page_size=3)] == [3, 1]
        assert sleep.delays == [0.25] * 3


def test_settings_are_strict_and_documented() -> None:
    """Settings reject unknown keys, coerce a bare latency number, and describe every field."""
    with pytest.raises(ValidationError):
        MemorySettings.model_validate({"flavour": "ad"})
    with pytest.raises(ValidationError):
        MemorySettings(base_dn="not a dn")
    with pytest.raises(ValidationError):
        FaultSettings(error_rate=0.6, timeout_rate=0.6)
    assert MemorySettings.model_validate({"latency": 0.5}).latency == FixedLatency(seconds=0.5)
    for model in (MemorySettings, FaultSettings):
        assert all(info.description for info in model.model_fields.values()), model
