"""AMQP 1.0 message sections as the Service Bus SDK sends and expects them.

The peer keeps each message as the bytes the sender wrote and rewrites only what it must when it
hands the message out: the header (with an explicit ``delivery-count``; proton leaves a 0 out, which
the SDK reads as ``None``), the Service Bus message annotations, and, for dead-lettered messages,
the application properties.
"""

from __future__ import annotations

from typing import Any

from proton import Data, Described, symbol, timestamp, ulong

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES, APPLICATION_PROPERTIES = 0x70, 0x71, 0x72, 0x73, 0x74
DATA, SEQUENCE, VALUE, FOOTER = 0x75, 0x76, 0x77, 0x78

SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")
LOCKED_UNTIL = symbol("x-opt-locked-until")


def owned(value: Any) -> Any:
    """Copy memoryviews (into proton buffers that get freed) to bytes, recursively."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return type(value)({owned(k): owned(v) for k, v in value.items()})
    if isinstance(value, list):
        return [owned(v) for v in value]
    if isinstance(value, Described):
        return Described(value.descriptor, owned(value.value))
    return value


def sections(raw: bytes) -> list[tuple[int, bytes]]:
    """Split an encoded message into ``(descriptor code, encoded section)`` pairs."""
    out: list[tuple[int, bytes]] = []
    rest = raw
    while rest:
        data = Data()
        used = data.decode(rest)
        data.rewind()
        data.next()
        data.enter()
        data.next()
        code = data.get_object()
        out.append((int(code) if isinstance(code, int) else -1, rest[:used]))
        rest = rest[used:]
    return out


def section_value(encoded: bytes) -> Any:
    data = Data()
    data.decode(encoded)
    data.rewind()
    data.next()
    value = owned(data.get_object())
    return value.value if isinstance(value, Described) else value


def encode_section(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def split_batch(raw: bytes) -> list[bytes]:
    """The messages a transfer carries: a batch (format 0x80013700) holds one per data section."""
    bodies = [section_value(encoded) for code, encoded in sections(raw) if code == DATA]
    if bodies and all(
        isinstance(b, bytes) and len(b) > 2 and b[0] == 0 and b[1] == 0x53 and HEADER <= b[2] <= FOOTER for b in bodies
    ):
        return bodies
    return [raw]


def header(delivery_count: int, durable: bool = True) -> bytes:
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(HEADER)
    data.put_list()
    data.enter()
    data.put_bool(durable)
    data.put_ubyte(4)
    data.put_null()
    data.put_bool(delivery_count == 0)
    data.put_uint(delivery_count)
    data.exit()
    data.exit()
    return bytes(data.encode())


def for_delivery(
    raw: bytes,
    *,
    delivery_count: int,
    sequence: int,
    enqueued: float,
    locked_until: float | None,
    extra_properties: dict[str, Any] | None = None,
) -> bytes:
    """The stored message rewritten for one hand-out (header, annotations, extra app properties)."""
    annotations: dict[Any, Any] = {}
    app: dict[Any, Any] | None = None
    kept: list[tuple[int, bytes]] = []
    for code, encoded in sections(raw):
        if code in (HEADER, DELIVERY_ANNOTATIONS):
            continue
        if code == MESSAGE_ANNOTATIONS:
            annotations = dict(section_value(encoded) or {})
        elif code == APPLICATION_PROPERTIES and extra_properties:
            app = dict(section_value(encoded) or {})
        else:
            kept.append((code, encoded))
    annotations[SEQUENCE_NUMBER] = sequence
    annotations[ENQUEUED_TIME] = timestamp(int(enqueued * 1000))
    annotations.pop(LOCKED_UNTIL, None)
    if locked_until is not None:
        annotations[LOCKED_UNTIL] = timestamp(int(locked_until * 1000))
    if extra_properties:
        app = {**(app or {}), **extra_properties}
    out = [header(delivery_count), encode_section(MESSAGE_ANNOTATIONS, annotations)]
    for code, encoded in kept:
        if app is not None and code > APPLICATION_PROPERTIES:
            out.append(encode_section(APPLICATION_PROPERTIES, app))
            app = None
        out.append(encoded)
    if app is not None:
        out.append(encode_section(APPLICATION_PROPERTIES, app))
    return b"".join(out)
