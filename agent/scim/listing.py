"""Listing resources: filter, paging (``startIndex``/``count`` or cursors) and projection.

Index paging (RFC 7644 §3.4.2.4) streams the directory's pages and counts every match for
``totalResults`` while keeping only the requested window. Cursor paging (the
draft-ietf-scim-cursor-pagination extension: ``cursor`` empty to start, ``nextCursor`` in the
response) keeps one directory search open per cursor (directory pages as big as the first request's
``count``), so reading a whole directory page after page costs one pass, not one pass per page.
Open cursors are bounded (``scim.max_cursors``, and half the directory's ``max_concurrency``: each holds
one of its connections, the other requests keep the rest) and expire after ``scim.cursor_ttl`` seconds
idle. Over the bound, the idle ones least lately used are closed (their next page is 400 invalidCursor,
and a reader starts again); a cursor in the middle of a page is never closed under it.

A plain equality lookup (``userName eq "…"``) over a directory whose searches are round trips is read
with the other lookups of its event-loop turn (``agent.scim.lookups``), with the answer its own search
would give.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.scim.discovery import LIST_SCHEMA
from agent.scim.lookups import Lookups
from agent.scim.profile import ResourceMapping
from agent.scim.projection import AttrPath, parse_paths, project
from agent.scim.refs import Ref
from agent.scim.resources import Resource, reference_dns
from agent.scim.translate import CompareTemplate, compare_template, translation
from protocol import scimeval, scimfilter
from protocol.errors import ScimError, invalid_value

if TYPE_CHECKING:
    from agent.config import ScimSection
    from agent.scim.handler import ScimHandler
    from plugins.directory import Entry

#: Directory page size of a list request (a cursor read asks for pages as big as its ``count``).
_DIRECTORY_PAGE = 500
#: Prepared filters kept (by resource type and filter text), and the longest filter text kept.
_PREPARED_SIZE = 1024
_PREPARED_LENGTH = 1024
#: Comparison templates kept (by resource type, attribute path and operator).
_TEMPLATES_SIZE = 256


def _int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid_value(f"{name} must be an integer, got {raw!r}") from None


@dataclass
class _Cursor:
    stream: AsyncIterator[list[Resource]]
    mapping: ResourceMapping
    returned: int
    touched: float
    lock: asyncio.Lock
    pending: list[Resource] = field(default_factory=list)  # read from the directory, not yet returned


class _Prepared:
    """A list request's filter, ready: the LDAP filter to search with and what to re-check. A class, not a
    named tuple: compiled, it is made without running Python code (a lookup prepares one each time)."""

    __slots__ = ("ldap_filter", "lookup", "mapping", "test")

    def __init__(
        self,
        mapping: ResourceMapping,
        ldap_filter: str,
        test: scimeval.Predicate | None,
        lookup: tuple[str, str] | None = None,
    ) -> None:
        self.mapping = mapping
        self.ldap_filter = ldap_filter
        #: The SCIM filter re-checked on each resource the directory returns; None when the translation is exact.
        self.test = test
        #: ``(attribute, value)`` of an equality lookup that may be read with others (``agent.scim.lookups``).
        self.lookup = lookup


#: A comparison's template (None: the general path), and how its predicate is made (None: ``predicate``).
_Template = tuple[ResourceMapping, CompareTemplate | None, Callable[[str], scimeval.Predicate] | None]


def _projected(
    resources: list[Resource], attributes: list[AttrPath] | None, excluded: list[AttrPath] | None
) -> list[Resource]:
    return [project(resource, attributes, excluded) for resource in resources]


def _listing(
    window: list[Resource], total: int, start: int, attributes: list[AttrPath] | None, excluded: list[AttrPath] | None
) -> tuple[int, Any]:
    """An index-paged list response (``window``: the resources from ``start`` on), projected."""
    return 200, {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(window),
        "Resources": window if attributes is None and excluded is None else _projected(window, attributes, excluded),
    }


class Lister:
    def __init__(self, handler: ScimHandler) -> None:
        self.handler = handler
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._prepared: dict[tuple[str, str | None], _Prepared] = {}
        self._templates: dict[tuple[str, str, str | None, str], _Template] = {}
        self.lookups = Lookups(handler)

    @property
    def settings(self) -> ScimSection:
        return self.handler.settings  # live: the control plane may change the page sizes

    def project(self, resource: Resource, query: dict[str, str]) -> Resource:
        return project(resource, parse_paths(query.get("attributes")), parse_paths(query.get("excludedAttributes")))

    def _kept(self, mapping: ResourceMapping, text: str | None) -> _Prepared | None:
        """The filter as ``_prepare`` keeps it, if it does (checked without a coroutine: most lists repeat
        a filter)."""
        prepared = self._prepared.get((mapping.name, text))
        if prepared is None or prepared.mapping is not mapping:  # a profile change brings new mappings
            return None
        return prepared

    async def _prepare(self, mapping: ResourceMapping, text: str | None) -> _Prepared:
        """The request's filter parsed, checked and translated; kept per resource type and filter text
        unless its translation resolved ids (``id``-valued references), whose DNs can change."""
        prepared = self._kept(mapping, text)
        if prepared is not None:
            return prepared
        templated = self._templated(mapping, text) if text else None
        if templated is not None:
            prepared, resolved_ids = templated, False
        else:
            node = scimfilter.parse_filter(text) if text else None
            if node is not None:
                scimeval.check(node)
            found = await translation(node, mapping, self.handler.refs)
            test = None if found.exact or node is None else scimeval.predicate(node)
            prepared, resolved_ids = _Prepared(mapping, found.ldap_filter, test), found.resolved_ids
        if not resolved_ids and (text is None or len(text) <= _PREPARED_LENGTH):
            if len(self._prepared) >= _PREPARED_SIZE:
                self._prepared.clear()
            self._prepared[mapping.name, text] = prepared
        return prepared

    def _templated(self, mapping: ResourceMapping, text: str) -> _Prepared | None:
        """``attr op "value"`` prepared from its resource type's, attribute's and operator's template (a
        client looking objects up by a new value each time sends this shape with a new text each time);
        None when the general path must prepare it. Such a comparison passes ``scimeval.check`` whatever
        the value, and its translation never resolves ids."""
        simple = scimfilter.simple_compare(text)
        if simple is None:
            return None
        name, sub, op, value = simple
        key = (mapping.name, name, sub, op)
        kept = self._templates.get(key)
        if kept is None or kept[0] is not mapping:  # a profile change brings new mappings
            if len(self._templates) >= _TEMPLATES_SIZE:
                self._templates.clear()
            template = compare_template(mapping, scimfilter.AttrPath(name, sub), op)
            kept = self._templates[key] = (
                mapping,
                template,
                scimeval.text_predicates(name, op) if sub is None else None,
            )
        _, template, predicates = kept
        ldap_filter = None if template is None else template.ldap_filter(value)
        if ldap_filter is None:
            return None
        if predicates is None:
            test = scimeval.predicate(scimfilter.Compare(scimfilter.AttrPath(name, sub, None), op, value))
        else:
            test = predicates(value)
        together = op == "eq" and sub is None and scimeval.parse_datetime(value) is None
        return _Prepared(mapping, ldap_filter, test, (name, value) if together else None)

    def _matches(self, mapping: ResourceMapping, query: dict[str, str], page_size: int) -> _Matches:
        """Every resource of ``mapping`` that matches the request's filter, in directory order, a
        directory page at a time (a page may be empty)."""
        return _Matches(self, mapping, query, page_size)

    async def _page(
        self, mapping: ResourceMapping, page: list[Entry], test: scimeval.Predicate | None
    ) -> list[Resource]:
        """``_passing`` of a directory page, its references resolved in one batch."""
        dns = reference_dns(mapping, page)
        return self._passing(mapping, page, await self.handler.refs.refs_for(dns) if dns else {}, test)

    def _passing(
        self, mapping: ResourceMapping, page: list[Entry], refs: Mapping[str, Ref], test: scimeval.Predicate | None
    ) -> list[Resource]:
        """A directory page, its references resolved in ``refs``, as the resources that pass the filter's
        re-check (``test``); the entries go now, not once the response is sent (the page is ours once the
        directory yielded it)."""
        resources = self.handler.listed(mapping, page, refs)
        page.clear()
        return resources if test is None else [resource for resource in resources if test(resource)]

    async def search(self, mapping: ResourceMapping, query: dict[str, str]) -> tuple[int, Any]:
        attributes = parse_paths(query.get("attributes"))
        excluded = parse_paths(query.get("excludedAttributes"))
        settings = self.settings
        count = min(max(_int(query, "count", settings.default_page_size), 0), settings.max_page_size)
        if "cursor" in query:
            return await self._cursor_page(mapping, query, count, attributes, excluded)
        start = max(_int(query, "startIndex", 1), 1)
        # The directory's pages straight, not through ``_matches``: an async generator per request costs
        # its setup and teardown (the event loop tracks each one), and most lists are one page. Likewise a
        # kept filter and a page without references are dealt with without a coroutine.
        text = query.get("filter") or None
        prepared = self._kept(mapping, text)
        if prepared is None:
            prepared = await self._prepare(mapping, text)
        test, lookup, lookups = prepared.test, prepared.lookup, self.lookups
        if lookup is not None and test is not None and start == 1 and lookups.shared():
            waiting = lookups.join(mapping, lookup[0], lookup[1], prepared.ldap_filter, test)
            try:
                found = await waiting.future
            except asyncio.CancelledError:
                lookups.left(waiting)
                raise
            if found is not None:
                return _listing(found[:count], len(found), start, attributes, excluded)
        total = 0
        window: list[Resource] = []
        handler = self.handler
        async for page in handler.bases.search(
            prepared.ldap_filter, attributes=mapping.ldap_attributes, page_size=_DIRECTORY_PAGE
        ):
            dns = reference_dns(mapping, page)
            refs = await handler.refs.refs_for(dns) if dns else {}
            for resource in self._passing(mapping, page, refs, test):
                total += 1
                if total >= start and len(window) < count:
                    window.append(resource)
        return _listing(window, total, start, attributes, excluded)

    def _expire(self, keep: str = "") -> None:
        deadline = time.monotonic() - self.settings.cursor_ttl
        for token in [t for t, c in self._cursors.items() if c.touched < deadline and not c.lock.locked()]:
            self._close(token)
        bound = self.settings.max_cursors
        concurrency = self.handler.directory.max_concurrency
        if concurrency is not None:
            bound = min(bound, max(1, concurrency // 2))
        excess = len(self._cursors) - bound
        if excess > 0:  # the idle ones least lately used (the dict keeps them in the order they were last used)
            for token in [t for t, c in self._cursors.items() if t != keep and not c.lock.locked()][:excess]:
                self._close(token)

    def _close(self, token: str) -> None:
        cursor = self._cursors.pop(token, None)
        if cursor is not None:
            closer = getattr(cursor.stream, "aclose", None)
            if closer is not None:
                task = asyncio.ensure_future(closer())
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _cursor_page(
        self,
        mapping: ResourceMapping,
        query: dict[str, str],
        count: int,
        attributes: list[AttrPath] | None,
        excluded: list[AttrPath] | None,
    ) -> tuple[int, Any]:
        self._expire()
        token = query["cursor"]
        if token:
            cursor = self._cursors.get(token)
            if cursor is None or cursor.mapping is not mapping:
                raise ScimError(400, f"cursor {token!r} is unknown or expired; start again", "invalidCursor")
            self._cursors.move_to_end(token)  # the least lately used are closed first
        else:
            token = secrets.token_urlsafe(16)
            # directory pages as big as the client's: a whole read is one pass with few round trips
            stream = self._matches(mapping, query, max(count, _DIRECTORY_PAGE))
            cursor = _Cursor(stream, mapping, 0, time.monotonic(), asyncio.Lock())
            self._cursors[token] = cursor
            self._expire(keep=token)
        async with cursor.lock:
            page: list[Resource] = []
            try:
                while len(page) < count:
                    if not cursor.pending:
                        cursor.pending = await anext(cursor.stream)
                        continue
                    taken = cursor.pending[: count - len(page)]
                    cursor.pending = cursor.pending[len(taken) :]
                    page.extend(
                        taken if attributes is None and excluded is None else _projected(taken, attributes, excluded)
                    )
                while not cursor.pending:  # is there more? (the page is full)
                    cursor.pending = await anext(cursor.stream)
                exhausted = False
            except StopAsyncIteration:
                exhausted = True
            except BaseException:
                self._close(token)
                raise
            cursor.returned += len(page)
            cursor.touched = time.monotonic()
        body: dict[str, Any] = {
            "schemas": [LIST_SCHEMA],
            "totalResults": cursor.returned,
            "itemsPerPage": len(page),
            "Resources": page,
        }
        if exhausted:
            self._cursors.pop(token, None)
        else:
            body["nextCursor"] = token
        return 200, body


class _Matches(AsyncIterator[list[Resource]]):
    """``Lister._matches``: the filter prepared at the first page, then the directory's pages through
    ``Lister._page``; ``aclose`` closes the directory's search. Written out rather than as an async
    generator, which mypyc does not compile (this module is compiled: pyproject's
    ``[tool.cloudprov] compiled``)."""

    def __init__(self, lister: Lister, mapping: ResourceMapping, query: dict[str, str], page_size: int) -> None:
        self._lister = lister
        self._mapping = mapping
        self._query = query
        self._page_size = page_size
        self._pages: AsyncIterator[list[Entry]] | None = None
        self._test: scimeval.Predicate | None = None

    def __aiter__(self) -> _Matches:
        return self

    async def __anext__(self) -> list[Resource]:
        lister, mapping = self._lister, self._mapping
        pages = self._pages
        if pages is None:
            prepared = await lister._prepare(mapping, self._query.get("filter") or None)
            self._test = prepared.test
            handler = lister.handler
            pages = self._pages = handler.bases.search(
                prepared.ldap_filter, attributes=mapping.ldap_attributes, page_size=self._page_size
            )
        return await lister._page(mapping, await pages.__anext__(), self._test)

    async def aclose(self) -> None:
        closer = getattr(self._pages, "aclose", None)
        if closer is not None:
            await closer()
