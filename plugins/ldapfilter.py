"""RFC 4515 LDAP search filters: parse into a typed AST, print back, escape values, evaluate.

``parse(text)`` is a hand-written scanner (linear, no regular expressions) behind an LRU cache, so a
filter the agent sends a thousand times is parsed once. ``escape_value`` makes any ``str``/``bytes``
safe to format into a filter. ``Filter.matches(attributes)`` evaluates a filter the way an LDAP server
would, for the in-memory directory.

Matching rules (one short table, not a schema):
- attribute names are case-insensitive; options (``cn;lang-en``) are kept in the AST and ignored when
  matching;
- every attribute is caseIgnore (RFC 4518: NFKC, Unicode case folding, insignificant spaces) except the
  octet-string ones in ``BINARY_ATTRIBUTES`` (objectGUID, objectSid, …), which compare raw bytes;
  ``~=`` is case-insensitive equality;
- ``>=``/``<=`` compare as integers when both sides are integers (uSNChanged, userAccountControl),
  otherwise lexically on the normalised text, which orders generalized time correctly;
- extensible match supports an attribute with the Active Directory bitwise rules
  ``1.2.840.113556.1.4.803`` (AND) and ``.804`` (OR) and the caseIgnore/caseExact/integer match rules;
  ``:dn`` and a missing attribute are rejected by the parser; other rules parse (so the string can go
  to a real server) but ``check_evaluable`` and ``matches`` reject them;
- logic is two-valued: a missing attribute is FALSE, so ``(!(mail=x))`` matches entries without mail.

Accepted leniently, as OpenLDAP does: spaces between components, a bare top-level item without
parentheses, the RFC 1960 escapes ``\\*`` ``\\(`` ``\\)`` ``\\\\``, and ``(&)``/``(|)`` (RFC 4526 absolute
true/false). Every problem raises ``plugins.directory.InvalidFilterError`` naming the position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from unicodedata import normalize

from plugins.directory import Attributes, AttrValue, InvalidFilterError

__all__ = [
    "BINARY_ATTRIBUTES",
    "BITWISE_AND",
    "BITWISE_OR",
    "And",
    "Approx",
    "Equality",
    "Extensible",
    "Filter",
    "GreaterOrEqual",
    "LessOrEqual",
    "Not",
    "Or",
    "Present",
    "Substring",
    "check_evaluable",
    "decode_value",
    "escape_value",
    "is_binary",
    "normalize_value",
    "parse",
]

BITWISE_AND = "1.2.840.113556.1.4.803"
BITWISE_OR = "1.2.840.113556.1.4.804"
BINARY_ATTRIBUTES = frozenset(
    {
        "objectguid",
        "objectsid",
        "sidhistory",
        "ms-ds-consistencyguid",
        "msexchmailboxguid",
        "jpegphoto",
        "thumbnailphoto",
        "usercertificate",
        "cacertificate",
        "userpassword",
        "unicodepwd",
        "ntsecuritydescriptor",
        "logonhours",
    }
)
_CASE_IGNORE_RULES = frozenset({"2.5.13.2", "caseignorematch", "2.5.13.4", "caseignoresubstringsmatch"})
_CASE_EXACT_RULES = frozenset({"2.5.13.5", "caseexactmatch"})
_INTEGER_RULES = frozenset({"2.5.13.14", "integermatch"})
_MAX_DEPTH = 64
_SPECIAL_BYTES = frozenset(b"*()\\\x00")
_HEX = "0123456789abcdefABCDEF"

Normalized = str | bytes


def _base_name(attribute: str) -> str:
    """The lookup key of an attribute description: lower-case, options dropped."""
    return attribute.split(";", 1)[0].lower()


@lru_cache(maxsize=4096)
def is_binary(attribute: str) -> bool:
    """Whether ``attribute`` compares raw octets (an octet-string attribute such as objectGUID)."""
    return _base_name(attribute) in BINARY_ATTRIBUTES


def normalize_value(attribute: str, value: AttrValue) -> Normalized:
    """The form in which two values of ``attribute`` compare equal (also the equality-index key)."""
    if is_binary(attribute):
        return value if isinstance(value, bytes) else value.encode("utf-8")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return _prepared(value)


def _prepared(text: str) -> str:
    """RFC 4518 string preparation for caseIgnore matching: compatibility forms folded (NFKC: a full-width
    B, U+FF22, is "b", in slapd too), case folded, runs of white space one space and none at the ends.
    Where slapd 2.5 departs from RFC 4518 this follows the RFC: it folds "ß" to "ss" and takes tabs and
    line breaks for spaces, which slapd keeps as they are."""
    return " ".join(normalize("NFKC", normalize("NFKC", text).casefold()).split())


def _as_int(value: Normalized) -> int | None:
    if isinstance(value, bytes):
        return None
    text = value[1:] if value[:1] == "-" else value
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(value)


def escape_value(value: str | bytes) -> str:
    """Escape a value for an RFC 4515 filter: ``* ( ) \\ NUL`` and every non-printable or non-ASCII
    octet become ``\\XX``; the result is pure printable ASCII."""
    if isinstance(value, str):
        # four searches of the string, not a generator: every lookup's value comes through here
        plain = value.isascii() and value.isprintable()
        if plain and "*" not in value and "(" not in value and ")" not in value and "\\" not in value:
            return value
        value = value.encode("utf-8")
    return "".join(
        f"\\{byte:02x}" if byte in _SPECIAL_BYTES or byte < 0x20 or byte > 0x7E else chr(byte) for byte in value
    )


class Filter:
    """A parsed filter node; ``str(node)`` and ``node.to_string()`` give the RFC 4515 string."""

    __slots__ = ()

    def to_string(self) -> str:
        raise NotImplementedError

    def matches(self, attributes: Attributes) -> bool:
        """Whether an entry with these attributes matches this filter."""
        raise NotImplementedError

    def walk(self) -> Iterator[Filter]:
        """This node and every node below it, depth first."""
        yield self

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class And(Filter):
    children: tuple[Filter, ...]

    def to_string(self) -> str:
        return "(&" + "".join(child.to_string() for child in self.children) + ")"

    def matches(self, attributes: Attributes) -> bool:
        return all(child.matches(attributes) for child in self.children)

    def walk(self) -> Iterator[Filter]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class Or(Filter):
    children: tuple[Filter, ...]
    #: The equality assertions among the children, as one set of keys per attribute, and the rest:
    #: ``(|(uid=a)(uid=b)…)`` of hundreds of values (a batch of reference lookups) is then one set
    #: lookup per value of the entry, not one comparison per child.
    _keys: dict[str, frozenset[Normalized]] = field(init=False, repr=False, compare=False)
    _others: tuple[Filter, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys: dict[str, set[Normalized]] = {}
        others: list[Filter] = []
        for child in self.children:
            if isinstance(child, Equality | Approx):
                keys.setdefault(child.attribute, set()).add(child.key)
            else:
                others.append(child)
        object.__setattr__(self, "_keys", {attribute: frozenset(found) for attribute, found in keys.items()})
        object.__setattr__(self, "_others", tuple(others))

    def to_string(self) -> str:
        return "(|" + "".join(child.to_string() for child in self.children) + ")"

    def matches(self, attributes: Attributes) -> bool:
        for attribute, keys in self._keys.items():
            if any(normalize_value(attribute, value) in keys for value in _values(attributes, attribute)):
                return True
        return any(child.matches(attributes) for child in self._others)

    def walk(self) -> Iterator[Filter]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class Not(Filter):
    child: Filter

    def to_string(self) -> str:
        return f"(!{self.child.to_string()})"

    def matches(self, attributes: Attributes) -> bool:
        return not self.child.matches(attributes)

    def walk(self) -> Iterator[Filter]:
        yield self
        yield from self.child.walk()


@dataclass(frozen=True, slots=True)
class Present(Filter):
    attribute: str

    def to_string(self) -> str:
        return f"({self.attribute}=*)"

    def matches(self, attributes: Attributes) -> bool:
        return _base_name(self.attribute) in attributes


def _values(attributes: Attributes, attribute: str) -> list[AttrValue]:
    return attributes.get(attribute.split(";", 1)[0], [])


@dataclass(frozen=True, slots=True)
class _Assertion(Filter):
    """An item comparing an attribute with one assertion value."""

    attribute: str
    value: AttrValue
    key: Normalized = field(init=False, repr=False, compare=False)

    _operator = "="

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", normalize_value(self.attribute, self.value))

    def to_string(self) -> str:
        return f"({self.attribute}{self._operator}{escape_value(self.value)})"


@dataclass(frozen=True, slots=True)
class Equality(_Assertion):
    def matches(self, attributes: Attributes) -> bool:
        key, attribute = self.key, self.attribute
        return any(normalize_value(attribute, value) == key for value in _values(attributes, attribute))


@dataclass(frozen=True, slots=True)
class Approx(_Assertion):
    _operator = "~="

    def matches(self, attributes: Attributes) -> bool:
        key, attribute = self.key, self.attribute
        return any(normalize_value(attribute, value) == key for value in _values(attributes, attribute))


def _ordering(attribute: str, value: AttrValue, key: Normalized) -> tuple[int, int] | tuple[Normalized, Normalized]:
    left = normalize_value(attribute, value)
    left_int, right_int = _as_int(left), _as_int(key)
    if left_int is not None and right_int is not None:
        return left_int, right_int
    return left, key


@dataclass(frozen=True, slots=True)
class GreaterOrEqual(_Assertion):
    _operator = ">="

    def matches(self, attributes: Attributes) -> bool:
        for value in _values(attributes, self.attribute):
            left, right = _ordering(self.attribute, value, self.key)
            if type(left) is type(right) and left >= right:  # type: ignore[operator]
                return True
        return False


@dataclass(frozen=True, slots=True)
class LessOrEqual(_Assertion):
    _operator = "<="

    def matches(self, attributes: Attributes) -> bool:
        for value in _values(attributes, self.attribute):
            left, right = _ordering(self.attribute, value, self.key)
            if type(left) is type(right) and left <= right:  # type: ignore[operator]
                return True
        return False


@dataclass(frozen=True, slots=True)
class Substring(Filter):
    """``(attr=initial*any*…*final)``; ``initial``/``final`` are None when the pattern starts/ends with ``*``."""

    attribute: str
    initial: AttrValue | None
    any: tuple[AttrValue, ...] = ()
    final: AttrValue | None = None
    keys: tuple[Normalized | None, tuple[Normalized, ...], Normalized | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "keys",
            (
                None if self.initial is None else self._piece(self.initial, head=False),
                tuple(self._piece(piece) for piece in self.any),
                None if self.final is None else self._piece(self.final, tail=False),
            ),
        )

    def _piece(self, piece: AttrValue, *, head: bool = True, tail: bool = True) -> Normalized:
        """A piece in the form of the values it is looked for in (``normalize_value``: no spaces at the
        ends, inner runs as one). A space at a piece's inner end is significant and kept as one; at the
        value's ends there is none to find, so the initial piece's leading spaces and the final piece's
        trailing ones go (slapd: ``(cn=*b )`` matches "a b", RFC 4518 §2.6.1 agrees). A piece of spaces
        only is one space: an inner space, which an initial piece never finds (slapd finds nothing for
        ``(cn= *)``); a final piece of spaces only is empty, and every value ends with it."""
        if is_binary(self.attribute):
            return normalize_value(self.attribute, piece)
        text = piece.decode("utf-8", "surrogateescape") if isinstance(piece, bytes) else piece
        core = _prepared(text)
        if not core:
            return " " if tail else ""
        before = " " if head and text[:1].isspace() else ""
        after = " " if tail and text[-1:].isspace() else ""
        return before + core + after

    def to_string(self) -> str:
        pieces = [
            "" if self.initial is None else escape_value(self.initial),
            *(escape_value(piece) for piece in self.any),
            "" if self.final is None else escape_value(self.final),
        ]
        return f"({self.attribute}={'*'.join(pieces)})"

    def matches(self, attributes: Attributes) -> bool:
        initial, middle, final = self.keys
        for value in _values(attributes, self.attribute):
            if _substring_match(normalize_value(self.attribute, value), initial, middle, final):
                return True
        return False


def _substring_match(
    value: Normalized, initial: Normalized | None, middle: tuple[Normalized, ...], final: Normalized | None
) -> bool:
    if isinstance(value, bytes):
        return _substring_bytes(value, initial, middle, final)
    if any(isinstance(piece, bytes) for piece in (initial, final, *middle)):
        return False
    start, end = 0, len(value)
    if initial is not None:
        if not value.startswith(initial):  # type: ignore[arg-type]
            return False
        start = len(initial)
    if final is not None:
        if len(final) > end - start or not value.endswith(final):  # type: ignore[arg-type]
            return False
        end -= len(final)
    for piece in middle:
        found = value.find(piece, start, end)  # type: ignore[arg-type]
        if found < 0:
            return False
        start = found + len(piece)
    return True


def _substring_bytes(
    value: bytes, initial: Normalized | None, middle: tuple[Normalized, ...], final: Normalized | None
) -> bool:
    def raw(piece: Normalized) -> bytes:
        return piece if isinstance(piece, bytes) else piece.encode("utf-8")

    start, end = 0, len(value)
    if initial is not None:
        if not value.startswith(raw(initial)):
            return False
        start = len(raw(initial))
    if final is not None:
        if len(raw(final)) > end - start or not value.endswith(raw(final)):
            return False
        end -= len(raw(final))
    for piece in middle:
        found = value.find(raw(piece), start, end)
        if found < 0:
            return False
        start = found + len(raw(piece))
    return True


def _bitwise(rule: str) -> Callable[[int, int], bool] | None:
    if rule == BITWISE_AND:
        return lambda value, mask: value & mask == mask
    if rule == BITWISE_OR:
        return lambda value, mask: value & mask != 0
    return None


@dataclass(frozen=True, slots=True)
class Extensible(Filter):
    """``(attr[:rule]:=value)``; ``rule`` is an OID or a rule name, None for the attribute's equality."""

    attribute: str
    rule: str | None
    value: AttrValue

    def to_string(self) -> str:
        rule = f":{self.rule}" if self.rule else ""
        return f"({self.attribute}{rule}:={escape_value(self.value)})"

    @property
    def evaluable(self) -> bool:
        rule = (self.rule or "").lower()
        return (
            not rule
            or _bitwise(rule) is not None
            or rule in _CASE_IGNORE_RULES
            or rule in _CASE_EXACT_RULES
            or rule in _INTEGER_RULES
        )

    def matches(self, attributes: Attributes) -> bool:
        rule = (self.rule or "").lower()
        values = _values(attributes, self.attribute)
        bitwise = _bitwise(rule)
        if bitwise is not None or rule in _INTEGER_RULES:
            assertion = _as_int(normalize_value("", self.value))
            if assertion is None:
                return False
            ints = (_as_int(normalize_value("", value)) for value in values)
            if bitwise is None:
                return any(number == assertion for number in ints)
            mask = assertion & 0xFFFFFFFF
            return any(number is not None and bitwise(number & 0xFFFFFFFF, mask) for number in ints)
        if rule in _CASE_EXACT_RULES:
            return any(value == self.value for value in values)
        if not rule or rule in _CASE_IGNORE_RULES:
            key = normalize_value(self.attribute, self.value)
            return any(normalize_value(self.attribute, value) == key for value in values)
        raise InvalidFilterError(f"matching rule {self.rule!r} is not supported here (in {self.to_string()!r})")


