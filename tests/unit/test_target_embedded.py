"""The embedded store target: the Target behaviour suite, plus batches, bulk creates, history and URLs."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from service.provisioning.targets.base import TargetConflictError, TargetError
from service.provisioning.targets.embedded import (
    EmbeddedSettings,
    EmbeddedTarget,
    EmbeddedTargetError,
    embedded_path,
    new_id,
)
from service.provisioning.targets.registry import TargetSettingsError, create_target
from tests.contract.target_suite import WORK_EMAIL, TargetBehaviour, fresh, user


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[EmbeddedTarget]:
    async with EmbeddedTarget(EmbeddedSettings(path=str(tmp_path / "target.db"), page_size=2)) as opened:
        yield opened


class TestEmbeddedTarget(TargetBehaviour):
    unique_anchor: ClassVar[bool] = True
    rejects_user_without_name: ClassVar[bool] = False


async def test_batch_commits_once_at_exit(tmp_path: Path) -> None:
    """Writes inside ``batch()`` are invisible to another connection until the batch ends, then all there."""
    path = tmp_path / "batch.db"
    async with EmbeddedTarget(EmbeddedSettings(path=str(path))) as target:
        async with target.batch():
            for i in range(5):
                await target.create("User", f"a{i}", user(f"u{i}"))
            with sqlite3.connect(path) as other:
                assert other.execute("SELECT count(*) FROM objects").fetchone() == (0,)
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM objects").fetchone() == (5,)


async def test_batch_rolls_back_when_its_block_raises(target: EmbeddedTarget) -> None:
    """An exception leaving ``batch()`` undoes every write made inside it."""

    async def failing_batch() -> None:
        async with target.batch():
            await target.create("User", "a1", user("u1"))
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        await failing_batch()
    assert await target.get_by_anchor("User", "a1") is None
    assert (await target.counts())["objects"] == {}


async def test_failed_operation_in_a_batch_is_undone_alone(target: EmbeddedTarget) -> None:
    """A conflict inside a batch fails that create only; the batch's other writes commit."""
    async with target.batch():
        await target.create("User", "a1", user("u1"))
        with pytest.raises(TargetConflictError):
            await target.create("User", "a1", user("u2"))
        await target.create("User", "a2", user("u2"))
    assert {obj.anchor async for obj in target.objects("User")} == {"a1", "a2"}


async def test_create_many_is_all_or_nothing(target: EmbeddedTarget) -> None:
    """``create_many`` creates every object, or none when one anchor is taken (named in the error)."""
    created = await target.create_many("User", [(f"a{i}", user(f"u{i}")) for i in range(50)])
    assert len({obj.id for obj in created}) == 50
    assert (await target.counts())["objects"] == {"User": 50}
    with pytest.raises(TargetConflictError, match=r"already provisioned: a7$"):
        await target.create_many("User", [("new1", user("new1")), ("a7", user("other"))])
    assert await target.get_by_anchor("User", "new1") is None
    with pytest.raises(TargetConflictError):
        await target.create_many("User", [("dup", user("d1")), ("dup", user("d2"))])
    assert await target.get_by_anchor("User", "dup") is None


async def test_user_name_is_unique_ignoring_case(target: EmbeddedTarget) -> None:
    """Two users may not share a ``userName`` spelled in another case; groups are not concerned."""
    await target.create("User", "a1", user("Ada"))
    with pytest.raises(TargetConflictError):
        await target.create("User", "a2", user("ADA"))
    await target.create("Group", "g1", {"displayName": "Ada", "userName": "Ada"})


async def test_user_name_uniqueness_folds_case_as_scim_filters_do(target: EmbeddedTarget) -> None:
    """Non-ASCII letters fold too (SQLite's ``lower()`` folds ASCII only); what directories tell apart,
    ``ß`` and ``ss``, the long s and ``s``, stays apart; the error names the name."""
    emile = await target.create("User", "a1", user("Émile.Ørsted"))
    with pytest.raises(TargetConflictError, match=r"taken, ignoring case: ÉMILE\.ØRSTED$"):
        await target.create("User", "a2", user("ÉMILE.ØRSTED"))
    with pytest.raises(TargetConflictError, match=r"taken, ignoring case: émile\.ørsted$"):
        await target.create_many("User", [("a3", user("zoë")), ("a4", user("émile.ørsted"))])
    assert await target.get_by_anchor("User", "a3") is None
    await target.create("User", "a5", user("straße"))
    await target.create("User", "a6", user("STRASSE"))
    await target.create("User", "a7", user("\N{LATIN SMALL LETTER LONG S}am"))
    await target.create("User", "a8", user("sam"))
    zoe = await target.create("User", "a9", user("Zoë"))
    with pytest.raises(TargetConflictError, match=r"userName 'émile.ØRSTED' \(ignoring case\)"):
        await target.update(zoe, {"userName": "émile.ØRSTED"})
    renamed = await target.update(emile, {"userName": "Émile.Orsted"})
    await target.update(zoe, {"userName": "ÉMILE.ØRSTED"})
    assert renamed.attributes["userName"] == "Émile.Orsted"


