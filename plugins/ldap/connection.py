"""bonsai clients and the asyncio connection class that waits without spinning.

Settings: ``LdapSettings`` (URL, bind, TLS, binary attributes). Guarantees:
- ``ReadableOnlyConnection`` replaces bonsai's stock asyncio polling, which registers the socket for
  *writability* too: a connected socket is always writable, so the event loop spun a core while a
  reply was pending. Once the connection is open, we wait for readability only (plus one immediate
  check, because libldap may already hold the reply in its buffers). Opening (connect, TLS, bind)
  keeps bonsai's own code path. Replies are parsed with the garbage collector paused (``gcpause.py``).
- bonsai hands over as ``bytes`` the values of the attributes in the client's binary list and turns
  every other value that parses as a Python integer literal into an ``int`` (``+14155552671``,
  ``0x10``, ``1_000`` then come back as ``14155552671``, ``16``, ``1000``: not the stored text). A
  connection's operation can name the attributes kept as bytes instead (``raw``, set by the caller
  for one operation; None: the client's binary list); ``raw_named`` gives the names of a search
  that lists its attributes, whose values then arrive exactly as stored (``values.to_entries``
  decodes the text ones). The list is short on purpose: bonsai compares every attribute name of
  every entry with the listed names until one matches (two copies and two allocations per
  comparison); ``RawNames`` holds them UTF-8 encoded (bonsai encodes a ``str`` at every comparison)
  and, once an entry has been seen, in the order the server returns them, and bonsai iterates them
  through a ``RawCursor`` that starts each attribute's scan after the name the previous one matched.
- One outstanding operation per connection, as in bonsai; the pool enforces it.
- ``make_client`` sets manual paging (bonsai's automatic paging breaks on Samba when the last page is
  exactly full), raw binary attributes, certificate checking (``demand`` unless disabled) and the CA.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

import bonsai
from bonsai._bonsai import ldapconnection as c_connection
from bonsai.asyncio import AIOLDAPConnection

from plugins.ldap.gcpause import call_paused
from plugins.ldap.settings import LdapSettings
from protocol import deadlines

#: Binary whatever the settings say: the delta code depends on them.
REQUIRED_BINARY = ("objectGUID", "invocationId")


class PluginClient(bonsai.LDAPClient):
    """A bonsai client whose list of attributes kept as bytes a connection can replace while it
    parses a reply.

    bonsai reads ``raw_attributes`` once per entry it parses; ``parsing_raw`` stands in for the
    binary list during one synchronous parse (set and cleared by ``ReadableOnlyConnection``).
    """

    parsing_raw: RawCursor | None = None

    @property
    def raw_attributes(self) -> Any:  # a list of str, or while parsing a RawCursor (iterated for bytes)
        replaced = self.parsing_raw
        if replaced is not None:
            replaced._last = None  # read once per entry: the entry's first attribute starts at the top
            return replaced
        return super().raw_attributes

    @raw_attributes.setter
    def raw_attributes(self, value: list[str]) -> None:
        self.set_raw_attributes(value)


class ReadableOnlyConnection(AIOLDAPConnection):
    """An ``AIOLDAPConnection`` that sleeps until the socket is readable instead of polling.

    The reader stays registered between operations (registering and unregistering with the event
    loop's selector cost more than a search reply takes to parse). It is removed when an operation
    fails (libldap may have closed the socket), when the socket turns readable while no operation
    waits (end of file, a notice of disconnection), and on ``close``.
    """

    _opened = False
    _reader_fd = -1
    _pending: tuple[int, asyncio.Future[Any]] | None = None
    #: The attributes whose values the current operation keeps as bytes (None: the client's binary list).
    raw: RawNames | None = None

    def __init__(self, client: bonsai.LDAPClient, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(client, loop)  # type: ignore[no-untyped-call]
        self._narrowable = client if isinstance(client, PluginClient) else None
        self._deadlines = deadlines.for_loop(self._loop)

    def plain_search(
        self, base: str, scope: int, ldap_filter: str, attrs: list[bytes], timeout: float, sizelimit: int
    ) -> Awaitable[Any]:
        """``search(base, scope, ldap_filter, attrs, timeout=timeout, sizelimit=sizelimit)`` without
        bonsai's three Python layers around its C call (defaults filled in, the call evaluated): the
        same request (``attrs``: the names UTF-8 encoded, as bonsai would send them), the same answer."""
        return self._poll(c_connection.search(self, base, scope, ldap_filter, attrs, timeout, sizelimit), timeout)

    def _result(self, msg_id: int) -> Any:
        """bonsai's result of ``msg_id`` if it has arrived (else None), parsed with the collector
        paused (a page of entries is parsed in one call: see gcpause.py) and the operation's ``raw``."""
        client = self._narrowable
        if client is None:
            return call_paused(c_connection.get_result, self, msg_id)
        raw = self.raw
        client.parsing_raw = None if raw is None else raw.cursor
        try:
            return call_paused(c_connection.get_result, self, msg_id)
        finally:
            client.parsing_raw = None

    async def _poll(self, msg_id: int, timeout: float | None = None) -> Any:
        if not self._opened:
            result = await super()._poll(msg_id, timeout)  # type: ignore[no-untyped-call]
            self._opened = True
            return result
        result = self._result(msg_id)
        if result is not None:
            return result
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._pending = (msg_id, done)
        if self._reader_fd < 0:
            self._reader_fd = self.fileno()
            loop.add_reader(self._reader_fd, self._on_readable)
        expiry = self._deadlines.start(done, timeout) if timeout is not None else None
        try:
            return await done
        except BaseException:
            self._stop_reading()
            raise
        finally:
            self._pending = None
            if expiry is not None:
                self._deadlines.cancel(done, expiry)

    def _on_readable(self) -> None:
        pending = self._pending
        if pending is None or pending[1].done():
            self._stop_reading()  # readable with nothing asked: EOF or a notice; the pool's check sees it
            return
        msg_id, done = pending
        try:
            answer = self._result(msg_id)
        except BaseException as exc:  # handed to the awaiting operation
            done.set_exception(exc)
            return
        if answer is not None:
            done.set_result(answer)

    @property
    def watched(self) -> bool:
        """The event loop watches the socket: had it turned readable while idle (end of file, a notice
        of disconnection), ``_on_readable`` would have stopped watching, so it needs no check."""
        return self._reader_fd >= 0

    def _stop_reading(self) -> None:
        if self._reader_fd >= 0:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = -1

    def close(self) -> None:
        self._stop_reading()
        super().close()


def binary_attributes(settings: LdapSettings) -> list[str]:
    """The attributes whose values stay ``bytes``: the configured ones and those the delta code needs."""
    return sorted({*settings.binary_attributes, *REQUIRED_BINARY}, key=str.lower)


def raw_named(attributes: list[str]) -> list[str] | None:
    """The attributes to keep as bytes for a search asking for ``attributes``: all it names (options
    dropped), so every value arrives as stored; None when it may return attributes it does not name
    (``*``, ``+``, or a name given as an OID, which comes back under its name): the binary list."""
    named: dict[str, str] = {}
    for name in attributes:
        if name == "1.1":  # no attributes at all
            continue
        if name in ("*", "+") or name[:1].isdigit():
            return None
        plain = name.partition(";")[0]
        named.setdefault(plain.lower(), plain)
    return list(named.values())


class RawNames(list[bytes]):
    """``raw_named(attributes)`` as bonsai compares it fastest: UTF-8 encoded, and (after ``learn``) in the
    order the server returns the attributes.

    For every attribute of every entry, bonsai scans this list until a name matches (ignoring case),
    copying both names at each comparison: with the list in the server's order an entry's n-th
    attribute matches at the n-th name, not wherever the caller's (often alphabetical) order put it.
    The order changes only the cost: membership, hence which values stay bytes, is the same.
    """

    __slots__ = ("cursor", "ordered")

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(name.encode() for name in names)
        self.ordered = False
        self.cursor = RawCursor(self)

    def learn(self, returned: Iterable[str]) -> None:
        """Put first the names in ``returned`` (an entry's attribute names, in the server's order), in
        that order; the others keep theirs after them. Done once: ``ordered`` is then True."""
        position: dict[bytes, int] = {}
        for name in returned:
            position.setdefault(name.lower().encode(), len(position))
        last = len(position)
        self.sort(key=lambda name: position.get(name.lower(), last))
        self.cursor = RawCursor(self)
        self.ordered = True

    @classmethod
    def named(cls, attributes: list[str]) -> RawNames | None:
        """The ``RawNames`` of a search asking for ``attributes`` (None: the client's binary list)."""
        names = raw_named(attributes)
        return None if names is None else cls(names)


#: Lists of more names are not rotated (see ``RawCursor``).
_ROTATED_AT_MOST = 64


class RawCursor:
    """``RawNames`` as bonsai iterates them while it parses a reply: every name, for each attribute of an
    entry, but starting after the name that the entry's previous attribute matched.

    bonsai iterates its list anew for each attribute (``iter``, then compares name after name until one
    matches): with the list in the server's order, the n-th attribute of an entry was found after n
    comparisons. Here each ``iter`` gives a rotation of the whole list (so an attribute is found, or
    not, exactly as in the list) that starts where the previous attribute was found, read off how far
    bonsai went through the previous iterator; the entry's next attribute is then found at the first
    comparison. ``PluginClient.raw_attributes`` (read once per entry) starts each entry at the top.
    """

    __slots__ = ("_after", "_last", "_rotations", "_start")

    def __init__(self, names: list[bytes]) -> None:
        count = len(names)
        # longer lists (rare: a search naming many attributes) are scanned from the top: rotations cost count²
        rotated = range(count) if count <= _ROTATED_AT_MOST else range(min(count, 1))
        self._rotations = [names[at:] + names[:at] for at in rotated] or [[]]
        size = len(self._rotations)
        # bonsai stopped at the name that matched: the next scan starts after it (none matched: where it
        # started); _after[start][names left in the iterator] is that start
        self._after = [[(start + size - left) % size for left in range(count + 1)] for start in range(size)]
        self._start = 0
        self._last: Any = None  # the list iterator handed out last (None: the entry's first attribute)

    def __iter__(self) -> Iterator[bytes]:
        last = self._last
        start = 0 if last is None else self._after[self._start][last.__length_hint__()]
        self._start = start
        self._last = found = iter(self._rotations[start])
        return found


def make_client(settings: LdapSettings, url: str) -> bonsai.LDAPClient:
    """A bonsai client for one URL, configured from the settings."""
    client = PluginClient(url, tls=settings.starttls and url.lower().startswith("ldap://"))
    if settings.auth == "simple":
        if settings.bind_dn is None or settings.password is None:
            raise ValueError("auth: simple needs bind_dn and password")
        client.set_credentials("SIMPLE", user=settings.bind_dn, password=settings.password.get_secret_value())
    elif settings.auth == "external":
        client.set_credentials("EXTERNAL")
    client.set_auto_page_acquire(False)
    client.set_raw_attributes(binary_attributes(settings))
    client.set_async_connection_class(ReadableOnlyConnection)
    client.set_ignore_referrals(True)
    if url.lower().startswith("ldaps://") or settings.starttls:
        client.set_cert_policy("demand" if settings.tls_verify else "never")
        if settings.ca_file is not None:
            client.set_ca_cert(str(settings.ca_file))
    return client
