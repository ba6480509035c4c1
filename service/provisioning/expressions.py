"""Attribute-mapping expressions in the style of the incumbent's: ``Join(" ", [givenName], [sn])``.

``parse_expression(text)`` tokenizes and parses once (hand-written scanner and recursive descent) into
an immutable ``Expression``; ``Expression.evaluate(resource)`` computes its value on a source SCIM
resource. Nothing is ever handed to ``eval``/``exec``: the only things an expression can do are the
functions in ``FUNCTIONS``.

Syntax:

- ``"text"``: a string; ``\\"`` is a quote and ``\\\\`` a backslash, any other backslash is kept as
  written (so regular expressions read naturally: ``"\\d+"``). ``42``, ``-1``, ``2.5``: numbers.
  ``true``, ``false``, ``null`` (any case): literals.
- ``[path]``: an attribute of the source resource, a SCIM path as in PATCH (``[userName]``,
  ``[name.givenName]``, ``[emails[type eq "work"].value]``, URN-qualified extension attributes such as
  ``[urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department]``). A few of the incumbent's
  directory names are aliases (``ALIASES``: ``[givenName]``, ``[sn]``, ``[mail]``, ``[department]``, …).
  A reference is ``null`` when the attribute is absent, its value when it has one and a list when it
  has several; a complex value stands for its ``value`` sub-attribute wherever text is needed.
- ``Name(arg, …)``: a function (names are case-insensitive); an argument may be left out
  (``Replace([x], , "a+", , "b", , )``), which passes ``null``.
- ``a = b`` and ``a <> b``: exact (case-sensitive) equality of the two values as text, for ``IIF``.

Null semantics: functions return ``null`` for a ``null`` source (see each function's doc in
``FUNCTIONS``); ``Join`` and ``Coalesce`` skip null and empty values; ``IIF`` treats ``null`` as false.
A function needing a single value and given a list uses its first value. Booleans print as
``true``/``false``.

Guarantees: an invalid expression raises ``ExpressionError`` at parse time with the character offset
and what was expected (unknown function, wrong number of arguments, bad regex); evaluation failures
(a non-number where a number is needed) raise ``ExpressionEvaluationError`` naming the function and its
offset. Bounded: text ≤ ``MAX_LENGTH`` characters, calls nested ≤ ``MAX_DEPTH`` deep, every string
result ≤ ``MAX_STRING`` characters and list ≤ ``MAX_LIST`` values. Regular expressions (``Replace``'s
incumbent 7-argument form) must be string literals, are compiled at parse time and restricted so their
cost stays polynomial and small: no backreferences, no quantified group that contains a quantifier or
an alternative, at most two repeating quantifiers, and subjects of at most ``MAX_REGEX_SUBJECT``
characters (Python's ``re`` has no timeout, so the bound is by construction). Pure and deterministic:
no ``Guid``/``Now``/``RandomString``.
"""

from __future__ import annotations

import base64
import difflib
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, TypeAlias

from protocol.errors import ScimError
from protocol.scimeval import Evaluator, get_ci, is_core_schema, is_present
from protocol.scimfilter import PatchPath, parse_path

__all__ = [
    "ALIASES",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_LIST",
    "MAX_REGEX_SUBJECT",
    "MAX_STRING",
    "Call",
    "Comparison",
    "Expression",
    "ExpressionError",
    "ExpressionEvaluationError",
    "Literal",
    "Node",
    "Reference",
    "describe_functions",
    "parse_expression",
    "resolve_path",
]

MAX_LENGTH: Final = 4_096
MAX_DEPTH: Final = 32
MAX_STRING: Final = 65_536
MAX_LIST: Final = 10_000
MAX_REGEX_SUBJECT: Final = 256
_MAX_REGEX_PATTERN: Final = 128
_MAX_NUMBER_DIGITS: Final = 18

Value: TypeAlias = Any  # str | int | float | bool | None | list[...] (and source dicts)

ENTERPRISE: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LDAP_ENTRY: Final = "urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"

