"""Evaluate a SCIM filter AST (``protocol.scimfilter``) directly on a SCIM resource (a JSON object).

``matches(filter, resource)`` answers whether a resource, as a SCIM service returns it, satisfies the
filter; ``Evaluator`` does the same with a chosen set of caseExact attributes and adds ``select`` and
``matches_element`` (one value of a multi-valued attribute, as PATCH value filters need).

Guarantees and readings of RFC 7644 §3.4.2.2 / RFC 7643 §2:

- Attribute names and schema URNs are case-insensitive. ``urn:…:core:…:name`` is the top level;
  ``urn:…:ext:attr`` reads ``resource["urn:…:ext"]["attr"]``; ``urn:…:ext`` alone names the container.
- Multi-valued attributes match when any value matches; ``emails[…]`` holds for one and the same value.
  Comparing a complex value directly (``emails co "x"``) compares its ``value`` sub-attribute.
- Strings compare case-insensitively (``fold_case``: letters of a one-to-one case pair LDAP servers fold
  too, nothing else) unless the attribute is caseExact (default
  ``DEFAULT_CASE_EXACT``: ``id``, ``externalId``, ``meta.resourceType``, ``meta.location``,
  ``meta.version``). Two strings that are both RFC 3339 date-times compare chronologically.
  Numbers compare numerically (``1 == 1.0``); booleans only with ``eq``/``ne``; types never coerce.
- ``pr``: null, ``""``, ``[]``, ``{}`` (and a complex value with no present sub-attribute) are absent.
  ``x eq null`` holds exactly when ``x pr`` does not; ``x ne v`` is ``not (x eq v)`` (so it also holds
  when ``x`` is absent, and for a multi-valued ``x`` means "no value equals ``v``").
- Operators that cannot apply raise ``invalidFilter`` (RFC 7644: ordering booleans or null, and ``co``/
  ``sw``/``ew`` with a non-string value) before any resource is looked at; an ordering operator that
  meets a boolean attribute value raises too.
- Pure: resources are only read.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from protocol.errors import invalid_filter
from protocol.scimfilter import And, AttrPath, Compare, CompareOp, Filter, Not, Or, Present, ScimValue, ValuePath

DEFAULT_CASE_EXACT: Final[frozenset[str]] = frozenset(
    {"id", "externalId", "meta.resourceType", "meta.location", "meta.version"}
)
CORE_SCHEMA_PREFIX: Final = "urn:ietf:params:scim:schemas:core:"

_ORDERING: Final = frozenset({"gt", "ge", "lt", "le"})
_SUBSTRING: Final = frozenset({"co", "sw", "ew"})
_MISSING: Final = object()
_DATETIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?")


def get_ci(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` with the key matched case-insensitively; ``None`` when absent."""
    value = obj.get(name, _MISSING)
    if value is not _MISSING:
        return value
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def is_core_schema(uri: str, resource: Mapping[str, Any]) -> bool:
    """Whether ``uri`` is the core schema of ``resource`` (its attributes live at the top level)."""
    if uri.lower().startswith(CORE_SCHEMA_PREFIX):
        return True
    schemas = get_ci(resource, "schemas")
    return (
        isinstance(schemas, list)
        and bool(schemas)
        and isinstance(schemas[0], str)
        and schemas[0].lower() == uri.lower()
    )


def is_present(value: Any) -> bool:
    """RFC 7644 ``pr``: not null, not an empty string, list or object (nor a list/object of such)."""
    if value is None or value == "":
        return False
    if isinstance(value, list):
        return any(is_present(v) for v in value)
    if isinstance(value, Mapping):
        return any(is_present(v) for v in value.values())
    return True


def check(filter_: Filter) -> None:
    """Raise ``invalidFilter`` for operator/value pairs RFC 7644 rules out whatever the data."""
    if isinstance(filter_, Compare):
        value = filter_.value
        if filter_.op in _ORDERING and (value is None or isinstance(value, bool)):
            raise invalid_filter(f"operator {filter_.op!r} cannot order {_json_name(value)} ({filter_.to_string()})")
        if filter_.op in _SUBSTRING and not isinstance(value, str):
            raise invalid_filter(f"operator {filter_.op!r} needs a string value ({filter_.to_string()})")
    elif isinstance(filter_, Not):
        check(filter_.operand)
    elif isinstance(filter_, And | Or):
        for operand in filter_.operands:
            check(operand)
    elif isinstance(filter_, ValuePath):
        check(filter_.filter)


def _json_name(value: ScimValue) -> str:
    return "null" if value is None else "booleans"


def _norm_path(path: str) -> str:
    lowered = path.lower()
    if lowered.startswith(CORE_SCHEMA_PREFIX):
        # urn:ietf:params:scim:schemas:core:2.0:User:id -> id
        return lowered.rsplit(":", 1)[1]
    return lowered


