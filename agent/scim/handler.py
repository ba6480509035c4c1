"""The SCIM 2.0 service provider (RFC 7643/7644) over any ``Directory``.

``ScimHandler.handle(operation)`` answers one SCIM operation with ``(status, body)`` and never
raises for bad input: malformed bodies, unknown paths, invalid filters and PATCHes become RFC 7644
errors. Routes: ``/Users`` and ``/Groups`` (GET by id, list with filter/paging/projection, POST,
PUT, PATCH, DELETE, ``POST /.search``), ``/ServiceProviderConfig``, ``/ResourceTypes``,
``/Schemas``, and the delta extension ``GET /Changes?watermark=…`` (see ``changes``).
Recoverable directory errors are retried by the ``retry`` policy when it allows more than one try
(by default it does not: plugins retry their own operations, e.g. ``directory.retry`` of the LDAP
plugin); if they persist the result is marked ``transient`` so the dispatcher can give the request
back to the transport.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import structlog
from mypy_extensions import mypyc_attr
from tenacity import stop_after_attempt

from agent.config import RetrySection, ScimSection
from agent.retry import retrying
from agent.scim import changes as change_feed
from agent.scim import discovery
from agent.scim.errors import scim_error
from agent.scim.listing import Lister
from agent.scim.patch import PatchOperation, parse_operations, patched
from agent.scim.profile import Kind, Profile, ResourceMapping
from agent.scim.refs import REMEMBER_PAGE, Bases, Ref, References
from agent.scim.resources import (
    Resource,
    ci_get,
    diff,
    members_placeholder,
    reference_dns,
    requested,
    to_ldap,
    to_resource,
)
from agent.scim.values import text
from plugins import dn as dnlib
from plugins.directory import (
    AttrValue,
    ConstraintError,
    Directory,
    DirectoryError,
    Entry,
    Modification,
    ModOp,
    Scope,
    UnavailableError,
)
from plugins.ldapfilter import escape_value
from protocol import scimfilter
from protocol.envelope import ScimOperation
from protocol.errors import ScimError, invalid_syntax, invalid_value, mutability, not_found, uniqueness

SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
#: Characters AD refuses in sAMAccountName (plus white space, which logon names should not hold).
_ACCOUNT_REFUSED = re.compile(r'["/\\\[\]:;|=,+*?<>\s]')
_log = structlog.get_logger("cloudprov.scim")
#: Collection paths as clients spell them, with the resource type each names: ``_route`` answers a GET of
#: one of them as its general path does (a list of that type), without splitting and lowering the path.
_COLLECTIONS = {"/Users": "users", "/Groups": "groups"}


class Result(NamedTuple):
    """A SCIM operation's answer (one per request): a NamedTuple, immutable as a frozen dataclass is, but
    made as one tuple rather than with an ``object.__setattr__`` call per field."""

    status: int
    body: Any
    transient: bool = False


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled; tests wrap ``handle`` in a subclass
class ScimHandler:
    def __init__(
        self,
        directory: Directory,
        profile: Profile,
        settings: ScimSection | None = None,
        retry: RetrySection | None = None,
        base: str | None = None,
        bases: Sequence[str] | None = None,
    ) -> None:
        self.directory = directory
        self.profile = profile
        self.settings = settings or ScimSection()
        self.retry = retry or RetrySection()
        #: where new entries go (under their profile's container)
        self.base = base or (bases[0] if bases else directory.base_dn)
        #: what SCIM sees: every base (an LDAP directory's ``base_dns``), or the one base given
        scoped: Sequence[str] = bases or ((base,) if base else getattr(directory, "scope_bases", None) or (self.base,))
        self.bases = Bases(directory, scoped)
        self.refs = References(directory, profile, self.base, bases=self.bases)
        self.lister = Lister(self)

    # ----------------------------------------------------------------- entry point

    async def handle(self, op: ScimOperation) -> Result:
        try:
            route = self._route(op)
            try:
                status, body = await route()
            except self.directory.recoverable_errors as first:
                if self.retry.attempts <= 1:  # the default: the plugin has retried already
                    raise
                _log.info("directory call failed, retrying", error=str(first))
                retries = stop_after_attempt(max(self.retry.attempts - 1, 1))
                async for attempt in retrying(self.retry, self.directory.recoverable_errors, stop=retries):
                    with attempt:
                        status, body = await route()
            return Result(status, body)
        except ScimError as error:
            return Result(error.status, error.to_body())
        except DirectoryError as refused:  # a name of its own: compiled, ``error`` above is a ScimError
            transient = isinstance(refused, UnavailableError)
            if not transient:
                _log.warning("directory refused", error=str(refused), kind=type(refused).__name__)
            return Result(*_error_body(scim_error(refused)), transient=transient)
        except Exception:
            _log.exception("SCIM operation failed", method=op.method, path=op.path)
            return Result(*_error_body(ScimError(500, f"the agent failed on {op.method} {op.path}; see its log")))

    def _route(self, op: ScimOperation) -> Callable[[], Awaitable[tuple[int, Any]]]:
        """The call that answers ``op`` (made again for a retry). Bound with ``functools.partial``, not a
        lambda: a closure would turn every local it captures into a cell, on every request."""
        path = op.path
        collection = _COLLECTIONS.get(path)
        if collection is not None and op.method == "GET":  # a list, the usual request: no path to split
            return partial(self.lister.search, self.profile.resource(collection), op.query)
        if "?" in path:
            path = path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise not_found("no SCIM endpoint at '/'")
        head = parts[0].lower()
        method = op.method
        if head in {"serviceproviderconfig", "resourcetypes", "schemas"}:
            if method != "GET":
                raise ScimError(405, f"{op.path} is read-only")
            return partial(self._discovery, head, parts[1:])
        if head == "changes" and len(parts) == 1:
            if method != "GET":
                raise ScimError(405, f"{op.path} is read-only")
            return partial(change_feed.read, self, op.query)
        if head not in {"users", "groups"}:
            raise not_found(f"no SCIM endpoint at {op.path!r}")
        mapping = self.profile.resource(head)
        if len(parts) == 1:
            if method == "GET":
                return partial(self.lister.search, mapping, op.query)
            if method == "POST":
                return partial(self._create, mapping, op.body)
        elif len(parts) == 2 and parts[1].lower() == ".search" and method == "POST":
            return partial(self.lister.search, mapping, _search_query(op.body))
        elif len(parts) == 2:
            scim_id = parts[1]
            if method == "GET":
                return partial(self._get, mapping, scim_id, op.query)
            if method == "PUT":
                return partial(self._replace, mapping, scim_id, op.body)
            if method == "PATCH":
                return partial(self._patch, mapping, scim_id, op.body)
            if method == "DELETE":
                return partial(self._delete, mapping, scim_id)
        raise ScimError(405, f"{method} is not supported on {op.path}")

    # ----------------------------------------------------------------- reads

    async def _discovery(self, head: str, rest: list[str]) -> tuple[int, Any]:
        if head == "serviceproviderconfig":
            return 200, discovery.service_provider_config(self.settings.max_page_size)
        documents = discovery.resource_types() if head == "resourcetypes" else discovery.schemas()
        if not rest:
            return 200, discovery.list_response(documents)
        wanted = "/".join(rest).lower()
        for document in documents:
            if str(document["id"]).lower() == wanted:
                return 200, document
        raise not_found(f"no {head} entry named {'/'.join(rest)!r}")

    async def resources(self, mapping: ResourceMapping, entries: list[Entry]) -> list[Resource]:
        """SCIM resources for a page of entries, references resolved in one batch."""
        dns = reference_dns(mapping, entries)
        return self.listed(mapping, entries, await self.refs.refs_for(dns) if dns else {})

    def listed(self, mapping: ResourceMapping, entries: list[Entry], refs: Mapping[str, Ref]) -> list[Resource]:
        """SCIM resources for a page of entries whose references (``reference_dns``) ``refs`` resolves: for a
        caller that resolves them only when there are some (no coroutine for a page without any)."""
        if len(entries) <= REMEMBER_PAGE:
            self.refs.remember_listed(mapping, entries)
        return [to_resource(mapping, entry, refs) for entry in entries]

    async def resource(self, mapping: ResourceMapping, entry: Entry) -> Resource:
        return (await self.resources(mapping, [entry]))[0]

    async def _find(self, mapping: ResourceMapping, scim_id: str) -> Entry:
        entry = await self.refs.find(mapping, scim_id)
        if entry is None:
            raise not_found(f"{mapping.name} {scim_id!r} not found")
        return entry

    async def _get(self, mapping: ResourceMapping, scim_id: str, query: dict[str, str]) -> tuple[int, Any]:
        entry = await self._find(mapping, scim_id)
        return 200, self.lister.project(await self.resource(mapping, entry), query)

    # ----------------------------------------------------------------- writes

    async def _resolve(self, scim_id: str) -> Ref | None:
        return await self.refs.dn_for(scim_id, self.profile.resources)

    def _rdn_value(self, mapping: ResourceMapping, resource: dict[str, Any]) -> str:
        path = mapping.find(mapping.rdn_from)
        name, sub, _ = path.parts if path else (mapping.rdn_from, None, None)
        value = ci_get(resource, name)
        if sub is not None and isinstance(value, dict):
            value = ci_get(value, sub)
        if not isinstance(value, str) or not value.strip():
            raise invalid_value(f"{mapping.name} needs a non-empty {mapping.rdn_from}")
        return value

    async def _check_unique(self, mapping: ResourceMapping, rdn_value: str, own_dn: str | None = None) -> None:
        attr = mapping.find(mapping.rdn_from)
        if attr is None:
            return
        query = f"(&{mapping.ldap_filter}({attr.ldap}={escape_value(rdn_value)}))"
        async for page in self.bases.search(query, attributes=[mapping.id_attribute], page_size=2):
            for entry in page:
                if own_dn is None or dnlib.normalize(entry.dn) != dnlib.normalize(own_dn):
                    raise uniqueness(f"a {mapping.name} with {mapping.rdn_from} {rdn_value!r} already exists")

    async def _account_name(self, mapping: ResourceMapping, attribute: str, rdn_value: str) -> str:
        """A free AD logon name from ``rdn_value``'s local part: cut to the length limit, then numbered.

        Equality searches only (indexed; a prefix search scans the whole domain on Samba): the plain
        name first, then every numbered candidate in one OR.
        """
        limit = mapping.account_name_length
        stem = _ACCOUNT_REFUSED.sub("", rdn_value.split("@", 1)[0]).rstrip(".") or mapping.name.lower()
        for candidates in ([stem[:limit]], [stem[: limit - len(str(n))] + str(n) for n in range(1, 100)]):
            query = "(|" + "".join(f"({attribute}={escape_value(c)})" for c in candidates) + ")"
            taken: set[str] = set()
            async for page in self.directory.search(self.directory.base_dn, query, attributes=[attribute]):
                taken.update(text(v).lower() for entry in page for v in entry.get(attribute))
            free = [c for c in candidates if c.lower() not in taken]
            if free:
                return free[0]
        return stem[: limit - 8] + secrets.token_hex(4)  # 99 numbered ones taken: a random suffix

    def _body(self, body: Any, mapping: ResourceMapping | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid_syntax("the request body must be a JSON object")
        if mapping is not None:
            schemas = body.get("schemas")
            if not isinstance(schemas, list) or mapping.schema.lower() not in {str(s).lower() for s in schemas}:
                raise invalid_syntax(f"'schemas' must list {mapping.schema}")
        return body

    async def _create(self, mapping: ResourceMapping, body: Any) -> tuple[int, Any]:
        resource = self._body(body, mapping)
        rdn_value = self._rdn_value(mapping, resource)
        await self._check_unique(mapping, rdn_value)
        values = {k: v for k, v in (await to_ldap(mapping, resource, self._resolve)).items() if v}
        attributes: dict[str, list[AttrValue]] = {"objectClass": list(mapping.object_classes)}
        for name, defaults in mapping.create_defaults.items():
            attributes[name] = list(defaults)
        attributes.update(values)
        attributes[mapping.rdn_attribute] = [rdn_value]
        _fill_required(mapping, attributes, rdn_value)
        if mapping.account_name and not attributes.get(mapping.account_name):
            attributes[mapping.account_name] = [await self._account_name(mapping, mapping.account_name, rdn_value)]
        dn = dnlib.join(f"{mapping.rdn_attribute}={dnlib.escape_value(rdn_value)}", f"{mapping.container},{self.base}")
        await self.directory.add(dn, attributes)
        entry = await self.directory.get(dn, mapping.ldap_attributes)
        if entry is None:
            raise ScimError(500, f"{mapping.name} was created at {dn!r} but cannot be read back")
        return 201, await self.resource(mapping, entry)

    async def _shown(self, mapping: ResourceMapping, entry: Entry, resource: Resource) -> dict[str, list[AttrValue]]:
        """``to_ldap`` of ``resource``, what SCIM shows of ``entry``: what a PATCH or PUT is compared with.
        Empty (every attribute then counts as asked for) if the entry holds what SCIM would refuse."""
        try:
            values = await to_ldap(mapping, resource, self._resolve, current=entry)
        except ScimError:
            return {}
        try:
            rdn_value = self._rdn_value(mapping, resource)
        except ScimError:
            rdn_value = ""  # only cn and sn are filled from it, when nothing else names the entry
        _fill_required(mapping, values, rdn_value)
        return values

    async def _apply(
        self, mapping: ResourceMapping, entry: Entry, new: dict[str, Any], shown: dict[str, list[AttrValue]]
    ) -> Entry:
        """Write ``new`` (a full resource) over ``entry``: rename if the RDN source changed, then modify
        what differs from ``shown`` (``_shown``: the entry as SCIM showed it before the request)."""
        values = await to_ldap(mapping, new, self._resolve, current=entry)
        dn = entry.dn
        rdn_value = self._rdn_value(mapping, new)
        _fill_required(mapping, values, rdn_value)  # a replace must not clear what the object class requires
        values = requested(mapping, entry, shown, values)
        if _needs_rename(mapping, entry, values, rdn_value):
            await self._check_unique(mapping, rdn_value, own_dn=dn)
            ref = self.refs.ref_of(entry, mapping)
            if ref is not None:
                self.refs.forget(ref)
            dn = await self.directory.rename(dn, f"{mapping.rdn_attribute}={dnlib.escape_value(rdn_value)}")
            await self._repoint(entry.dn, dn)
        changes = diff(mapping, entry, values)
        if changes:
            await self.directory.modify(dn, changes)
        updated = await self.directory.get(dn, mapping.ldap_attributes)
        if updated is None:
            raise not_found(f"{mapping.name} disappeared while it was being changed")
        return updated

    async def _repoint(self, old_dn: str, new_dn: str) -> None:
        """Point reference attributes (member, manager) that still hold ``old_dn`` at ``new_dn``.

        Active Directory does this itself (nothing is left to find); OpenLDAP without the refint
        overlay does not, and a renamed user would silently drop out of its groups.
        """
        references = {a.ldap for m in self.profile.resources for a in m.attributes if a.kind is Kind.REFERENCE}
        for attribute in sorted(references, key=str.lower):
            query = f"({attribute}={escape_value(old_dn)})"
            holders = [e.dn async for page in self.bases.search(query, attributes=["1.1"], page_size=500) for e in page]
            for holder in holders:
                await self.directory.modify(
                    holder,
                    [Modification(ModOp.DELETE, attribute, (old_dn,)), Modification(ModOp.ADD, attribute, (new_dn,))],
                )

    async def _replace(self, mapping: ResourceMapping, scim_id: str, body: Any) -> tuple[int, Any]:
        resource = self._body(body, mapping)
        given_id = ci_get(resource, "id")
        if given_id is not None and given_id != scim_id:
            raise mutability(f"id is immutable: the body says {given_id!r}, the path {scim_id!r}")
        entry = await self._find(mapping, scim_id)
        shown = await self._shown(mapping, entry, await self.resource(mapping, entry))
        updated = await self._apply(mapping, entry, resource, shown)
        return 200, await self.resource(mapping, updated)

    async def _patch(self, mapping: ResourceMapping, scim_id: str, body: Any) -> tuple[int, Any]:
        operations = parse_operations(self._body(body))
        entry = await self._find(mapping, scim_id)
        members = await self._member_changes(mapping, entry, operations)
        if members is not None:
            if members:
                await self._modify_members(mapping, entry, members)
            updated = await self.directory.get(entry.dn, mapping.ldap_attributes)
            if updated is None:
                raise not_found(f"{mapping.name} {scim_id!r} disappeared while it was being changed")
            return 200, await self.resource(mapping, updated)
        current = await self.resource(mapping, entry)  # made for this PATCH: patched may change it in place
        shown = await self._shown(mapping, entry, current)
        updated = await self._apply(mapping, entry, patched(current, operations, consume=True), shown)
        return 200, await self.resource(mapping, updated)

    async def _member_changes(
        self, mapping: ResourceMapping, entry: Entry, operations: tuple[PatchOperation, ...]
    ) -> list[Modification] | None:
        """A PATCH that only adds or removes group members, as value-level LDAP changes.

        Returns None when the PATCH does anything else (it then goes through the general path).
        Large groups are never read or rewritten whole to add or remove one member. The operations
        take effect in order (RFC 7644 §3.5.2): what a member is after the last one that names it is
        compared with what the server holds, so adding a member twice, or removing and adding it
        back, is one change or none.
        """
        member_attr = mapping.find("members")
        if member_attr is None:
            return None
        last: dict[str, tuple[str, bool]] = {}  # normalized DN -> (DN, a member after the PATCH)
        for op in operations:
            path = op.path
            if path is None or path.attr.name.lower() != "members" or path.attr.sub_attr or path.sub_attr:
                return None
            if op.op == "add" and path.filter is None:
                ids = _member_ids(op.value)
                if ids is None:
                    return None
                for dn in await self._member_dns(ids):
                    last[dnlib.normalize(dn)] = (dn, True)
            elif op.op == "remove" and (path.filter is not None or op.value is not None):
                # members[value eq "id"], or Entra's path "members" with the members to remove as the value
                ids = _eq_value_ids(path.filter) if path.filter is not None else _member_ids(op.value)
                if ids is None:
                    return None
                for ref in [await self._resolve(i) for i in ids]:
                    if ref is not None:
                        last[dnlib.normalize(ref.dn)] = (ref.dn, False)
            else:
                return None
        added: list[str] = []
        removed: list[str] = []
        for dn, member in last.values():
            if member != await self._holds(entry, member_attr.ldap, dn):
                (added if member else removed).append(dn)
        changes = [Modification(ModOp.DELETE, member_attr.ldap, tuple(removed))]
        changes.append(Modification(ModOp.ADD, member_attr.ldap, tuple(added)))
        changes = [c for c in changes if c.values]
        placeholder = members_placeholder(mapping)
        if placeholder is not None and changes:
            changes.extend(await self._placeholder_changes(entry, changes, *placeholder))
        return changes

    async def _placeholder_changes(
        self, entry: Entry, changes: list[Modification], attribute: str, placeholder: str
    ) -> list[Modification]:
        """Drop the "no members" placeholder, in the same modify, when real members are added."""
        if any(c.op is ModOp.ADD for c in changes) and await self._holds(entry, attribute, placeholder):
            return [Modification(ModOp.DELETE, attribute, (placeholder,))]
        return []

    async def _modify_members(self, mapping: ResourceMapping, entry: Entry, changes: list[Modification]) -> None:
        """Apply member changes; if the server refuses a group left without members, keep the placeholder.

        Whether other members remain cannot be asked with a filter ((!(member=x)) is false while x is
        one of several values), and reading a 50,000-member group to find out is what value-level
        changes avoid: so the modify is tried as it is, and only a refusal (groupOfNames must have a
        member) is retried, atomically, with the placeholder added.
        """
        try:
            await self.directory.modify(entry.dn, changes)
        except ConstraintError:
            placeholder = members_placeholder(mapping)
            if placeholder is None or not any(c.op is ModOp.DELETE for c in changes):
                raise
            attribute, value = placeholder
            await self.directory.modify(entry.dn, [*changes, Modification(ModOp.ADD, attribute, (value,))])

    async def _holds(self, entry: Entry, attribute: str, value: str) -> bool:
        """Whether ``entry`` has ``value`` in ``attribute``, asked of the server (no full read of a big group)."""
        query = f"({attribute}={escape_value(value)})"
        async for page in self.directory.search(entry.dn, query, scope=Scope.BASE, attributes=["objectClass"]):
            if page:
                return True
        return False

    async def _member_dns(self, ids: list[str]) -> list[str]:
        dns = []
        for scim_id in ids:
            ref = await self._resolve(scim_id)
            if ref is None:
                raise invalid_value(f"members: no resource has id {scim_id!r}")
            dns.append(ref.dn)
        return dns

    async def _delete(self, mapping: ResourceMapping, scim_id: str) -> tuple[int, Any]:
        entry = await self._find(mapping, scim_id)
        await self.directory.delete(entry.dn)
        ref = self.refs.ref_of(entry, mapping)
        if ref is not None:
            self.refs.forget(ref)
        return 204, None


def _error_body(error: ScimError) -> tuple[int, Any]:
    return error.status, error.to_body()


def _needs_rename(mapping: ResourceMapping, entry: Entry, values: dict[str, list[AttrValue]], rdn_value: str) -> bool:
    """Whether writing ``values`` over ``entry`` moves it to the RDN ``rdn_value``.

    Only when the RDN follows the attribute it is made from (``rdn_from``) and that attribute
    changed, or when the write would drop the RDN's own value. An RDN an administrator chose (an AD
    user named ``CN=Ada Lovelace`` with userName ``ada@example.com``) stays as it is: a PATCH of the
    title must not rename the user.
    """
    current = dnlib.parse(entry.dn)[0].get(mapping.rdn_attribute)
    if current is None:
        return False
    source = mapping.find(mapping.rdn_from)
    held = [text(value) for value in entry.get(source.ldap)] if source is not None else []
    follows = any(current.lower() == value.lower() for value in held)
    if follows and rdn_value not in held:
        return True
    written = values.get(mapping.rdn_attribute)
    return written is not None and all(text(value).lower() != current.lower() for value in written)


def _fill_required(mapping: ResourceMapping, attributes: dict[str, list[AttrValue]], rdn_value: str) -> None:
    """Fill attributes the structural object class requires (person: cn, sn) when SCIM left them out."""
    classes = {c.lower() for c in mapping.object_classes}
    if "person" in classes and "user" not in classes:
        names = [text(v[0]) for v in (attributes.get("givenName"), attributes.get("sn")) if v]
        display = attributes.get("displayName") or ([" ".join(names)] if names else [rdn_value])
        if not attributes.get("cn"):
            attributes["cn"] = list(display)
        if not attributes.get("sn"):
            attributes["sn"] = [text(attributes["cn"][0])]


def _member_ids(value: Any) -> list[str] | None:
    elements = value if isinstance(value, list) else [value]
    ids = []
    for element in elements:
        scim_id = element.get("value") if isinstance(element, dict) else None
        if not isinstance(scim_id, str):
            return None
        ids.append(scim_id)
    return ids


def _eq_value_ids(node: Any) -> list[str] | None:
    """``value eq "a" or value eq "b"`` → ["a", "b"]; None for any other filter."""
    if isinstance(node, scimfilter.Or):
        ids: list[str] = []
        for operand in node.operands:
            found = _eq_value_ids(operand)
            if found is None:
                return None
            ids.extend(found)
        return ids
    if (
        isinstance(node, scimfilter.Compare)
        and node.op == "eq"
        and node.attr.name.lower() == "value"
        and node.attr.sub_attr is None
        and node.attr.uri is None
        and isinstance(node.value, str)
    ):
        return [node.value]
    return None


def _search_query(body: Any) -> dict[str, str]:
    """A SearchRequest body (``POST /.search``) as the query parameters of a list request."""
    if not isinstance(body, dict):
        raise invalid_syntax("a .search body must be a SearchRequest object")
    query: dict[str, str] = {}
    for key in ("filter", "startIndex", "count", "cursor"):
        if body.get(key) is not None:
            query[key] = str(body[key])
    for key in ("attributes", "excludedAttributes"):
        value = body.get(key)
        if isinstance(value, list):
            query[key] = ",".join(str(v) for v in value)
        elif isinstance(value, str):
            query[key] = value
    return query