#: The incumbent's directory attribute names → the SCIM path the agent serves them under (case-insensitive).
ALIASES: Final[Mapping[str, str]] = {
    "givenname": "name.givenName",
    "sn": "name.familyName",
    "surname": "name.familyName",
    "cn": "name.formatted",
    "mail": 'emails[type eq "work"].value',
    "telephonenumber": 'phoneNumbers[type eq "work"].value',
    "mobile": 'phoneNumbers[type eq "mobile"].value',
    "userprincipalname": "userName",
    "uid": "userName",
    "department": f"{ENTERPRISE}:department",
    "company": f"{ENTERPRISE}:organization",
    "employeeid": f"{ENTERPRISE}:employeeNumber",
    "employeenumber": f"{ENTERPRISE}:employeeNumber",
    "manager": f"{ENTERPRISE}:manager.value",
    "distinguishedname": f"{LDAP_ENTRY}:distinguishedName",
    "dn": f"{LDAP_ENTRY}:distinguishedName",
    "objectguid": "id",
    "entryuuid": "id",
}


class ExpressionError(ValueError):
    """An expression is invalid; ``position`` is the character offset the message names."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"at offset {position}: {message}")
        self.position = position
        self.reason = message


class ExpressionEvaluationError(ExpressionError):
    """A valid expression could not be evaluated on this resource (e.g. ``Left([x], [y])`` with a text ``y``)."""


# --------------------------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number, boolean or null written in the expression."""

    value: str | int | float | bool | None
    pos: int