@lru_cache(maxsize=4096)
def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 date-time as an aware ``datetime`` (naive means UTC), or ``None`` if ``text`` is not one."""
    m = _DATETIME_RE.fullmatch(text)
    if m is None:
        return None
    day, clock, fraction, zone = m.groups()
    iso = f"{day}T{clock}"
    if fraction:
        iso += "." + (fraction + "000000")[:6]
    if zone and zone not in "Zz":
        iso += zone
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def fold_case(text: str) -> str:
    """``text`` as SCIM compares it case-insensitively: each letter of a one-to-one upper/lower pair that
    LDAP directories fold too becomes its lower-case letter; every other character stays as it is.

    Not ``str.casefold``, which equates more than directories do (long s with ``s``, ``ß`` with ``ss``, the
    Kelvin sign with ``k``, final sigma with sigma): a list answers with what the directory's LDAP filter
    returns, evaluated again here, so this must never equate two strings the directory tells apart, or
    the list would miss resources the filter selects. The pairs are ASCII's and those ``_pairs`` keeps;
    one character stays one character, so substrings stay substrings."""
    if text.isascii():
        return text.lower()
    return text.translate(_pairs())


#: Upper-case letters of pairs ``_pairs`` would keep that Samba AD 4.17 does not fold (its case table is
#: older than Unicode 3.2); slapd 2.5 folds them all. ``tests/contract/directory_suite.py`` holds every
#: directory to every pair that ``fold_case`` equates.
_UNFOLDED_BY_SAMBA: Final = (
    "\u01a6\u01f6\u01f7\u01f8\u0218\u021a\u021c\u021e\u0220\u0222\u0224\u0226\u0228\u022a\u022c\u022e"
    "\u0230\u0232\u03d8\u03da\u03dc\u03de\u03e0\u0400\u040d\u048a\u048c\u048e\u04c5\u04c9\u04cd\u04ec"
    "\u0500\u0502\u0504\u0506\u0508\u050a\u050c\u050e"
)


@lru_cache(maxsize=1)
def _pairs() -> dict[int, int]:
    """``str.translate``'s table for ``fold_case``: A-Z, and each upper-case letter of the Basic Multilingual
    Plane whose lower-case letter is one character that upper-cases back to it, both letters already
    in Unicode 3.2 (directories fold with tables of their own, none newer than that is safe to assume),
    less ``_UNFOLDED_BY_SAMBA``. Title-case letters (``ǅ``) and letters with several lower-case forms
    (``İ``, ``ẞ``) stay as they are. Made on first use: about 600 pairs, a few milliseconds."""
    old = unicodedata.ucd_3_2_0
    table = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}
    for code in range(0x80, 0x10000):
        upper = chr(code)
        lower = upper.lower()
        if (
            len(lower) == 1
            and lower != upper
            and lower.upper() == upper
            and old.category(upper) == "Lu"
            and old.category(lower) == "Ll"
            and upper not in _UNFOLDED_BY_SAMBA
        ):
            table[code] = ord(lower)
    return table


def _order(op: CompareOp, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)  # le


class Evaluator:
    """Evaluates filters with a fixed set of caseExact attribute paths (``"id"``, ``"emails.value"``, URN-qualified)."""

    __slots__ = ("_case_exact",)

    def __init__(self, case_exact: Iterable[str] = DEFAULT_CASE_EXACT) -> None:
        self._case_exact = frozenset(_norm_path(p) for p in case_exact)

    def matches(self, filter_: Filter, resource: Mapping[str, Any]) -> bool:
        """Whether ``resource`` satisfies ``filter_``."""
        check(filter_)
        return self._eval(filter_, resource, "", resource)

    def matches_element(self, filter_: Filter, element: Mapping[str, Any], parent: str) -> bool:
        """Whether one value of the complex attribute ``parent`` (e.g. ``"emails"``) satisfies ``filter_``."""
        check(filter_)
        return self._eval(filter_, element, _norm_path(parent), element)

    def select(self, filter_: Filter, resources: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The resources that satisfy ``filter_``, in order (the filter is checked once)."""
        check(filter_)
        return [r for r in resources if self._eval(filter_, r, "", r)]

    # ------------------------------------------------------------------------------------- internals

    def _eval(self, node: Filter, ctx: Mapping[str, Any], parent: str, root: Mapping[str, Any]) -> bool:
        if isinstance(node, Compare):
            values = self._values(ctx, node.attr, parent, root)
            return self._compare(node.op, values, node.value, self._is_case_exact(node.attr, parent))
        if isinstance(node, Present):
            return any(is_present(v) for v in self._values(ctx, node.attr, parent, root))
        if isinstance(node, And):
            return all(self._eval(o, ctx, parent, root) for o in node.operands)
        if isinstance(node, Or):
            return any(self._eval(o, ctx, parent, root) for o in node.operands)
        if isinstance(node, Not):
            return not self._eval(node.operand, ctx, parent, root)
        # ValuePath: the inner filter must hold for one and the same value
        inner_parent = self._path_key(node.attr, parent)
        return any(
            isinstance(element, Mapping) and self._eval(node.filter, element, inner_parent, element)
            for element in self._values(ctx, node.attr, parent, root)
        )

    def _path_key(self, attr: AttrPath, parent: str) -> str:
        qualified = attr.uri is not None and not parent and not is_core_schema(attr.uri, {})
        key = f"{attr.uri}:{attr.name}" if qualified else attr.name
        if attr.sub_attr:
            key = f"{key}.{attr.sub_attr}"
        return f"{parent}.{key}".lower() if parent else key.lower()

    def _is_case_exact(self, attr: AttrPath, parent: str) -> bool:
        return bool(self._case_exact) and self._path_key(attr, parent) in self._case_exact

    def _values(self, ctx: Mapping[str, Any], attr: AttrPath, parent: str, root: Mapping[str, Any]) -> list[Any]:
        """The attribute's values, multi-valued attributes and sub-attributes flattened, nulls dropped."""
        container: Any = ctx
        if attr.uri is not None and not parent and not is_core_schema(attr.uri, root):
            container = get_ci(ctx, attr.uri)
            if not isinstance(container, Mapping):
                # "urn:…:ext" alone parses as uri "urn:…:2.0" + name "User": the extension container itself
                whole = get_ci(ctx, f"{attr.uri}:{attr.name}")
                return [] if whole is None or attr.sub_attr else [whole]
        value = get_ci(container, attr.name)
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        if attr.sub_attr:
            subs: list[Any] = []
            for element in values:
                if isinstance(element, Mapping):
                    sub = get_ci(element, attr.sub_attr)
                    if isinstance(sub, list):
                        subs.extend(sub)
                    elif sub is not None:
                        subs.append(sub)
            values = subs
        return [v for v in values if v is not None]

    def _compare(self, op: CompareOp, values: list[Any], value: ScimValue, case_exact: bool) -> bool:
        if op == "ne":
            return not self._compare("eq", values, value, case_exact)
        if value is None:  # only "eq null" gets here: check() refused the rest
            return not any(is_present(v) for v in values)
        for candidate in values:
            if isinstance(candidate, Mapping):
                candidate = get_ci(candidate, "value")  # a complex value compares by its "value"
            if candidate is not None and _compare_one(op, candidate, value, case_exact):
                return True
        return False


