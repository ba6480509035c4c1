"""The ``Directory`` interface: what the SCIM handler may ask of any directory backend.

Entries are LDAP-shaped: a DN and case-insensitive, multi-valued attributes whose values are
``str`` (or ``bytes`` for binary attributes such as objectGUID). Filters are RFC 4515 strings, DNs
RFC 4514 strings. ``search`` streams pages; ``changes`` returns adds, modifications, renames and
deletions since an opaque watermark. Every implementation raises the ``DirectoryError`` family and
declares which of those are worth retrying in ``recoverable_errors``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Self, TypeVar, overload

AttrValue = str | bytes
_T = TypeVar("_T")


class DirectoryError(Exception):
    """Root of every error a directory plugin raises."""


class NoSuchObjectError(DirectoryError):
    """The entry (or the search base) does not exist."""


class AlreadyExistsError(DirectoryError):
    """An entry with that DN, or a value that must be unique, already exists."""


class ConstraintError(DirectoryError):
    """The change breaks a schema rule, a syntax or a constraint (object class, attribute value, …)."""


class NotAllowedError(DirectoryError):
    """The operation is not allowed on this entry (deleting a non-leaf, renaming onto itself, …)."""


class InsufficientAccessError(DirectoryError):
    """The bound identity may not do this."""


class InvalidFilterError(DirectoryError):
    """The RFC 4515 filter string does not parse."""


class InvalidDNError(DirectoryError):
    """The RFC 4514 DN string does not parse."""


class UnavailableError(DirectoryError):
    """The server is down, busy or unreachable: try again later."""


class DirectoryTimeoutError(UnavailableError):
    """The operation did not finish within its time limit."""


class WriteOutcomeUnknownError(DirectoryError):
    """A write failed after a server may have received it (connection lost, no answer in time): it may
    have been applied. Not an ``UnavailableError``: repeating it blindly could apply it twice (an add
    then fails with "already exists"), so neither the plugin nor its callers retry it; read the entry
    to learn the outcome."""


class PoolExhaustedError(UnavailableError):
    """No pooled connection became free in time: all are held (paged searches, SCIM cursors, slow
    operations). Unavailable (try again later), but the plugin does not retry it: the caller has
    already waited a whole ``operation_timeout``."""


class LimitExceededError(ConstraintError):
    """A server limit refused the operation: a search returned more entries than the bound identity may
    read (sizeLimitExceeded), or an administrative limit (adminLimitExceeded: a search too costly, an
    entry too big to store). Not worth retrying: narrow the search, or raise the limit on the server."""


class Scope(enum.IntEnum):
    BASE = 0
    ONELEVEL = 1
    SUBTREE = 2


class Attributes(Mapping[str, list[AttrValue]]):
    """Attribute name → values, with case-insensitive names that keep their first spelling."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, Iterable[AttrValue]] | Iterable[tuple[str, Iterable[AttrValue]]] = ()):
        self._data: dict[str, tuple[str, list[AttrValue]]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, values in pairs:
            self.set(name, values)

    def __getitem__(self, name: str) -> list[AttrValue]:
        return self._data[name.lower()][1]

    @overload
    def get(self, name: str, /) -> list[AttrValue] | None: ...
    @overload
    def get(self, name: str, /, default: list[AttrValue] | _T) -> list[AttrValue] | _T: ...

    def get(self, name: str, /, default: object = None) -> object:
        """``Mapping.get`` in one lookup (the inherited one goes through ``__getitem__`` and a KeyError)."""
        item = self._data.get(name.lower())
        return default if item is None else item[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._data

    def __iter__(self) -> Iterator[str]:
        return (spelled for spelled, _ in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Attributes({dict(self.items())!r})"

    def set(self, name: str, values: Iterable[AttrValue]) -> None:
        """Replace an attribute's values; an empty list removes the attribute."""
        listed = list(values)
        key = name.lower()
        if not listed:
            self._data.pop(key, None)
        elif key in self._data:
            self._data[key] = (self._data[key][0], listed)
        else:
            self._data[key] = (name, listed)

    def remove(self, name: str) -> None:
        self._data.pop(name.lower(), None)

    @classmethod
    def adopt(cls, pairs: Iterable[tuple[str, list[AttrValue]]]) -> Attributes:
        """Attributes that take these lists as they are (no copy; the caller gives them up); empty lists
        are left out and a name repeated in another case joins the first. For plugins' hot paths."""
        data: dict[str, tuple[str, list[AttrValue]]] = {}
        for name, values in pairs:
            if not values:
                continue
            key = name.lower()
            if key in data:
                data[key][1].extend(values)
            else:
                data[key] = (name, values)
        return cls._holding(data)

    def first(self, name: str) -> AttrValue | None:
        item = self._data.get(name.lower())
        return item[1][0] if item else None

    def values_lower(self, key: str) -> list[AttrValue] | None:
        """The values of the attribute whose lower-case name is ``key`` (None: absent): for hot paths
        that lower their attribute names once, not at every entry."""
        item = self._data.get(key)
        return item[1] if item else None

    @property
    def by_key(self) -> Mapping[str, tuple[str, list[AttrValue]]]:
        """Lower-case name → (first spelling, values): the live table, never to be changed through it; for
        hot paths that look up many names (one dict lookup each, no method call)."""
        return self._data

    def text(self, name: str) -> str | None:
        """The first value as text (binary values decoded as UTF-8 with replacement)."""
        value = self.first(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    @classmethod
    def _holding(cls, data: dict[str, tuple[str, list[AttrValue]]]) -> Attributes:
        """Attributes over a table made here (not through ``__init__``, whose argument checks and loop cost
        more than the copy itself on the paths below)."""
        made = cls.__new__(cls)
        made._data = data
        return made

    def copy(self) -> Attributes:
        return self._holding({key: (spelled, [*values]) for key, (spelled, values) in self._data.items()})

    def sharing_values(self) -> Attributes:
        """A copy that shares the value lists with this one: only for a caller that replaces an attribute's
        list (``set``, ``remove``) and never changes one in place, and that can then tell an attribute it
        did not touch by its list being the very same object (the memory store's modify)."""
        return self._holding(self._data.copy())

    def picked(self, keep: Callable[[str], bool]) -> Attributes:
        """A copy of the attributes whose lower-case name ``keep`` accepts (the value lists copied too)."""
        return self._holding({key: (spelled, [*values]) for key, (spelled, values) in self._data.items() if keep(key)})

    def selected(self, keys: AbstractSet[str]) -> Attributes:
        """``picked(keys.__contains__)``: a copy of the attributes whose lower-case name is in ``keys``.

        A directory hands out a copy of the same few attributes per entry of every result (a SCIM read asks
        for its mapping's): a membership test in the comprehension costs less than a call per attribute,
        even of a C method such as ``frozenset.__contains__``."""
        return self._holding(
            {key: (spelled, [*values]) for key, (spelled, values) in self._data.items() if key in keys}
        )


@dataclass(slots=True)
class Entry:
    """One directory entry: its DN and attributes (operational ones included when asked for)."""

    dn: str
    attributes: Attributes = field(default_factory=Attributes)

    def get(self, name: str) -> list[AttrValue]:
        return self.attributes.get(name, [])

    def first(self, name: str) -> AttrValue | None:
        return self.attributes.first(name)

    def text(self, name: str) -> str | None:
        return self.attributes.text(name)


class ModOp(enum.Enum):
    ADD = "add"
    DELETE = "delete"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Modification:
    """One change to one attribute. ``DELETE`` with no values removes the whole attribute."""

    op: ModOp
    attribute: str
    values: tuple[AttrValue, ...] = ()


class ChangeKind(enum.Enum):
    ADD = "add"
    MODIFY = "modify"
    RENAME = "rename"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """A change since a watermark. ``entry`` is the current state (for a deletion: the last state
    known, at least the anchor attribute); ``old_dn`` is set for renames."""

    kind: ChangeKind
    dn: str
    entry: Entry | None
    old_dn: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Changes since a watermark, oldest first; ``more`` says another call would return more."""

    changes: list[Change]
    watermark: str
    more: bool = False


class Directory(abc.ABC):
    """An open connection to one directory (an async context manager)."""

    #: Errors worth retrying with backoff; everything else surfaces at once.
    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (UnavailableError,)
    #: Operations the directory runs at once (an LDAP connection pool), or None for no bound. A paged
    #: search left open (a SCIM cursor) holds one of them until it ends.
    max_concurrency: int | None = None
    #: Whether a search is a round trip worth sharing: the SCIM layer then reads equality lookups that
    #: arrive together with one search for all of them (``agent.scim.lookups``). Not for a directory in the
    #: agent's own process, where a search costs no round trip and an OR of lookups may cost a scan.
    shared_lookups: ClassVar[bool] = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (and bind); raise ``UnavailableError`` when the server cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; safe to call twice."""

    @property
    @abc.abstractmethod
    def base_dn(self) -> str:
        """The naming context searches start from when the caller gives no base."""

    @abc.abstractmethod
    def search(
        self,
        base: str,
        ldap_filter: str = "(objectClass=*)",
        *,
        scope: Scope = Scope.SUBTREE,
        attributes: Sequence[str] | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[Entry]]:
        """Stream matching entries page by page (no page is empty, except when nothing matches).

        ``attributes=None`` returns all user attributes plus the operational ones the profile needs
        (entryUUID / objectGUID); raises ``InvalidFilterError`` for a bad filter and
        ``NoSuchObjectError`` for a missing base.
        """

    @abc.abstractmethod
    async def get(self, dn: str, attributes: Sequence[str] | None = None) -> Entry | None:
        """The entry at ``dn``, or None."""

    @abc.abstractmethod
    async def add(self, dn: str, attributes: Mapping[str, Sequence[AttrValue]]) -> None:
        """Create an entry; ``AlreadyExistsError`` if the DN is taken."""

    @abc.abstractmethod
    async def modify(self, dn: str, changes: Sequence[Modification]) -> None:
        """Apply all changes atomically, or none."""

    @abc.abstractmethod
    async def delete(self, dn: str) -> None:
        """Delete a leaf entry."""

    @abc.abstractmethod
    async def rename(self, dn: str, new_rdn: str, *, new_superior: str | None = None) -> str:
        """Change the RDN (the old RDN value is removed) and optionally move; returns the new DN."""

    @abc.abstractmethod
    async def changes(self, watermark: str | None, *, limit: int = 1000) -> ChangeSet:
        """Changes after ``watermark`` (None: no changes, and the current watermark to start from)."""

    async def ping(self) -> None:
        """Raise ``UnavailableError`` unless the directory answers (readiness)."""
        await self.get(self.base_dn, ["objectClass"])