@dataclass(frozen=True, slots=True)
class Reference:
    """``[path]``: an attribute of the source resource (``text`` as written, ``path`` after aliases)."""

    text: str
    path: PatchPath
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """``Name(args…)``; ``name`` is the canonical spelling from ``FUNCTIONS``."""

    name: str
    args: tuple[Node, ...]
    pos: int
    regex: re.Pattern[str] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left = right`` or ``left <> right``."""

    op: str
    left: Node
    right: Node
    pos: int


Node: TypeAlias = Literal | Reference | Call | Comparison


# ------------------------------------------------------------------------------------ path lookups

_EVALUATOR = Evaluator()


def resolve_path(resource: Mapping[str, Any], path: PatchPath) -> list[Any]:
    """Every non-null value ``path`` selects in ``resource`` (multi-valued and filtered attributes flattened)."""
    container: Any = resource
    attr = path.attr
    if attr.uri is not None and not is_core_schema(attr.uri, resource):
        container = get_ci(resource, attr.uri)
        if not isinstance(container, Mapping):
            return []
    value = get_ci(container, attr.name)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if path.filter is not None:
        values = [v for v in values if isinstance(v, Mapping) and _EVALUATOR.matches_element(path.filter, v, attr.name)]
    sub = attr.sub_attr or path.sub_attr
    if sub is not None:
        subs: list[Any] = []
        for element in values:
            if isinstance(element, Mapping):
                got = get_ci(element, sub)
                subs.extend(got if isinstance(got, list) else [got])
        values = subs
    return [v for v in values if v is not None]


# ---------------------------------------------------------------------------------------- tokenizer

_STRING, _NUMBER, _NAME, _REF, _PUNCT, _END = "string", "number", "name", "ref", "punct", "end"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_OFFSET_RE = re.compile(r"offset (\d+)")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    pos: int
    text: str
    value: Any = None

    def describe(self) -> str:
        if self.kind == _END:
            return "end of expression"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        return repr(text)


def _scan_string(text: str, pos: int) -> tuple[str, int]:
    """The string starting at the quote at ``pos``: (value, offset after the closing quote)."""
    out: list[str] = []
    i, end = pos + 1, len(text)
    while i < end:
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\" and i + 1 < end and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ExpressionError("unterminated string; expected a closing '\"'", pos)


def _scan_reference(text: str, pos: int) -> int:
    """The offset just after the ``]`` closing the reference opened at ``pos`` (strings may hold brackets)."""
    depth, i, end = 0, pos, len(text)
    while i < end:
        char = text[i]
        if char == '"':
            _, i = _scan_string(text, i)
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ExpressionError("unterminated attribute reference; expected ']'", pos)


def _reference(text: str, pos: int, end: int) -> _Token:
    inner = text[pos + 1 : end - 1]
    stripped = inner.strip()
    if not stripped:
        raise ExpressionError("empty attribute reference; expected an attribute path inside '[ ]'", pos)
    start = pos + 1 + (len(inner) - len(inner.lstrip()))
    alias = ALIASES.get(stripped.lower())
    try:
        path = parse_path(alias if alias is not None else stripped)
    except ScimError as exc:
        # the SCIM parser counts from the start of the path: re-base its offsets on the expression
        detail = _OFFSET_RE.sub(lambda m: f"offset {int(m.group(1)) + start}", exc.detail)
        first = _OFFSET_RE.search(exc.detail)
        at = int(first.group(1)) + start if first else start
        raise ExpressionError(f"bad attribute reference ({detail})", at) from None
    return _Token(_REF, pos, text[pos:end], (stripped, path))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if char.isspace():
            pos += 1
        elif char == '"':
            value, after = _scan_string(text, pos)
            tokens.append(_Token(_STRING, pos, text[pos:after], value))
            pos = after
        elif char == "[":
            after = _scan_reference(text, pos)
            tokens.append(_reference(text, pos, after))
            pos = after
        elif char in "(),=":
            tokens.append(_Token(_PUNCT, pos, char))
            pos += 1
        elif text.startswith("<>", pos):
            tokens.append(_Token(_PUNCT, pos, "<>"))
            pos += 2
        elif (m := _NUMBER_RE.match(text, pos)) is not None:
            digits = m.group()
            if len(digits) > _MAX_NUMBER_DIGITS:
                raise ExpressionError(f"number longer than {_MAX_NUMBER_DIGITS} characters", pos)
            number: int | float = float(digits) if "." in digits else int(digits)
            tokens.append(_Token(_NUMBER, pos, digits, number))
            pos = m.end()
        elif (m := _NAME_RE.match(text, pos)) is not None:
            tokens.append(_Token(_NAME, pos, m.group()))
            pos = m.end()
        elif char == "'":
            raise ExpressionError('strings must be in double quotes ("…")', pos)
        else:
            raise ExpressionError(f"unexpected character {char!r}", pos)
    tokens.append(_Token(_END, end, ""))
    return tokens


# ------------------------------------------------------------------------------------------- parser

_LITERALS: Final[dict[str, bool | None]] = {"true": True, "false": False, "null": None}


class _Parser:
    __slots__ = ("i", "tokens")

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def is_punct(self, text: str) -> bool:
        token = self.tokens[self.i]
        return token.kind == _PUNCT and token.text == text

    def expect(self, punct: str, expected: str) -> None:
        if not self.is_punct(punct):
            raise self.unexpected(expected)
        self.i += 1

    def unexpected(self, expected: str) -> ExpressionError:
        token = self.peek()
        return ExpressionError(f"expected {expected}, found {token.describe()}", token.pos)

    # expr := operand (("=" | "<>") operand)?
    def expression(self, depth: int) -> Node:
        left = self.operand(depth)
        token = self.peek()
        if token.kind == _PUNCT and token.text in ("=", "<>"):
            self.i += 1
            right = self.operand(depth)
            return Comparison(token.text, left, right, token.pos)
        return left

    def operand(self, depth: int) -> Node:
        token = self.peek()
        if token.kind in (_STRING, _NUMBER):
            self.i += 1
            return Literal(token.value, token.pos)
        if token.kind == _REF:
            self.i += 1
            written, path = token.value
            return Reference(written, path, token.pos)
        if token.kind == _NAME:
            following = self.tokens[self.i + 1]
            if following.kind == _PUNCT and following.text == "(":
                return self.call(token, depth)
            if token.text.lower() in _LITERALS:
                self.i += 1
                return Literal(_LITERALS[token.text.lower()], token.pos)
            raise ExpressionError(
                f"unknown name {token.text!r}: write an attribute as [{token.text}], a function as "
                f"{token.text}(…), text in double quotes",
                token.pos,
            )
        raise self.unexpected('a value: "text", a number, [attribute] or Function(…)')

    def call(self, name: _Token, depth: int) -> Call:
        if depth >= MAX_DEPTH:
            raise ExpressionError(f"functions nested deeper than {MAX_DEPTH} levels", name.pos)
        spec = FUNCTIONS.get(name.text.lower())
        if spec is None:
            refused = _NONDETERMINISTIC.get(name.text.lower())
            if refused is not None:
                raise ExpressionError(f"{refused} is not supported: expressions are deterministic", name.pos)
            raise ExpressionError(f"unknown function {name.text!r}{_did_you_mean(name.text)}", name.pos)
        self.i += 2  # name and "("
        args: list[Node] = []
        if self.is_punct(")"):
            self.i += 1
        else:
            while True:
                token = self.peek()
                if token.kind == _PUNCT and token.text in ",)":
                    args.append(Literal(None, token.pos))  # an omitted argument
                else:
                    args.append(self.expression(depth + 1))
                if self.is_punct(","):
                    self.i += 1
                    continue
                self.expect(")", f"',' or ')' to close {spec.name}( opened at offset {name.pos}")
                break
        call = Call(spec.name, tuple(args), name.pos)
        return spec.validate(call)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), FUNCTIONS, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(FUNCTIONS[c].name for c in close)}?)" if close else ""


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed, validated expression; evaluate it with ``evaluate(resource)``."""

    text: str
    root: Node

    def evaluate(self, resource: Mapping[str, Any]) -> Value:
        """The expression's value on the source ``resource`` (null, a scalar or a list)."""
        return _evaluate(self.root, resource)

    @property
    def references(self) -> tuple[str, ...]:
        """The attribute references, as written, in order of appearance."""
        found: list[str] = []
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Reference):
                found.append(node.text)
            elif isinstance(node, Call):
                stack.extend(reversed(node.args))
            elif isinstance(node, Comparison):
                stack.extend((node.right, node.left))
        return tuple(found)

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=1024)
def parse_expression(text: str) -> Expression:
    """Parse and validate ``text``; raise ``ExpressionError`` naming the offset and what was expected."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}", MAX_LENGTH)
    if not text.strip():
        raise ExpressionError('empty expression; expected a value: "text", a number, [attribute] or Function(…)', 0)
    parser = _Parser(_tokenize(text))
    root = parser.expression(0)
    if parser.peek().kind != _END:
        raise parser.unexpected("end of expression")
    return Expression(text, root)


# --------------------------------------------------------------------------------------- evaluation


def _evaluate(node: Node, resource: Mapping[str, Any]) -> Value:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Reference):
        values = resolve_path(resource, node.path)
        if not values:
            return None
        return values[0] if len(values) == 1 else values
    if isinstance(node, Comparison):
        same = _text(_evaluate(node.left, resource)) == _text(_evaluate(node.right, resource))
        return same if node.op == "=" else not same
    spec = FUNCTIONS[node.name.lower()]
    if spec.lazy is not None:
        result = spec.lazy(node, lambda n: _evaluate(n, resource))
    else:
        assert spec.impl is not None
        result = spec.impl(node, [_evaluate(arg, resource) for arg in node.args])
    return _bounded(node, result)


def _bounded(call: Call, result: Value) -> Value:
    if isinstance(result, str) and len(result) > MAX_STRING:
        raise _fail(call, f"result longer than {MAX_STRING} characters")
    if isinstance(result, list) and len(result) > MAX_LIST:
        raise _fail(call, f"result has more than {MAX_LIST} values")
    return result


def _fail(call: Call, message: str) -> ExpressionEvaluationError:
    return ExpressionEvaluationError(f"{call.name}: {message}", call.pos)


def _scalar(value: Value) -> Value:
    """A single value: a list's first, a complex value's ``value``."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = get_ci(value, "value")
    return value


