"""``LdapDirectory``: the ``Directory`` interface over LDAP with bonsai (OpenLDAP, Active Directory).

Settings: ``LdapSettings`` (``plugins/ldap/settings.py``). Guarantees:
- one pooled connection per concurrent operation, waiting without spinning (``connection.py``,
  ``pool.py``); waiting for a free connection, and each operation (each page), are bounded by
  ``operation_timeout`` (a connection not free in time: ``PoolExhaustedError``, not retried);
- reads (``search``, ``get``, and the first page of a paged search) retry recoverable errors; writes
  retry them only when the server cannot have applied the request (connecting failed, or the server
  answered busy or unavailable) — a write that failed in flight (connection lost, no answer in time)
  raises ``WriteOutcomeUnknownError`` and is never replayed blindly;
- an error result on any page of a paged search raises its own ``DirectoryError`` (a server limit:
  ``LimitExceededError``); the page asked for in advance is abandoned only while it is still pending;
- ``search`` ANDs ``scope_filter`` into every search whose base overlaps the scope (``scoped``), so
  objects outside it are invisible to SCIM; ``get`` (a read by DN) is not filtered: its callers name
  an object they already found, or read back what they wrote, or read outside the scope (rootDSE,
  the DC's settings), and the accesslog delta checks the filter itself;
- on OpenLDAP, searches start as one plain search limited to a page; when more entries exist, or
  none, they run again as a paged search (AD: paged from the start), streamed page by page with
  manual paging; the next page is asked for before the current one is converted and handed over (the
  server builds it meanwhile) and abandoned if the consumer stops early; a missing base raises
  ``NoSuchObjectError``;
  ranged attributes (``member;range=0-1499``) come back complete under their plain name; the
  ``binary_attributes`` are ``bytes``; the values of attributes a read names come back exactly as
  stored (``values.py``);
- ``modify`` sends one LDAP modify (atomic); ``rename`` is one modrdn that removes the old RDN value;
  ``unicodePwd`` is written only over an encrypted connection, as AD's quoted UTF-16-LE;
- ``changes`` uses the accesslog on OpenLDAP and uSNChanged plus an anchor scan on AD
  (``delta_accesslog.py``, ``delta_usn.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import bonsai
import structlog
from bonsai._bonsai import ldapentry as c_entry

from plugins import dn as dnlib
from plugins.directory import (
    AttrValue,
    ChangeSet,
    Directory,
    DirectoryError,
    Entry,
    Modification,
    ModOp,
    NoSuchObjectError,
    NotAllowedError,
    PoolExhaustedError,
    Scope,
    UnavailableError,
    WriteOutcomeUnknownError,
)
from plugins.ldap import compat
from plugins.ldap.connection import RawNames, binary_attributes, make_client
from plugins.ldap.errors import RECOVERABLE, DirectoryClosedError, server_answered, translate
from plugins.ldap.pool import ConnectionPool
from plugins.ldap.retry import retrying
from plugins.ldap.settings import LdapSettings
from plugins.ldap.values import (
    Range,
    encode_unicode_pwd,
    fold_modifications,
    is_unicode_pwd,
    parse_range,
    to_entries,
    to_entry,
)

compat.install()

T = TypeVar("T")
Flavor = Literal["ad", "openldap"]
_AD_CAPABILITY = "1.2.840.113556.1.4.800"
_OP: dict[ModOp, int] = {
    ModOp.ADD: bonsai.LDAPModOp.ADD,
    ModOp.DELETE: bonsai.LDAPModOp.DELETE,
    ModOp.REPLACE: bonsai.LDAPModOp.REPLACE,
}
_FAILURES = (bonsai.LDAPError, OSError, TimeoutError)
_log = structlog.get_logger("cloudprov.ldap")


def _abandon(conn: Any, msg_id: int) -> None:
    """Abandon an operation whose answer nobody will read (libldap then drops it when it arrives).

    Called while another error may be on its way out: it never raises, so that error is the one seen."""
    try:
        conn.abandon(msg_id)
    except Exception as exc:  # bonsai raises SystemError for an id whose answer has been read already
        _log.warning("could not abandon an LDAP operation; closing its connection", msg_id=msg_id, error=repr(exc))
        conn.close()  # cannot tell what the connection holds: the pool will not lend it again


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__
class _Search:
    """One search as sent; ``raw``: the attributes whose values it keeps as bytes (None: the binary list)."""

    base: str
    scope: int
    ldap_filter: str
    attrs: list[str]
    size: int
    raw: RawNames | None
    encoded: list[bytes]  # attrs as bonsai sends them (it encodes a str at every search)

    def __str__(self) -> str:
        """What the search is, for error messages (made only when one is)."""
        return f"search {self.base!r} {self.ldap_filter}"


class _NotOpen:
    """Placeholder pool: fails loudly when the directory is used before ``open``."""

    def connection(self) -> Any:
        raise DirectoryClosedError("LdapDirectory is not open: use `async with LdapDirectory(settings)`")


def _translated(exc: BaseException, what: str | _Search, write: bool) -> DirectoryError:
    """The error to raise for ``exc`` from an operation (``what``: its description):
    ``WriteOutcomeUnknownError`` for a write that failed after a server may have received it (the
    retry policy, which retries ``UnavailableError`` only, then leaves it alone)."""
    error = translate(exc, context=str(what))
    if write and isinstance(error, UnavailableError) and not server_answered(exc):
        return WriteOutcomeUnknownError(
            f"{error}; the server may or may not have applied the write: read the entry before repeating it"
        )
    return error


class LdapDirectory(Directory):
    """A directory reached over LDAP; ``flavor`` says whether it is Active Directory or OpenLDAP."""

    Settings: ClassVar[type[LdapSettings]] = LdapSettings
    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = RECOVERABLE
    shared_lookups: ClassVar[bool] = True

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.max_concurrency = settings.pool_size
        self._pool: ConnectionPool | _NotOpen = _NotOpen()
        self._flavor: Flavor | None = settings.flavor if settings.flavor != "auto" else None
        self._base_dn: str | None = settings.base_dns[0] if settings.base_dns else None
        self.root_dse: Entry | None = None
        self._tracker: Any = None
        self._binary = frozenset(name.lower() for name in binary_attributes(settings))
        self._names_by_attrs: dict[Sequence[str], tuple[list[str], RawNames | None, list[bytes]]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        clients = [(url, make_client(self.settings, url)) for url in self.settings.urls]
        self._pool = ConnectionPool(
            clients,
            size=self.settings.pool_size,
            connect_timeout=self.settings.connect_timeout,
            max_idle=self.settings.max_idle,
            failover_hold=self.settings.failover_hold,
            wait_timeout=self.settings.operation_timeout,
        )
        try:
            self.root_dse = await self.read_root_dse()
        except BaseException:
            await self.close()
            raise
        if self._flavor is None:
            capabilities = {str(v) for v in self.root_dse.get("supportedCapabilities")}
            self._flavor = "ad" if _AD_CAPABILITY in capabilities else "openldap"
        if self._base_dn is None:
            self._base_dn = self._default_naming_context(self.root_dse)
        if self._flavor == "ad":
            from plugins.ldap.delta_usn import UsnTracker

            self._tracker = UsnTracker(self)
        else:
            from plugins.ldap.delta_accesslog import AccessLogTracker

            self._tracker = AccessLogTracker(self)

    async def close(self) -> None:
        if self._tracker is not None and hasattr(self._tracker, "close"):
            self._tracker.close()
        if isinstance(self._pool, ConnectionPool):
            await self._pool.close()
        self._pool = _NotOpen()

    @property
    def pool(self) -> ConnectionPool:
        if not isinstance(self._pool, ConnectionPool):
            self._pool.connection()  # raises
        assert isinstance(self._pool, ConnectionPool)
        return self._pool

    @property
    def flavor(self) -> Flavor:
        if self._flavor is None:
            raise UnavailableError("the server flavor is known once the directory is open")
        return self._flavor

    @property
    def base_dn(self) -> str:
        if self._base_dn is None:
            raise UnavailableError("the base DN is known once the directory is open")
        return self._base_dn

    @property
    def scope_bases(self) -> tuple[str, ...]:
        return self.settings.base_dns or (self.base_dn,)

    async def read_root_dse(self) -> Entry:
        attrs = [
            "*",
            "+",
            "supportedCapabilities",
            "namingContexts",
            "defaultNamingContext",
            "dsServiceName",
            "highestCommittedUSN",
        ]
        entry = await self.call("read the rootDSE", lambda c: self._base_entry(c, "", attrs))
        if entry is None:
            raise UnavailableError("the server returned no rootDSE")
        return entry

    @staticmethod
    def _default_naming_context(root: Entry) -> str:
        default = root.text("defaultNamingContext")
        if default:
            return default
        contexts = [str(v) for v in root.get("namingContexts")]
        usable = [c for c in contexts if c.lower() not in {"cn=accesslog", "cn=config", "cn=monitor"}]
        if not usable:
            raise UnavailableError("the server names no naming context; set base_dns")
        return usable[0]

    # ------------------------------------------------------------------ calling with pool + retry
    async def call(self, what: str | _Search, op: Callable[[Any], Awaitable[T]], *, write: bool = False) -> T:
        """Run ``op(conn)`` on a pooled connection, translating errors and retrying what is safe to retry."""
        try:  # the common case: _once's body in this frame (a coroutine less), no retry machinery
            async with self.pool.connection() as conn:
                try:
                    return await op(conn)
                except _FAILURES as exc:
                    raise _translated(exc, what, write) from exc
        except RECOVERABLE as error:
            if self.settings.retry.attempts <= 1 or isinstance(error, PoolExhaustedError):
                raise
        async for attempt in retrying(self.settings.retry, first_wait=True):
            with attempt:
                return await self._once(what, op, write=write)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _once(self, what: str | _Search, op: Callable[[Any], Awaitable[T]], *, write: bool) -> T:
        async with self.pool.connection() as conn:
            try:
                return await op(conn)
            except _FAILURES as exc:
                raise _translated(exc, what, write) from exc

    # ------------------------------------------------------------------ reads
    def default_attributes(self) -> list[str]:
        if self.flavor == "openldap":
            return ["*", "entryUUID", "createTimestamp", "modifyTimestamp"]
        return ["*"]

    async def search(
        self,
        base: str,
        ldap_filter: str = "(objectClass=*)",
        *,
        scope: Scope = Scope.SUBTREE,
        attributes: Sequence[str] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Entry]]:
        attrs, raw, encoded = self._names_for(attributes if attributes is not None else self.default_attributes())
        size = max(1, min(page_size, self.settings.page_size))
        ldap_filter = self.scoped(base, ldap_filter)
        asked = what = _Search(base, int(scope), ldap_filter, attrs, size, raw, encoded)
        if self.flavor == "openldap":
            # One plain search bounded to a page first: most searches (lookups by name or id) find a few
            # entries, and the paged-results control costs a fifth of such a lookup. More than a page
            # exist, or none: the search runs again, paged (see _plain_page). Only where the server
            # honours the client's size limit (Samba ignores it: AD always pages).
            found = await self.call(what, lambda conn: self._plain_page(conn, asked))
            if found:
                yield found
                return
        async for page in self._paged(what, asked):
            yield page

    async def _plain_page(self, conn: Any, asked: _Search) -> list[Entry]:
        """The entries of a plain search limited to ``size``; [] when more exist (the server says
        sizeLimitExceeded) or none, because bonsai's plain search answers a missing base with []."""
        conn.raw = asked.raw
        try:
            found = await conn.plain_search(
                asked.base, asked.scope, asked.ldap_filter, asked.encoded, self.settings.operation_timeout, asked.size
            )
        except bonsai.SizeLimitError:
            return []
        finally:
            conn.raw = None
        if len(found) > asked.size:
            return []
        entries, optioned = to_entries(found, self._binary)
        if entries and asked.raw is not None and not asked.raw.ordered:
            asked.raw.learn(entries[0].attributes)
        for entry in optioned:
            await self._complete_ranges(conn, entry)
        return entries

    async def _paged(self, what: _Search, asked: _Search) -> AsyncIterator[list[Entry]]:
        """A paged search streamed page by page on one connection (manual paging)."""
        timeout = self.settings.operation_timeout

        async def first_page(conn: Any) -> Any:
            conn.raw = asked.raw
            try:
                return await conn.paged_search(
                    asked.base, asked.scope, asked.ldap_filter, asked.attrs, timeout=timeout, page_size=asked.size
                )
            except BaseException:
                conn.raw = None
                raise

        async with AsyncExitStack() as stack:
            conn, page = await self._open_paged(stack, what, first_page)
            found: Iterable[Any] = page  # iterating bonsai's page hands its entries over one by one
            yielded = False
            msg_id: int | None = None
            try:
                while True:
                    # Ask for the next page before converting this one: the server builds it meanwhile.
                    msg_id = page.acquire_next_page()
                    entries, optioned = to_entries(found, self._binary)
                    found = ()
                    if entries and asked.raw is not None and not asked.raw.ordered:
                        asked.raw.learn(entries[0].attributes)
                    fetched = None
                    if optioned and msg_id is not None:  # ranged retrieval searches on this connection
                        pending, msg_id = msg_id, None
                        fetched = await conn.get_result(pending, timeout)
                    for entry in optioned:
                        await self._complete_ranges(conn, entry)
                    if entries:
                        yielded = True
                        yield entries
                    if msg_id is not None:
                        # no longer ours to abandon once awaited: it ends in a result (even an error
                        # result, which completes it), or the failure closes the connection
                        pending, msg_id = msg_id, None
                        fetched = await conn.get_result(pending, timeout)
                    if fetched is None:
                        break
                    page = found = fetched
            except _FAILURES as exc:
                raise translate(exc, context=str(what)) from exc
            finally:
                if msg_id is not None:  # the consumer stopped early: drop the page asked for in advance
                    _abandon(conn, msg_id)
                conn.raw = None
        if not yielded:
            yield []

    def _raw_for(self, attrs: Sequence[str]) -> RawNames | None:
        """``RawNames.named(attrs)``, remembered per attribute list (and ordered by its first entry)."""
        return self._names_for(attrs)[1]

    def _names_for(self, attrs: Sequence[str]) -> tuple[list[str], RawNames | None, list[bytes]]:
        """``attrs`` as a list, its ``RawNames.named`` and its names UTF-8 encoded, remembered per
        attribute list (a tuple, as the SCIM profiles give them, is its own key)."""
        key = attrs if type(attrs) is tuple else tuple(attrs)
        try:
            return self._names_by_attrs[key]
        except KeyError:
            if len(self._names_by_attrs) >= 256:  # lists come from mappings and code: a few in practice
                self._names_by_attrs.clear()
            listed = list(key)
            known = self._names_by_attrs[key] = (listed, RawNames.named(listed), [n.encode() for n in listed])
            return known

    def scoped(self, base: str, ldap_filter: str) -> str:
        """``ldap_filter`` ANDed with ``scope_filter`` when ``base`` overlaps the scope (is in, or holds, a
        scope base). Searches elsewhere (``cn=accesslog``, the configuration) are the plugin's own."""
        extra = self.settings.scope_filter
        if not extra or not base:
            return ldap_filter
        try:
            overlaps = any(
                dnlib.is_descendant(base, scope, or_self=True) or dnlib.is_descendant(scope, base)
                for scope in self.scope_bases
            )
        except DirectoryError:  # not a DN: the server will say so
            return ldap_filter
        if not overlaps:
            return ldap_filter
        return f"(&{ldap_filter}{extra if extra.startswith('(') else f'({extra})'})"

    async def _open_paged(
        self, outer: AsyncExitStack, what: _Search, first_page: Callable[[Any], Awaitable[Any]]
    ) -> tuple[Any, Any]:
        """A pooled connection (kept open in ``outer``) and the first page; retried as a read."""

        async def attempt_once() -> tuple[Any, Any]:
            stack = AsyncExitStack()
            conn = await stack.enter_async_context(self.pool.connection())
            try:
                try:
                    page = await first_page(conn)
                except _FAILURES as exc:
                    raise translate(exc, context=str(what)) from exc
            except BaseException as exc:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
            outer.push_async_exit(stack)
            return conn, page

        try:
            return await attempt_once()
        except RECOVERABLE as error:
            if self.settings.retry.attempts <= 1 or isinstance(error, PoolExhaustedError):
                raise
        async for attempt in retrying(self.settings.retry, first_wait=True):
            with attempt:
                return await attempt_once()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def get(self, dn: str, attributes: Sequence[str] | None = None) -> Entry | None:
        attrs = list(attributes) if attributes is not None else self.default_attributes()
        try:
            return await self.call(f"read {dn!r}", lambda conn: self._base_entry(conn, dn, attrs))
        except NoSuchObjectError:
            return None

    async def _base_entry(self, conn: Any, dn: str, attrs: list[str]) -> Entry | None:
        conn.raw = raw = self._raw_for(attrs)
        try:
            found = await conn.search(
                dn, bonsai.LDAPSearchScope.BASE, "(objectClass=*)", attrs, timeout=self.settings.operation_timeout
            )
        finally:
            conn.raw = None
        if not found:
            return None
        entry = to_entry(found[0], self._binary)
        if raw is not None and not raw.ordered:
            raw.learn(entry.attributes)
        await self._complete_ranges(conn, entry)
        return entry

    async def _complete_ranges(self, conn: Any, entry: Entry) -> None:
        """Fetch the rest of every ranged attribute (AD returns ``member;range=0-1499`` for big groups)."""
        for name in [n for n in entry.attributes if ";range=" in n.lower()]:
            first = parse_range(name)
            if first is None:
                continue
            values = list(entry.attributes[name])
            entry.attributes.remove(name)
            chunk: Range | None = first
            while chunk is not None and chunk.high is not None and len(values) < self.settings.range_retrieval_limit:
                chunk = await self._next_range(conn, entry.dn, first.attribute, chunk.high + 1, values)
            entry.attributes.set(first.attribute, values)

    async def _next_range(self, conn: Any, dn: str, attribute: str, low: int, values: list[AttrValue]) -> Range | None:
        found = await conn.search(
            dn,
            bonsai.LDAPSearchScope.BASE,
            "(objectClass=*)",
            [f"{attribute};range={low}-*"],
            timeout=self.settings.operation_timeout,
        )
        if not found:
            return None
        part = to_entry(found[0], self._binary).attributes
        for got in part:
            parsed = parse_range(got)
            if parsed is not None and parsed.attribute.lower() == attribute.lower():
                values.extend(part[got])
                return parsed
        return None

    # ------------------------------------------------------------------ writes
    def _check_password_channel(self, names: Sequence[str]) -> None:
        if any(is_unicode_pwd(n) for n in names) and not self.settings.encrypted:
            raise NotAllowedError(
                "unicodePwd can only be written over an encrypted connection: use ldaps:// or starttls: true"
            )

    async def add(self, dn: str, attributes: Mapping[str, Sequence[AttrValue]]) -> None:
        self._check_password_channel(list(attributes))

        async def op(conn: Any) -> None:
            entry = bonsai.LDAPEntry(dn)
            for name, values in attributes.items():
                entry[name] = [encode_unicode_pwd(v) for v in values] if is_unicode_pwd(name) else list(values)
            await conn.add(entry, timeout=self.settings.operation_timeout)

        await self.call(f"add {dn!r}", op, write=True)

    async def modify(self, dn: str, changes: Sequence[Modification]) -> None:
        folded = fold_modifications(changes)
        if not folded:
            return
        self._check_password_channel([c.attribute for c in folded])

        async def op(conn: Any) -> None:
            entry = bonsai.LDAPEntry(dn, conn)
            for change in folded:
                values = (
                    [encode_unicode_pwd(v) for v in change.values]
                    if is_unicode_pwd(change.attribute)
                    else list(change.values)
                )
                entry.change_attribute(change.attribute, _OP[change.op], *values)
            await entry.modify(timeout=self.settings.operation_timeout)

        await self.call(f"modify {dn!r}", op, write=True)

    async def delete(self, dn: str) -> None:
        async def op(conn: Any) -> None:
            await conn.delete(dn, timeout=self.settings.operation_timeout)

        await self.call(f"delete {dn!r}", op, write=True)

    async def rename(self, dn: str, new_rdn: str, *, new_superior: str | None = None) -> str:
        parent = new_superior if new_superior is not None else dnlib.parent(dn)
        new_dn = dnlib.join(new_rdn, parent)
        target = compat.RenameTarget(new_dn, dnlib.rdn(new_dn), dnlib.to_string(dnlib.parse(parent)))

        async def op(conn: Any) -> None:
            entry = bonsai.LDAPEntry(dn, conn)
            # bonsai's Python rename turns the target back into a string and splits it wrongly
            msg_id = c_entry.rename(entry, target, True)
            await conn.get_result(msg_id, self.settings.operation_timeout)

        await self.call(f"rename {dn!r} to {new_dn!r}", op, write=True)
        return new_dn

    # ------------------------------------------------------------------ delta
    async def changes(self, watermark: str | None, *, limit: int = 1000) -> ChangeSet:
        if self._tracker is None:
            self.pool  # noqa: B018 - raises the "not open" error
        result: ChangeSet = await self._tracker.changes(watermark, limit=limit)
        return result
