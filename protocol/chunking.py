"""Carrying a message bigger than the transport allows: compress, then split into numbered chunks.

What it is
    Pure functions and one reassembly buffer, shared by every transport (``amqp``, ``servicebus``,
    ``local``). Nothing here does I/O; a transport maps ``Frame.headers`` onto its own message
    headers (AMQP 0-9-1 ``headers``, Service Bus ``application_properties``) and back.

The scheme (wire format version 1)
    A sender has a payload (an envelope's bytes) and the transport's limit ``L`` on one message,
    from which ``overhead`` bytes (default 4 KiB) are kept back for the transport's own headers and
    properties. Let ``B = L - overhead`` be the body budget.

    1. ``len(payload) <= B``: one frame, the payload as is, **no headers** (what every old peer
       understands).
    2. Otherwise the payload is compressed with zlib (RFC 1950, "deflate"). If that fits in ``B``:
       one frame with headers ``cp-encoding: "deflate"`` and ``cp-size: <original length>``.
    3. Otherwise (only where the caller allows splitting: replies, never requests) the *compressed*
       bytes are cut into ``n = ceil(len / B)`` pieces, each sent as its own message with headers

       ========================  ==========================================================
       ``cp-chunk-group``        id shared by the chunks of one message (fresh per message)
       ``cp-chunk-index``        0-based position of this piece
       ``cp-chunk-count``        ``n`` (2 ≤ n ≤ ``MAX_CHUNKS``)
       ``cp-size``               length of the original payload
       ``cp-sha256``             hex SHA-256 of the original payload
       ``cp-encoding``           ``"deflate"`` (the joined pieces are compressed)
       ========================  ==========================================================

       The transport keeps its own correlation (correlation id = request id) on every chunk.
    The receiver hands every message to ``Reassembler.add``: a plain frame comes back at once, a
    compressed one is inflated, a chunk is buffered until its group is complete, then the pieces are
    joined in index order, inflated, checked against ``cp-size`` and ``cp-sha256`` and returned.

Guarantees and limits
    - Chunks may arrive in any order and more than once (a redelivered reply); a duplicate index is
      ignored, a group that already completed is not started again.
    - Memory is bounded: ``max_message_size`` caps one inflated message (a decompression bomb stops
      at the cap), ``max_pending_bytes`` caps all buffered chunks together, ``max_groups`` the
      number of groups in progress, and a group not complete within ``timeout`` seconds is dropped.
    - Anything malformed raises ``ChunkError`` naming the problem; the buffer stays usable.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ProtocolError

ENCODING = "cp-encoding"
GROUP = "cp-chunk-group"
INDEX = "cp-chunk-index"
COUNT = "cp-chunk-count"
SIZE = "cp-size"
DIGEST = "cp-sha256"
HEADERS = (ENCODING, GROUP, INDEX, COUNT, SIZE, DIGEST)

DEFLATE = "deflate"
#: Bytes of one message kept back for the transport's own headers and properties.
DEFAULT_OVERHEAD = 4096
#: At most this many chunks per message (a 256 KB limit then carries ~1 GB compressed).
MAX_CHUNKS = 4096

HeaderValue = str | int


class ChunkError(ProtocolError):
    """A frame or chunk is malformed, inconsistent, too large, or its group expired."""


class PayloadTooLargeError(ChunkError):
    """The payload does not fit the transport's limit, even compressed (and split, where allowed)."""


