"""OpenLDAP delta: poll the accesslog overlay for adds, modifies, renames and deletes.

Settings: ``accesslog_base`` (``cn=accesslog``), ``base_dns`` (scope), ``page_size``; the server needs
``olcAccessLogOps: writes``, ``olcAccessLogSuccess: TRUE`` and ``olcAccessLogOld: (objectClass=*)`` so a
delete carries the entry's last attributes (entryUUID among them), and the bound identity must read
the accesslog database; an index on ``reqEnd`` (``olcDbIndex: reqEnd eq``, as delta-syncrepl setups
have) keeps a poll from scanning the whole log.
Guarantees:
- records are handed out in the order slapd wrote them, which is the order its writes committed, and
  none is skipped when writes overlap: slapd stamps ``reqEnd`` and adds the record to the log while it
  holds the overlay's log mutex (``accesslog_response``, OpenLDAP 2.4 to 2.6), so ``reqEnd`` grows in
  the order records become visible. ``reqStart`` (when a write *began*) does not: a slow modify that
  began before a quick add is logged after it. The watermark ``accesslog:<reqStart>:<reqEnd>`` names
  the last record handed out (its reqStart finds the record, to tell a purged log; its reqEnd is the
  cut); ``accesslog:0``: from the beginning. An older ``accesslog:<reqStart>`` is still read (the cut
  is then that record's reqEnd: a record handed out already may come again, none is lost);
- anything else after ``accesslog:`` (not two fixed-width generalized times) raises
  ``WatermarkExpiredError``: a client-supplied value never reaches a DN or a filter;
- the server is asked for whole seconds and the exact cut is made on the reqEnd text (fixed width, so
  text order is time order); records come oldest first, at most ``limit`` per call, ``more`` when
  others wait (slapd returns them in the order it added them, so the first ``limit`` it returns are
  the oldest);
- a record outside ``base_dns`` advances the watermark but yields no change (a rename into or out of
  the scope is kept: one of its DNs is inside); an added, modified or renamed entry that does not
  match ``scope_filter`` now is reported as a deletion (it left the scope, or was never in it: a
  consumer drops what it does not know);
- add/modify/rename changes carry the entry as it is *now* (``None`` if it is gone by the time we
  read it: a later record says where it went); delete changes carry the old attributes from ``reqOld``;
- a watermark whose record was purged from the log (or whose reqEnd is not that record's) raises
  ``WatermarkExpiredError``: changes may have been lost, so the caller must re-read everything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from plugins import dn as dnlib
from plugins.directory import Attributes, AttrValue, Change, ChangeKind, ChangeSet, Entry, NoSuchObjectError, Scope
from plugins.ldap.errors import WatermarkExpiredError

if TYPE_CHECKING:
    from plugins.ldap.directory import LdapDirectory

PREFIX = "accesslog:"
_ATTRS = ["reqStart", "reqEnd", "reqType", "reqDN", "reqNewRDN", "reqNewSuperior", "reqOld"]
_STAMP = re.compile(r"[0-9]{14}\.[0-9]{6}Z")  # the accesslog's reqStart / reqEnd: fixed width
_WRITES = "(objectClass=auditWriteObject)"
_KINDS = {"add": ChangeKind.ADD, "modify": ChangeKind.MODIFY, "modrdn": ChangeKind.RENAME, "delete": ChangeKind.DELETE}
_RECENT = timedelta(minutes=10)


class AccessLogTracker:
    """Changes of an OpenLDAP directory read from its accesslog database."""

    def __init__(self, directory: LdapDirectory) -> None:
        self._dir = directory
        self._base = directory.settings.accesslog_base

    async def changes(self, watermark: str | None, *, limit: int) -> ChangeSet:
        if watermark is None:
            return ChangeSet([], await self._newest())
        start, end = _parse(watermark)
        if start != "0":
            logged_end = await self._logged_end(start)
            if end is None:
                end = logged_end
            elif end != logged_end:
                raise WatermarkExpiredError(f"{_shown(watermark)} is not a watermark of this log; re-read everything")
        # The server compares whole seconds only (its generalizedTime ordering of fractions is unreliable:
        # a record equal to the watermark came back as newer); the exact cut is made here on the
        # fixed-width text, which orders correctly.
        ldap_filter = (
            f"(&{_WRITES}(reqResult=0)(|(reqType=add)(reqType=modify)(reqType=modrdn)"
            f"(reqType=delete)){'' if end is None else f'(reqEnd>={end[:14]}Z)'})"
        )
        records: list[Entry] = []
        pages = cast(
            AsyncGenerator[list[Entry], None],
            self._dir.search(self._base, ldap_filter, scope=Scope.ONELEVEL, attributes=_ATTRS),
        )
        async with aclosing(pages):
            async for page in pages:
                records.extend(r for r in page if end is None or (r.text("reqEnd") or "") > end)
                if len(records) > limit:
                    break
        records.sort(key=lambda r: r.text("reqEnd") or "")
        more = len(records) > limit
        records = records[:limit]
        if not records:
            return ChangeSet([], watermark)
        changes = await self._to_changes(records)
        return ChangeSet(changes, _watermark(records[-1]), more)

    async def _to_changes(self, records: list[Entry]) -> list[Change]:
        planned: list[tuple[ChangeKind, str, str | None, Entry | None]] = []
        for record in records:
            kind = _KINDS[(record.text("reqType") or "").lower()]
            target = record.text("reqDN") or ""
            old_dn: str | None = None
            entry: Entry | None = None
            if kind is ChangeKind.RENAME:
                old_dn = target
                superior = record.text("reqNewSuperior")
                target = dnlib.join(record.text("reqNewRDN") or "", superior if superior else dnlib.parent(target))
            elif kind is ChangeKind.DELETE:
                entry = Entry(target, _old_attributes(record.get("reqOld")))
            if self._in_scope(target) or (old_dn is not None and self._in_scope(old_dn)):
                planned.append((kind, target, old_dn, entry))
        wanted = {dn for kind, dn, _, _ in planned if kind is not ChangeKind.DELETE}
        current = dict(zip(wanted, await asyncio.gather(*(self._now(dn) for dn in wanted)), strict=True))
        changes = []
        for kind, dn, old_dn, entry in planned:
            if kind is ChangeKind.DELETE:
                changes.append(Change(kind, dn, entry, old_dn))
                continue
            now, matches = current[dn]
            # An entry that does not match scope_filter (any more) has left the scope: a deletion, as on AD.
            changes.append(Change(kind if matches else ChangeKind.DELETE, dn, now, old_dn))
        return changes

    async def _now(self, dn: str) -> tuple[Entry | None, bool]:
        """The entry as it is now (None if gone) and whether it matches ``scope_filter``."""
        entry = await self._dir.get(dn)
        if entry is None or not self._dir.settings.scope_filter:
            return entry, True
        matched: list[Entry] = []
        try:
            async for page in self._dir.search(dn, scope=Scope.BASE, attributes=["1.1"]):
                matched.extend(page)
        except NoSuchObjectError:  # deleted meanwhile: a later record says so
            return None, True
        return entry, bool(matched)

    def _in_scope(self, dn: str) -> bool:
        return any(dnlib.is_descendant(dn, base, or_self=True) for base in self._dir.scope_bases)

    async def _newest(self) -> str:
        """The watermark of the last record written: the last minutes first, the whole log only if they
        are empty. Write records only: slapd stamps others' reqEnd outside the log mutex."""
        recent = (datetime.now(UTC) - _RECENT).strftime("%Y%m%d%H%M%SZ")
        for ldap_filter in (f"(&{_WRITES}(reqEnd>={recent}))", _WRITES):
            newest: Entry | None = None
            async for page in self._dir.search(
                self._base, ldap_filter, scope=Scope.ONELEVEL, attributes=["reqStart", "reqEnd"]
            ):
                for record in page:
                    if newest is None or (record.text("reqEnd") or "") > (newest.text("reqEnd") or ""):
                        newest = record
            if newest is not None:
                return _watermark(newest)
        return PREFIX + "0"

    async def _logged_end(self, start: str) -> str:
        """The reqEnd of the record that began at ``start`` (a valid stamp: it goes into a DN)."""
        record = await self._dir.get(f"reqStart={start},{self._base}", ["reqEnd"])
        end = record.text("reqEnd") if record is not None else None
        if end is None:
            raise WatermarkExpiredError(
                f"accesslog record {start} is no longer in {self._base} (purged?): changes may have been lost"
            )
        return end