#: The ``objects`` table and userName index of stores written before ``user_name_key`` existed.
OLD_OBJECTS = """
CREATE TABLE objects (id TEXT PRIMARY KEY, resource_type TEXT NOT NULL, anchor TEXT, attributes TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE UNIQUE INDEX objects_user_name ON objects (lower(json_extract(attributes, '$.userName')))
    WHERE resource_type = 'User';
"""


def old_store(path: Path, *names: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(OLD_OBJECTS)
        connection.executemany(
            "INSERT INTO objects VALUES (?, 'User', ?, json_object('userName', ?), 1, 'then', 'then')",
            [(f"id{i}", f"a{i}", name) for i, name in enumerate(names)],
        )


async def test_an_older_store_gets_folded_user_names_when_opened(tmp_path: Path) -> None:
    """A store from before ``user_name_key`` opens with every User's key filled in and the ASCII-only
    index gone, so non-ASCII case variants of its names are refused from then on."""
    path = tmp_path / "old.db"
    old_store(path, "Émile", "bob")
    async with EmbeddedTarget(EmbeddedSettings(path=str(path))) as target:
        with pytest.raises(TargetConflictError, match="éMILE"):
            await target.create("User", "new", user("éMILE"))
        await target.create("User", "new", user("Bobby"))
    with sqlite3.connect(path) as connection:
        indexes = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        keys = dict(connection.execute("SELECT anchor, user_name_key FROM objects"))
    assert "objects_user_name" not in indexes
    assert keys == {"a0": "émile", "a1": "bob", "new": "bobby"}


async def test_an_older_store_with_names_that_now_clash_says_which(tmp_path: Path) -> None:
    """Names the ASCII-only index let in twice stop the store from opening with unique userNames, with a
    message naming them and the setting that opens it anyway."""
    path = tmp_path / "old.db"
    old_store(path, "Émile", "éMILE", "ada")
    with pytest.raises(TargetError, match=r"share a userName ignoring case \(Émile = éMILE\).*unique_user_name: false"):
        await EmbeddedTarget(EmbeddedSettings(path=str(path))).open()
    async with EmbeddedTarget(EmbeddedSettings(path=str(path), unique_user_name=False)) as target:
        assert (await target.counts())["objects"] == {"User": 3}
        await target.create("User", "again", user("ÉMILE"))


async def test_history_records_every_change_with_a_diff(target: EmbeddedTarget) -> None:
    """Create, update, membership, disable and delete each leave one history row with old and new values."""
    ada = await target.create("User", "a1", user("ada", title="Engineer"))
    group = await target.create("Group", "g1", {"displayName": "Staff"})
    await target.update(ada, {"title": "Lead", "displayName": ada.attributes["displayName"]})
    await target.update(ada, {"title": "Lead"})  # nothing changes: no row
    await target.change_members(group, add=[ada.id], remove=[])
    await target.change_members(group, add=[ada.id], remove=["absent"])  # nothing changes: no row
    await target.disable(ada)
    await target.delete(ada)
    rows = await target.history(ada.id)
    assert [row["action"] for row in rows] == ["create", "update", "update", "delete"]
    assert rows[0]["diff"] == {"anchor": [None, "a1"], "attributes": [None, user("ada", title="Engineer")]}
    assert rows[1]["diff"] == {"title": ["Engineer", "Lead"]}
    assert rows[2]["diff"] == {"active": [None, False]}
    assert rows[3]["diff"]["anchor"] == ["a1", None]
    assert rows[3]["diff"]["attributes"][0]["title"] == "Lead"
    members = await target.history(group.id)
    assert [row["diff"] for row in members if row["action"] == "members"] == [
        {"members": {"added": [ada.id], "removed": []}}
    ]


async def test_deleting_a_user_removes_its_memberships(target: EmbeddedTarget) -> None:
    """A deleted user is no longer a member of any group (no dangling membership rows)."""
    ada = await target.create("User", "a1", user("ada"))
    bob = await target.create("User", "a2", user("bob"))
    group = await target.create("Group", "g1", {"displayName": "Staff"})
    await target.change_members(group, add=[ada.id, bob.id], remove=[])
    await target.delete(ada)
    found = await target.get_by_anchor("Group", "g1")
    assert found is not None
    assert found.members == {bob.id}
    assert (await target.counts())["memberships"] == 1


async def test_counts_and_export(target: EmbeddedTarget) -> None:
    """``counts`` totals objects, inactive objects, memberships and history; ``export`` lists them all."""
    ada = await target.create("User", "a1", user("ada"))
    bob = await target.create("User", "a2", user("bob"))
    group = await target.create("Group", "g1", {"displayName": "Staff"})
    await target.change_members(group, add=[ada.id, bob.id], remove=[])
    await target.disable(bob)
    counts = await target.counts()
    assert counts == {
        "objects": {"User": 2, "Group": 1},
        "inactive": {"User": 1, "Group": 0},
        "memberships": 2,
        "history": 5,
    }
    exported = await target.export()
    assert [(item["resourceType"], item["anchor"], item["active"]) for item in exported] == [
        ("Group", "g1", True),
        ("User", "a1", True),
        ("User", "a2", False),
    ]
    assert exported[0]["members"] == sorted([ada.id, bob.id])
    assert exported[1]["attributes"] == user("ada")


async def test_find_by_attribute_with_quoted_path_and_booleans(target: EmbeddedTarget) -> None:
    """Attribute keys with quotes (typed multi-valued paths) and boolean values are found exactly."""
    ada = await target.create("User", "a1", user("ada", **{WORK_EMAIL: "ada@example.com", "active": True}))
    bob = await target.create("User", "a2", user("bob", active=False))
    found = await target.find_by_attribute("User", WORK_EMAIL, "ada@example.com")
    assert found is not None
    assert found.id == ada.id
    assert await target.find_by_attribute("User", WORK_EMAIL, "ADA@example.com") is None
    inactive = await target.find_by_attribute("User", "active", False)
    assert inactive is not None
    assert inactive.id == bob.id
    assert bob.active is False


async def test_store_survives_reopen_in_wal_mode(tmp_path: Path) -> None:
    """Objects and memberships written before close are there after reopening; the file is in WAL mode."""
    path = tmp_path / "t.db"
    async with EmbeddedTarget(EmbeddedSettings(path=str(path))) as target:
        ada = await target.create("User", "a1", user("ada"))
        group = await target.create("Group", "g1", {"displayName": "Staff"})
        await target.change_members(group, add=[ada.id], remove=[])
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    async with EmbeddedTarget(EmbeddedSettings(path=str(path))) as target:
        found = await target.get_by_anchor("Group", "g1")
        assert found is not None
        assert found.members == {ada.id}


async def test_use_before_open_fails_loudly() -> None:
    """An operation before ``open()`` raises ``EmbeddedTargetError`` rather than touching a missing database."""
    with pytest.raises(EmbeddedTargetError, match="not open"):
        await EmbeddedTarget().get_by_anchor("User", "a1")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("embedded:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///state/target.db", "state/target.db"),
        ("sqlite:////var/lib/cloudprov/target.db", "/var/lib/cloudprov/target.db"),
        ("embedded:///state/t.db?synchronous=FULL", "state/t.db"),
    ],
)
def test_embedded_urls(url: str, path: str) -> None:
    """Embedded store URLs name the database file (or memory) the way the control plane's store URLs do."""
    assert embedded_path(url) == path


