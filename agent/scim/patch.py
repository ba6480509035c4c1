"""Apply an RFC 7644 §3.5.2 PatchOp to a SCIM resource (a JSON object), purely.

``apply_patch(resource, body)`` returns a ``PatchResult``: the new resource, the attributes whose
value changed (``touched``) and, per multi-valued attribute, the values added and removed
(``changes``; ``member_changes`` for ``members``), so a directory can turn ``members`` edits into
LDAP add/delete of single values instead of a whole-attribute replace.

Guarantees:

- The input resource and the operations are never mutated; the result shares no mutable object with
  either. Operations apply in order, all or nothing: the first failure raises and nothing is returned.
- ``op`` is case-insensitive (``Add``, ``Replace``, ``Remove`` as Entra sends them). Paths are
  ``protocol.scimfilter.parse_path`` paths; attribute names and schema URNs match case-insensitively and
  keep the spelling already in the resource.
- Errors are SCIM errors whose detail starts with ``Operations[i]``: ``invalidSyntax`` (not a PatchOp,
  unknown op), ``invalidPath`` (bad path, sub-attribute of a simple value), ``noTarget`` (remove without
  a path; replace whose value filter matches nothing; add whose value filter matches nothing and cannot
  seed a new value), ``invalidValue`` (missing or ill-typed value), ``mutability`` (a change to
  ``id`` or ``meta``, which are read-only).

Semantics (RFC 7644 §3.5.2.1-3, with the readings noted):

- add: a missing attribute is set; a multi-valued one gets the new values appended, an equal value is
  merged instead of duplicated (complex values with a ``value`` sub-attribute are equal when their
  ``value``s are, compared case-insensitively; others when equal as JSON); a complex one gets the
  sub-attributes merged; a simple one is replaced. ``add`` of null or ``[]`` changes nothing.
  ``attr[filter]…`` with no matching value appends a new value seeded from the filter's ``eq``
  comparisons (``emails[type eq "work"].value`` creates ``{"type": "work", "value": …}``).
- replace: like add, except a multi-valued attribute without a filter is replaced whole, a filter
  selects the values to replace (whole, or their sub-attribute), and null or ``[]`` unassigns.
- remove: deletes the attribute (all values of a multi-valued one), the sub-attribute, or the values
  a filter selects; a filter matching nothing is a no-op. With a ``value`` on a multi-valued path
  (Entra's ``{"op": "Remove", "path": "members", "value": [{"value": "…"}]}``) only the equal values go.
- No path: the value is an object whose keys are attribute names, dotted or URN-qualified paths, or
  extension schema URNs (``"urn:…:enterprise:2.0:User": {…}``), each applied as if it were the path.
- A value that becomes ``primary`` turns ``primary`` off on its siblings; emptied complex values and
  lists are unassigned; extension containers created or emptied add to or drop from ``schemas``.
- Entra sends booleans as ``"True"``/``"False"``: such a string written over a boolean (or to
  ``active``) is stored as a boolean.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from protocol.errors import ScimError, invalid_path, invalid_syntax, invalid_value, mutability, no_target
from protocol.scimeval import Evaluator, fold_case, get_ci, is_core_schema
from protocol.scimfilter import And, AttrPath, Compare, Filter, PatchPath, parse_path

PATCH_OP_SCHEMA: Final = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
READ_ONLY: Final = ("id", "meta")

OpName = Literal["add", "remove", "replace"]
_OPS: Final[dict[str, OpName]] = {"add": "add", "remove": "remove", "replace": "replace"}
_SCHEMA_URN_RE = re.compile(r"urn:.+:\d+(?:\.\d+)*:[A-Za-z][A-Za-z0-9_-]*", re.IGNORECASE)
_ABSENT: Final = object()


@dataclass(frozen=True, slots=True)
class PatchOperation:
    """One operation of a PatchOp; ``has_value`` tells a JSON ``null`` value from no value at all."""

    op: OpName
    path: PatchPath | None = None
    value: Any = None
    has_value: bool = False


@dataclass(frozen=True, slots=True)
class ValueChanges:
    """Values added to and removed from one multi-valued attribute (``value`` of complex values)."""

    added: tuple[Any, ...] = ()
    removed: tuple[Any, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True, slots=True)
class PatchResult:
    """The patched resource and what changed.

    ``touched`` names every attribute whose value differs from the input: top-level names as spelled in
    the resource, extension attributes URN-qualified (``urn:…:enterprise:2.0:User:department``).
    ``changes`` maps each touched multi-valued attribute to its added and removed values.
    """

    resource: dict[str, Any]
    touched: frozenset[str] = frozenset()
    changes: Mapping[str, ValueChanges] = field(default_factory=dict)

    @property
    def member_changes(self) -> ValueChanges:
        """Member values added and removed (``members`` of a Group)."""
        return self.changes_of("members")

    def changes_of(self, attribute: str) -> ValueChanges:
        """Added and removed values of ``attribute`` (case-insensitive); empty if it did not change."""
        lowered = attribute.lower()
        for name, changes in self.changes.items():
            if name.lower() == lowered:
                return changes
        return ValueChanges()


# ---------------------------------------------------------------------------------------- parsing


_PATCH_OP_LOWER = PATCH_OP_SCHEMA.lower()


def parse_operations(body: Mapping[str, Any]) -> tuple[PatchOperation, ...]:
    """Validate a PatchOp request body and parse its operations (paths included)."""
    if not isinstance(body, Mapping):
        raise invalid_syntax("a PATCH body must be a JSON object")
    schemas = get_ci(body, "schemas")
    if schemas is not None and (
        not isinstance(schemas, list) or _PATCH_OP_LOWER not in {str(s).lower() for s in schemas}
    ):  # URIs compare without regard to case, as for the resource schemas
        raise invalid_syntax(f"a PATCH body must declare the schema {PATCH_OP_SCHEMA}")
    operations = get_ci(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise invalid_syntax("a PATCH body needs 'Operations', a non-empty array")
    return tuple(_with_index(i, _parse_operation, raw) for i, raw in enumerate(operations))


def _parse_operation(raw: Any) -> PatchOperation:
    if not isinstance(raw, Mapping):
        raise invalid_syntax("an operation must be a JSON object")
    op_text = get_ci(raw, "op")
    op = _OPS.get(op_text.lower()) if isinstance(op_text, str) else None
    if op is None:
        raise invalid_syntax(f"'op' must be add, remove or replace, not {op_text!r}")
    path_text = get_ci(raw, "path")
    path: PatchPath | None = None
    if path_text is not None:
        if not isinstance(path_text, str):
            raise invalid_path(f"'path' must be a string, not {path_text!r}")
        if path_text.strip():
            path = parse_path(path_text)
    has_value = any(key.lower() == "value" for key in raw)
    return PatchOperation(op, path, get_ci(raw, "value"), has_value)


def _with_index(index: int, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ScimError as error:
        raise ScimError(error.status, f"Operations[{index}]: {error.detail}", error.scim_type) from error


# --------------------------------------------------------------------------------------- applying


def apply_patch(
    resource: Mapping[str, Any],
    body: Mapping[str, Any] | Sequence[PatchOperation],
    *,
    evaluator: Evaluator | None = None,
) -> PatchResult:
    """Apply a PatchOp body (or parsed operations) to ``resource``; the input is left untouched."""
    doc = patched(resource, body, evaluator=evaluator)
    touched, changes = diff(resource, doc)
    return PatchResult(doc, touched, changes)


def patched(
    resource: Mapping[str, Any],
    body: Mapping[str, Any] | Sequence[PatchOperation],
    *,
    evaluator: Evaluator | None = None,
    consume: bool = False,
) -> dict[str, Any]:
    """``apply_patch(…).resource`` without working out what changed (the SCIM handler diffs LDAP values).

    ``consume=True``: ``resource`` is the caller's to give up, a plain JSON ``dict`` that nothing else holds
    (the SCIM handler's, just read for this PATCH): it is changed in place and returned (left half-changed
    if an operation fails) instead of copied first, which costs as much as applying a short PATCH.
    """
    operations = parse_operations(body) if isinstance(body, Mapping) else tuple(body)
    extensions_before = _extension_keys(resource)
    doc = resource if consume and type(resource) is dict else _copy(resource)
    engine = _Engine(doc, evaluator or Evaluator())
    for index, operation in enumerate(operations):
        _with_index(index, engine.apply, operation)
    engine.tidy_extensions(extensions_before)
    return engine.doc


def _extension_keys(resource: Mapping[str, Any]) -> set[str]:
    """The extension containers of ``resource`` (lower-case keys)."""
    return {k.lower() for k, v in resource.items() if ":" in k and isinstance(v, Mapping)}


class _Engine:
    __slots__ = ("doc", "evaluator")

    def __init__(self, doc: dict[str, Any], evaluator: Evaluator) -> None:
        self.doc = doc
        self.evaluator = evaluator

    def apply(self, operation: PatchOperation) -> None:
        if operation.op != "remove" and not operation.has_value:
            raise invalid_value(f"'{operation.op}' needs a 'value'")
        before = {name: _copy(get_ci(self.doc, name)) for name in READ_ONLY}
        if operation.path is None:
            self.apply_without_path(operation.op, operation.value)
        else:
            self.apply_path(operation.op, operation.path, operation.value, operation.has_value)
        for name in READ_ONLY:
            if get_ci(self.doc, name) != before[name]:
                raise mutability(f"'{name}' is read-only")

    # ---- no path: the value is an object of attributes (or paths, or extension containers)

    def apply_without_path(self, op: OpName, value: Any) -> None:
        if op == "remove":
            raise no_target("'remove' needs a 'path'")
        if not isinstance(value, Mapping):
            raise invalid_value(f"'{op}' without a path needs an object value, not {_kind(value)}")
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise invalid_value(f"attribute names are non-empty strings, not {key!r}")
            if ":" in key and self.names_schema(key):
                if not isinstance(item, Mapping):
                    raise invalid_value(f"the value of schema {key!r} must be an object")
                if is_core_schema(key, self.doc):
                    self.apply_without_path(op, item)
                else:
                    self.set_top_level(op, key, item)
            elif ":" in key or "." in key or "[" in key:
                self.apply_path(op, parse_path(key), item, True)
            else:
                self.set_top_level(op, key, item)

    def set_top_level(self, op: OpName, name: str, value: Any) -> None:
        key = _key(self.doc, name) or name
        previous = _primaries(self.doc.get(key))
        _set(op, self.doc, name, value)
        _fix_primary(self.doc.get(key), previous)

    # ---- with a path

    def names_schema(self, text: str) -> bool:
        """Whether ``text`` names a schema (an extension container key) rather than an attribute."""
        if isinstance(get_ci(self.doc, text), Mapping):
            return True
        schemas = get_ci(self.doc, "schemas")
        if isinstance(schemas, list) and any(isinstance(s, str) and s.lower() == text.lower() for s in schemas):
            return True
        return _SCHEMA_URN_RE.fullmatch(text) is not None

    def container_for(self, attr: AttrPath, create: bool) -> dict[str, Any] | None:
        if attr.uri is None or is_core_schema(attr.uri, self.doc):
            return self.doc
        key = _key(self.doc, attr.uri) or attr.uri
        container = self.doc.get(key)
        if isinstance(container, dict):
            return container
        if container is not None:
            raise invalid_path(f"{attr.uri!r} is not an extension schema of this resource")
        if not create:
            return None
        self.doc[key] = {}
        return self.doc[key]  # type: ignore[no-any-return]

    def apply_path(self, op: OpName, path: PatchPath, value: Any, has_value: bool) -> None:
        attr = path.attr
        if attr.uri is not None and attr.sub_attr is None and path.filter is None:
            whole = f"{attr.uri}:{attr.name}"
            if self.names_schema(whole):  # the path is an extension (or the core) schema itself
                if is_core_schema(whole, self.doc):
                    if op == "remove":
                        raise no_target("the core schema cannot be removed")
                    self.apply_without_path(op, value)
                    return
                attr = AttrPath(whole)
        container = self.container_for(attr, create=op != "remove")
        if container is None:
            return  # removing from an extension the resource does not have
        key = _key(container, attr.name) or attr.name
        previous = _primaries(container.get(key))
        if path.filter is not None:
            self.apply_filtered(op, container, key, path, value)
        elif attr.sub_attr is not None:
            _apply_sub(op, container, key, attr.sub_attr, value, has_value)
        elif op == "remove":
            _remove(container, key, value, has_value)
        else:
            _set(op, container, key, value)
        _fix_primary(container.get(key), previous)

    def apply_filtered(self, op: OpName, container: dict[str, Any], key: str, path: PatchPath, value: Any) -> None:
        assert path.filter is not None
        existing = container.get(key)
        if existing is not None and not isinstance(existing, list | dict):
            raise invalid_path(f"{key!r} is a simple value; a value filter needs a multi-valued or complex attribute")
        singular = isinstance(existing, dict)
        elements: list[Any] = [existing] if singular else list(existing or [])
        parent = key if container is self.doc else f"{self.extension_key(container)}:{key}"
        matched = [
            i
            for i, element in enumerate(elements)
            if isinstance(element, dict) and self.evaluator.matches_element(path.filter, element, parent)
        ]
        sub = path.sub_attr
        if op == "remove":
            for i in matched:
                if sub is None:
                    elements[i] = None
                else:
                    _pop(elements[i], sub)
            elements = [e for e in elements if e is not None and e != {}]
        elif matched:
            for i in matched:
                if sub is not None:
                    _set(op, elements[i], sub, value)
                elif op == "replace":
                    elements[i] = _complex_value(value, path)
                else:
                    for name, item in _complex_value(value, path).items():
                        _set("add", elements[i], name, item)
        elif op == "replace":
            raise no_target(f"no value of {key!r} matches {path.filter.to_string()!r}")
        else:  # add with nothing matched: seed a new value from the filter
            if value is None:
                return
            seed = _seed(path.filter)
            if seed is None or singular:
                raise no_target(
                    f"no value of {key!r} matches {path.filter.to_string()!r}, "
                    "and the filter does not describe a new one"
                )
            if sub is not None:
                _set("add", seed, sub, value)
            else:
                for name, item in _complex_value(value, path).items():
                    _set("add", seed, name, item)
            elements.append(seed)
        if not elements:
            container.pop(key, None)
        elif singular:
            container[key] = elements[0]
        else:
            container[key] = elements

    def extension_key(self, container: dict[str, Any]) -> str:
        for key, value in self.doc.items():
            if value is container:
                return key
        return ""

    def tidy_extensions(self, before: set[str]) -> None:
        """Drop emptied extension containers; keep ``schemas`` in step with containers added or dropped
        (``before``: the original's, as ``_extension_keys`` lists them)."""
        for key in [k for k, v in self.doc.items() if ":" in k and v == {}]:
            del self.doc[key]
        schemas = self.doc.get(_key(self.doc, "schemas") or "schemas")
        if not isinstance(schemas, list):
            return
        after = {k.lower(): k for k, v in self.doc.items() if ":" in k and isinstance(v, dict)}
        listed = {s.lower() for s in schemas if isinstance(s, str)}
        for lowered, key in after.items():
            if lowered not in before and lowered not in listed:
                schemas.append(key)
        dropped = before - after.keys()
        schemas[:] = [s for s in schemas if not (isinstance(s, str) and s.lower() in dropped)]


# ------------------------------------------------------------------------------------- primitives


def _set(op: OpName, container: dict[str, Any], name: str, value: Any) -> None:
    """``add``/``replace`` of ``value`` at ``container[name]`` (RFC 7644 §3.5.2.1 and §3.5.2.3)."""
    key = _key(container, name) or name
    existing = container.get(key)
    if value is None or value == []:
        if op == "replace":
            container.pop(key, None)
        return
    value = _coerce_boolean(key, existing, _copy(value))
    if existing is None:
        container[key] = _merge_values([], value) if isinstance(value, list) else value
    elif isinstance(existing, list):
        values = value if isinstance(value, list) else [value]
        container[key] = _merge_values(existing if op == "add" else [], values)
    elif isinstance(existing, dict) and isinstance(value, dict):
        for sub, item in value.items():
            _set(op, existing, sub, item)
        if not existing:
            container.pop(key)
    else:
        container[key] = value


def _apply_sub(op: OpName, container: dict[str, Any], key: str, sub: str, value: Any, has_value: bool) -> None:
    """An operation on ``attr.sub``: on a complex value, or on every value of a multi-valued attribute."""
    parent = container.get(key)
    if parent is None:
        if op == "remove" or value is None:
            return
        parent = container[key] = {}
    if isinstance(parent, dict):
        targets = [parent]
    elif isinstance(parent, list):
        targets = [e for e in parent if isinstance(e, dict)]
    else:
        raise invalid_path(f"{key!r} is a simple value; it has no sub-attribute {sub!r}")
    for target in targets:
        if op == "remove":
            sub_key = _key(target, sub)
            if sub_key is not None:
                _remove(target, sub_key, value, has_value)
        else:
            _set(op, target, sub, value)
    if isinstance(parent, list):
        parent[:] = [e for e in parent if e != {}]
    if not parent:
        container.pop(key)


def _remove(container: dict[str, Any], key: str, value: Any, has_value: bool) -> None:
    existing = container.get(key)
    if existing is None:
        container.pop(key, None)
        return
    if has_value and value is not None and isinstance(existing, list):
        doomed = {_identity(v) for v in (value if isinstance(value, list) else [value])}
        remaining = [e for e in existing if _identity(e) not in doomed]
        if remaining:
            container[key] = remaining
            return
    del container[key]


def _pop(element: dict[str, Any], sub: str) -> None:
    key = _key(element, sub)
    if key is not None:
        del element[key]


def _merge_values(existing: list[Any], new: Iterable[Any]) -> list[Any]:
    """``existing`` plus ``new``, an equal value merged into (complex) or kept as (simple) the one present."""
    merged = list(existing)
    index = {_identity(e): i for i, e in enumerate(merged)}
    for value in new:
        if value is None:
            continue
        ident = _identity(value)
        at = index.get(ident)
        if at is None:
            index[ident] = len(merged)
            merged.append(value)
        elif isinstance(value, dict) and isinstance(merged[at], dict):
            for sub, item in value.items():
                if sub.lower() != "value":  # the present spelling of the identifying value stays
                    _set("add", merged[at], sub, item)
    return merged


def _complex_value(value: Any, path: PatchPath) -> dict[str, Any]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise invalid_value(f"{path.to_string()!r} selects complex values; the value must be an object")
    return _copy(value)  # type: ignore[no-any-return]


def _seed(filter_: Filter) -> dict[str, Any] | None:
    """The value a filter of ``eq`` comparisons on plain sub-attributes describes, else ``None``."""
    comparisons = filter_.operands if isinstance(filter_, And) else (filter_,)
    seed: dict[str, Any] = {}
    for node in comparisons:
        if not isinstance(node, Compare) or node.op != "eq" or node.attr.sub_attr or node.attr.uri:
            return None
        if node.value is None or _key(seed, node.attr.name) is not None:
            return None
        seed[node.attr.name] = node.value
    return seed


def _primaries(value: Any) -> set[int]:
    if not isinstance(value, list):
        return set()
    return {id(e) for e in value if isinstance(e, dict) and get_ci(e, "primary") is True}


def _fix_primary(value: Any, previous: set[int]) -> None:
    """RFC 7644 §3.5.2: a value newly made primary turns ``primary`` off on the others."""
    if not isinstance(value, list):
        return
    primary = [e for e in value if isinstance(e, dict) and get_ci(e, "primary") is True]
    fresh = [e for e in primary if id(e) not in previous]
    if len(primary) < 2 or not fresh:
        return
    keeper = fresh[-1]
    for element in primary:
        if element is not keeper:
            element[_key(element, "primary") or "primary"] = False


def _coerce_boolean(key: str, existing: Any, value: Any) -> Any:
    boolean_target = isinstance(existing, bool) or key.lower() == "active"
    if boolean_target and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


# ------------------------------------------------------------------------------------------- diff


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, ValueChanges]]:
    """Attributes whose value differs, and added/removed values of the multi-valued ones among them."""
    touched: set[str] = set()
    changes: dict[str, ValueChanges] = {}
    for name, old, new in _pairs(before, after):
        if ":" in name and (isinstance(old, Mapping) or isinstance(new, Mapping)):
            inner_old = old if isinstance(old, Mapping) else {}
            inner_new = new if isinstance(new, Mapping) else {}
            for sub, sub_old, sub_new in _pairs(inner_old, inner_new):
                _record(f"{name}:{sub}", sub_old, sub_new, touched, changes)
        else:
            _record(name, old, new, touched, changes)
    return frozenset(touched), changes


