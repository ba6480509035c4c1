"""SCIM filters → RFC 4515 LDAP filters, by profile; every value escaped, so no input changes structure.

``translate(node, mapping, refs)`` returns ``(ldap_filter, exact)`` (``translation`` also says whether
ids were resolved, which decides whether the result may be kept). The LDAP filter always selects
a superset of the resources the SCIM filter selects, scoped to the resource type; ``exact`` says it
selects exactly them. The lister evaluates the SCIM filter on each resource anyway, so an inexact
translation (ordering on strings that LDAP servers may not order, ``ne`` on multi-valued
attributes, a ``not`` over an inexact part, …) is still answered correctly; it only narrows less.

String comparisons are never exact: LDAP ignores insignificant spaces where SCIM does not, so a
``ne`` or ``not`` over a string comparison cannot be narrowed in LDAP and is decided by evaluation.

Values are placed with ``plugins.ldapfilter.escape_value``; attribute names come from the profile,
never from the request. Ids of referenced resources (``members.value``, ``manager.value``) are
resolved to DNs; an unknown id simply matches nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import NamedTuple

from agent.scim.profile import CORE_GROUP, CORE_USER, ENTERPRISE, AttrMap, Kind, ResourceMapping
from agent.scim.refs import References
from agent.scim.values import id_to_anchor, iso_to_generalized
from plugins.ldapfilter import escape_value
from protocol import scimfilter as sf

AD_AND_RULE = "1.2.840.113556.1.4.803"
_Part = str | bool  # an LDAP filter, or a constant: True (everything) / False (nothing)


@dataclass(frozen=True, slots=True)
class _Out:
    part: _Part
    exact: bool


_EVERYTHING = _Out(True, False)  # "could be anything": the post-filter decides
_ENTERPRISE_LOWER = ENTERPRISE.lower()


def _and(parts: list[_Out]) -> _Out:
    exact = all(p.exact for p in parts)
    if any(p.part is False for p in parts) and all(p.exact for p in parts if p.part is False):
        return _Out(False, True)
    kept = [p.part for p in parts if p.part is not True]
    if not kept:
        return _Out(True, exact)
    if len(kept) == 1:
        return _Out(kept[0], exact)
    return _Out("(&" + "".join(str(k) for k in kept) + ")", exact)


def _or(parts: list[_Out]) -> _Out:
    exact = all(p.exact for p in parts)
    if any(p.part is True for p in parts):
        return _Out(True, exact or any(p.part is True and p.exact for p in parts))
    kept = [p.part for p in parts if p.part is not False]
    if not kept:
        return _Out(False, exact)
    if len(kept) == 1:
        return _Out(kept[0], exact)
    return _Out("(|" + "".join(str(k) for k in kept) + ")", exact)


def _not(inner: _Out) -> _Out:
    if not inner.exact:
        return _EVERYTHING
    if isinstance(inner.part, bool):
        return _Out(not inner.part, True)
    return _Out(f"(!{inner.part})", True)


def _not_within(inner: _Out, element: AttrMap | None) -> _Out:
    """``not`` of a condition; inside ``attr[...]`` it is about one value, which LDAP cannot negate alone
    (``(!(mail=x))`` also drops an entry whose other mail value matches), so only constants stay exact."""
    if element is None or isinstance(inner.part, bool):
        return _not(inner)
    return _Out(f"({element.ldap}=*)", False)


def _eq(attr: str, value: str | bytes) -> str:
    return f"({attr}={escape_value(value)})"


def _maps(mapping: ResourceMapping, path: sf.AttrPath) -> tuple[list[AttrMap], str | None]:
    """Mappings for an attribute path and the sub-attribute asked for (lower-case)."""
    name = path.name.lower()
    uri = (path.uri or "").lower()
    extension = uri == ENTERPRISE.lower()
    if uri and not extension and uri not in {CORE_USER.lower(), CORE_GROUP.lower()}:
        return [], path.sub_attr
    maps = [a for a in mapping.by_attribute(name) if a.extension == extension]
    return maps, path.sub_attr.lower() if path.sub_attr else None


class _Translator:
    def __init__(self, mapping: ResourceMapping, refs: References) -> None:
        self.mapping = mapping
        self.refs = refs
        self.resolved_ids = False  # whether an id was turned into a DN (an answer that can change)

    # -- attribute resolution ------------------------------------------------------------

    def _maps(self, path: sf.AttrPath) -> tuple[list[AttrMap], str | None] | None:
        """Mappings for an attribute path and the sub-attribute asked for; None for id/meta specials."""
        return _maps(self.mapping, path)

    # -- nodes ---------------------------------------------------------------------------

    async def node(self, node: sf.Filter, element: AttrMap | None = None) -> _Out:
        if isinstance(node, sf.And):
            parts = [await self.node(o, element) for o in node.operands]
            out = _and(parts)
            non_constant = sum(1 for p in parts if not isinstance(p.part, bool))
            if element is not None and non_constant > 1:
                return _Out(out.part, False)  # LDAP cannot pin both to one value of a multi-valued attribute
            return out
        if isinstance(node, sf.Or):
            return _or([await self.node(o, element) for o in node.operands])
        if isinstance(node, sf.Not):
            return _not_within(await self.node(node.operand, element), element)
        if isinstance(node, sf.ValuePath):
            return await self.value_path(node)
        if isinstance(node, sf.Present):
            return await self.compare(node.attr, "pr", None, element)
        return await self.compare(node.attr, node.op, node.value, element)

    async def value_path(self, node: sf.ValuePath) -> _Out:
        found = self._maps(node.attr)
        if found is None:
            return _EVERYTHING
        maps, _ = found
        if not maps:
            return _Out(False, True)
        # An element must exist for attr[...] to hold, whatever the filter inside says.
        return _or([_and([_Out(f"({e.ldap}=*)", True), await self.node(node.filter, e)]) for e in maps])

    async def compare(self, path: sf.AttrPath, op: str, value: sf.ScimValue, element: AttrMap | None) -> _Out:
        # RFC readings shared with protocol.scimeval: "x ne v" is "not (x eq v)", "x eq null" is "not (x pr)".
        if op == "ne":
            return _not_within(await self.compare(path, "eq", value, element), element)
        if op == "eq" and value is None:
            return _not_within(await self.compare(path, "pr", None, element), element)
        if element is not None:
            return await self._element_compare(element, path, op, value)
        name = path.name.lower()
        if not path.uri and name == "id" and path.sub_attr is None:
            return self._id(op, value)
        if not path.uri and name == "meta" and (path.sub_attr or "").lower() == "resourcetype":
            if op in {"eq", "ne"} and isinstance(value, str):
                same = value == self.mapping.name  # caseExact (RFC 7643 §3.1), as scimeval compares it
                return _Out(same if op == "eq" else not same, True)
            return _EVERYTHING
        if path.uri is not None and f"{path.uri}:{path.name}".lower() == _ENTERPRISE_LOWER:
            return _EVERYTHING  # the extension as a whole ("…:enterprise:2.0:User pr"): evaluation decides
        # schemas and meta.location/version are made when a resource is shown, not read: evaluation decides
        unmapped = _EVERYTHING if not path.uri and name in {"schemas", "meta"} else _Out(False, True)
        maps, sub = self._maps(path) or ([], None)
        if not maps:
            return unmapped
        parts = []
        for attr in maps:
            attr_name, attr_sub, attr_type = attr.parts
            if attr_type is not None:
                if sub == "type":
                    parts.append(self._type_compare(attr, attr_type, op, value))
                    continue
                if sub not in {None, "value"}:
                    parts.append(_EVERYTHING)
                    continue
                parts.append(self._scalar(attr, op, value, multi=True))
            elif attr.kind is Kind.REFERENCE:
                if sub not in {None, "value"}:
                    parts.append(_EVERYTHING)
                    continue
                parts.append(await self._reference(attr, op, value, multi=attr_name == "members"))
            elif attr_sub is not None and sub is None:
                parts.append(_EVERYTHING)  # comparing a complex attribute as a whole
            elif attr_sub is not None and sub != attr_sub.lower():
                continue
            else:
                parts.append(self._scalar(attr, op, value, multi=False))
        return _or(parts) if parts else unmapped

    async def _element_compare(self, element: AttrMap, path: sf.AttrPath, op: str, value: sf.ScimValue) -> _Out:
        """A comparison inside ``attr[...]``, about one mapped element (one email type, members, …)."""
        sub = path.name.lower()
        _, _, element_type = element.parts
        if sub == "type" and element_type is not None:
            return self._type_compare(element, element_type, op, value)
        if sub == "value":
            if element.kind is Kind.REFERENCE:
                return await self._reference(element, op, value, multi=True)
            return self._scalar(element, op, value, multi=True)
        if sub == "primary" and element_type is not None:
            return _EVERYTHING
        if element.kind is Kind.REFERENCE and sub in {"type", "$ref", "display"}:
            return _Out(f"({element.ldap}=*)", False)  # made when the resource is shown: evaluation decides
        return _Out(False, True)

    def _type_compare(self, attr: AttrMap, attr_type: str, op: str, value: sf.ScimValue) -> _Out:
        present = _Out(f"({attr.ldap}=*)", True)
        if op == "pr":
            return present
        if op == "eq" and isinstance(value, str):
            return present if value.lower() == attr_type.lower() else _Out(False, True)
        return _Out(f"({attr.ldap}=*)", False)

    def _id(self, op: str, value: sf.ScimValue) -> _Out:
        mapping = self.mapping
        if op == "pr":
            return _Out(True, True)
        if op == "eq" and isinstance(value, str):
            anchor = id_to_anchor(value, mapping.id_binary)
            if anchor is None:
                return _Out(False, True)
            return _Out(_eq(mapping.id_attribute, anchor), not mapping.id_binary and value == value.lower())
        return _EVERYTHING

    async def _reference(self, attr: AttrMap, op: str, value: sf.ScimValue, multi: bool) -> _Out:
        present = f"({attr.ldap}=*)"
        placeholder = self.mapping.empty_members
        if placeholder is not None and attr.parts[0].lower() == "members":
            present = f"(&{present}(!{_eq(attr.ldap, placeholder)}))"  # the "no members" value is no member
        if op == "pr":
            return _Out(present, True)
        if op == "eq" and isinstance(value, str):
            self.resolved_ids = True
            ref = await self.refs.dn_for(value, self.refs.profile.resources)
            if ref is None:
                return _Out(False, True)
            return _Out(_eq(attr.ldap, ref.dn), True)
        return _Out(present, False)

    def _scalar(self, attr: AttrMap, op: str, value: sf.ScimValue, *, multi: bool) -> _Out:
        ldap = attr.ldap
        present = f"({ldap}=*)"
        if attr.fallback:
            return self._with_fallback(attr, op, value)
        if op == "pr":
            return _Out(present, True)
        if attr.kind is Kind.ACTIVE_UAC:
            if op == "eq" and isinstance(value, bool):
                disabled = f"({ldap}:{AD_AND_RULE}:=2)"
                return _Out(f"(&{present}(!{disabled}))" if value else f"(&{present}{disabled})", True)
            return _Out(present, False)
        if attr.kind is Kind.BOOLEAN:
            if op == "eq" and isinstance(value, bool):
                return _Out(_eq(ldap, "TRUE" if value else "FALSE"), True)
            return _Out(present, False)
        if attr.kind is Kind.TIMESTAMP:
            stamp = iso_to_generalized(value) if isinstance(value, str) else None
            if stamp is None:
                return _Out(present, False)
            if op in {"gt", "ge"}:
                return _Out(f"({ldap}>={escape_value(stamp)})", False)
            if op in {"lt", "le"}:
                return _Out(f"({ldap}<={escape_value(stamp)})", False)
            return _Out(present, False)
        if attr.kind is Kind.INTEGER and isinstance(value, int) and not isinstance(value, bool):
            number = str(value)
            ordered = {
                "eq": _Out(_eq(ldap, number), True),
                "ge": _Out(f"({ldap}>={number})", True),
                "le": _Out(f"({ldap}<={number})", True),
                "gt": _Out(f"(&({ldap}>={number})(!{_eq(ldap, number)}))", True),
                "lt": _Out(f"(&({ldap}<={number})(!{_eq(ldap, number)}))", True),
            }
            return ordered.get(op, _Out(present, False))
        if not isinstance(value, str):
            return _Out(present, False)
        # LDAP string matching ignores insignificant spaces (" ab" equals "ab"), SCIM's does not: the LDAP
        # side is a superset and the lister's evaluation of the SCIM filter decides.
        if op == "eq":
            return _Out(_eq(ldap, value), False)
        if op in {"co", "sw", "ew"}:
            if value == "":
                return _Out(present, True)
            folded = _folded(value)
            if not folded:  # only spaces: nothing left to narrow with
                return _Out(present, False)
            escaped = escape_value(folded)
            pattern = {"co": f"*{escaped}*", "sw": f"{escaped}*", "ew": f"*{escaped}"}[op]
            return _Out(f"({ldap}={pattern})", False)
        return _Out(present, False)  # ordering on strings: servers may lack an ORDERING rule

    @staticmethod
    def _with_fallback(attr: AttrMap, op: str, value: sf.ScimValue) -> _Out:
        """A GUID-valued attribute read from ``fallback`` when ``ldap`` is empty (AD externalId)."""
        own, other = f"({attr.ldap}=*)", f"({attr.fallback}=*)"
        if op == "pr":
            return _Out(f"(|{own}{other})", True)
        if op == "eq" and isinstance(value, str):
            try:
                guid = uuid.UUID(value)
            except ValueError:
                return _Out(False, True)
            raw = guid.bytes_le
            part = f"(|{_eq(attr.ldap, raw)}(&(!{own}){_eq(attr.fallback or attr.ldap, raw)}))"
            return _Out(part, value == str(guid))  # caseExact: another spelling is decided by evaluation
        return _Out(f"(|{own}{other})", False)


class Translation(NamedTuple):
    ldap_filter: str
    exact: bool
    #: Whether ids were resolved to DNs on the way: such a translation holds only while those ids keep
    #: their DNs; any other depends on the filter and the mapping alone and may be kept.
    resolved_ids: bool


async def translation(node: sf.Filter | None, mapping: ResourceMapping, refs: References) -> Translation:
    """The LDAP filter for ``node`` within resource type ``mapping``, whether it is exact, and whether
    it resolved ids."""
    if node is None:
        return Translation(mapping.ldap_filter, True, False)
    translator = _Translator(mapping, refs)
    out = await translator.node(node)
    if out.part is True:
        ldap_filter = mapping.ldap_filter
    elif out.part is False:
        ldap_filter = f"(&{mapping.ldap_filter}(!(objectClass=*)))"
    else:
        ldap_filter = f"(&{mapping.ldap_filter}{out.part})"
    return Translation(ldap_filter, out.exact, translator.resolved_ids)


async def translate(node: sf.Filter | None, mapping: ResourceMapping, refs: References) -> tuple[str, bool]:
    """The LDAP filter for ``node`` within resource type ``mapping``, and whether it is exact."""
    found = await translation(node, mapping, refs)
    return found.ldap_filter, found.exact


def _folded(substring: str) -> str:
    """A ``co``/``sw``/``ew`` value with its spaces folded as LDAP folds them (runs to one, none at the
    ends): a value holding the SCIM substring holds the folded one, and servers differ on spaces at a
    substring's ends. Empty when the value is only spaces."""
    return " ".join(substring.split())


