"""The embedded store target: provisioned objects, memberships and their history in one SQLite file.

What it is
    ``EmbeddedTarget`` keeps what the sync engine writes in three tables: ``objects`` (id,
    resource_type, anchor unique per type, attributes as JSON keyed by SCIM path, active,
    created/updated), ``memberships`` (group id, member id; indexed both ways) and ``history``
    (every change with its time and a JSON diff: ``{key: [old, new]}`` for an update, ``{"anchor": …,
    "attributes": [null, {…}]}`` for a create and the reverse for a delete, ``{"members": {"added":
    […], "removed": […]}}``). Ids are time-ordered UUIDs. ``counts()``, ``export()``
    and ``history()`` show what was synced (tests, ``cloudprov``).

Connection URL / options
    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite://:memory:`` or
    ``embedded:`` (in memory) / ``embedded:///path.db``. Options: ``synchronous`` (``NORMAL``; ``FULL``
    syncs every commit to disk), ``busy_timeout`` (10 s), ``cache_mb`` (page cache in MB, 2: SQLite's
    own default; the OS caches the file too), ``page_size`` (rows per page of ``objects()``, 1000),
    ``history`` (true: record every change), ``unique_user_name`` (true: a User's ``userName`` is unique,
    ignoring case, as in a SCIM service: compared folded by ``protocol.scimeval.fold_case``, the
    case-insensitivity SCIM filters have, kept in the ``user_name_key`` column).

Guarantees
    Stdlib ``sqlite3`` on one dedicated worker thread that owns the only connection (WAL journal,
    foreign keys on), so the event loop never blocks on disk. Each operation is atomic: it commits on
    its own, or joins the transaction of an open ``batch()`` as a savepoint (a failed operation in a
    batch is undone alone; the batch commits at exit, or rolls back if its block raises). While a
    batch is open every operation of this target joins it. ``create_many`` writes many objects in
    one statement batch, all or none. Anchors are unique per resource type, and so is a User's
    ``userName`` (``TargetConflictError``);
    operations on absent objects raise ``TargetNotFoundError``. Adding a present member or removing
    an absent one is not an error. ``find_by_attribute`` compares exactly and builds an index on the
    attribute the first time it is asked for it; a User's ``userName`` it compares as uniqueness does,
    ignoring case (a user it could not find by it could not be created either).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from protocol.scimeval import fold_case
from service.provisioning.targets.base import (
    Target,
    TargetConflictError,
    TargetError,
    TargetNotFoundError,
    TargetObject,
)
from service.provisioning.targets.registry import TargetSettingsError, read_target_settings

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    anchor TEXT,
    attributes TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    user_name_key TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_anchor ON objects (resource_type, anchor) WHERE anchor IS NOT NULL;
CREATE TABLE IF NOT EXISTS memberships (
    group_id TEXT NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    member_id TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_member ON memberships (member_id, group_id);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    object_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    action TEXT NOT NULL,
    diff TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_object ON history (object_id, seq);
"""

#: SCIM ``userName`` is unique and compared without regard to case (RFC 7643 §4.1.1). SQLite's own
#: ``lower()`` folds ASCII only, so the folded name is a column the target writes (``_user_name_key``).
UNIQUE_USER_NAME = (
    "CREATE UNIQUE INDEX IF NOT EXISTS objects_user_name_key ON objects (user_name_key) WHERE resource_type = 'User'"
)
#: The index of stores written before ``user_name_key`` existed (ASCII-only folding).
_OLD_USER_NAME_INDEX = "objects_user_name"

_COLUMNS = "id, resource_type, anchor, attributes, active"
_Row = tuple[str, str, str | None, str, int]


class EmbeddedTargetError(TargetError):
    """The embedded store was used before ``open()`` or after ``close()``."""