class FrameTooLargeError(ChunkError):
    """A received message is, or inflates to, more than the receiver takes (a decompression bomb stops here)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One message on the wire: its body and the ``cp-*`` headers (empty for a plain payload)."""

    body: bytes
    headers: dict[str, HeaderValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """The ``cp-chunk-*`` headers of one chunk, validated."""

    group: str
    index: int
    count: int
    size: int
    digest: str
    encoding: str = DEFLATE

    def to_headers(self) -> dict[str, HeaderValue]:
        return {
            GROUP: self.group,
            INDEX: self.index,
            COUNT: self.count,
            SIZE: self.size,
            DIGEST: self.digest,
            ENCODING: self.encoding,
        }


def body_budget(limit: int | None, overhead: int = DEFAULT_OVERHEAD) -> int | None:
    """The largest body one message may carry under ``limit`` (None: no limit)."""
    if limit is None:
        return None
    budget = limit - overhead
    if budget < 1024:
        raise ValueError(f"a message limit of {limit} bytes leaves no room next to {overhead} bytes of headers")
    return budget


def encode(
    payload: bytes,
    limit: int | None,
    *,
    split: bool = True,
    overhead: int = DEFAULT_OVERHEAD,
    group: str | None = None,
) -> list[Frame]:
    """The frames that carry ``payload`` under ``limit`` bytes per message (see the module doc).

    Raises ``PayloadTooLargeError`` when it does not fit compressed and ``split`` is false, or
    would need more than ``MAX_CHUNKS`` chunks.
    """
    budget = body_budget(limit, overhead)
    if budget is None or len(payload) <= budget:
        return [Frame(payload)]
    packed = zlib.compress(payload, 6)
    if len(packed) <= budget:
        return [Frame(packed, {ENCODING: DEFLATE, SIZE: len(payload)})]
    if not split:
        raise PayloadTooLargeError(
            f"a message of {len(payload)} bytes ({len(packed)} compressed) exceeds the limit of {limit} bytes"
        )
    count = math.ceil(len(packed) / budget)
    if count > MAX_CHUNKS:
        raise PayloadTooLargeError(
            f"a message of {len(payload)} bytes would need {count} chunks of {budget} bytes (at most {MAX_CHUNKS})"
        )
    group = group or uuid.uuid4().hex
    digest = hashlib.sha256(payload).hexdigest()
    return [
        Frame(
            packed[i * budget : (i + 1) * budget],
            ChunkHeader(group, i, count, len(payload), digest).to_headers(),
        )
        for i in range(count)
    ]


def is_chunk(headers: Mapping[str, Any]) -> bool:
    return GROUP in headers


def cp_headers(headers: Mapping[Any, Any] | None) -> dict[str, HeaderValue]:
    """The ``cp-*`` entries of a transport's header mapping (bytes keys and values decoded)."""
    out: dict[str, HeaderValue] = {}
    for key, value in (headers or {}).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name in HEADERS:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                out[name] = value
    return out


def _int(headers: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = headers.get(name)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChunkError(f"header {name!r} must be an integer from {low} to {high}, got {value!r}")
    return value


def parse_chunk_header(headers: Mapping[str, Any], *, max_message_size: int) -> ChunkHeader:
    """Validate the chunk headers of one message; raises ``ChunkError`` naming the faulty one."""
    group = headers.get(GROUP)
    if not isinstance(group, str) or not 1 <= len(group) <= 200:
        raise ChunkError(f"header {GROUP!r} must be a string of 1 to 200 characters")
    count = _int(headers, COUNT, 1, MAX_CHUNKS)
    index = _int(headers, INDEX, 0, count - 1)
    size = _int(headers, SIZE, 0, max_message_size)
    digest = headers.get(DIGEST)
    if not isinstance(digest, str) or len(digest) != 64:
        raise ChunkError(f"header {DIGEST!r} must be 64 hex characters")
    encoding = headers.get(ENCODING, DEFLATE)
    if encoding != DEFLATE:
        raise ChunkError(f"header {ENCODING!r} must be {DEFLATE!r}, got {encoding!r}")
    return ChunkHeader(group, index, count, size, digest, encoding)


def inflate(body: bytes, max_size: int) -> bytes:
    """Decompress zlib data, refusing to produce more than ``max_size`` bytes."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise ChunkError(f"compressed body does not inflate: {exc}") from None
    if len(out) > max_size or inflater.unconsumed_tail:
        raise FrameTooLargeError(f"compressed body inflates beyond {max_size} bytes")
    if not inflater.eof:
        raise ChunkError("compressed body is truncated")
    return out


def decode_frame(body: bytes, headers: Mapping[str, Any], *, max_message_size: int) -> bytes:
    """The payload of a frame that is not a chunk (plain or compressed)."""
    encoding = headers.get(ENCODING)
    if encoding is None:
        if len(body) > max_message_size:
            raise FrameTooLargeError(f"message of {len(body)} bytes exceeds {max_message_size}")
        return body
    if encoding != DEFLATE:
        raise ChunkError(f"header {ENCODING!r} must be {DEFLATE!r}, got {encoding!r}")
    out = inflate(body, max_message_size)
    size = headers.get(SIZE)
    if size is not None and size != len(out):
        raise ChunkError(f"inflated body has {len(out)} bytes, header {SIZE!r} says {size}")
    return out


@dataclass(slots=True)
class _Group:
    header: ChunkHeader
    started: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    buffered: int = 0


class Reassembler:
    """Turns received frames back into payloads, buffering chunks with bounded memory and time."""

    def __init__(
        self,
        *,
        max_message_size: int = 64 * 1024 * 1024,
        max_pending_bytes: int = 256 * 1024 * 1024,
        max_groups: int = 1000,
        timeout: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_pending_bytes = max_pending_bytes
        self.max_groups = max_groups
        self.timeout = timeout
        self._clock = clock
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        self.pending_bytes = 0

    @property
    def pending_groups(self) -> int:
        return len(self._groups)

    def add(self, body: bytes, headers: Mapping[Any, Any] | None) -> bytes | None:
        """The payload once complete (at once for a frame that is not a chunk), else None."""
        found = cp_headers(headers)
        if not is_chunk(found):
            return decode_frame(body, found, max_message_size=self.max_message_size)
        self.expire()
        header = parse_chunk_header(found, max_message_size=self.max_message_size)
        if header.group in self._done:
            return None
        group = self._groups.get(header.group)
        if group is None:
            if len(self._groups) >= self.max_groups:
                raise ChunkError(f"more than {self.max_groups} chunked messages in progress; chunk dropped")
            group = self._groups[header.group] = _Group(header, self._clock())
        elif (group.header.count, group.header.size, group.header.digest) != (header.count, header.size, header.digest):
            self.discard(header.group)
            raise ChunkError(f"chunk {header.index} of group {header.group} disagrees with its group's headers")
        if header.index in group.pieces:
            return None
        if self.pending_bytes + len(body) > self.max_pending_bytes:
            raise ChunkError(f"buffered chunks would exceed {self.max_pending_bytes} bytes; chunk dropped")
        if group.buffered + len(body) > self.max_message_size:
            self.discard(header.group)
            raise FrameTooLargeError(f"group {header.group} exceeds {self.max_message_size} bytes")
        group.pieces[header.index] = body
        group.buffered += len(body)
        self.pending_bytes += len(body)
        if len(group.pieces) < header.count:
            return None
        self.discard(header.group)
        self._done[header.group] = None
        while len(self._done) > 4 * self.max_groups:
            self._done.popitem(last=False)
        payload = inflate(b"".join(group.pieces[i] for i in range(header.count)), self.max_message_size)
        if len(payload) != header.size or hashlib.sha256(payload).hexdigest() != header.digest:
            raise ChunkError(f"group {header.group} reassembled to bytes that do not match its size and digest")
        return payload

    def discard(self, group_id: str) -> None:
        group = self._groups.pop(group_id, None)
        if group is not None:
            self.pending_bytes -= group.buffered

    def expire(self) -> list[str]:
        """Drop the groups older than ``timeout``; returns their ids."""
        limit = self._clock() - self.timeout
        dropped = []
        while self._groups:
            group_id, group = next(iter(self._groups.items()))
            if group.started > limit:
                break
            self.discard(group_id)
            dropped.append(group_id)
        return dropped