#: The LDAP assertion value around the escaped SCIM value, by operator, for a string attribute.
_PATTERNS = {"eq": ("", ""), "co": ("*", "*"), "sw": ("", "*"), "ew": ("*", "")}


@dataclass(frozen=True, slots=True)
class CompareTemplate:
    """``translation`` of ``attr op "value"`` for one resource type, attribute and operator, made once:
    the LDAP filter's fixed text, between which the escaped value goes (once per mapped attribute)."""

    fixed: tuple[str, ...]
    #: ``co``/``sw``/``ew``: the value goes in with its spaces folded, and an empty value (or one of only
    #: spaces) is a presence test, which the general path translates.
    needs_value: bool

    def ldap_filter(self, value: str) -> str | None:
        """The LDAP filter of the comparison with ``value`` (never exact, no id resolved); None when the
        general path must decide."""
        if self.needs_value:
            value = _folded(value)
            if not value:
                return None
        return escape_value(value).join(self.fixed)


def compare_template(mapping: ResourceMapping, path: sf.AttrPath, op: str) -> CompareTemplate | None:
    """A template for ``path op "value"`` (any string value) within ``mapping``, or None unless every
    mapped attribute is a plain string attribute, so the translation has the same structure whatever the
    value: ``(&<mapping filter><assertion>)`` with one assertion or an OR of several, never exact (LDAP
    ignores insignificant spaces), no id resolved. Ids, ``meta``, ``schemas``, URN-qualified paths,
    references, types, fallbacks and the other kinds are left to the general path."""
    pattern = _PATTERNS.get(op)
    if pattern is None or path.uri is not None or path.name.lower() in {"id", "meta", "schemas"}:
        return None
    maps, sub = _maps(mapping, path)
    names: list[str] = []
    for attr in maps:
        _, attr_sub, attr_type = attr.parts
        if attr.kind is not Kind.STRING or attr.fallback:
            return None
        if attr_type is not None:
            if sub not in {None, "value"}:
                return None
        elif attr_sub is not None:
            if sub is None:
                return None
            if sub != attr_sub.lower():
                continue
        names.append(attr.ldap)
    if not names:
        return None
    lead, trail = pattern
    if len(names) == 1:
        fixed: tuple[str, ...] = (f"(&{mapping.ldap_filter}({names[0]}={lead}", f"{trail}))")
    else:
        between = [f"{trail})({name}={lead}" for name in names[1:]]
        fixed = (f"(&{mapping.ldap_filter}(|({names[0]}={lead}", *between, f"{trail})))")
    return CompareTemplate(fixed, op != "eq")


def any_of(mapping: ResourceMapping, filters: list[str]) -> str:
    """One LDAP filter selecting what any of ``filters`` selects, for comparisons of ``mapping`` translated
    by ``CompareTemplate``: ``(&<mapping filter><assertion>)`` each, so the mapping filter goes once,
    around the OR of their assertions (a server then intersects its index of the mapping filter once,
    not once per comparison)."""
    head = f"(&{mapping.ldap_filter}"
    if all(f.startswith(head) and f.endswith(")") for f in filters):
        return f"{head}(|{''.join(f[len(head) : -1] for f in filters)}))"
    return f"(|{''.join(filters)})"
