"""RFC 4514 distinguished names: parse, escape, normalise, compare.

A DN is a sequence of RDNs, leaf first; an RDN is one or more attribute type/value pairs joined by
``+``. Parsing is a hand-written scanner (no regular expressions) and is cached, since the same DNs
come back on every operation.

Guarantees:
- ``parse(to_string(rdns)) == rdns`` for any values: ``escape_value`` escapes ``, + " \\ < > ; =``,
  a leading ``#`` or space, a trailing space, NUL and other control characters.
- Parsing is lenient where it cannot be ambiguous: spaces around ``,``, ``+`` and ``=`` and unescaped
  leading/trailing spaces of a value are dropped (RFC 2253/1779 style input); ``\\XX`` hex pairs are
  joined into UTF-8. A ``#hexstring`` value must be a BER-encoded string.
- ``normalize`` gives the form two DNs share when an LDAP server treats them as the same entry:
  attribute types lower-cased (well-known OIDs mapped to names), values case-folded with insignificant
  spaces collapsed, the AVAs of a multi-valued RDN sorted.
- Every problem raises ``plugins.directory.InvalidDNError`` naming the position and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from plugins.directory import InvalidDNError

__all__ = [
    "AVA",
    "RDN",
    "escape_value",
    "is_descendant",
    "join",
    "normalize",
    "normalize_value",
    "parent",
    "parse",
    "parse_rdn",
    "rdn",
    "split_by_yaml",
    "to_string",
    "unescape_value",
]

_HEX = "0123456789abcdefABCDEF"
_ALWAYS_ESCAPED = frozenset(',+"\\<>;=')
_TYPE_ALIASES = {
    "2.5.4.3": "cn",
    "2.5.4.6": "c",
    "2.5.4.7": "l",
    "2.5.4.8": "st",
    "2.5.4.9": "street",
    "2.5.4.10": "o",
    "2.5.4.11": "ou",
    "0.9.2342.19200300.100.1.1": "uid",
    "0.9.2342.19200300.100.1.25": "dc",
}
# Attribute types that name the top of a tree (a naming context): the last RDN of most base DNs.
_NAMING_CONTEXT_TYPES = frozenset({"dc", "o", "c"})
# BER tags of the string types a ``#hexstring`` value may carry.
_BER_STRING_TAGS = frozenset({0x04, 0x0C, 0x13, 0x14, 0x16, 0x1A})


@dataclass(frozen=True, slots=True)
class AVA:
    """One ``type=value`` pair; ``value`` is the unescaped text."""

    attribute: str
    value: str

    def to_string(self) -> str:
        return f"{self.attribute}={escape_value(self.value)}"


@dataclass(frozen=True, slots=True)
class RDN:
    """A relative DN: one or more AVAs (more than one for a multi-valued RDN such as ``cn=a+sn=b``)."""

    avas: tuple[AVA, ...]

    def to_string(self) -> str:
        return "+".join(ava.to_string() for ava in self.avas)

    def get(self, attribute: str) -> str | None:
        """The value of ``attribute`` in this RDN (case-insensitive name), or None."""
        key = attribute.lower()
        for ava in self.avas:
            if ava.attribute.lower() == key:
                return ava.value
        return None


def escape_value(value: str) -> str:
    """Escape an attribute value for use in a DN string (RFC 4514 §2.4)."""
    if not value:
        return ""
    out: list[str] = []
    last = len(value) - 1
    for index, char in enumerate(value):
        if char in _ALWAYS_ESCAPED:
            out.append("\\" + char)
        elif char == "\x00" or char < " " or char == "\x7f":
            out.append(f"\\{ord(char):02x}")
        elif (char == " " and (index == 0 or index == last)) or (char == "#" and index == 0):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def unescape_value(text: str) -> str:
    """The value an escaped DN attribute value stands for (inverse of ``escape_value``)."""
    value, end = _scan_value(text, 0, stop_at_separators=False)
    if end != len(text):
        raise InvalidDNError(f"unexpected {text[end]!r} at position {end} in value {text!r}")
    return value


def _scan_value(text: str, pos: int, *, stop_at_separators: bool = True) -> tuple[str, int]:
    """Scan one value from ``pos``; return it unescaped and the position of the separator after it."""
    length = len(text)
    while pos < length and text[pos] == " ":
        pos += 1
    if pos < length and text[pos] == "#":
        return _scan_hexstring(text, pos)
    pieces: list[str] = []
    pending = bytearray()  # \XX octets waiting to be decoded as UTF-8
    trailing_spaces = 0  # unescaped spaces at the end, dropped if the value ends there
    while pos < length:
        char = text[pos]
        if char == "\\":
            if pos + 1 >= length:
                raise InvalidDNError(f"dangling backslash at the end of {text!r}")
            nxt = text[pos + 1]
            if nxt in _HEX and pos + 2 < length and text[pos + 2] in _HEX:
                pending.append(int(text[pos + 1 : pos + 3], 16))
                pos += 3
            elif nxt in _ALWAYS_ESCAPED or nxt in " #":
                _flush(pending, pieces, text)
                pieces.append(nxt)
                pos += 2
            else:
                raise InvalidDNError(f"invalid escape '\\{nxt}' at position {pos} in {text!r}")
            trailing_spaces = 0
            continue
        if char in ",+" and stop_at_separators:
            break
        if char in '"<>;\\' or char == "\x00" or (char in ",+" and not stop_at_separators):
            raise InvalidDNError(f"unescaped {char!r} at position {pos} in {text!r}")
        _flush(pending, pieces, text)
        pieces.append(char)
        trailing_spaces = trailing_spaces + 1 if char == " " else 0
        pos += 1
    _flush(pending, pieces, text)
    value = "".join(pieces)
    if trailing_spaces:
        value = value[:-trailing_spaces]
    return value, pos


def _flush(pending: bytearray, pieces: list[str], text: str) -> None:
    if pending:
        try:
            pieces.append(pending.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidDNError(f"\\XX escapes that are not UTF-8 in {text!r}") from None
        pending.clear()


def _scan_hexstring(text: str, pos: int) -> tuple[str, int]:
    start = pos
    pos += 1
    while pos < len(text) and text[pos] in _HEX:
        pos += 1
    digits = text[start + 1 : pos]
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if not digits or len(digits) % 2 or (pos < len(text) and text[pos] not in ",+"):
        raise InvalidDNError(f"bad #hexstring value at position {start} in {text!r}")
    return _decode_ber_string(bytes.fromhex(digits), text, start), pos


def _decode_ber_string(data: bytes, text: str, start: int) -> str:
    problem = f"#hexstring at position {start} in {text!r} is not a BER-encoded string"
    if len(data) < 2 or data[0] not in _BER_STRING_TAGS:
        raise InvalidDNError(problem)
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if offset + length != len(data):
        raise InvalidDNError(problem)
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidDNError(problem) from None


def _scan_type(text: str, pos: int) -> tuple[str, int]:
    length = len(text)
    while pos < length and text[pos] == " ":
        pos += 1
    start = pos
    if pos < length and text[pos].isascii() and text[pos].isalpha():
        while pos < length and text[pos].isascii() and (text[pos].isalnum() or text[pos] == "-"):
            pos += 1
    elif pos < length and text[pos].isascii() and text[pos].isdigit():
        while pos < length and text[pos].isascii() and (text[pos].isdigit() or text[pos] == "."):
            pos += 1
        if text[pos - 1] == "." or ".." in text[start:pos]:
            raise InvalidDNError(f"bad numeric OID {text[start:pos]!r} at position {start} in {text!r}")
    else:
        found = repr(text[pos]) if pos < length else "the end"
        raise InvalidDNError(f"expected an attribute type at position {pos} in {text!r}, found {found}")
    attribute = text[start:pos]
    if attribute[:4].lower() == "oid.":
        attribute = attribute[4:]
    while pos < length and text[pos] == " ":
        pos += 1
    if pos >= length or text[pos] != "=":
        found = repr(text[pos]) if pos < length else "the end"
        raise InvalidDNError(f"expected '=' after {attribute!r} at position {pos} in {text!r}, found {found}")
    return attribute, pos + 1


@lru_cache(maxsize=4096)
def parse(dn: str) -> tuple[RDN, ...]:
    """Parse a DN into its RDNs, leaf first; the empty DN is the empty tuple."""
    if not isinstance(dn, str):
        raise InvalidDNError(f"a DN must be a string, not {type(dn).__name__}")
    if not dn.strip(" "):
        return ()
    rdns: list[RDN] = []
    avas: list[AVA] = []
    pos = 0
    while True:
        attribute, pos = _scan_type(dn, pos)
        value, pos = _scan_value(dn, pos)
        avas.append(AVA(attribute, value))
        if pos >= len(dn):
            rdns.append(RDN(tuple(avas)))
            return tuple(rdns)
        if dn[pos] == ",":
            rdns.append(RDN(tuple(avas)))
            avas = []
        pos += 1  # past ',' or '+'
        if pos >= len(dn):
            raise InvalidDNError(f"{dn!r} ends with {dn[-1]!r}: an RDN is missing")


def parse_rdn(text: str) -> RDN:
    """Parse a single RDN (``cn=a`` or ``cn=a+sn=b``)."""
    rdns = parse(text)
    if len(rdns) != 1:
        raise InvalidDNError(f"{text!r} is not a single RDN")
    return rdns[0]


def to_string(rdns: tuple[RDN, ...] | list[RDN]) -> str:
    """The RFC 4514 string of a sequence of RDNs (leaf first)."""
    return ",".join(item.to_string() for item in rdns)


def normalize_value(value: str) -> str:
    """A value as caseIgnoreMatch compares it: insignificant spaces collapsed, case folded."""
    return " ".join(value.split()).casefold()


def _normalize_ava(ava: AVA) -> str:
    attribute = ava.attribute.lower()
    return f"{_TYPE_ALIASES.get(attribute, attribute)}={escape_value(normalize_value(ava.value))}"


@lru_cache(maxsize=4096)
def _normalized_rdns(dn: str) -> tuple[str, ...]:
    return tuple("+".join(sorted(_normalize_ava(ava) for ava in item.avas)) for item in parse(dn))


def normalize(dn: str) -> str:
    """The comparison form of a DN: equal for every spelling an LDAP server treats as the same entry."""
    return ",".join(_normalized_rdns(dn))


def parent(dn: str) -> str:
    """The DN one level up (``""`` for a single-RDN DN); the empty DN has no parent."""
    rdns = parse(dn)
    if not rdns:
        raise InvalidDNError("the empty DN has no parent")
    return to_string(rdns[1:])


def rdn(dn: str) -> str:
    """The leaf RDN of ``dn`` as a string; the empty DN has no RDN."""
    rdns = parse(dn)
    if not rdns:
        raise InvalidDNError("the empty DN has no RDN")
    return rdns[0].to_string()


def is_descendant(dn: str, base: str, *, or_self: bool = False) -> bool:
    """Whether ``dn`` lies strictly below ``base`` (or is ``base`` itself when ``or_self``)."""
    child, ancestor = _normalized_rdns(dn), _normalized_rdns(base)
    if len(child) < len(ancestor) or child[len(child) - len(ancestor) :] != ancestor:
        return False
    return or_self or len(child) > len(ancestor)


def join(rdn_text: str, parent_dn: str) -> str:
    """The DN of ``rdn_text`` under ``parent_dn`` (both validated)."""
    item = parse_rdn(rdn_text)
    parent_rdns = parse(parent_dn)
    return to_string((item, *parent_rdns))


def split_by_yaml(dns: Sequence[str]) -> str | None:
    """The one DN that ``dns`` looks like after YAML split it at its commas, else None.

    ``base_dns: [ou=Staff,dc=example,dc=com]`` reads as three one-RDN DNs. They are taken for the
    pieces of one DN when there are at least two, each is one RDN, the last names the top of a tree
    (``dc=``, ``o=``, ``c=``) and either all are ``dc=`` or one before it is not a top (``ou=``, ``cn=``):
    ``[o=a, o=b]`` or ``[o=a, dc=b]`` may well be separate trees; ``[dc=example, dc=com]`` is not.
    """
    if len(dns) < 2:
        return None
    try:
        parsed = [parse(text) for text in dns]
    except InvalidDNError:
        return None
    if any(len(rdns) != 1 or len(rdns[0].avas) != 1 for rdns in parsed):
        return None
    types = [_TYPE_ALIASES.get(rdns[0].avas[0].attribute.lower(), rdns[0].avas[0].attribute.lower()) for rdns in parsed]
    if types[-1] not in _NAMING_CONTEXT_TYPES:
        return None
    if all(kind == "dc" for kind in types) or any(kind not in _NAMING_CONTEXT_TYPES for kind in types[:-1]):
        return ",".join(dns)
    return None