def check_evaluable(node: Filter) -> None:
    """Raise ``InvalidFilterError`` unless ``matches`` can evaluate every node (known matching rules)."""
    for item in node.walk():
        if isinstance(item, Extensible) and not item.evaluable:
            raise InvalidFilterError(
                f"matching rule {item.rule!r} in {item.to_string()!r} is not supported; supported: "
                f"{BITWISE_AND} (bitwise AND), {BITWISE_OR} (bitwise OR), caseIgnoreMatch, caseExactMatch, integerMatch"
            )


# --------------------------------------------------------------------------------------------- parser


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, pos: int | None = None) -> InvalidFilterError:
        where = self.pos if pos is None else pos
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "…"
        return InvalidFilterError(f"bad LDAP filter {shown!r}: {problem} at position {where}")

    def skip_spaces(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] == " ":
            pos += 1
        self.pos = pos

    def parse(self) -> Filter:
        self.skip_spaces()
        if self.pos >= len(self.text):
            raise self.fail("empty filter")
        if self.text[self.pos] == "(":
            node = self.filter(0)
        else:
            node = self.item(len(self.text))
            self.pos = len(self.text)
        self.skip_spaces()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r} after the filter")
        return node

    def filter(self, depth: int) -> Filter:
        if depth > _MAX_DEPTH:
            raise self.fail(f"filter nested deeper than {_MAX_DEPTH} levels")
        text = self.text
        if self.pos >= len(text) or text[self.pos] != "(":
            found = repr(text[self.pos]) if self.pos < len(text) else "the end"
            raise self.fail(f"expected '(' but found {found}")
        open_at = self.pos
        self.pos += 1
        self.skip_spaces()
        if self.pos >= len(text):
            raise self.fail("unbalanced '(' (filter ends early)", open_at)
        char = text[self.pos]
        node: Filter
        if char in "&|":
            self.pos += 1
            children = self.filter_list(depth)
            node = And(children) if char == "&" else Or(children)
        elif char == "!":
            self.pos += 1
            self.skip_spaces()
            node = Not(self.filter(depth + 1))
            self.skip_spaces()
        else:
            end = self._item_end(open_at)
            node = self.item(end)
            self.pos = end
        if self.pos >= len(text) or text[self.pos] != ")":
            found = repr(text[self.pos]) if self.pos < len(text) else "the end"
            raise self.fail(f"expected ')' closing the '(' at position {open_at} but found {found}")
        self.pos += 1
        return node

    def _item_end(self, open_at: int) -> int:
        """Position of the ')' closing a simple item (escapes skipped)."""
        text = self.text
        end = text.find(")", self.pos)
        if end < 0:
            raise self.fail("unbalanced '(' (no closing ')')", open_at)
        if "\\" not in text[self.pos : end]:
            return end
        pos = self.pos
        while pos < len(text):
            char = text[pos]
            if char == "\\":
                pos += 2
            elif char == ")":
                return pos
            else:
                pos += 1
        raise self.fail("unbalanced '(' (no closing ')')", open_at)

    def filter_list(self, depth: int) -> tuple[Filter, ...]:
        children: list[Filter] = []
        self.skip_spaces()
        while self.pos < len(self.text) and self.text[self.pos] == "(":
            children.append(self.filter(depth + 1))
            self.skip_spaces()
        return tuple(children)

    def attribute(self, end: int) -> str:
        text, start = self.text, self.pos
        pos = start
        if pos < end and text[pos].isascii() and text[pos].isalpha():
            while pos < end and text[pos].isascii() and (text[pos].isalnum() or text[pos] == "-"):
                pos += 1
        elif pos < end and text[pos].isascii() and text[pos].isdigit():
            while pos < end and text[pos].isascii() and (text[pos].isdigit() or text[pos] == "."):
                pos += 1
            if text[pos - 1] == "." or ".." in text[start:pos]:
                raise self.fail(f"bad numeric OID {text[start:pos]!r}", start)
        elif pos < end and text[pos] == ":":
            raise self.fail("extensible match without an attribute description is not supported", pos)
        else:
            found = repr(text[pos]) if pos < end else "nothing"
            raise self.fail(f"expected an attribute description but found {found}", pos)
        while pos < end and text[pos] == ";":
            option_start = pos = pos + 1
            while pos < end and text[pos].isascii() and (text[pos].isalnum() or text[pos] == "-"):
                pos += 1
            if pos == option_start:
                raise self.fail("empty attribute option after ';'", pos)
        self.pos = pos
        return text[start:pos]

    def item(self, end: int) -> Filter:
        text = self.text
        attribute = self.attribute(end)
        pos = self.pos
        two = text[pos : pos + 2]
        if two in ("~=", ">=", "<="):
            value_start = pos + 2
            pieces = self.value_pieces(value_start, end)
            if len(pieces) != 1:
                raise self.fail(f"unescaped '*' in a {two!r} value (escape it as \\2a)", value_start)
            cls = {"~=": Approx, ">=": GreaterOrEqual, "<=": LessOrEqual}[two]
            return cls(attribute, pieces[0])
        if two[:1] == "=":
            pieces = self.value_pieces(pos + 1, end)
            if len(pieces) == 1:
                return Equality(attribute, pieces[0])
            if len(pieces) == 2 and pieces[0] == "" and pieces[1] == "":
                return Present(attribute)
            if any(piece == "" for piece in pieces[1:-1]):
                raise self.fail("empty substring between two '*'", pos + 1)
            return Substring(attribute, pieces[0] or None, tuple(pieces[1:-1]), pieces[-1] or None)
        if two[:1] == ":":
            return self.extensible(attribute, pos, end)
        found = repr(text[pos]) if pos < end else "nothing"
        raise self.fail(f"expected '=', '~=', '>=', '<=' or ':' after {attribute!r} but found {found}", pos)

    def extensible(self, attribute: str, pos: int, end: int) -> Filter:
        text = self.text
        marker = text.find(":=", pos, end)
        if marker < 0:
            raise self.fail("extensible match without ':='", pos)
        parts = text[pos + 1 : marker].split(":") if marker > pos else []
        if any(part.lower() == "dn" for part in parts):
            raise self.fail("':dn' extensible matching (DN attributes) is not supported", pos)
        if len(parts) > 1:
            raise self.fail(f"bad extensible match {text[pos : marker + 2]!r}", pos)
        rule = parts[0] if parts else None
        if rule is not None and not _is_rule(rule):
            raise self.fail(f"bad matching rule {rule!r}", pos + 1)
        pieces = self.value_pieces(marker + 2, end)
        if len(pieces) != 1:
            raise self.fail("unescaped '*' in an extensible match value (escape it as \\2a)", marker + 2)
        return Extensible(attribute, rule, pieces[0])

    def value_pieces(self, start: int, end: int) -> list[AttrValue]:
        """The assertion value between ``start`` and ``end`` split at unescaped '*', each piece decoded."""
        text = self.text
        segment = text[start:end]
        if "\\" not in segment:
            for bad in "(\x00":
                found = segment.find(bad)
                if found >= 0:
                    raise self.fail(f"unescaped {bad!r} in a value (escape it as \\{ord(bad):02x})", start + found)
            return list(segment.split("*"))
        pieces: list[AttrValue] = []
        current = bytearray()
        pos = start
        while pos < end:
            char = text[pos]
            if char == "\\":
                pair = text[pos + 1 : pos + 3]
                if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                    current.append(int(pair, 16))
                    pos += 3
                    continue
                if pair[:1] and pair[0] in "*()\\":
                    current.append(ord(pair[0]))
                    pos += 2
                    continue
                raise self.fail("'\\' must be followed by two hex digits", pos)
            if char == "*":
                pieces.append(_decode(current))
                current = bytearray()
            elif char in "(\x00":
                raise self.fail(f"unescaped {char!r} in a value (escape it as \\{ord(char):02x})", pos)
            else:
                current += char.encode("utf-8")
            pos += 1
        pieces.append(_decode(current))
        return pieces


