"""OpenLDAP delta: poll the accesslog overlay for adds, modifies, renames and deletes.

Settings: ``accesslog_base`` (``cn=accesslog``), ``base_dns`` (scope), ``page_size``; the server needs
``olcAccessLogOps: writes``, ``olcAccessLogSuccess: TRUE`` and ``olcAccessLogOld: (objectClass=*)`` so a
delete carries the entry's last attributes (entryUUID among them), and the bound identity must read
the accesslog database.
Guarantees:
- the watermark is ``accesslog:<reqStart>`` of the last record handed out (``accesslog:0``: from the
  beginning); the server is asked for whole seconds and the exact cut is made on the reqStart text
  (fixed width, so text order is time order); records come oldest first, at most ``limit`` per call,
  ``more`` when others wait;
  slapd's accesslog is written in commit order (delta-syncrepl relies on the same property);
- a record outside ``base_dns`` advances the watermark but yields no change (a rename into or out of
  the scope is kept: one of its DNs is inside); an added, modified or renamed entry that does not
  match ``scope_filter`` now is reported as a deletion (it left the scope, or was never in it: a
  consumer drops what it does not know);
- add/modify/rename changes carry the entry as it is *now* (``None`` if it is gone by the time we
  read it: a later record says where it went); delete changes carry the old attributes from ``reqOld``;
- a watermark whose record was purged from the log raises ``WatermarkExpiredError``: changes may
  have been lost, so the caller must re-read everything.
"""

from __future__ import annotations

import asyncio
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
_ATTRS = ["reqStart", "reqType", "reqDN", "reqNewRDN", "reqNewSuperior", "reqOld"]
_KINDS = {"add": ChangeKind.ADD, "modify": ChangeKind.MODIFY, "modrdn": ChangeKind.RENAME, "delete": ChangeKind.DELETE}
_RECENT = timedelta(minutes=10)


class AccessLogTracker:
    """Changes of an OpenLDAP directory read from its accesslog database."""

    def __init__(self, directory: LdapDirectory) -> None:
        self._dir = directory
        self._base = directory.settings.accesslog_base

    async def changes(self, watermark: str | None, *, limit: int) -> ChangeSet:
        if watermark is None:
            return ChangeSet([], PREFIX + await self._newest())
        if not watermark.startswith(PREFIX):
            raise WatermarkExpiredError(f"{watermark!r} is not an accesslog watermark; re-read everything")
        since = watermark.removeprefix(PREFIX)
        if since != "0":
            await self._check_still_logged(since)
        # The server compares whole seconds only (its generalizedTime ordering of fractions is unreliable:
        # a record equal to the watermark came back as newer); the exact cut is made here on the
        # fixed-width text, which orders correctly.
        ldap_filter = (
            "(&(objectClass=auditWriteObject)(reqResult=0)(|(reqType=add)(reqType=modify)(reqType=modrdn)"
            f"(reqType=delete)){'' if since == '0' else f'(reqStart>={since[:14]}Z)'})"
        )
        records: list[Entry] = []
        pages = cast(
            AsyncGenerator[list[Entry], None],
            self._dir.search(self._base, ldap_filter, scope=Scope.ONELEVEL, attributes=_ATTRS),
        )
        async with aclosing(pages):
            async for page in pages:
                records.extend(r for r in page if since == "0" or (r.text("reqStart") or "") > since)
                if len(records) > limit:
                    break
        records.sort(key=lambda r: r.text("reqStart") or "")
        more = len(records) > limit
        records = records[:limit]
        if not records:
            return ChangeSet([], watermark)
        changes = await self._to_changes(records)
        return ChangeSet(changes, PREFIX + (records[-1].text("reqStart") or since), more)

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
        """The newest reqStart: look at the last minutes first, scan the whole log only if they are empty."""
        recent = (datetime.now(UTC) - _RECENT).strftime("%Y%m%d%H%M%SZ")
        for ldap_filter in (f"(reqStart>={recent})", "(objectClass=*)"):
            newest = ""
            async for page in self._dir.search(self._base, ldap_filter, scope=Scope.ONELEVEL, attributes=["1.1"]):
                for record in page:
                    newest = max(newest, dnlib.parse(record.dn)[0].avas[0].value)
            if newest:
                return newest
        return "0"

    async def _check_still_logged(self, since: str) -> None:
        dn = f"reqStart={since},{self._base}"
        if await self._dir.get(dn, ["1.1"]) is None:
            raise WatermarkExpiredError(
                f"accesslog record {since} is no longer in {self._base} (purged?): changes may have been lost"
            )


def _old_attributes(lines: list[AttrValue]) -> Attributes:
    """reqOld values are ``attr: value`` lines; group them into attributes."""
    attributes = Attributes()
    for line in lines:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        name, sep, value = text.partition(": ")
        if sep:
            attributes.set(name, [*attributes.get(name, []), value])
    return attributes
