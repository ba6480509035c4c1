"""``MemoryDirectory``: the async LDAP mock behind the ``Directory`` interface.

Settings: ``MemorySettings`` (base DN, flavor, seed data, latency, faults, page size limit, change log
size); ``sleep`` and ``clock`` are injectable for tests. The data lives as long as the instance:
``close`` then ``open`` keeps it; seeding happens at the first ``open``.

Guarantees: LDAP semantics as in ``plugins.memory.store``; a filter's plan (``plugins.memory.query``)
is worked out once per filter string and kept (bounded), valid whatever is written later; each call is
one simulated round trip (a paged search, one per page) subject to latency and injected faults;
everything handed out is a copy; ``changes`` reports adds, modifies, renames (one per moved entry) and
deletions in order.

Attribute selection: ``None`` → every user attribute plus the flavor's anchor (entryUUID/objectGUID);
a list → those attributes (case-insensitive), where ``*`` means every user attribute, ``+`` every
operational one, ``1.1`` none, and an empty list the same as ``["*"]``.
"""

from __future__ import annotations

import gc
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar

from mypy_extensions import mypyc_attr

from plugins.directory import (
    Attributes,
    AttrValue,
    ChangeKind,
    ChangeSet,
    Directory,
    Entry,
    Modification,
    Scope,
    UnavailableError,
)
from plugins.memory import ldif, seed
from plugins.memory.changelog import ChangeLog
from plugins.memory.chaos import Chaos, ChaosStats, Sleep
from plugins.memory.errors import DirectoryClosedError
from plugins.memory.operational import ActiveDirectoryOperational, Clock, OpenLdapOperational, Operational
from plugins.memory.query import Plans, Query
from plugins.memory.settings import MemorySettings
from plugins.memory.store import Store


def _utcnow() -> datetime:
    return datetime.now(UTC)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, and subclassed by code that is not
