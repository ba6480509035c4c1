"""The memory directory's change log: what ``Directory.changes`` reads.

Settings: ``changelog_limit`` (how many changes are kept). Watermarks are ``mem:<instance>:<seq>``:
opaque to callers, valid only for the instance that issued them.

Guarantees: sequence numbers increase by one per change; changes come back oldest first, each at most
once across successive calls; a deletion carries the entry's last state (anchor included); a
watermark older than the oldest kept change raises ``WatermarkExpiredError``, one from another instance
(or malformed, or from the future) ``ForeignWatermarkError`` — both mean "do a full sync".
"""

from __future__ import annotations

from collections import deque

from plugins.directory import Attributes, Change, ChangeKind, ChangeSet, Entry
from plugins.memory.errors import ForeignWatermarkError, WatermarkExpiredError

_PREFIX = "mem"


class ChangeLog:
    """A bounded, ordered log of changes with opaque watermarks."""

    def __init__(self, instance_id: str, limit: int) -> None:
        self.instance_id = instance_id
        self.sequence = 0
        self._log: deque[tuple[int, Change]] = deque(maxlen=limit)

    def record(self, kind: ChangeKind, dn: str, attributes: Attributes, old_dn: str | None = None) -> None:
        """Append a change; ``attributes`` is the entry's state after it (before it, for a deletion).

        The log keeps ``attributes`` itself, not a copy: the store's attribute sets are never changed once
        stored (a write swaps in a new set), and ``since`` hands out copies."""
        self.sequence += 1
        self._log.append((self.sequence, Change(kind, dn, Entry(dn, attributes), old_dn)))

    def watermark(self, sequence: int | None = None) -> str:
        return f"{_PREFIX}:{self.instance_id}:{self.sequence if sequence is None else sequence}"

    def since(self, watermark: str | None, limit: int) -> ChangeSet:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if watermark is None:
            return ChangeSet([], self.watermark())
        after = self._parse(watermark)
        oldest = self._log[0][0] if self._log else self.sequence + 1
        if after + 1 < oldest:
            raise WatermarkExpiredError(
                f"watermark {watermark!r} is older than the change log (it keeps changes from #{oldest} on): "
                "do a full sync and continue from its watermark"
            )
        start = after + 1 - oldest if self._log else 0
        picked = [self._log[index] for index in range(start, min(start + limit, len(self._log)))]
        changes = [_copy(change) for _, change in picked]
        last = picked[-1][0] if picked else after
        return ChangeSet(changes, self.watermark(last), more=last < self.sequence)

    def _parse(self, watermark: str) -> int:
        prefix, _, rest = watermark.partition(":")
        instance, _, sequence = rest.rpartition(":")
        if prefix != _PREFIX or not sequence.isdigit():
            raise ForeignWatermarkError(f"{watermark!r} is not a memory-directory watermark: do a full sync")
        if instance != self.instance_id:
            raise ForeignWatermarkError(
                f"watermark {watermark!r} comes from another memory-directory instance (this one is "
                f"{self.instance_id!r}): do a full sync"
            )
        after = int(sequence)
        if after > self.sequence:
            raise ForeignWatermarkError(f"watermark {watermark!r} is ahead of this directory: do a full sync")
        return after


def _copy(change: Change) -> Change:
    entry = None if change.entry is None else Entry(change.entry.dn, change.entry.attributes.copy())
    return Change(change.kind, change.dn, entry, change.old_dn)