def _text(value: Value) -> str | None:
    value = _scalar(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _values(value: Value) -> list[Value]:
    """A value as a list of single values (null dropped, lists flattened one level)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [_scalar(v) for v in items if _scalar(v) is not None]


def _int(call: Call, value: Value, what: str) -> int:
    value = _scalar(value)
    if isinstance(value, bool):
        raise _fail(call, f"{what} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value.strip()):
        return int(value)
    raise _fail(call, f"{what} must be a whole number, got {value!r}")


def _truth(call: Call, value: Value) -> bool:
    value = _scalar(value)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(call, f"condition must be true or false, got {value!r}")


# ---------------------------------------------------------------------------------------- functions

Impl: TypeAlias = Callable[[Call, list[Value]], Value]
LazyImpl: TypeAlias = Callable[[Call, Callable[[Node], Value]], Value]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function: its canonical name, arity, implementation and one-line documentation."""

    name: str
    min_args: int
    max_args: int | None
    doc: str
    impl: Impl | None = None
    lazy: LazyImpl | None = None
    check: Callable[[Call], Call] | None = None

    def validate(self, call: Call) -> Call:
        count = len(call.args)
        if count < self.min_args or (self.max_args is not None and count > self.max_args):
            if self.max_args is None:
                wanted = f"at least {self.min_args}"
            elif self.min_args == self.max_args:
                wanted = str(self.min_args)
            else:
                wanted = f"{self.min_args} to {self.max_args}"
            plural = "" if wanted == "1" else "s"
            raise ExpressionError(f"{self.name} takes {wanted} argument{plural}, got {count}", call.pos)
        return self.check(call) if self.check is not None else call


def _str1(fn: Callable[[str], str]) -> Impl:
    """A function of one text value (extra arguments ignored); null stays null."""

    def impl(call: Call, args: list[Value]) -> Value:
        text = _text(args[0])
        return None if text is None else fn(text)

    return impl


def _join(call: Call, args: list[Value]) -> Value:
    separator = _text(args[0]) or ""
    parts = [t for v in args[1:] for t in map(_text, _values(v)) if t]
    if not parts:
        return None
    if sum(map(len, parts)) + len(separator) * (len(parts) - 1) > MAX_STRING:
        raise _fail(call, f"result longer than {MAX_STRING} characters")
    return separator.join(parts)


def _split(call: Call, args: list[Value]) -> Value:
    text, separator = _text(args[0]), _text(args[1])
    if not separator:
        raise _fail(call, "the separator must be non-empty text")
    if text is None:
        return None
    return text.split(separator) if text else []


def _append(call: Call, args: list[Value]) -> Value:
    text = _text(args[0])
    return None if text is None else text + (_text(args[1]) or "")


def _coalesce(call: Call, args: list[Value]) -> Value:
    return next((v for v in args if is_present(v)), None)


def _left(call: Call, args: list[Value]) -> Value:
    text, count = _text(args[0]), _int(call, args[1], "the length")
    if count < 0:
        raise _fail(call, f"the length must not be negative, got {count}")
    return None if text is None else text[:count]


def _right(call: Call, args: list[Value]) -> Value:
    text, count = _text(args[0]), _int(call, args[1], "the length")
    if count < 0:
        raise _fail(call, f"the length must not be negative, got {count}")
    return None if text is None else text[len(text) - min(count, len(text)) :]


def _mid(call: Call, args: list[Value]) -> Value:
    text = _text(args[0])
    start, length = _int(call, args[1], "the start"), _int(call, args[2], "the length")
    if start < 1:
        raise _fail(call, f"the start counts from 1, got {start}")
    if length < 0:
        raise _fail(call, f"the length must not be negative, got {length}")
    return None if text is None else text[start - 1 : start - 1 + length]


def _word(call: Call, args: list[Value]) -> Value:
    text, number = _text(args[0]), _int(call, args[1], "the word number")
    delimiters = _text(args[2]) if len(args) > 2 else None
    if text is None or number < 1:
        return None
    words = [w for w in re.split(f"[{re.escape(delimiters)}]", text) if w] if delimiters else text.split()
    return words[number - 1] if number <= len(words) else None


def _switch(call: Call, args: list[Value]) -> Value:
    source = _text(args[0])
    if source is not None:
        for key, value in zip(args[2::2], args[3::2], strict=True):
            if _text(key) == source:
                return value
    return args[1]


def _iif(call: Call, evaluate: Callable[[Node], Value]) -> Value:
    condition, when_true, when_false = call.args
    return evaluate(when_true) if _truth(call, evaluate(condition)) else evaluate(when_false)


def _cbool(call: Call, args: list[Value]) -> Value:
    value = _scalar(args[0])
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", lowered):
            return float(lowered) != 0
    raise _fail(call, f"cannot convert {value!r} to a boolean")


def _equals(call: Call, args: list[Value]) -> Value:
    left, right = _text(args[0]), _text(args[1])
    if len(args) > 2 and _truth(call, args[2]) and left is not None and right is not None:
        return left.casefold() == right.casefold()
    return left == right


def _item(call: Call, args: list[Value]) -> Value:
    values, index = _values(args[0]), _int(call, args[1], "the index")
    if index < 1:
        raise _fail(call, f"the index counts from 1, got {index}")
    return values[index - 1] if index <= len(values) else None


def _remove_duplicates(call: Call, args: list[Value]) -> Value:
    if args[0] is None:
        return None
    seen: dict[Any, None] = {}
    for value in _values(args[0]):
        seen.setdefault(value, None)
    return list(seen)


def _pcase(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:].lower() for w in text.split(" "))