class MemoryDirectory(Directory):
    """An in-process LDAP directory with real LDAP semantics, injectable latency and faults."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (UnavailableError,)

    def __init__(
        self, settings: MemorySettings | None = None, *, sleep: Sleep | None = None, clock: Clock = _utcnow
    ) -> None:
        self.settings = settings or MemorySettings()
        ids = random.Random(f"{self.settings.seed}:ids")
        self._operational: Operational = (
            ActiveDirectoryOperational(ids, clock, self.settings.domain_sid)
            if self.settings.flavor == "ad"
            else OpenLdapOperational(ids, clock)
        )
        self._store = Store(self.settings.base_dn, self._operational)
        self._log = ChangeLog(uuid.uuid4().hex[:12], self.settings.changelog_limit)
        self._chaos = Chaos(self.settings, sleep)
        self._open = False
        self._seeded = False
        self._projections: dict[tuple[str, ...] | None, Callable[[Attributes], Attributes]] = {}
        self._queries = Plans()

    # ---------------------------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if not self._seeded:
            self._seed()
            self._seeded = True
        self._open = True

    async def close(self) -> None:
        self._open = False

    @property
    def base_dn(self) -> str:
        return self._store.base.dn

    @property
    def anchor_attribute(self) -> str:
        """The attribute that identifies an entry for life (entryUUID or objectGUID)."""
        return self._operational.anchor

    @property
    def stats(self) -> ChaosStats:
        """Round trips, injected failures and reconnects so far."""
        return self._chaos.stats

    def __len__(self) -> int:
        return len(self._store)

    def explain(self, ldap_filter: str) -> int | None:
        """How many candidate entries the equality index yields for a filter; None means a full scan."""
        candidates = self._store.candidates(self._query(ldap_filter))
        return None if candidates is None else len(candidates)

    def _seed(self) -> None:
        # Seeding allocates millions of long-lived objects: the cyclic GC would rescan them all, again
        # and again, for nothing. Pause it while seeding and move the result out of its way.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._load_seed()
        finally:
            if paused:
                gc.enable()
            gc.freeze()

    def _load_seed(self) -> None:
        if self.settings.seed_ldif is not None:
            for dn, attributes in ldif.read_ldif(self.settings.seed_ldif):
                if self._store.find(dn) is None:  # an export usually repeats the base entry
                    self._store.add(dn, attributes, system=True)
        for dn, attributes in seed.generate(self.settings):
            if self._store.find(dn) is None:
                self._store.add(dn, attributes, system=True)

    def _round_trip(self, operation: str) -> Awaitable[None]:
        """One simulated round trip, to be awaited (a closed directory refuses it at once)."""
        if not self._open:
            raise DirectoryClosedError(f"{operation} on a memory directory that is not open")
        return self._chaos.round_trip(operation)

    # ---------------------------------------------------------------------------------- reads

    def search(
        self,
        base: str,
        ldap_filter: str = "(objectClass=*)",
        *,
        scope: Scope = Scope.SUBTREE,
        attributes: Sequence[str] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Entry]]:
        return _Pages(self, base, ldap_filter, scope, attributes, page_size)

    async def get(self, dn: str, attributes: Sequence[str] | None = None) -> Entry | None:
        await self._round_trip("get")
        record = self._store.find(dn)
        return None if record is None else Entry(record.dn, self._projection(attributes)(record.attributes))

    def _query(self, ldap_filter: str) -> Query:
        """The plan of a filter; worked out once per filter string, then remembered (up to 4,096 filters of
        up to ``ldapfilter.CACHED_LENGTH`` characters), and for ``(&…(attr=value))`` once per shape (see
        ``plugins.memory.query.Plans``). A plan does not depend on the data: writes leave it valid."""
        return self._queries.get(ldap_filter)

    def _projection(self, selection: Sequence[str] | None) -> Callable[[Attributes], Attributes]:
        """A copy of the selected attributes of an entry; a selection is worked out once, then remembered
        (a SCIM GET asks for its mapping's attributes every time)."""
        key = None if selection is None else tuple(selection)
        project = self._projections.get(key)
        if project is None:
            if len(self._projections) >= 256:
                self._projections.clear()
            project = self._projections[key] = self._new_projection(selection)
        return project

    def _new_projection(self, selection: Sequence[str] | None) -> Callable[[Attributes], Attributes]:
        hidden = self._operational.hidden
        if selection is None:
            concealed = hidden - {self._operational.anchor.lower()}
            return lambda attrs: attrs.picked(lambda key: key not in concealed)
        wanted = frozenset(name.lower() for name in selection) or frozenset({"*"})
        every_user, every_operational = "*" in wanted, "+" in wanted
        if not every_user and not every_operational:
            return lambda attrs: attrs.selected(wanted)

        def chosen(key: str) -> bool:
            return key in wanted or (every_operational if key in hidden else every_user)

        return lambda attrs: attrs.picked(chosen)

    # ---------------------------------------------------------------------------------- writes

    async def add(self, dn: str, attributes: Mapping[str, Sequence[AttrValue]]) -> None:
        await self._round_trip("add")
        record = self._store.add(dn, attributes)
        self._log.record(ChangeKind.ADD, record.dn, record.attributes)

    async def modify(self, dn: str, changes: Sequence[Modification]) -> None:
        await self._round_trip("modify")
        if not changes:
            self._store.require(dn)
            return
        record = self._store.modify(dn, changes)
        self._log.record(ChangeKind.MODIFY, record.dn, record.attributes)

    async def delete(self, dn: str) -> None:
        await self._round_trip("delete")
        record = self._store.delete(dn)
        self._log.record(ChangeKind.DELETE, record.dn, record.attributes)

    async def rename(self, dn: str, new_rdn: str, *, new_superior: str | None = None) -> str:
        await self._round_trip("rename")
        moved = self._store.rename(dn, new_rdn, new_superior)
        for record, old_dn in moved:
            self._log.record(ChangeKind.RENAME, record.dn, record.attributes, old_dn)
        return moved[0][0].dn

    async def changes(self, watermark: str | None, *, limit: int = 1000) -> ChangeSet:
        await self._round_trip("changes")
        return self._log.since(watermark, limit)

    async def ping(self) -> None:
        await self._round_trip("ping")


class _Pages(AsyncIterator[list[Entry]]):
    """``MemoryDirectory.search``'s pages: the first after the round trip that searches, each further one
    after a round trip of its own; a search that finds nothing gives one empty page. Written out rather
    than as an async generator, which mypyc does not compile (this module is compiled: pyproject's
    ``[tool.cloudprov] compiled``)."""

    __slots__ = (
        "_attributes",
        "_base",
        "_directory",
        "_filter",
        "_found",
        "_page_size",
        "_project",
        "_scope",
        "_start",
    )

    def __init__(
        self,
        directory: MemoryDirectory,
        base: str,
        ldap_filter: str,
        scope: Scope,
        attributes: Sequence[str] | None,
        page_size: int,
    ) -> None:
        self._directory = directory
        self._base = base
        self._filter = ldap_filter
        self._scope = scope
        self._attributes = attributes
        self._page_size = page_size
        self._found: list[tuple[str, Attributes]] | None = None
        self._project: Callable[[Attributes], Attributes] | None = None
        self._start = 0

    def __aiter__(self) -> _Pages:
        return self

    async def __anext__(self) -> list[Entry]:
        directory = self._directory
        found = self._found
        if found is None:
            if self._page_size < 1:
                raise ValueError(f"page_size must be at least 1, not {self._page_size}")
            await directory._round_trip("search")
            scope = self._scope
            found = self._found = directory._store.search(
                self._base, directory._query(self._filter), scope if type(scope) is Scope else Scope(scope)
            )
            if not found:
                self._start = 1  # past the end: one empty page, then no more
                return []
            self._page_size = min(self._page_size, directory.settings.page_size_limit)
            self._project = directory._projection(self._attributes)
        elif self._start >= len(found):
            raise StopAsyncIteration
        else:
            await directory._round_trip("search (next page)")
        project = self._project
        assert project is not None
        start = self._start
        end = self._start = start + self._page_size
        page = found if start == 0 and end >= len(found) else found[start:end]
        return [Entry(dn, project(attrs)) for dn, attrs in page]
