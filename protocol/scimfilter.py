"""The SCIM 2.0 filter language (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2): tokenizer, parser, typed AST.

``parse_filter(text)`` returns an immutable AST (``Compare``, ``Present``, ``Not``, ``And``, ``Or``,
``ValuePath`` over ``AttrPath``); ``parse_path(text)`` returns a ``PatchPath``. Every node has
``to_string()``, and ``parse_filter(node.to_string()) == node`` for every well-formed node.

Guarantees:

- Precedence is ``not`` > ``and`` > ``or``; ``and``/``or`` are n-ary (``a and b and c`` is one ``And`` of
  three operands) and parentheses the text needed are kept as nesting, so printing never changes structure.
- Keywords and operators are case-insensitive; ``true``/``false``/``null`` are JSON literals (lowercase);
  strings are JSON strings with every JSON escape; numbers are JSON numbers (``int`` or ``float``).
- Every failure is a ``ScimError``: ``invalidFilter`` from ``parse_filter``, ``invalidPath`` from
  ``parse_path``, with a detail naming the character offset and what was expected. Input longer than
  ``MAX_LENGTH`` or nested deeper than ``MAX_DEPTH`` is refused with the same error, so no
  ``RecursionError`` can escape.
- Pure; parse results are kept in an LRU cache, which is safe because the AST is immutable.

Readings of the RFC (the differential test against ``scim2_filter_parser`` documents each one):
whitespace between tokens may be any run of spaces, tabs or newlines and may be omitted where tokens
cannot merge; an attribute name may start with ``$`` (``$ref``, which RFC 7643 itself defines); a
word is a keyword only where the grammar expects one, so an attribute may be named ``pr`` or ``and``;
``attr[filter].sub`` is a PATCH path, not a filter; value filters do not nest (``valFilter`` has no
``valuePath``); schema URIs are URNs (letters, digits and ``:._-+``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, TypeAlias

from protocol.errors import ScimError, invalid_filter, invalid_path

MAX_LENGTH: Final = 10_000
MAX_DEPTH: Final = 50
_MAX_NUMBER_LENGTH: Final = 100

CompareOp: TypeAlias = Literal["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]
_OPS: Final[dict[str, CompareOp]] = {
    "eq": "eq",
    "ne": "ne",
    "co": "co",
    "sw": "sw",
    "ew": "ew",
    "gt": "gt",
    "ge": "ge",
    "lt": "lt",
    "le": "le",
}
COMPARE_OPS: Final[frozenset[str]] = frozenset(_OPS)
ScimValue: TypeAlias = str | int | float | bool | None


# --------------------------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``[uri ":"] name ["." sub_attr]``: ``userName``, ``name.givenName``, ``urn:…:User:manager.value``."""

    name: str
    sub_attr: str | None = None
    uri: str | None = None

    def to_string(self) -> str:
        text = f"{self.uri}:{self.name}" if self.uri else self.name
        return f"{text}.{self.sub_attr}" if self.sub_attr else text

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class Compare:
    """``attr op value``: ``userName eq "bjensen"``, ``meta.version gt 3``."""

    attr: AttrPath
    op: CompareOp
    value: ScimValue

    def to_string(self) -> str:
        return f"{self.attr.to_string()} {self.op} {_value_to_string(self.value)}"

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class Present:
    """``attr pr``: the attribute has a non-empty value."""

    attr: AttrPath

    def to_string(self) -> str:
        return f"{self.attr.to_string()} pr"

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class Not:
    """``not (operand)``."""

    operand: Filter

    def to_string(self) -> str:
        return f"not ({self.operand.to_string()})"

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class And:
    """``a and b [and c …]``: two or more operands, none of them an ``And`` the text did not parenthesise."""

    operands: tuple[Filter, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("And needs at least two operands")

    def to_string(self) -> str:
        return " and ".join(_operand_to_string(o, _AND) for o in self.operands)

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class Or:
    """``a or b [or c …]``: two or more operands."""

    operands: tuple[Filter, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("Or needs at least two operands")

    def to_string(self) -> str:
        return " or ".join(_operand_to_string(o, _OR) for o in self.operands)

    def __str__(self) -> str:
        return self.to_string()


@dataclass(frozen=True, slots=True)
class ValuePath:
    """``attr[filter]``: ``filter`` (over sub-attributes) holds for one and the same value of ``attr``."""

    attr: AttrPath
    filter: Filter

    def to_string(self) -> str:
        return f"{self.attr.to_string()}[{self.filter.to_string()}]"

    def __str__(self) -> str:
        return self.to_string()


Filter: TypeAlias = Compare | Present | Not | And | Or | ValuePath


@dataclass(frozen=True, slots=True)
class PatchPath:
    """A PATCH ``path``: ``attr``, ``attr.sub``, ``attr[filter]`` or ``attr[filter].sub`` (any URN-qualified).

    ``attr.sub_attr`` is set only without a filter; with a filter the sub-attribute after ``]`` is
    ``sub_attr`` here.
    """

    attr: AttrPath
    filter: Filter | None = None
    sub_attr: str | None = None

    def to_string(self) -> str:
        text = self.attr.to_string()
        if self.filter is not None:
            text += f"[{self.filter.to_string()}]"
        return f"{text}.{self.sub_attr}" if self.sub_attr else text

    def __str__(self) -> str:
        return self.to_string()


_OR, _AND, _ATOM = 1, 2, 3


def _precedence(node: Filter) -> int:
    if isinstance(node, Or):
        return _OR
    if isinstance(node, And):
        return _AND
    return _ATOM


def _operand_to_string(node: Filter, parent: int) -> str:
    text = node.to_string()
    return f"({text})" if _precedence(node) <= parent else text


def _value_to_string(value: ScimValue) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return json.dumps(value)
    raise ValueError(f"not a SCIM comparison value: {value!r}")


# ---------------------------------------------------------------------------------------- tokenizer

_WS, _STRING, _NUMBER, _WORD, _SUBATTR, _PUNCT, _END = "ws", "string", "number", "word", "subattr", "punct", "end"

_TOKEN_RE = re.compile(
    r"(?P<ws>[ \t\r\n]+)"
    r'|(?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")'
    r"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<word>[A-Za-z$][A-Za-z0-9:._$+-]*)"
    r"|(?P<subattr>\.[A-Za-z0-9_$-]*)"
    r"|(?P<punct>[()\[\]])"
)
_NAME_RE = re.compile(r"\$?[A-Za-z][A-Za-z0-9_-]*")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(?::[A-Za-z0-9._+-]+)+")
#: A lone half of a UTF-16 surrogate pair, which a JSON string can escape ("\\ud800") but no text holds.
_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")
_LITERALS: Final[dict[str, ScimValue]] = {"true": True, "false": False, "null": None}
_OPERATORS_HINT = "a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le) or 'pr'"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    pos: int
    text: str

    def describe(self) -> str:
        if self.kind == _END:
            return "end of input"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        return repr(text)


ErrorFactory = Callable[[str], ScimError]


def _error(error: ErrorFactory, what: str, pos: int, message: str) -> ScimError:
    return error(f"invalid {what} at offset {pos}: {message}")


def _tokenize(text: str, error: ErrorFactory, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    match = _TOKEN_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            raise _error(error, what, pos, _diagnose(text, pos))
        kind = m.lastgroup
        assert kind is not None
        if kind != _WS:
            tokens.append(_Token(kind, pos, m.group()))
        pos = m.end()
    tokens.append(_Token(_END, end, ""))
    return tokens


def _diagnose(text: str, pos: int) -> str:
    char = text[pos]
    if char == '"':
        i = pos + 1
        while i < len(text):
            c = text[i]
            if c == '"':
                break
            if c == "\\":
                if not re.match(r'["\\/bfnrt]|u[0-9a-fA-F]{4}', text[i + 1 : i + 6]):
                    return f"invalid escape in the string starting at offset {pos} (at offset {i})"
                i += 6 if text[i + 1] == "u" else 2
                continue
            if ord(c) < 0x20:
                return f"unescaped control character in the string starting at offset {pos} (at offset {i})"
            i += 1
        return f"unterminated string starting at offset {pos}; expected a closing '\"'"
    if char == "'":
        return "strings must be in double quotes"
    if char == "-" or char.isdigit():
        return "malformed number (expected a JSON number)"
    return f"unexpected character {char!r}"


# ------------------------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over the token list; ``depth`` counts open ``(``, ``not (`` and ``[``."""

    __slots__ = ("error", "i", "tokens", "what")

    def __init__(self, text: str, error: ErrorFactory, what: str) -> None:
        self.error = error
        self.what = what
        if not text.strip():
            raise error(f"invalid {what}: it is empty")
        if len(text) > MAX_LENGTH:
            raise error(f"invalid {what}: it is {len(text)} characters long; the limit is {MAX_LENGTH}")
        self.tokens = _tokenize(text, error, what)
        self.i = 0

    def unexpected(self, token: _Token, expected: str) -> ScimError:
        return _error(self.error, self.what, token.pos, f"expected {expected}, found {token.describe()}")

    def expect(self, punct: str, expected: str) -> None:
        token = self.tokens[self.i]
        if token.kind != _PUNCT or token.text != punct:
            raise self.unexpected(token, expected)
        self.i += 1

    def enter(self, token: _Token, depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise _error(self.error, self.what, token.pos, f"nesting deeper than {MAX_DEPTH} levels")
        return depth + 1

    def is_keyword(self, word: str) -> bool:
        token = self.tokens[self.i]
        return token.kind == _WORD and token.text.lower() == word

    # FILTER := and_expr ("or" and_expr)*
    def parse_or(self, depth: int, in_brackets: bool) -> Filter:
        first = self.parse_and(depth, in_brackets)
        if not self.is_keyword("or"):
            return first
        operands = [first]
        while self.is_keyword("or"):
            self.i += 1
            operands.append(self.parse_and(depth, in_brackets))
        return Or(tuple(operands))

    def parse_and(self, depth: int, in_brackets: bool) -> Filter:
        first = self.parse_unary(depth, in_brackets)
        if not self.is_keyword("and"):
            return first
        operands = [first]
        while self.is_keyword("and"):
            self.i += 1
            operands.append(self.parse_unary(depth, in_brackets))
        return And(tuple(operands))

    def parse_unary(self, depth: int, in_brackets: bool) -> Filter:
        tokens = self.tokens
        token = tokens[self.i]
        if token.kind == _PUNCT and token.text == "(":
            self.i += 1
            inner = self.parse_or(self.enter(token, depth), in_brackets)
            self.expect(")", "'and', 'or' or ')'")
            return inner
        if token.kind != _WORD:
            raise self.unexpected(token, "an attribute path, 'not (' or '('")
        following = tokens[self.i + 1]
        if token.text.lower() == "not" and following.kind == _PUNCT and following.text == "(":
            self.i += 2
            inner = self.parse_or(self.enter(following, depth), in_brackets)
            self.expect(")", "'and', 'or' or ')'")
            return Not(inner)
        attr = self.attr_path(token)
        self.i += 1
        if following.kind == _PUNCT and following.text == "[":
            if in_brackets:
                raise _error(self.error, self.what, following.pos, "value filters cannot nest ('[' inside '[...]')")
            self.i += 1
            inner = self.parse_or(self.enter(following, depth), in_brackets=True)
            self.expect("]", "'and', 'or' or ']'")
            after = tokens[self.i]
            if after.kind == _SUBATTR:
                raise _error(
                    self.error, self.what, after.pos, "a sub-attribute after ']' is allowed in PATCH paths, not filters"
                )
            return ValuePath(attr, inner)
        if following.kind == _WORD:
            op = following.text.lower()
            if op == "pr":
                self.i += 1
                return Present(attr)
            compare_op = _OPS.get(op)
            if compare_op is not None:
                self.i += 1
                return Compare(attr, compare_op, self.comp_value())
        if token.text.lower() == "not":
            raise self.unexpected(following, "'(' after 'not'")
        raise self.unexpected(following, f"{_OPERATORS_HINT} after {token.text!r}")

    def comp_value(self) -> ScimValue:
        token = self.tokens[self.i]
        self.i += 1
        if token.kind == _STRING:
            body = token.text[1:-1]
            if "\\" in body:
                decoded: str = json.loads(token.text)
                if not decoded.isascii() and _SURROGATE.search(decoded):
                    # "\ud800" escapes a half of a UTF-16 pair, no character: no directory can hold it
                    raise _error(self.error, self.what, token.pos, "a string escapes a lone UTF-16 surrogate")
                return decoded
            return body
        if token.kind == _NUMBER:
            if len(token.text) > _MAX_NUMBER_LENGTH:
                raise _error(self.error, self.what, token.pos, f"number longer than {_MAX_NUMBER_LENGTH} characters")
            if any(c in token.text for c in ".eE"):
                number = float(token.text)
                if number in (float("inf"), float("-inf")):
                    raise _error(self.error, self.what, token.pos, "number out of range")
                return number
            return int(token.text)
        if token.kind == _WORD and token.text in _LITERALS:
            return _LITERALS[token.text]
        hint = " (JSON literals are lowercase)" if token.text.lower() in _LITERALS else ""
        raise self.unexpected(token, f"a comparison value (a JSON string, number, true, false or null){hint}")

    def attr_path(self, token: _Token) -> AttrPath:
        uri, colon, rest = token.text.rpartition(":")
        if colon and not _URI_RE.fullmatch(uri):
            raise _error(
                self.error, self.what, token.pos, f"{uri!r} is not a schema URI (expected 'urn:…:' before the name)"
            )
        name, dot, sub = rest.partition(".")
        if not _NAME_RE.fullmatch(name) or (dot and not _NAME_RE.fullmatch(sub)):
            raise _error(
                self.error,
                self.what,
                token.pos,
                f"expected an attribute path (name, name.subAttr, or URN-qualified), found {token.describe()}",
            )
        return AttrPath(name, sub or None, uri or None)

    def end(self, expected: str) -> None:
        token = self.tokens[self.i]
        if token.kind != _END:
            raise self.unexpected(token, expected)


#: The filter most requests carry, ``name[.sub] op "text"`` (no URN, no escape in the string): what a
#: provisioning client sends to find an object before it writes one, every time with another value, so
#: the cache rarely has it. Read by one regular expression; the tokens and the parser say the same.
_SIMPLE_RE = re.compile(
    r"[ \t\r\n]*(\$?[A-Za-z][A-Za-z0-9_-]*)(?:\.(\$?[A-Za-z][A-Za-z0-9_-]*))?"  # name[.sub]
    r'[ \t\r\n]+([A-Za-z]{2})[ \t\r\n]+"([^"\\\x00-\x1f]*)"[ \t\r\n]*'  # op "text"
)


def simple_compare(text: str) -> tuple[str, str | None, CompareOp, str] | None:
    """``(name, sub, op, value)`` of a filter of the usual shape ``name[.sub] op "text"`` (no URN, no
    escape in the string), which ``parse_filter`` reads as ``Compare(AttrPath(name, sub), op, value)``;
    None for any other filter (which may still be well formed)."""
    simple = _SIMPLE_RE.fullmatch(text) if len(text) <= MAX_LENGTH else None
    if simple is None:
        return None
    name, sub, op, value = simple.groups()
    compare_op = _OPS.get(op.lower())
    return None if compare_op is None else (name, sub, compare_op, value)


@lru_cache(maxsize=4096)
def parse_filter(text: str) -> Filter:
    """Parse a SCIM filter; raise ``invalid_filter`` naming the offset and what was expected."""
    simple = simple_compare(text)
    if simple is not None:
        name, sub, op, value = simple
        return Compare(AttrPath(name, sub, None), op, value)
    return _parse_filter(text)


def _parse_filter(text: str) -> Filter:
    parser = _Parser(text, invalid_filter, "filter")
    node = parser.parse_or(0, in_brackets=False)
    parser.end("'and', 'or' or end of filter")
    return node


@lru_cache(maxsize=1024)
def parse_path(text: str) -> PatchPath:
    """Parse a PATCH path (``attr``, ``attr.sub``, ``attr[filter]``, ``attr[filter].sub``); ``invalid_path`` if bad."""
    parser = _Parser(text, invalid_path, "path")
    token = parser.tokens[0]
    if token.kind != _WORD:
        raise parser.unexpected(token, "an attribute path")
    attr = parser.attr_path(token)
    parser.i = 1
    bracket = parser.tokens[1]
    if not (bracket.kind == _PUNCT and bracket.text == "["):
        parser.end("'[' or end of path")
        return PatchPath(attr)
    if attr.sub_attr is not None:
        raise _error(
            invalid_path, "path", bracket.pos, "a value filter must follow a top-level attribute, not a sub-attribute"
        )
    parser.i = 2
    inner = parser.parse_or(1, in_brackets=True)
    parser.expect("]", "'and', 'or' or ']'")
    sub: str | None = None
    after = parser.tokens[parser.i]
    if after.kind == _SUBATTR:
        sub = after.text[1:]
        if not _NAME_RE.fullmatch(sub):
            raise _error(
                invalid_path, "path", after.pos, f"expected a sub-attribute name after '.', found {after.describe()}"
            )
        parser.i += 1
    parser.end("'.subAttr' or end of path")
    return PatchPath(attr, inner, sub)