@dataclass(frozen=True, slots=True)
class EmbeddedSettings:
    path: str = ":memory:"
    synchronous: str = "NORMAL"
    busy_timeout: float = 10.0
    cache_mb: int = 2
    page_size: int = 1000
    history: bool = True
    unique_user_name: bool = True

    def __post_init__(self) -> None:
        if self.synchronous not in {"OFF", "NORMAL", "FULL"}:
            raise TargetSettingsError(f"synchronous must be OFF, NORMAL or FULL, not {self.synchronous!r}")
        if self.page_size < 1:
            raise TargetSettingsError(f"page_size must be at least 1, not {self.page_size}")


def embedded_path(url: str) -> str:
    """``sqlite:///state/t.db`` → ``state/t.db``; ``embedded:`` and ``sqlite://:memory:`` → ``:memory:``."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in {"sqlite", "embedded"}:
        raise TargetSettingsError(f"{url!r} is not an embedded store URL (sqlite:///path or embedded:)")
    rest = rest.partition("?")[0]
    if rest in {"", "//", "//:memory:", "///:memory:"}:
        return ":memory:"
    if not rest.startswith("///"):
        raise TargetSettingsError(f"{url!r}: expected {scheme}:///relative/path or {scheme}:////absolute/path")
    return rest[3:]


def new_id() -> str:
    """A time-ordered UUID (version 7 layout): new rows land at the end of the id index, not all over it."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _attribute_index(attribute: str) -> tuple[str, str] | None:
    """(index name, SQL expression) reading ``attribute`` from the JSON, or None if it cannot be indexed."""
    if '"' in attribute or "\x00" in attribute:
        return None
    path = "$." + '"' + attribute.replace("'", "''") + '"'
    name = "objects_attr_" + hashlib.sha1(attribute.encode(), usedforsecurity=False).hexdigest()[:16]
    return name, f"json_extract(attributes, '{path}')"


def _user_name_key(resource_type: str, values: Mapping[str, Any]) -> str | None:
    """A User's ``userName`` as uniqueness compares it (SCIM's case folding), else None."""
    name = values.get("userName") if resource_type == "User" else None
    return fold_case(name) if isinstance(name, str) else None