_NON_DECOMPOSING: Final = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "\u0131": "i",
        "þ": "th",
        "Þ": "TH",
        "ð": "d",
        "Ð": "D",
    }
)


def _normalize_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.translate(_NON_DECOMPOSING))
    stripped = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", stripped)


def _replace(call: Call, args: list[Value]) -> Value:
    source = _text(args[0])
    if source is None:
        return None
    if len(args) == 3:
        old, new = _text(args[1]), _text(args[2]) or ""
        if not old:
            return source
        if source.count(old) * (len(new) - len(old)) + len(source) > MAX_STRING:
            raise _fail(call, f"result longer than {MAX_STRING} characters")
        return source.replace(old, new)
    old = _text(args[1])
    replacement = _text(args[4]) if args[4] is not None else _text(args[5])
    replacement = replacement or ""
    if call.regex is None:
        if not old:
            return source
        if source.count(old) * (len(replacement) - len(old)) + len(source) > MAX_STRING:
            raise _fail(call, f"result longer than {MAX_STRING} characters")
        return source.replace(old, replacement)
    if len(source) > MAX_REGEX_SUBJECT:
        raise _fail(call, f"a regular expression applies to at most {MAX_REGEX_SUBJECT} characters")
    group = _text(args[3])
    if group is None:
        return call.regex.sub(lambda _: replacement, source)

    def swap_group(m: re.Match[str]) -> str:
        start, end = m.span(group)
        if start < 0:
            return m.group()
        whole = m.group()
        return whole[: start - m.start()] + replacement + whole[end - m.start() :]

    return call.regex.sub(swap_group, source)