def _decode(octets: bytearray) -> AttrValue:
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(octets)


def _is_rule(rule: str) -> bool:
    if not rule or not rule.isascii():
        return False
    if rule[0].isdigit():
        return all(part.isdigit() for part in rule.split("."))
    return rule[0].isalpha() and all(char.isalnum() or char == "-" for char in rule)


#: Filters up to this many characters are cached when parsed: lookups repeat, while long filters (a
#: batch of hundreds of reference lookups, each batch different) would fill the cache with big trees.
CACHED_LENGTH = 1024


def parse(text: str) -> Filter:
    """Parse an RFC 4515 filter string; the result is immutable (and cached unless it is long)."""
    if not isinstance(text, str):
        raise InvalidFilterError(f"an LDAP filter must be a string, not {type(text).__name__}")
    return _parse_cached(text) if len(text) <= CACHED_LENGTH else _Parser(text).parse()


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Filter:
    return _Parser(text).parse()


def decode_value(text: str) -> AttrValue:
    """An assertion value as ``parse`` decodes it (escapes resolved; bytes unless the octets are UTF-8);
    ``InvalidFilterError`` unless it is one value (an unescaped ``*``, ``(`` or NUL, a bad escape)."""
    parser = _Parser(text)
    pieces = parser.value_pieces(0, len(text))
    if len(pieces) != 1:
        raise parser.fail("unescaped '*' in a value (escape it as \\2a)", text.index("*"))
    return pieces[0]


def matches(text_or_node: str | Filter, attributes: Attributes) -> bool:
    """Convenience: parse (if needed) and evaluate a filter against one entry's attributes."""
    node = parse(text_or_node) if isinstance(text_or_node, str) else text_or_node
    return node.matches(attributes)


def conjuncts(node: Filter) -> Sequence[Filter]:
    """The items an entry must all satisfy: the children of an AND, else the node itself."""
    return node.children if isinstance(node, And) else (node,)