def test_registry_builds_the_embedded_target_with_options() -> None:
    """``create_target`` picks the embedded store by scheme and reads options from the query and the mapping."""
    target = create_target("sqlite:///x.db?synchronous=FULL", options={"page_size": "10"})
    assert isinstance(target, EmbeddedTarget)
    assert target.settings == EmbeddedSettings(path="x.db", synchronous="FULL", page_size=10)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("sqlite:///x.db", {"page_sise": 1}, "did you mean 'page_size'"),
        ("sqllite:///x.db", {}, "did you mean 'sqlite'"),
        ("sqlite:///x.db?synchronous=SOMETIMES", {}, "synchronous"),
        ("sqlite://relative.db", {}, "expected sqlite:///"),
    ],
)
def test_registry_refuses_bad_urls_and_settings(url: str, options: dict[str, object], message: str) -> None:
    """Typos in schemes and settings are refused with the nearest known name."""
    with pytest.raises(TargetSettingsError, match=message):
        create_target(url, options=options)


async def test_objects_pages_through_everything(target: EmbeddedTarget) -> None:
    """``objects`` yields each object once across pages (page_size 2 here) in creation order."""
    anchors = [fresh("a") for _ in range(7)]
    for anchor in anchors:
        await target.create("User", anchor, user(anchor))
    assert [obj.anchor async for obj in target.objects("User")] == anchors


def test_ids_are_time_ordered_uuids() -> None:
    """Ids are version-7 UUIDs that sort in creation order (cheap appends to the id index)."""
    ids = [new_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 50
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


async def test_find_by_user_name_ignores_case_as_uniqueness_does(target: EmbeddedTarget) -> None:
    """A User's ``userName`` is found in another case (a sync matching by it claims the user it could not create
    beside); other attributes and groups still compare exactly."""
    emile = await target.create("User", "a1", user("Émile@Example.com"))
    await target.create("Group", "g1", {"displayName": "Staff", "userName": "Staff"})
    found = await target.find_by_attribute("User", "userName", "émile@example.COM")
    assert found is not None
    assert found.id == emile.id
    assert await target.find_by_attribute("User", "userName", "emile@example.com") is None
    assert await target.find_by_attribute("Group", "userName", "staff") is None