def _check_replace(call: Call) -> Call:
    if len(call.args) == 3:
        return call
    if len(call.args) != 7:
        raise ExpressionError(
            "Replace takes 3 arguments (source, old, new) or the incumbent's 7 (source, oldValue, regexPattern, "
            f"regexGroupName, replacementValue, replacementAttributeName, template), got {len(call.args)}",
            call.pos,
        )
    _, old, pattern, group, value, attribute, template = call.args
    if not _omitted(template):
        raise ExpressionError("Replace: the template argument is not supported", template.pos)
    if _omitted(old) == _omitted(pattern):
        raise ExpressionError("Replace: give exactly one of oldValue and regexPattern", call.pos)
    if not _omitted(value) and not _omitted(attribute):
        raise ExpressionError("Replace: give replacementValue or replacementAttributeName, not both", call.pos)
    if _omitted(pattern):
        if not _omitted(group):
            raise ExpressionError("Replace: regexGroupName needs a regexPattern", group.pos)
        return call
    if not (isinstance(pattern, Literal) and isinstance(pattern.value, str)):
        raise ExpressionError("Replace: regexPattern must be a string literal", pattern.pos)
    regex = _compile_regex(pattern.value, pattern.pos)
    if not _omitted(group):
        if not (isinstance(group, Literal) and isinstance(group.value, str)):
            raise ExpressionError("Replace: regexGroupName must be a string literal", group.pos)
        if group.value not in regex.groupindex:
            raise ExpressionError(f"Replace: the pattern has no group named {group.value!r}", group.pos)
    return Call(call.name, call.args, call.pos, regex)


def _omitted(node: Node) -> bool:
    return isinstance(node, Literal) and node.value is None


_QUANTIFIER_RE = re.compile(r"[*+?]|\{[0-9]*(?:,[0-9]*)?\}")


def _repeats(quantifier: str) -> bool:
    """Whether a quantifier can match more than once (``*``, ``+``, ``{m,}``, ``{m,n}``, ``{n}`` with n > 1)."""
    if quantifier in ("*", "+"):
        return True
    if quantifier == "?":
        return False
    low, comma, high = quantifier[1:-1].partition(",")
    if comma:
        return not high or int(high) > 1
    return int(low or "0") > 1