def _compare_one(op: CompareOp, actual: Any, wanted: str | int | float | bool, case_exact: bool) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        if op in _ORDERING and isinstance(actual, bool):
            raise invalid_filter(f"operator {op!r} cannot order a boolean attribute")
        return op == "eq" and isinstance(actual, bool) and isinstance(wanted, bool) and actual == wanted
    if isinstance(wanted, int | float):
        return isinstance(actual, int | float) and op not in _SUBSTRING and _order(op, actual, wanted)
    if not isinstance(actual, str):
        return False
    if op not in _SUBSTRING:
        when, then = parse_datetime(actual), parse_datetime(wanted)
        if when is not None and then is not None:
            return _order(op, when, then)
    if case_exact:
        return _text_compare(op, actual, wanted)
    return _text_compare(op, fold_case(actual), fold_case(wanted))


def _text_compare(op: CompareOp, text: str, wanted: str) -> bool:
    """``text op wanted`` for two strings already case-folded where the attribute asks for it."""
    if op == "co":
        return wanted in text
    if op == "sw":
        return text.startswith(wanted)
    if op == "ew":
        return text.endswith(wanted)
    return _order(op, text, wanted)


_DEFAULT = Evaluator()


def matches(filter_: Filter, resource: Mapping[str, Any], *, case_exact: Iterable[str] | None = None) -> bool:
    """Whether ``resource`` satisfies ``filter_`` (``case_exact`` replaces ``DEFAULT_CASE_EXACT`` if given)."""
    evaluator = _DEFAULT if case_exact is None else Evaluator(case_exact)
    return evaluator.matches(filter_, resource)


def holds(filter_: Filter, resource: Mapping[str, Any]) -> bool:
    """``matches`` with the default case rules, for a filter that has passed ``check`` already (a
    listing checks its filter once, then evaluates it on every resource)."""
    return _DEFAULT._eval(filter_, resource, "", resource)


Predicate = Callable[[Mapping[str, Any]], bool]
_TEXT_OPS: Final = frozenset({"eq", "ne", "co", "sw", "ew"})


