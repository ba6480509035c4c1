"""The ``Target`` interface: what the sync engine may ask of the directory it provisions into.

Objects are addressed by resource type (``"User"`` / ``"Group"``) and carry the source **anchor**
(the source resource's SCIM ``id``: objectGUID or entryUUID by profile), which a target keeps with
each object (SCIM targets: ``externalId``). ``attributes`` are the mapped attributes, keyed by
target SCIM attribute path (``userName``, ``name.givenName``, ``emails[type eq "work"].value``,
``active``, ``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``). Group
membership is changed by adding and removing member target ids, never by replacing the whole list.
Every implementation raises the ``TargetError`` family and declares the recoverable ones.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self


class TargetError(Exception):
    """Root of every error a target raises."""


class TargetUnavailableError(TargetError):
    """The target is down, throttling (429) or failing (5xx): try again later."""


class TargetConflictError(TargetError):
    """The target refused a create or update because a unique value is taken (409)."""


class TargetNotFoundError(TargetError):
    """The object is not (or no longer) in the target."""


class TargetRejectedError(TargetError):
    """The target refused the data itself (400-class): retrying the same change cannot help."""


@dataclass(frozen=True, slots=True)
class TargetObject:
    """One object as the target holds it."""

    id: str
    resource_type: str
    anchor: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    members: frozenset[str] = frozenset()
    active: bool = True


class Target(abc.ABC):
    """An open connection to the target directory (an async context manager)."""

    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (TargetUnavailableError,)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get_by_anchor(self, resource_type: str, anchor: str) -> TargetObject | None:
        """The object provisioned from source ``anchor``, or None."""

    @abc.abstractmethod
    async def find_by_attribute(self, resource_type: str, attribute: str, value: Any) -> TargetObject | None:
        """An object whose ``attribute`` equals ``value`` (matching on first sync into a populated target)."""

    @abc.abstractmethod
    async def create(self, resource_type: str, anchor: str, attributes: Mapping[str, Any]) -> TargetObject:
        """Create an object carrying ``anchor``."""

    @abc.abstractmethod
    async def update(
        self, obj: TargetObject, attributes: Mapping[str, Any], *, anchor: str | None = None
    ) -> TargetObject:
        """Set the given attributes (a value of None clears one); ``anchor`` claims a matched object."""

    @abc.abstractmethod
    async def change_members(self, group: TargetObject, add: Collection[str], remove: Collection[str]) -> None:
        """Add and remove member target ids of a group (value-level, batched)."""

    @abc.abstractmethod
    async def disable(self, obj: TargetObject) -> None:
        """Mark the object inactive (users; groups are deleted instead)."""

    @abc.abstractmethod
    async def delete(self, obj: TargetObject) -> None:
        """Remove the object."""

    @abc.abstractmethod
    def objects(self, resource_type: str) -> AsyncIterator[TargetObject]:
        """Every object of a type (comparisons, status and tests)."""