def _compile_regex(pattern: str, pos: int) -> re.Pattern[str]:
    """Compile a pattern inside the bounds the module docstring states (``.NET`` ``(?<name>…)`` accepted)."""
    if len(pattern) > _MAX_REGEX_PATTERN:
        raise ExpressionError(f"regular expression longer than {_MAX_REGEX_PATTERN} characters", pos)
    translated = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)
    # frames of open groups: [contains a quantifier, contains an alternative]
    frames: list[list[bool]] = [[False, False]]
    repeating = 0
    last_group: list[bool] | None = None  # the group that just closed, if the last atom was one
    i = 0
    while i < len(translated):
        char = translated[i]
        if char == "\\":
            escaped = translated[i + 1 : i + 2]
            if escaped in "123456789k" and escaped:
                raise ExpressionError("regular expression: backreferences are not allowed", pos)
            i, last_group = i + 2, None
            continue
        if char == "[":
            j = i + 1
            j += translated[j : j + 1] == "^"
            j += translated[j : j + 1] == "]"
            while j < len(translated) and translated[j] != "]":
                j += 2 if translated[j] == "\\" else 1
            i, last_group = j + 1, None
            continue
        if char == "(":
            if translated.startswith(("(?P=", "(?("), i):
                raise ExpressionError("regular expression: backreferences and conditionals are not allowed", pos)
            frames.append([False, False])
            i, last_group = i + 1, None
            continue
        if char == ")":
            if len(frames) > 1:
                last_group = frames.pop()
                frames[-1][0] |= last_group[0]
                frames[-1][1] |= last_group[1]
            i += 1
            continue
        if char == "|":
            frames[-1][1] = True
            i, last_group = i + 1, None
            continue
        m = _QUANTIFIER_RE.match(translated, i)
        if m is not None and not (char == "?" and translated[i - 1 : i] == "("):
            quantifier = m.group()
            if last_group is not None and (last_group[0] or last_group[1]):
                raise ExpressionError(
                    "regular expression: a repeated group may not contain a quantifier or '|' "
                    "(catastrophic backtracking)",
                    pos,
                )
            if _repeats(quantifier):
                repeating += 1
            frames[-1][0] = True
            i = m.end()
            i += translated[i : i + 1] in ("?", "+")  # lazy or possessive suffix
            last_group = None
            continue
        i, last_group = i + 1, None
    if repeating > 2:
        raise ExpressionError("regular expression: at most two repeating quantifiers (*, +, {m,n})", pos)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # "possible nested set": ambiguous across versions
            return re.compile(translated)
    except (re.error, FutureWarning) as exc:
        raise ExpressionError(f"invalid regular expression: {exc}", pos) from None


def _check_switch(call: Call) -> Call:
    if len(call.args) % 2:
        raise ExpressionError(
            f"Switch takes a source, a default and key/value pairs: an even number of arguments, got {len(call.args)}",
            call.pos,
        )
    return call


def _check_culture(call: Call) -> Call:
    if len(call.args) > 1 and not isinstance(call.args[1], Literal):
        raise ExpressionError(f"{call.name}: the culture must be a string literal (it is ignored)", call.args[1].pos)
    return call


def _spec(name: str, arity: tuple[int, int | None], doc: str, impl: Impl, **extra: Any) -> FunctionSpec:
    return FunctionSpec(name, arity[0], arity[1], doc, impl=impl, **extra)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