def _pairs(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    old_keys = {k.lower(): k for k in before}
    new_keys = {k.lower(): k for k in after}
    pairs = []
    for lowered in old_keys.keys() | new_keys.keys():
        name = new_keys.get(lowered) or old_keys[lowered]
        pairs.append((name, before.get(old_keys.get(lowered, ""), None), after.get(new_keys.get(lowered, ""), None)))
    return pairs


def _record(name: str, old: Any, new: Any, touched: set[str], changes: dict[str, ValueChanges]) -> None:
    if _same(old, new) or _canonical(old) == _canonical(new):
        return
    touched.add(name)
    if isinstance(old, list) or isinstance(new, list):
        old_list = old if isinstance(old, list) else ([] if old is None else [old])
        new_list = new if isinstance(new, list) else ([] if new is None else [new])
        old_count = Counter(_identity(e) for e in old_list)
        new_count = Counter(_identity(e) for e in new_list)
        added = [e for e in new_list if old_count[_identity(e)] < new_count[_identity(e)]]
        removed = [e for e in old_list if new_count[_identity(e)] < old_count[_identity(e)]]
        changes[name] = ValueChanges(tuple(_reported(e) for e in added), tuple(_reported(e) for e in removed))


def _reported(element: Any) -> Any:
    if isinstance(element, Mapping):
        value = get_ci(element, "value")
        if value is not None:
            return value
    return _copy(element)


# ------------------------------------------------------------------------------------------ helpers


def _key(obj: Mapping[str, Any], name: str) -> str | None:
    """The key of ``obj`` that equals ``name`` case-insensitively, or ``None``."""
    if name in obj:
        return name
    lowered = name.lower()
    for key in obj:
        if key.lower() == lowered:
            return key
    return None


def _identity(value: Any) -> tuple[str, str]:
    """What makes two values of a multi-valued attribute "the same value"."""
    if isinstance(value, Mapping):
        sub = get_ci(value, "value")
        if sub is not None:
            return ("value", fold_case(sub) if isinstance(sub, str) else _canonical(sub))
    return ("json", _canonical(value))


def _same(left: Any, right: Any) -> bool:
    """Equal as JSON with the same spelling (``True`` is not ``1``): then their canonical forms are equal too,
    without printing them (most attributes of a patched resource are unchanged)."""
    if type(left) is not type(right):
        return False
    if type(left) is dict:
        return left.keys() == right.keys() and all(_same(value, right[key]) for key, value in left.items())
    if type(left) is list:
        return len(left) == len(right) and all(map(_same, left, right))
    return type(left) is not float and bool(left == right)  # 0.0 == -0.0, yet they print apart


def _canonical(value: Any) -> str:
    return json.dumps(_lower_keys(value), sort_keys=True, separators=(",", ":"), default=str)


def _lower_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


#: JSON scalars: copied as they are, without the ABC instance check (slow) that a ``Mapping`` test makes.
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (mappings become dicts, sequences lists)."""
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
