"""Finding entries by SCIM id and turning DNs into SCIM references and back, with a small cache.

``References`` answers three questions the SCIM handler asks all the time: which entry has this
``id`` (``find``), which ``id`` and resource type does this DN have (``refs_for``, batched and
concurrent), and which DN does this ``id`` have (``dn_for``). Answers are cached for ``ttl``
seconds (bounded LRU); our own renames and deletes invalidate them at once.

Every answer is inside the scope SCIM sees: under the base, and matching the directory's scope
filter. DNs are read with base-level searches (which the directory scopes), not with ``get`` (which
it does not): a group member outside the scope is no SCIM resource, and its id, once cached, must
not let a GET or a PATCH by id reach it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from agent.scim.profile import Profile, ResourceMapping
from agent.scim.values import anchor_to_id, id_to_anchor
from plugins import dn as dnlib
from plugins.directory import Directory, DirectoryError, Entry, InvalidDNError, NoSuchObjectError, Scope
from plugins.ldapfilter import escape_value

#: References cached at most (by DN and by id): big batches are resolved by searches, not from here,
#: and a full read of a large directory must not leave two entries per object behind.
CACHE_SIZE = 10_000
#: Listed entries are remembered only from pages up to this size: a large page (a full read) would
#: only push the cache's useful references out, at a tenth of the read's CPU.
REMEMBER_PAGE = 100
#: More DNs to resolve than this at once are looked up by searches, ``SEARCH_CHUNK`` RDN values a search.
SEARCH_FROM = 32
SEARCH_CHUNK = 250
#: A DN of plain ASCII names: no spaces, escapes, quotes, OIDs or multi-valued RDNs.
_PLAIN_DN = re.compile(r"[A-Za-z][A-Za-z0-9-]*=[A-Za-z0-9._@-]+(?:,[A-Za-z][A-Za-z0-9-]*=[A-Za-z0-9._@-]+)*")


@lru_cache(maxsize=CACHE_SIZE)
def normalized(dn: str) -> str:
    """``dnlib.normalize(dn)``, without parsing the common plain DN, whose comparison form is its lower case
    (a full read of a large directory normalises every DN it lists); the answers for the DNs seen last are
    kept (a listed page's DNs are normalised again at every listing)."""
    return dn.lower() if _PLAIN_DN.fullmatch(dn) else dnlib.normalize(dn)


@dataclass(frozen=True, slots=True)
class Ref:
    id: str
    dn: str
    resource: str  # "User" or "Group"


def classify(profile: Profile, entry: Entry) -> ResourceMapping | None:
    """The resource type of an entry, by its most specific object class."""
    classes = {str(v).lower() for v in entry.get("objectClass")}
    for mapping in profile.resources:
        if mapping.object_classes[-1].lower() in classes and not ("computer" in classes and mapping.name == "User"):
            return mapping
    return None


class _Lru:
    def __init__(self, size: int, ttl: float) -> None:
        self._data: OrderedDict[str, tuple[float, Ref]] = OrderedDict()
        self._size, self._ttl = size, ttl

    def get(self, key: str) -> Ref | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    def peek(self, key: str) -> Ref | None:
        """The reference held under ``key``, expired or not, without touching its place."""
        item = self._data.get(key)
        return None if item is None else item[1]

    def put(self, key: str, ref: Ref, expires: float | None = None) -> None:
        """Hold ``ref`` under ``key`` until ``expires`` (default: ``ttl`` seconds from now), as the newest."""
        self._data[key] = (time.monotonic() + self._ttl if expires is None else expires, ref)
        self._data.move_to_end(key)
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        self._data.pop(key, None)


def _under(dn: str, base: str) -> bool:
    if _PLAIN_DN.fullmatch(dn) and _PLAIN_DN.fullmatch(base):  # no escapes: compare the strings
        key, top = dn.lower(), base.lower()
        return key == top or key.endswith("," + top)
    try:
        return dnlib.is_descendant(dn, base, or_self=True)
    except DirectoryError:
        return False


class Bases:
    """The subtrees SCIM sees (``base_dns``): searches run under each in turn, DNs are checked against them.
    A base inside another is covered by it (searched once); with one base a search is the directory's own."""

    def __init__(self, directory: Directory, dns: Sequence[str]) -> None:
        self.directory = directory
        unique = list(dict.fromkeys(dns))
        self.dns = tuple(b for b in unique if not any(o != b and _under(b, o) for o in unique))

    def holds(self, dn: str | None) -> bool:
        return dn is not None and any(_under(dn, base) for base in self.dns)

    def search(self, ldap_filter: str, *, attributes: Sequence[str], page_size: int) -> AsyncIterator[list[Entry]]:
        if len(self.dns) == 1:
            return self.directory.search(self.dns[0], ldap_filter, attributes=attributes, page_size=page_size)
        return _Chained(self.directory, self.dns, ldap_filter, attributes, page_size)


class _Chained:
    """The pages of one search under each base in turn."""

    def __init__(
        self, directory: Directory, dns: tuple[str, ...], ldap_filter: str, attributes: Sequence[str], page_size: int
    ) -> None:
        self._directory, self._dns, self._filter = directory, list(dns), ldap_filter
        self._attributes, self._page_size = attributes, page_size
        self._pages: AsyncIterator[list[Entry]] | None = None

    def __aiter__(self) -> _Chained:
        return self

    async def __anext__(self) -> list[Entry]:
        while True:
            if self._pages is None:
                if not self._dns:
                    raise StopAsyncIteration
                base = self._dns.pop(0)
                self._pages = self._directory.search(
                    base, self._filter, attributes=self._attributes, page_size=self._page_size
                )
            try:
                page = await self._pages.__anext__()
            except StopAsyncIteration:
                self._pages = None
                continue
            if page:
                return page

    async def aclose(self) -> None:
        closer = getattr(self._pages, "aclose", None)
        self._dns.clear()
        if closer is not None:
            await closer()


class References:
    def __init__(
        self,
        directory: Directory,
        profile: Profile,
        base: str,
        *,
        bases: Bases | None = None,
        ttl: float = 30.0,
        size: int = CACHE_SIZE,
    ) -> None:
        self.directory, self.profile, self.base = directory, profile, base
        self.bases = bases or Bases(directory, (base,))
        self._ttl = ttl
        self._by_dn = _Lru(size, ttl)
        self._by_id = _Lru(size, ttl)
        self._lookups = asyncio.Semaphore(16)

    async def _read(self, dn: str, attributes: Sequence[str]) -> Entry | None:
        """The entry at ``dn`` if SCIM may see it (under the base, matching the scope filter), else None."""
        if not self.bases.holds(dn):
            return None
        found: Entry | None = None
        try:
            async for page in self.directory.search(dn, scope=Scope.BASE, attributes=attributes, page_size=1):
                for entry in page:
                    found = entry
        except (NoSuchObjectError, InvalidDNError):
            return None
        return found

    def _remember(self, ref: Ref) -> None:
        self._by_dn.put(normalized(ref.dn), ref)
        self._by_id.put(ref.id, ref)

    def forget(self, ref: Ref) -> None:
        self._by_dn.pop(normalized(ref.dn))
        self._by_id.pop(ref.id)

    def ref_of(self, entry: Entry, mapping: ResourceMapping | None = None) -> Ref | None:
        """The reference of an entry we already hold (and remember it)."""
        mapping = mapping or classify(self.profile, entry)
        anchor = entry.first(mapping.id_attribute) if mapping else None
        if mapping is None or anchor is None:
            return None
        ref = Ref(anchor_to_id(anchor, mapping.id_binary), entry.dn, mapping.name)
        self._remember(ref)
        return ref

    def remember_listed(self, mapping: ResourceMapping, entries: list[Entry]) -> None:
        """``ref_of`` every entry of a listed page (of ``mapping``'s type), in one pass: one clock reading
        for the page, and a reference already held for the same id, DN and type kept instead of remade."""
        expires = time.monotonic() + self._ttl
        key, binary, name = mapping.id_attribute.lower(), mapping.id_binary, mapping.name
        by_id, by_dn = self._by_id, self._by_dn
        for entry in entries:
            anchors = entry.attributes.values_lower(key)
            if anchors is None:
                continue
            anchor = anchors[0]
            scim_id = anchor if type(anchor) is str and not binary else anchor_to_id(anchor, binary)
            dn = entry.dn
            ref = by_id.peek(scim_id)
            if ref is None or ref.dn != dn or ref.resource != name:
                ref = Ref(scim_id, dn, name)
            by_dn.put(normalized(dn), ref, expires)
            by_id.put(scim_id, ref, expires)

    async def find(self, mapping: ResourceMapping, scim_id: str, attributes: list[str] | None = None) -> Entry | None:
        """The entry of resource type ``mapping`` whose id is ``scim_id``, or None."""
        anchor = id_to_anchor(scim_id, mapping.id_binary)
        if anchor is None:
            return None
        wanted = attributes or mapping.ldap_attributes
        cached = self._by_id.get(scim_id)
        if cached is not None and cached.resource == mapping.name:
            entry = await self._read(cached.dn, wanted)
            if entry is not None and self.ref_of(entry, mapping) == cached:
                return entry
            self.forget(cached)
        query = f"(&{mapping.ldap_filter}({mapping.id_attribute}={escape_value(anchor)}))"
        async for page in self.bases.search(query, attributes=wanted, page_size=2):
            for entry in page:
                if self.ref_of(entry, mapping) is not None:
                    return entry
        return None

    async def dn_for(self, scim_id: str, mappings: Iterable[ResourceMapping]) -> Ref | None:
        """The reference of the resource with ``scim_id`` among the given types, or None."""
        cached = self._by_id.get(scim_id)
        if cached is not None:
            return cached
        for mapping in mappings:
            entry = await self.find(mapping, scim_id, [mapping.id_attribute, "objectClass"])
            if entry is not None:
                return self.ref_of(entry, mapping)
        return None

    async def refs_for(self, dns: Iterable[str]) -> dict[str, Ref]:
        """Normalised DN → reference for every DN that names a User or Group (others left out)."""
        found: dict[str, Ref] = {}
        missing: dict[str, str] = {}
        for dn in dns:
            try:
                key = normalized(dn)
            except InvalidDNError:
                continue
            ref = self._by_dn.get(key)
            if ref is not None:
                found[key] = ref
            else:
                missing[key] = dn
        if missing:
            attributes = sorted({m.id_attribute for m in self.profile.resources} | {"objectClass"})
            if len(missing) > SEARCH_FROM:
                await self._search_refs(missing, attributes, found)
                missing = {key: dn for key, dn in missing.items() if key not in found}

            async def look_up(key: str, dn: str) -> None:
                async with self._lookups:
                    entry = await self._read(dn, attributes)
                ref = self.ref_of(entry) if entry is not None else None
                if ref is not None:
                    found[key] = ref

            async with asyncio.TaskGroup() as group:
                for key, dn in missing.items():
                    group.create_task(look_up(key, dn))
        return found

    async def _search_refs(self, missing: dict[str, str], attributes: list[str], found: dict[str, Ref]) -> None:
        """Resolve many DNs with few searches: per parent, one-level searches for their RDN values
        (``SEARCH_CHUNK`` to a filter) instead of one read per DN (a group of 50,000 members)."""
        wanted: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (parent, attribute) normalised
        for dn in missing.values():
            if not self.bases.holds(dn):
                continue  # no SCIM resource (the searches below are scoped by the directory's filter)
            if _PLAIN_DN.fullmatch(dn):  # no escapes: split the string, do not parse it
                rdn, _, parent = dn.partition(",")
                attribute, _, value = rdn.partition("=")
            else:
                rdns = dnlib.parse(dn)
                if not rdns or len(rdns[0].avas) != 1:
                    continue
                attribute, value, parent = rdns[0].avas[0].attribute, rdns[0].avas[0].value, dnlib.to_string(rdns[1:])
            wanted.setdefault((normalized(parent), attribute.lower()), (parent, []))[1].append(value)

        async def look_up(parent: str, attribute: str, values: list[str]) -> None:
            terms = "".join(f"({attribute}={escape_value(value)})" for value in values)
            async with self._lookups:
                try:
                    async for page in self.directory.search(
                        parent, f"(|{terms})", scope=Scope.ONELEVEL, attributes=attributes, page_size=len(values)
                    ):
                        for entry in page:
                            key = normalized(entry.dn)
                            if key in missing and (ref := self.ref_of(entry)) is not None:
                                found[key] = ref
                except DirectoryError:
                    return  # the DNs left are read one by one

        async with asyncio.TaskGroup() as group:
            for (_, attribute), (parent, values) in wanted.items():
                for start in range(0, len(values), SEARCH_CHUNK):
                    group.create_task(look_up(parent, attribute, values[start : start + SEARCH_CHUNK]))