_SPECS: Final = (
    _spec("Append", (2, 2), "Append(source, suffix): source followed by suffix; null if source is null.", _append),
    _spec("CBool", (1, 1), 'CBool(x): true/false from a boolean, "true"/"false", or a number (non-zero).', _cbool),
    _spec("Coalesce", (1, None), "Coalesce(a, b, …): the first present value (not null, not empty).", _coalesce),
    _spec("ConvertToBase64", (1, 1), "ConvertToBase64(s): base64 of s in UTF-16LE (as the incumbent).", _str1(_base64)),
    _spec(
        "ConvertToUTF8Hex",
        (1, 1),
        "ConvertToUTF8Hex(s): s in UTF-8, as lowercase hex.",
        _str1(lambda s: s.encode().hex()),
    ),
    _spec("Count", (1, 1), "Count(values): how many values (0 for null).", lambda c, a: len(_values(a[0]))),
    _spec("CStr", (1, 1), "CStr(x): x as text (booleans as true/false); null stays null.", lambda c, a: _text(a[0])),
    _spec("Equals", (2, 3), "Equals(a, b[, ignoreCase]): a and b are the same text.", _equals),
    _spec("IsNull", (1, 1), "IsNull(x): x is null.", lambda c, a: a[0] is None),
    _spec(
        "IsNullOrEmpty",
        (1, 1),
        "IsNullOrEmpty(x): x is null, empty text or an empty list.",
        lambda c, a: not is_present(a[0]),
    ),
    _spec("IsPresent", (1, 1), "IsPresent(x): x is neither null nor empty.", lambda c, a: is_present(a[0])),
    _spec("IsString", (1, 1), "IsString(x): x is text.", lambda c, a: isinstance(_scalar(a[0]), str)),
    _spec("Item", (2, 2), "Item(values, n): the n-th value (from 1); null past the end.", _item),
    _spec(
        "Join",
        (1, None),
        "Join(separator, a, b, …): the values (lists flattened) joined; null and empty "
        "values skipped; null if none is left.",
        _join,
    ),
    _spec("Left", (2, 2), "Left(s, n): the first n characters.", _left),
    _spec("Mid", (3, 3), "Mid(s, start, length): length characters from position start (from 1).", _mid),
    _spec(
        "NormalizeDiacritics",
        (1, 1),
        "NormalizeDiacritics(s): letters without accents (Zoë → Zoe, ß → ss).",
        _str1(_normalize_diacritics),
    ),
    _spec("Not", (1, 1), "Not(condition): true when the condition is false or null.", lambda c, a: not _truth(c, a[0])),
    _spec("PCase", (1, 1), "PCase(s): each space-separated word capitalised, the rest lowercase.", _str1(_pcase)),
    _spec(
        "RemoveDuplicates",
        (1, 1),
        "RemoveDuplicates(values): values with repeats removed, order kept.",
        _remove_duplicates,
    ),
    _spec(
        "Replace",
        (3, 7),
        "Replace(s, old, new): every old replaced by new; or the incumbent's 7-argument "
        "form with a (bounded) regexPattern and optional regexGroupName.",
        _replace,
        check=_check_replace,
    ),
    _spec("Right", (2, 2), "Right(s, n): the last n characters.", _right),
    _spec("Split", (2, 2), "Split(s, separator): a list of the parts ([] for empty text).", _split),
    _spec("StripSpaces", (1, 1), "StripSpaces(s): s without any whitespace.", _str1(lambda s: "".join(s.split()))),
    _spec(
        "Switch",
        (4, None),
        "Switch(source, default, key1, value1, …): the value of the key equal to source (as text), else default.",
        _switch,
        check=_check_switch,
    ),
    _spec(
        "ToLower", (1, 2), "ToLower(s[, culture]): lowercase (culture ignored).", _str1(str.lower), check=_check_culture
    ),
    _spec(
        "ToUpper", (1, 2), "ToUpper(s[, culture]): uppercase (culture ignored).", _str1(str.upper), check=_check_culture
    ),
    _spec("Trim", (1, 1), "Trim(s): s without leading and trailing whitespace.", _str1(str.strip)),
    _spec(
        "Word",
        (2, 3),
        "Word(s, n[, delimiters]): the n-th word (from 1), split on any delimiter character "
        "(default whitespace); null past the end.",
        _word,
    ),
    FunctionSpec("IIF", 3, 3, "IIF(condition, whenTrue, whenFalse): only the chosen branch is evaluated.", lazy=_iif),
)

#: Every function, by lower-cased name.
FUNCTIONS: Final[Mapping[str, FunctionSpec]] = {spec.name.lower(): spec for spec in _SPECS}

_NONDETERMINISTIC: Final = {"guid": "Guid", "now": "Now", "randomstring": "RandomString"}


def describe_functions() -> Sequence[str]:
    """One line per function (for documentation and ``--help``)."""
    return [FUNCTIONS[name].doc for name in sorted(FUNCTIONS)]
