"""The replay guard: the request ids an agent accepted, remembered until their deadlines pass.

Everything is kept by the request's signed ``deadline`` (a copy carries the same one); the caller says
which deadlines have passed with a ``horizon`` (now minus the clock skew it allows).

A copy of an accepted request must be refused for as long as the request is valid (up to
``signing.max_lifetime``): at thousands of requests a second with the service's 600-second timeout, that
is more than a million ids. ``ReplayGuard`` keeps the latest ``max_entries`` exactly (a dict: the check
every request makes); the ids it has to let go while they are live, those due first, spill into Bloom
filters by deadline, 32 bits an id (``_Spill``). A spilled id is still found: a Bloom filter has no
false negatives, and the deadline a copy carries is signed, so it is looked for in its own bucket. Since
a Bloom filter may also hold an id it was never given (about once in 500,000 lookups for each full
filter of the bucket, 65,536 ids a filter; only ids due within the spilled ones' deadlines are looked
up), such a request is not called a replay (409) but ``unprovable``: refused 503, which the service
answers by sending it again as a new request. Only if the spill outgrows its own bound
(``max_spill_bytes``) are ids forgotten; the guard then raises ``floor`` to their deadline, and an id
due no later is ``unprovable`` too.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
from typing import Any

#: Width of a deadline bucket of spilled ids (seconds): a bucket goes once the horizon passed its end.
BUCKET_SECONDS = 30.0
#: One Bloom filter: 2**21 bits (256 KiB) for 2**16 ids, 10 bits set per id: a full one holds an id it was
#: never given about once in 500,000 lookups.
FILTER_BITS = 1 << 21
FILTER_IDS = 1 << 16
HASHES = 10
_MASK = FILTER_BITS - 1
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd
_MIXER = 0xC2B2AE3D27D4EB4F


class _Filter:
    __slots__ = ("bits", "count")

    def __init__(self, bits: bytearray | None = None, count: int = 0) -> None:
        self.bits = bits if bits is not None else bytearray(FILTER_BITS // 8)
        self.count = count

    def add(self, first: int, step: int) -> None:
        bits = self.bits
        for i in range(HASHES):
            position = (first + i * step) & _MASK
            bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def holds(self, first: int, step: int) -> bool:
        bits = self.bits
        for i in range(HASHES):
            position = (first + i * step) & _MASK
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
        return True


class _Spill:
    """Live ids let go by the exact memory, in Bloom filters by deadline bucket (see the module docstring)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_filters = max(1, max_bytes // (FILTER_BITS // 8))
        self.buckets: dict[int, list[_Filter]] = {}
        self.filters = 0
        self.latest = -math.inf  # the latest deadline spilled
        self._next_expiry = math.inf  # the end of the earliest bucket

    def hashes(self, request_id: str) -> tuple[int, int]:
        """The id's two 32-bit hashes, combined into its bits (Kirsch and Mitzenmacher): small ints all the way.

        The service's ids are 32 hex digits: read as a number, two multiplications mix them (blake2b
        would cost twice as much; only verified ids, made by a trusted signer, come here). Any other id
        is hashed (blake2b). Either way an id always gives the same bits, so a filter never misses an
        id it was given; a poor spread only raises the false positives, answered 503."""
        number = -1
        if len(request_id) == 32:
            try:
                number = int(request_id, 16)
            except ValueError:  # not hex digits
                number = -1
        if number < 0:  # (int() takes a sign or "_" too: the same id still gives the same bits)
            digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little") | 1
        # Knuth's multiplicative hashing of the id folded to 64 bits: the top bits of the product depend on
        # every digit, so ids that differ in a few digits (counters, timestamps) get unrelated bits too.
        folded = (number >> 64) ^ (number & _MASK64)
        first = ((folded * _GOLDEN) & _MASK64) >> 32
        step = ((folded * _MIXER) & _MASK64) >> 32
        return first, step | 1

    def add(self, request_id: str, deadline: float) -> None:
        index = int(deadline // BUCKET_SECONDS)
        bucket = self.buckets.setdefault(index, [])
        if not bucket or bucket[-1].count >= FILTER_IDS:
            bucket.append(_Filter())
            self.filters += 1
        first, step = self.hashes(request_id)
        bucket[-1].add(first, step)
        if deadline > self.latest:
            self.latest = deadline
        end = (index + 1) * BUCKET_SECONDS
        if end < self._next_expiry:
            self._next_expiry = end

    def holds(self, request_id: str, deadline: float) -> bool:
        bucket = self.buckets.get(int(deadline // BUCKET_SECONDS))
        if not bucket:
            return False
        first, step = self.hashes(request_id)
        return any(held.holds(first, step) for held in bucket)

    def expire(self, horizon: float) -> None:
        """Drop the buckets whose every deadline is before ``horizon``."""
        if horizon < self._next_expiry:
            return
        for index in [b for b in self.buckets if (b + 1) * BUCKET_SECONDS < horizon]:
            self.filters -= len(self.buckets.pop(index))
        self._reset_expiry()

    def shed(self) -> float:
        """Drop the bucket due first (over the bound); the latest deadline it may have held."""
        index = min(self.buckets)
        self.filters -= len(self.buckets.pop(index))
        self._reset_expiry()
        return (index + 1) * BUCKET_SECONDS

    def _reset_expiry(self) -> None:
        self._next_expiry = (min(self.buckets) + 1) * BUCKET_SECONDS if self.buckets else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "latest": self.latest if self.latest > -math.inf else None,
            "buckets": {
                str(index): [[f.count, base64.b64encode(f.bits).decode()] for f in filters]
                for index, filters in self.buckets.items()
            },
        }


class ReplayGuard:
    """Accepted request ids until their deadline passes (see the module docstring)."""

    def __init__(self, max_entries: int = 200_000, max_spill_bytes: int = 64 * 1024 * 1024) -> None:
        self._deadlines: dict[str, float] = {}  # id → deadline
        self._due: list[tuple[float, str]] = []  # a heap: (deadline, id); an entry whose deadline changed is stale
        self._max = max_entries
        self._spill = _Spill(max_spill_bytes)
        #: Deadlines up to here may belong to ids forgotten altogether (-inf: none was).
        self.floor = -math.inf
        #: Live ids moved from the exact memory to the Bloom filters.
        self.spilled = 0

    def __len__(self) -> int:
        return len(self._deadlines)

    @property
    def spill_bytes(self) -> int:
        """Memory the Bloom filters of spilled ids take."""
        return self._spill.filters * (FILTER_BITS // 8)

    def seen(self, request_id: str) -> bool:
        """Whether ``request_id`` is one the exact memory holds: accepted before, for certain."""
        return request_id in self._deadlines

    def unprovable(self, request_id: str, deadline: float) -> bool:
        """Whether ``request_id`` (not ``seen``), with this signed ``deadline``, may have been accepted before: it
        is in the Bloom filters of ids let go (or one that is not: once in 500,000 lookups for each full
        filter of its bucket), or it is due no later than ids forgotten altogether."""
        if deadline <= self.floor:
            return True
        spill = self._spill
        return deadline <= spill.latest and spill.holds(request_id, deadline)

    def remember(self, request_id: str, deadline: float, horizon: float) -> None:
        """Remember an accepted id until ``horizon`` (the caller's now minus its clock skew) passes ``deadline``."""
        known = self._deadlines.get(request_id)
        if known is not None and known >= deadline:
            return
        self._deadlines[request_id] = deadline
        heapq.heappush(self._due, (deadline, request_id))
        due = self._due
        if due[0][0] >= horizon and len(self._deadlines) <= self._max:
            return  # nothing is due and there is room: the usual case, one look
        spill = self._spill
        spill.expire(horizon)
        while due and (due[0][0] < horizon or len(self._deadlines) > self._max):
            first_deadline, first_id = heapq.heappop(due)
            if self._deadlines.get(first_id) != first_deadline:
                continue  # stale: the id was remembered again with a later deadline
            del self._deadlines[first_id]
            if first_deadline >= horizon:  # live: kept in the spill
                spill.add(first_id, first_deadline)
                self.spilled += 1
                while spill.filters > spill.max_filters:
                    self.floor = max(self.floor, spill.shed())

    def to_json(self, horizon: float) -> dict[str, Any]:
        """What a guard after a restart needs (``restore``): the live ids, the spill and the floor."""
        self._spill.expire(horizon)
        return {
            "ids": [[request_id, deadline] for request_id, deadline in self._deadlines.items() if deadline >= horizon],
            "spill": self._spill.to_json(),
            "floor": self.floor if self.floor > -math.inf else None,
        }

    def restore(self, document: dict[str, Any], horizon: float) -> int:
        """Take back what ``to_json`` saved (before a restart); how many exact ids were still live.
        ``ValueError`` names what is wrong with a damaged document."""
        ids = document.get("ids")
        if not isinstance(ids, list):
            raise ValueError("'ids' is not a list")  # noqa: TRY004 - a damaged file, not a caller's mistake
        entries: list[tuple[str, float]] = []
        for item in ids:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"an entry is not [id, deadline]: {str(item)[:80]}")
            entries.append((item[0], _number(item[1], f"the deadline of {item[0][:64]!r}")))
        spill = _restore_spill(document.get("spill"), self._spill.max_filters)
        floor = document.get("floor")
        self.floor = max(self.floor, -math.inf if floor is None else _number(floor, "the floor"))
        self._spill, before = spill, len(self._deadlines)
        spill._reset_expiry()
        spill.expire(horizon)
        for request_id, deadline in entries:
            if deadline >= horizon:
                self.remember(request_id, deadline, horizon)
        return len(self._deadlines) - before


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a number")
    return float(value)


def _restore_spill(document: Any, max_filters: int) -> _Spill:
    if not isinstance(document, dict):
        raise ValueError("'spill' is not an object")  # noqa: TRY004 - a damaged file, not a caller's mistake
    try:
        spill = _Spill(max_filters * (FILTER_BITS // 8))
        latest = document.get("latest")
        spill.latest = -math.inf if latest is None else _number(latest, "the spill's latest deadline")
        for index, filters in dict(document["buckets"]).items():
            restored = [_restore_filter(index, count, bits) for count, bits in filters]
            spill.buckets[_bucket(index)] = restored
            spill.filters += len(restored)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the spilled ids are damaged: {exc}") from None
    return spill


def _restore_filter(index: str, count: Any, bits: Any) -> _Filter:
    raw = bytearray(base64.b64decode(str(bits), validate=True))
    if len(raw) != FILTER_BITS // 8 or isinstance(count, bool) or not isinstance(count, int):
        raise ValueError(f"a filter of bucket {index} is damaged")
    return _Filter(raw, count)


def _bucket(index: str) -> int:
    number = int(index)
    if not 0 <= number < 1 << 40:  # 30-second buckets: 2**40 of them outlast the sun
        raise ValueError(f"bucket {index[:24]!r} is not a deadline bucket")
    return number