def _parse(watermark: str) -> tuple[str, str | None]:
    """(reqStart, reqEnd) of an ``accesslog:`` watermark: ("0", None) from the beginning, reqEnd None in an
    older watermark. Anything else raises ``WatermarkExpiredError``."""
    if not watermark.startswith(PREFIX):
        raise WatermarkExpiredError(f"{_shown(watermark)} is not an accesslog watermark; re-read everything")
    value = watermark.removeprefix(PREFIX)
    if value == "0":
        return "0", None
    start, _, end = value.partition(":")
    if _is_stamp(start) and (not end or _is_stamp(end)):
        return start, end or None
    raise WatermarkExpiredError(f"{_shown(watermark)} is not a watermark this agent wrote; re-read everything")


def _is_stamp(text: str) -> bool:
    """Whether ``text`` is a generalized time as the accesslog writes them (``20240131235959.000042Z``)."""
    if _STAMP.fullmatch(text) is None:
        return False
    try:
        datetime.strptime(text[:14], "%Y%m%d%H%M%S")  # only checks that the date exists
    except ValueError:
        return False
    return True


def _watermark(record: Entry) -> str:
    start = record.text("reqStart") or dnlib.parse(record.dn)[0].avas[0].value
    return f"{PREFIX}{start}:{record.text('reqEnd') or ''}"


def _shown(watermark: str) -> str:
    """A client-supplied watermark for a message: quoted, and cut short."""
    return repr(watermark[:48]) + ("…" if len(watermark) > 48 else "")


def _old_attributes(lines: list[AttrValue]) -> Attributes:
    """reqOld values are ``attr: value`` lines; group them into attributes."""
    attributes = Attributes()
    for line in lines:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        name, sep, value = text.partition(": ")
        if sep:
            attributes.set(name, [*attributes.get(name, []), value])
    return attributes
