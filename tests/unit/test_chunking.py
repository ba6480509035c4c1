"""The compress-then-split scheme of ``protocol.chunking``."""

from __future__ import annotations

import os
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import chunking
from protocol.chunking import ChunkError, PayloadTooLargeError, Reassembler

LIMIT = 8 * 1024  # budget 4 KiB with the default overhead


def test_small_payload_goes_as_is() -> None:
    """A payload under the budget is one frame with no headers at all."""
    frames = chunking.encode(b"x" * 100, LIMIT)
    assert frames == [chunking.Frame(b"x" * 100)]


def test_no_limit_never_touches_the_payload() -> None:
    """Without a limit the payload is carried unchanged, whatever its size."""
    assert chunking.encode(b"y" * 10_000_000, None)[0].body == b"y" * 10_000_000


def test_compressible_payload_is_one_compressed_frame() -> None:
    """A payload over the budget that compresses below it travels as one deflated frame."""
    payload = b'{"userName": "alice"}' * 2000
    [frame] = chunking.encode(payload, LIMIT)
    assert frame.headers == {chunking.ENCODING: "deflate", chunking.SIZE: len(payload)}
    assert Reassembler().add(frame.body, frame.headers) == payload


def test_incompressible_payload_is_split_and_reassembled_in_any_order() -> None:
    """Random bytes are split into chunks under the limit and come back whole from any order."""
    payload = os.urandom(50_000)
    frames = chunking.encode(payload, LIMIT)
    assert len(frames) > 10
    assert all(len(f.body) <= LIMIT - chunking.DEFAULT_OVERHEAD for f in frames)
    random.shuffle(frames)
    buffer = Reassembler()
    results = [buffer.add(f.body, f.headers) for f in frames]
    assert results[-1] == payload
    assert results[:-1] == [None] * (len(frames) - 1)
    assert buffer.pending_bytes == 0


def test_requests_are_never_split() -> None:
    """With split=False a payload that does not fit compressed is refused."""
    with pytest.raises(PayloadTooLargeError):
        chunking.encode(os.urandom(50_000), LIMIT, split=False)


def test_duplicate_chunks_and_late_duplicates_are_ignored() -> None:
    """A redelivered chunk neither corrupts the group nor restarts it after completion."""
    payload = os.urandom(20_000)
    frames = chunking.encode(payload, LIMIT)
    buffer = Reassembler()
    assert buffer.add(frames[0].body, frames[0].headers) is None
    assert buffer.add(frames[0].body, frames[0].headers) is None
    out = [buffer.add(f.body, f.headers) for f in frames[1:]]
    assert out[-1] == payload
    assert buffer.add(frames[0].body, frames[0].headers) is None
    assert buffer.pending_groups == 0


def test_incomplete_groups_expire() -> None:
    """A group missing a chunk is dropped after the timeout, freeing its memory."""
    now = [0.0]
    buffer = Reassembler(timeout=10, clock=lambda: now[0])
    frames = chunking.encode(os.urandom(20_000), LIMIT)
    buffer.add(frames[0].body, frames[0].headers)
    assert buffer.pending_bytes > 0
    now[0] = 11
    assert len(buffer.expire()) == 1
    assert buffer.pending_bytes == 0


def test_pending_memory_is_capped() -> None:
    """Chunks beyond max_pending_bytes are refused instead of buffered."""
    buffer = Reassembler(max_pending_bytes=10_000)
    frames = chunking.encode(os.urandom(40_000), LIMIT)

    def feed_all() -> None:
        for f in frames:
            buffer.add(f.body, f.headers)

    with pytest.raises(ChunkError, match="exceed"):
        feed_all()


def test_decompression_bomb_stops_at_the_cap() -> None:
    """A small compressed body that inflates past max_message_size is refused."""
    bomb = zlib.compress(b"\0" * 5_000_000)
    with pytest.raises(ChunkError, match="beyond"):
        Reassembler(max_message_size=1_000_000).add(bomb, {chunking.ENCODING: "deflate"})


def test_tampered_chunk_fails_the_digest() -> None:
    """A chunk whose bytes changed makes the group fail its size/digest check."""
    payload = b"".join(str(i).encode() for i in range(40_000))
    frames = chunking.encode(payload, LIMIT)
    frames[-1] = chunking.Frame(frames[-1].body[:-1] + bytes([frames[-1].body[-1] ^ 1]), frames[-1].headers)
    buffer = Reassembler()
    for f in frames[:-1]:
        buffer.add(f.body, f.headers)
    with pytest.raises(ChunkError):
        buffer.add(frames[-1].body, frames[-1].headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (chunking.INDEX, 99),
        (chunking.COUNT, 0),
        (chunking.DIGEST, "abc"),
        (chunking.ENCODING, "br"),
        (chunking.GROUP, ""),
    ],
)
def test_malformed_headers_are_named(header: str, value: object) -> None:
    """Each invalid chunk header raises a ChunkError naming it."""
    frame = chunking.encode(os.urandom(20_000), LIMIT)[0]
    with pytest.raises(ChunkError, match=header):
        Reassembler().add(frame.body, {**frame.headers, header: value})


def test_bytes_headers_from_a_transport_are_understood() -> None:
    """Header keys and values that a transport hands back as bytes are decoded."""
    payload = b"abc" * 10_000
    [frame] = chunking.encode(payload, LIMIT)
    raw = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in frame.headers.items()}
    assert Reassembler().add(frame.body, raw) == payload


@settings(max_examples=60)
@given(st.binary(max_size=30_000), st.integers(min_value=5 * 1024, max_value=12 * 1024))
def test_roundtrip_any_payload_any_limit(payload: bytes, limit: int) -> None:
    """Whatever the payload and the limit, frames fit and reassemble to the payload."""
    frames = chunking.encode(payload, limit)
    assert all(len(f.body) <= limit - chunking.DEFAULT_OVERHEAD for f in frames)
    buffer = Reassembler()
    out = [buffer.add(f.body, f.headers) for f in frames]
    assert out[-1] == payload