def _migrate_user_name_key(connection: sqlite3.Connection) -> None:
    """Add and fill ``user_name_key`` in a store written before it existed; drop the ASCII-only index."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(objects)")}
    if "user_name_key" in columns:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("ALTER TABLE objects ADD COLUMN user_name_key TEXT")
        rows = connection.execute(
            "SELECT id, json_extract(attributes, '$.userName') FROM objects WHERE resource_type = 'User'"
        ).fetchall()
        connection.executemany(
            "UPDATE objects SET user_name_key = ? WHERE id = ?",
            [(fold_case(name), object_id) for object_id, name in rows if isinstance(name, str)],
        )
        connection.execute(f"DROP INDEX IF EXISTS {_OLD_USER_NAME_INDEX}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _require_unique_user_names(connection: sqlite3.Connection) -> None:
    """Create the unique ``userName`` index, or name the users that already share one."""
    try:
        connection.execute(UNIQUE_USER_NAME)
    except sqlite3.IntegrityError:
        clashes = connection.execute(
            "SELECT group_concat(json_extract(attributes, '$.userName'), ' = ') FROM objects"
            " WHERE resource_type = 'User' AND user_name_key IS NOT NULL"
            " GROUP BY user_name_key HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        named = "; ".join(clash for (clash,) in clashes)
        raise TargetError(
            f"users in this store share a userName ignoring case ({named}): rename or remove them,"
            " or set unique_user_name: false"
        ) from None


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, str | int | float):
        return value
    raise TypeError(f"find_by_attribute compares scalar values, not {type(value).__name__}")


class EmbeddedTarget(Target):
    """Provisioned objects in a local SQLite database (see the module docstring)."""

    def __init__(self, settings: EmbeddedSettings | None = None) -> None:
        self.settings = settings or EmbeddedSettings()
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._batch_depth = 0
        self._batch_lock = asyncio.Lock()
        self._indexed: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, options: Mapping[str, Any] | None = None) -> Self:
        return cls(read_target_settings(EmbeddedSettings, url, options, path=embedded_path(url)))

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor, connection = self._executor, self._connection
        if executor is None or connection is None:
            raise EmbeddedTargetError("the embedded store is not open: use 'async with' or call open() first")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, connection)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` atomically: its own transaction, or a savepoint of the open batch."""
        in_batch = self._batch_depth > 0

        def run(connection: sqlite3.Connection) -> T:
            connection.execute("SAVEPOINT op" if in_batch else "BEGIN IMMEDIATE")
            try:
                result = fn(connection)
            except BaseException:
                connection.execute("ROLLBACK TO op" if in_batch else "ROLLBACK")
                if in_batch:
                    connection.execute("RELEASE op")
                raise
            connection.execute("RELEASE op" if in_batch else "COMMIT")
            return result

        return await self._call(run)

    def _record(self, connection: sqlite3.Connection, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
        if self.settings.history:
            connection.executemany(
                "INSERT INTO history (at, object_id, resource_type, action, diff) VALUES (?, ?, ?, ?, ?)", rows
            )

    async def open(self) -> None:
        if self._connection is not None:
            return
        path = self.settings.path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-target")

        def connect() -> sqlite3.Connection:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout * 1000)}")
            connection.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
            connection.execute(f"PRAGMA cache_size = {-1024 * self.settings.cache_mb}")
            try:
                connection.executescript(SCHEMA)
                _migrate_user_name_key(connection)
                if self.settings.unique_user_name:
                    _require_unique_user_names(connection)
                else:
                    connection.execute("DROP INDEX IF EXISTS objects_user_name_key")
            except BaseException:
                connection.close()
                raise
            return connection

        try:
            self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        executor, connection = self._executor, self._connection
        self._connection = None
        self._executor = None
        if executor is None:
            return
        if connection is not None:
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, connection.close))
        executor.shutdown(wait=False)

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Self]:
        """Group the operations made inside into one transaction (committed at exit; nests)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._batch_depth == 0:
                await stack.enter_async_context(self._batch_lock)
                await self._call(lambda c: c.execute("BEGIN IMMEDIATE"))
            self._batch_depth += 1
            try:
                yield self
            except BaseException:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    await asyncio.shield(self._call(lambda c: c.execute("ROLLBACK")))
                raise
            self._batch_depth -= 1
            if self._batch_depth == 0:
                await asyncio.shield(self._call(lambda c: c.execute("COMMIT")))

    # ------------------------------------------------------------------ reads

    def _object(self, connection: sqlite3.Connection, row: _Row) -> TargetObject:
        object_id, resource_type, anchor, attributes, active = row
        members: frozenset[str] = frozenset()
        if resource_type == "Group":
            found = connection.execute("SELECT member_id FROM memberships WHERE group_id = ?", (object_id,))
            members = frozenset(member for (member,) in found)
        return TargetObject(object_id, resource_type, anchor, json.loads(attributes), members, bool(active))

    def _load(self, connection: sqlite3.Connection, object_id: str) -> _Row:
        row: _Row | None = connection.execute(f"SELECT {_COLUMNS} FROM objects WHERE id = ?", (object_id,)).fetchone()  # noqa: S608 - fixed column list
        if row is None:
            raise TargetNotFoundError(f"object {object_id} is not in the embedded store")
        return row

    async def get(self, object_id: str) -> TargetObject:
        """The object with target id ``object_id`` (``TargetNotFoundError`` if absent)."""
        return await self._call(lambda c: self._object(c, self._load(c, object_id)))

    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        def run(connection: sqlite3.Connection) -> TargetObject | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM objects WHERE resource_type = ? AND anchor = ?",  # noqa: S608 - fixed column list
                (resource_type, anchor),
            ).fetchone()
            return None if row is None else self._object(connection, row)

        return await self._call(run)

    async def find_by_attribute(self, resource_type: str, attribute: str, value: Any) -> TargetObject | None:
        wanted = _sql_value(value)
        index = _attribute_index(attribute)

        def run(connection: sqlite3.Connection) -> TargetObject | None:
            if resource_type == "User" and attribute == "userName" and isinstance(wanted, str):
                row = connection.execute(
                    f"SELECT {_COLUMNS} FROM objects WHERE resource_type = 'User' AND user_name_key = ? LIMIT 1",  # noqa: S608 - fixed column list
                    (fold_case(wanted),),
                ).fetchone()
            elif index is None:
                row = connection.execute(
                    "SELECT o.id, o.resource_type, o.anchor, o.attributes, o.active"
                    " FROM objects o, json_each(o.attributes) j"
                    " WHERE o.resource_type = ? AND j.key = ? AND j.value IS ? LIMIT 1",
                    (resource_type, attribute, wanted),
                ).fetchone()
            else:
                name, expression = index
                if name not in self._indexed:
                    connection.execute(f"CREATE INDEX IF NOT EXISTS {name} ON objects (resource_type, {expression})")
                    self._indexed.add(name)
                row = connection.execute(
                    f"SELECT {_COLUMNS} FROM objects WHERE resource_type = ? AND {expression} IS ? LIMIT 1",  # noqa: S608 - the expression is built from an escaped JSON path
                    (resource_type, wanted),
                ).fetchone()
            return None if row is None else self._object(connection, row)

        return await self._call(run)

    async def objects(self, resource_type: str) -> AsyncIterator[TargetObject]:
        after = 0
        while True:

            def page(connection: sqlite3.Connection, after: int = after) -> list[tuple[int, TargetObject]]:
                rows = connection.execute(
                    f"SELECT rowid, {_COLUMNS} FROM objects WHERE resource_type = ? AND rowid > ?"  # noqa: S608 - fixed column list
                    " ORDER BY rowid LIMIT ?",
                    (resource_type, after, self.settings.page_size),
                ).fetchall()
                return [(row[0], self._object(connection, row[1:])) for row in rows]

            found = await self._call(page)
            for _, obj in found:
                yield obj
            if len(found) < self.settings.page_size:
                return
            after = found[-1][0]

    # ------------------------------------------------------------------ writes

    def _insert(
        self, connection: sqlite3.Connection, resource_type: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[TargetObject]:
        now = _now()
        created: list[TargetObject] = []
        rows: list[tuple[str, str, str, str, int, str, str, str | None]] = []
        history: list[tuple[str, str, str, str, str]] = []
        for anchor, attributes in items:
            object_id = new_id()
            values = dict(attributes)
            active = values.get("active") is not False
            text = _dumps(values)
            rows.append(
                (object_id, resource_type, anchor, text, int(active), now, now, _user_name_key(resource_type, values))
            )
            created.append(TargetObject(object_id, resource_type, anchor, values, frozenset(), active))
            if self.settings.history:
                diff = f'{{"anchor":[null,{_dumps(anchor)}],"attributes":[null,{text}]}}'
                history.append((now, object_id, resource_type, "create", diff))
        connection.execute("SAVEPOINT insert_objects")
        try:
            connection.executemany(
                "INSERT INTO objects (id, resource_type, anchor, attributes, active, created, updated, user_name_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.IntegrityError:
            # the rows inserted before the one that failed go first, or they would be reported as taken
            connection.execute("ROLLBACK TO insert_objects")
            connection.execute("RELEASE insert_objects")
            taken = self._taken_anchors(connection, resource_type, [anchor for anchor, _ in items])
            if taken:
                what = f"anchor(s) already provisioned: {', '.join(taken[:5])}"
            else:
                names = self._taken_user_names(connection, [(row[7], row[3]) for row in rows])
                what = (
                    f"userName(s) taken, ignoring case: {', '.join(names[:5])}" if names else "a unique value is taken"
                )
            raise TargetConflictError(f"{resource_type}: {what}") from None
        connection.execute("RELEASE insert_objects")
        self._record(connection, history)
        return created

    @staticmethod
    def _taken_anchors(connection: sqlite3.Connection, resource_type: str, anchors: list[str]) -> list[str]:
        seen: set[str] = set()
        taken: list[str] = []
        for anchor in anchors:
            if anchor in seen:
                taken.append(anchor)
            seen.add(anchor)
        for start in range(0, len(anchors), 500):
            chunk = anchors[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found = connection.execute(
                f"SELECT anchor FROM objects WHERE resource_type = ? AND anchor IN ({marks})",  # noqa: S608 - placeholders only
                (resource_type, *chunk),
            )
            taken.extend(anchor for (anchor,) in found)
        return taken

    @staticmethod
    def _taken_user_names(connection: sqlite3.Connection, keyed: list[tuple[str | None, str]]) -> list[str]:
        """The ``userName`` of each new ``(key, attributes JSON)`` whose key is taken in the store or the batch."""
        names: list[str] = []
        seen: set[str] = set()
        for key, text in keyed:
            if key is None:
                continue
            clash = (
                key in seen
                or connection.execute(
                    "SELECT 1 FROM objects WHERE resource_type = 'User' AND user_name_key = ?", (key,)
                ).fetchone()
            )
            if clash:
                names.append(str(json.loads(text)["userName"]))
            seen.add(key)
        return names

    @staticmethod
    def _user_name_held_by_another(connection: sqlite3.Connection, object_id: str, key: str | None) -> bool:
        """Whether another User than ``object_id`` holds the folded userName ``key``."""
        return (
            key is not None
            and connection.execute(
                "SELECT 1 FROM objects WHERE resource_type = 'User' AND user_name_key = ? AND id != ?", (key, object_id)
            ).fetchone()
            is not None
        )

    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        created = await self._write(lambda c: self._insert(c, resource_type, [(anchor, attributes)]))
        return created[0]

    async def create_many(
        self, resource_type: str, items: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> list[TargetObject]:
        """Create many ``(anchor, attributes)`` objects at once: all or none (``TargetConflictError``)."""
        batch = list(items)
        if not batch:
            return []
        return await self._write(lambda c: self._insert(c, resource_type, batch))

    async def update(
        self, obj: TargetObject, attributes: Mapping[str, Any], *, anchor: str | None = None
    ) -> TargetObject:
        def run(connection: sqlite3.Connection) -> TargetObject:
            object_id, resource_type, old_anchor, text, _ = self._load(connection, obj.id)
            values: dict[str, Any] = json.loads(text)
            diff: dict[str, list[Any]] = {}
            for key, value in attributes.items():
                old = values.get(key)
                if value is None:
                    if key in values:
                        del values[key]
                        diff[key] = [old, None]
                elif key not in values or old != value:
                    values[key] = value
                    diff[key] = [old, value]
            new_anchor = old_anchor if anchor is None else anchor
            if new_anchor != old_anchor:
                diff["anchor"] = [old_anchor, new_anchor]
            if diff:
                now = _now()
                active = values.get("active") is not False
                name_key = _user_name_key(resource_type, values)
                try:
                    connection.execute(
                        "UPDATE objects SET anchor = ?, attributes = ?, active = ?, updated = ?, user_name_key = ?"
                        " WHERE id = ?",
                        (new_anchor, _dumps(values), int(active), now, name_key, object_id),
                    )
                except sqlite3.IntegrityError:
                    clash = self._user_name_held_by_another(connection, object_id, name_key)
                    what = f"userName {values.get('userName')!r} (ignoring case)" if clash else f"anchor {new_anchor!r}"
                    raise TargetConflictError(f"{resource_type} {object_id}: {what} taken") from None
                self._record(connection, [(now, object_id, resource_type, "update", _dumps(diff))])
            return self._object(connection, self._load(connection, object_id))

        return await self._write(run)

    async def change_members(self, group: TargetObject, add: Collection[str], remove: Collection[str]) -> None:
        def run(connection: sqlite3.Connection) -> None:
            object_id, resource_type, *_ = self._load(connection, group.id)
            if resource_type != "Group":
                raise TargetNotFoundError(f"{object_id} is a {resource_type}, not a Group")
            found = connection.execute("SELECT member_id FROM memberships WHERE group_id = ?", (object_id,))
            present = {member for (member,) in found}
            added = sorted(set(add) - present)
            removed = sorted(set(remove) & present - set(add))
            if not (added or removed):
                return
            connection.executemany(
                "INSERT INTO memberships (group_id, member_id) VALUES (?, ?)", [(object_id, m) for m in added]
            )
            connection.executemany(
                "DELETE FROM memberships WHERE group_id = ? AND member_id = ?", [(object_id, m) for m in removed]
            )
            now = _now()
            connection.execute("UPDATE objects SET updated = ? WHERE id = ?", (now, object_id))
            diff = {"members": {"added": added, "removed": removed}}
            self._record(connection, [(now, object_id, resource_type, "members", _dumps(diff))])

        await self._write(run)

    async def disable(self, obj: TargetObject) -> None:
        await self.update(obj, {"active": False})

    async def delete(self, obj: TargetObject) -> None:
        def run(connection: sqlite3.Connection) -> None:
            object_id, resource_type, anchor, text, _ = self._load(connection, obj.id)
            connection.execute("DELETE FROM memberships WHERE member_id = ?", (object_id,))
            connection.execute("DELETE FROM objects WHERE id = ?", (object_id,))
            diff = f'{{"anchor":[{_dumps(anchor)},null],"attributes":[{text},null]}}'
            self._record(connection, [(_now(), object_id, resource_type, "delete", diff)])

        await self._write(run)

    # ------------------------------------------------------------------ helpers for tests and the CLI

    async def counts(self) -> dict[str, Any]:
        """``{"objects": {type: n}, "inactive": {type: n}, "memberships": n, "history": n}``."""

        def run(connection: sqlite3.Connection) -> dict[str, Any]:
            rows = connection.execute(
                "SELECT resource_type, count(*), sum(active = 0) FROM objects GROUP BY resource_type"
            ).fetchall()
            (memberships,) = connection.execute("SELECT count(*) FROM memberships").fetchone()
            (history,) = connection.execute("SELECT count(*) FROM history").fetchone()
            return {
                "objects": {kind: total for kind, total, _ in rows},
                "inactive": {kind: inactive or 0 for kind, _, inactive in rows},
                "memberships": memberships,
                "history": history,
            }

        return await self._call(run)

    async def export(self) -> list[dict[str, Any]]:
        """Every object as a plain dict (groups with their sorted member ids), by type then anchor."""

        def run(connection: sqlite3.Connection) -> list[dict[str, Any]]:
            members: dict[str, list[str]] = {}
            for group_id, member_id in connection.execute("SELECT group_id, member_id FROM memberships"):
                members.setdefault(group_id, []).append(member_id)
            rows = connection.execute(
                f"SELECT {_COLUMNS}, created, updated FROM objects ORDER BY resource_type, anchor"  # noqa: S608 - fixed column list
            )
            exported = []
            for object_id, resource_type, anchor, attributes, active, created, updated in rows:
                item: dict[str, Any] = {
                    "id": object_id,
                    "resourceType": resource_type,
                    "anchor": anchor,
                    "active": bool(active),
                    "attributes": json.loads(attributes),
                    "created": created,
                    "updated": updated,
                }
                if resource_type == "Group":
                    item["members"] = sorted(members.get(object_id, ()))
                exported.append(item)
            return exported

        return await self._call(run)

    async def history(self, object_id: str | None = None, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The latest changes (of one object if given), oldest first: ``{seq, at, id, type, action, diff}``."""

        def run(connection: sqlite3.Connection) -> list[dict[str, Any]]:
            where, args = ("WHERE object_id = ?", (object_id,)) if object_id else ("", ())
            rows = connection.execute(
                f"SELECT seq, at, object_id, resource_type, action, diff FROM history {where}"  # noqa: S608 - fixed clause
                " ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [
                {"seq": s, "at": at, "id": i, "resourceType": t, "action": a, "diff": json.loads(d)}
                for s, at, i, t, a, d in reversed(rows)
            ]

        return await self._call(run)
