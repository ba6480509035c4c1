"""Active Directory delta: uSNChanged per domain controller, plus deletions found by an anchor scan.

Settings: ``base_dns`` and ``scope_filter`` (the scope; ``LdapDirectory.search`` ANDs the filter into
every search below), ``state_dir`` (the anchor store),
``page_size``. bonsai cannot send the Show Deleted or DirSync controls, so tombstones are out of reach;
instead, after the changed objects, a paged search of the scope that asks only for ``objectGUID`` is
compared with the set stored at the previous scan (``anchors.py``).
Guarantees:
- the watermark is ``usn:<invocationId>:<usn>:<deletion seq>:<store id>``. USNs are per domain
  controller: when the watermark's invocationId is not the current DC's (failover, restore), every
  object in scope is returned again (as modifications) instead of trusting foreign USNs;
- changes are ordered by uSNChanged, at most ``limit`` (objects sharing a USN stay together),
  ``more`` when others wait; uSNCreated above the watermark marks an add; a known objectGUID under a
  new DN is a rename (``old_dn`` set);
- the anchor scan runs only in the last batch and only when the DC's highestCommittedUSN moved since
  the previous scan (an idle poll costs one rootDSE read and one empty search); objects that vanished
  from the scope (deleted, moved out, no longer matching the filter) are logged with a sequence
  number, so a caller replaying an older watermark receives them again; a deletion change carries
  the last known DN and the objectGUID;
- a watermark made with another anchor store, or older than the kept deletion log, raises
  ``WatermarkExpiredError``: deletions could otherwise be missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugins import dn as dnlib
from plugins.directory import Attributes, Change, ChangeKind, ChangeSet, Entry, UnavailableError
from plugins.ldap.anchors import AnchorStore
from plugins.ldap.errors import WatermarkExpiredError

if TYPE_CHECKING:
    from plugins.ldap.directory import LdapDirectory

PREFIX = "usn:"


@dataclass(frozen=True, slots=True)
class UsnMark:
    dc: str
    usn: int
    seq: int
    store: str

    def encode(self) -> str:
        return f"{PREFIX}{self.dc}:{self.usn}:{self.seq}:{self.store}"

    @classmethod
    def decode(cls, text: str) -> UsnMark:
        parts = text.removeprefix(PREFIX).split(":")
        if not text.startswith(PREFIX) or len(parts) != 4:
            raise WatermarkExpiredError(f"{text!r} is not an AD watermark; re-read everything")
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]), parts[3])
        except ValueError:
            raise WatermarkExpiredError(f"{text!r} is not an AD watermark; re-read everything") from None


class UsnTracker:
    """Changes of an AD domain (one DC at a time) with deletions from anchor scans."""

    def __init__(self, directory: LdapDirectory) -> None:
        self._dir = directory
        settings = directory.settings
        scope_key = "|".join([*sorted(dnlib.normalize(b) for b in directory.scope_bases), settings.scope_filter or ""])
        digest = hashlib.sha256(scope_key.encode()).hexdigest()[:16]
        self._store_path = settings.state_dir / f"ad-anchors-{digest}.sqlite"
        self._store: AnchorStore | None = None
        self._lock = asyncio.Lock()
        self._invocation: dict[str, str] = {}

    async def _open_store(self) -> AnchorStore:
        if self._store is None:
            self._store = await asyncio.to_thread(AnchorStore, self._store_path)
        return self._store

    async def dc_state(self) -> tuple[str, int]:
        """(invocationId, highestCommittedUSN) of the DC we are talking to."""
        root = await self._dir.read_root_dse()
        usn = int(root.text("highestCommittedUSN") or "0")
        service = root.text("dsServiceName") or ""
        if service not in self._invocation:
            settings = await self._dir.get(service, ["invocationId"])
            raw = settings.first("invocationId") if settings is not None else None
            if not isinstance(raw, bytes) or len(raw) != 16:
                raise UnavailableError(f"cannot read the invocationId of {service!r}")
            self._invocation[service] = str(uuid.UUID(bytes_le=raw))
        return self._invocation[service], usn

    async def changes(self, watermark: str | None, *, limit: int) -> ChangeSet:
        async with self._lock:
            store = await self._open_store()
            dc, high = await self.dc_state()
            if watermark is None:
                await self._scan(store, dc, high)
                return ChangeSet([], UsnMark(dc, high, store.last_seq(), store.store_id).encode())
            mark = UsnMark.decode(watermark)
            if mark.store != store.store_id:
                raise WatermarkExpiredError("the watermark was made with another anchor store; re-read everything")
            if mark.seq < store.last_seq() and mark.seq + 1 < store.oldest_seq():
                raise WatermarkExpiredError("deletions after this watermark were pruned; re-read everything")
            rescan = mark.dc != dc
            since = 0 if rescan else mark.usn
            changes, cut, more = await self._changed(store, since, high, limit, rescan=rescan)
            if not more:
                await self._scan(store, dc, high)
                for _seq, guid, last_dn in await asyncio.to_thread(store.deletions_after, mark.seq):
                    changes.append(
                        Change(ChangeKind.DELETE, last_dn, Entry(last_dn, Attributes({"objectGUID": [guid]})))
                    )
            after = await self.dc_state()
            if after[0] != dc:
                raise UnavailableError("the domain controller changed during the delta; try again")
            seq = store.last_seq() if not more else mark.seq
            return ChangeSet(changes, UsnMark(dc, cut, seq, store.store_id).encode(), more)

    async def _changed(
        self, store: AnchorStore, since: int, high: int, limit: int, *, rescan: bool
    ) -> tuple[list[Change], int, bool]:
        """Objects with since < uSNChanged <= cut (cut ≤ high chosen so at most ``limit`` come back)."""
        window = f"(&(uSNChanged>={since + 1})(uSNChanged<={high}))"
        usns: list[int] = []
        for base in self._dir.scope_bases:
            async for page in self._dir.search(base, window, attributes=["uSNChanged"]):
                usns.extend(int(e.text("uSNChanged") or "0") for e in page)
        usns.sort()
        more = len(usns) > limit
        cut = usns[limit - 1] if more else high
        if not usns:
            return [], high, False
        entries: list[Entry] = []
        window = f"(&(uSNChanged>={since + 1})(uSNChanged<={cut}))"
        for base in self._dir.scope_bases:
            async for page in self._dir.search(base, window):
                entries.extend(page)
        entries.sort(key=lambda e: int(e.text("uSNChanged") or "0"))
        guids = [g for g in (e.first("objectGUID") for e in entries) if isinstance(g, bytes)]
        known = await asyncio.to_thread(store.lookup, guids)
        changes: list[Change] = []
        for entry in entries:
            guid = entry.first("objectGUID")
            old_dn = known.get(guid) if isinstance(guid, bytes) else None
            if old_dn is not None and dnlib.normalize(old_dn) != dnlib.normalize(entry.dn):
                changes.append(Change(ChangeKind.RENAME, entry.dn, entry, old_dn))
            elif not rescan and int(entry.text("uSNCreated") or "0") > since and old_dn is None:
                changes.append(Change(ChangeKind.ADD, entry.dn, entry))
            else:
                changes.append(Change(ChangeKind.MODIFY, entry.dn, entry))
        rows = [(g, e.dn) for e in entries if isinstance(g := e.first("objectGUID"), bytes)]
        await asyncio.to_thread(store.upsert, rows)
        return changes, cut, more

    async def _scan(self, store: AnchorStore, dc: str, high: int) -> int:
        """Compare every objectGUID in scope with the stored set, unless nothing changed on this DC."""
        if store.meta(f"scanned:{dc}") == str(high):
            return 0
        await asyncio.to_thread(store.begin_scan)
        for base in self._dir.scope_bases:
            async for page in self._dir.search(base, "(objectClass=*)", attributes=["objectGUID"]):
                rows = [(g, e.dn) for e in page if isinstance(g := e.first("objectGUID"), bytes)]
                await asyncio.to_thread(store.add_scan, rows)
        vanished = await asyncio.to_thread(store.finish_scan)
        await asyncio.to_thread(store.set_meta, f"scanned:{dc}", str(high))
        return vanished

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