def predicate(filter_: Filter) -> Predicate:
    """``holds(filter_, ·)`` as a function made once per filter (a listing tests every resource it returns).

    A comparison of a plain attribute (no URN, no sub-attribute) with a string that is not a date-time,
    by ``eq``, ``ne``, ``co``, ``sw`` or ``ew`` (a list filter's usual ``userName eq "…"``), is decided
    without the general evaluator's walk: the case rule and the case-folded operand are worked out here,
    once. ``and``, ``or`` and ``not`` combine their operands' predicates; anything else is ``holds``.
    The answers (and errors) are ``holds``' own, in the same order.
    """
    if isinstance(filter_, Compare):
        attr, op, wanted = filter_.attr, filter_.op, filter_.value
        if (
            attr.uri is None
            and attr.sub_attr is None
            and op in _TEXT_OPS
            and isinstance(wanted, str)
            and (op not in ("eq", "ne") or parse_datetime(wanted) is None)
        ):
            return _text_predicate(attr.name, op, wanted, _DEFAULT._is_case_exact(attr, ""))
    elif isinstance(filter_, And | Or):
        parts = tuple(predicate(operand) for operand in filter_.operands)
        if isinstance(filter_, And):
            return lambda resource: all(part(resource) for part in parts)
        return lambda resource: any(part(resource) for part in parts)
    elif isinstance(filter_, Not):
        inner = predicate(filter_.operand)
        return lambda resource: not inner(resource)
    evaluate = _DEFAULT._eval
    return lambda resource: evaluate(filter_, resource, "", resource)


def text_predicates(name: str, op: CompareOp) -> Callable[[str], Predicate]:
    """``predicate(Compare(AttrPath(name), op, value))`` for any string ``value``, with what does not
    depend on the value (the case rule) worked out once: a lister preparing ``name op "…"`` with a new
    value each time makes only the comparison's own function."""
    attr = AttrPath(name)
    if op not in _TEXT_OPS:
        return lambda wanted: predicate(Compare(attr, op, wanted))
    case_exact = _DEFAULT._is_case_exact(attr, "")
    dated = op in ("eq", "ne")

    def make(wanted: str) -> Predicate:
        if dated and parse_datetime(wanted) is not None:
            return predicate(Compare(attr, op, wanted))
        return _text_predicate(name, op, wanted, case_exact)

    return make


def eq_key(name: str) -> Callable[[str], str]:
    """The key ``name eq "wanted"`` compares by, for a plain attribute: ``predicate`` of that comparison holds
    on a resource exactly when one of its ``text_values`` has the key of ``wanted``, provided ``wanted`` is
    not a date-time (``parse_datetime``: compared chronologically). The case-folded text, or the text
    itself for a caseExact attribute."""
    if _DEFAULT._is_case_exact(AttrPath(name), ""):
        return str
    return fold_case


def _text_predicate(name: str, op: CompareOp, wanted: str, case_exact: bool) -> Predicate:
    """``name op "wanted"`` as ``_compare`` decides it for a string operand that is not a date-time
    (nothing to order chronologically): a string value compares (case-folded unless caseExact), a
    complex one by its ``value``, any other (boolean, number, null) does not match."""
    return _TextPredicate(name, op, wanted, case_exact)


class _TextPredicate:
    """``_text_predicate``'s function. An object, not nested functions: compiled, those share an environment
    that refers back to them, and a lister that makes a predicate per lookup (a new value each time) left
    every one of them to the cyclic garbage collector."""

    __slots__ = ("_case_exact", "_folded_eq", "_name", "_negated", "_positive", "_wanted")

    def __init__(self, name: str, op: CompareOp, wanted: str, case_exact: bool) -> None:
        self._name = name
        self._case_exact = case_exact
        self._wanted = wanted if case_exact else fold_case(wanted)
        self._negated = op == "ne"
        self._positive: CompareOp = "eq" if self._negated else op  # "ne" is "not eq", decided below
        self._folded_eq = op == "eq" and not case_exact  # the common case, without a call per value

    def __call__(self, resource: Mapping[str, Any]) -> bool:
        value = get_ci(resource, self._name)
        if self._folded_eq and type(value) is str:
            return fold_case(value) == self._wanted
        case_exact = self._case_exact
        for text in _texts(value):
            if _text_compare(self._positive, text if case_exact else fold_case(text), self._wanted):
                return not self._negated
        return self._negated


def text_values(resource: Mapping[str, Any], name: str) -> list[str]:
    """The texts ``name op "…"`` compares (``_text_predicate``) in ``resource``: its string values, and the
    ``value`` of its complex ones; not booleans, numbers or nulls."""
    return _texts(get_ci(resource, name))


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    texts: list[str] = []
    for candidate in value if isinstance(value, list) else (value,):
        if isinstance(candidate, Mapping):
            candidate = get_ci(candidate, "value")
        if isinstance(candidate, str):
            texts.append(candidate)
    return texts
