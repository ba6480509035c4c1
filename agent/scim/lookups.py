"""Equality lookups read together: ``attr eq "value"`` lists of one resource type and attribute that arrive
together are answered by one directory search, ``(&<mapping filter>(|a1 a2 …))``.

A provisioning client looks objects up by a new value each time (``userName eq "…"``), many at once. Each
lookup read alone is a directory round trip, a pooled connection and a reply of its own; read together,
a cohort of lookups costs one of each, and their answers come back together.

Guarantees:
- **The same answer as reading alone.** A lookup alone lists the entries its LDAP filter ``f`` selects
  that pass its SCIM re-check ``P``. Read together, an entry of ``f1 | f2 | …`` goes to lookup ``i`` when
  ``P_i`` holds and the resource shows the asked value itself (``userName`` exactly ``"bob"`` for
  ``userName eq "bob"``): its LDAP value then equals ``f_i``'s assertion, which every equality rule
  matches, so ``f_i`` selects it too. When ``P_i`` holds on an entry by another spelling (``"Bob"``,
  which ``f_i`` selects or not by the attribute's matching rule), lookup ``i`` is read alone after all.
  (This takes the mapped attribute to have an equality rule, as every attribute a profile maps for
  lookups has: without one, a directory selects no entry by its value, alone or together.)
- **Read at the end of the turn.** A lookup waits for the end of the event loop's turn in which it
  arrived; the lookups of that turn go as one search per resource type and attribute (at most
  ``scim.lookup_batch`` each), a lookup alone goes by itself. Requests arrive in cohorts (a batch of
  signed requests, the replies of one search), so a cohort is read with one round trip, and its answers
  come back together. Only over a directory that says a search is a round trip worth sharing
  (``Directory.shared_lookups``: LDAP, not the in-process memory directory).
- **Bounded.** A search read together that finds more than a few entries per lookup (two each and eight
  more: an attribute many entries share) is abandoned and each of its lookups read alone; so is one that
  fails, so that each gets its own answer or error.
- Only plain equality lookups of a top-level string attribute that is not a date-time are read together
  (``Lister`` decides, from the filter's template); everything else, and ``startIndex`` past 1, is read
  alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from agent.scim.resources import Resource
from agent.scim.translate import any_of
from protocol import scimeval

if TYPE_CHECKING:
    from agent.scim.handler import ScimHandler
    from agent.scim.profile import ResourceMapping

#: Entries a search read together may return per lookup (and a few more), before it is abandoned.
_ENTRIES_PER_LOOKUP = 2
_ENTRIES_SPARE = 8


class Lookup:
    """One waiting lookup: ``name eq "value"`` in ``mapping``, its LDAP filter and re-check; ``future`` gives
    the resources its own search would list, in directory order, or None: read it alone."""

    __slots__ = ("found", "future", "group", "ldap_filter", "mapping", "name", "task", "test", "unsure", "value")

    def __init__(
        self,
        mapping: ResourceMapping,
        name: str,
        value: str,
        ldap_filter: str,
        test: scimeval.Predicate,
        future: asyncio.Future[list[Resource] | None],
    ) -> None:
        self.mapping, self.name, self.value = mapping, name, value
        self.ldap_filter, self.test, self.future = ldap_filter, test, future
        self.found: list[Resource] = []
        # a resource passes the re-check by another spelling (or shows a value not decoded exactly): read alone
        self.unsure = "\ufffd" in value
        self.group: list[Lookup] = []  # the lookups read with it
        self.task: asyncio.Task[None] | None = None  # the search reading them


class Lookups:
    """The lookups of one ``Lister`` waiting to be read together."""

    def __init__(self, handler: ScimHandler) -> None:
        self._handler = handler
        self._waiting: dict[tuple[int, str], list[Lookup]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the searches read together, held until they end
        # The shared searches run in the context the lister was made in, not in a copy of the first request's
        # (whose log context, its request id, they would carry).
        self._context = contextvars.copy_context()
        self.searches = 0  # searches made for lookups read together
        self.answered = 0  # lookups answered by them (the others were read alone after all)

    def shared(self) -> bool:
        """Whether lookups are read together at all: the directory says a search is worth sharing, and the
        settings allow more than one lookup a search."""
        handler = self._handler
        return handler.directory.shared_lookups and handler.settings.lookup_batch > 1

    def join(
        self, mapping: ResourceMapping, name: str, value: str, ldap_filter: str, test: scimeval.Predicate
    ) -> Lookup:
        """Wait to be read with the lookups of the same attribute arriving in this turn (``Lookup.future``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Resource] | None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush, context=self._context)
        key = (id(mapping), name.lower())
        group = self._waiting.get(key)
        if group is None:
            group = self._waiting[key] = []
        lookup = Lookup(mapping, name, value, ldap_filter, test, future)
        group.append(lookup)
        return lookup

    def left(self, lookup: Lookup) -> None:
        """``lookup``'s request stopped waiting (its deadline): once none of its group waits, the search ends."""
        task = lookup.task
        if task is not None and all(other.future.done() for other in lookup.group):
            task.cancel()

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        most = max(1, self._handler.settings.lookup_batch)
        for waited in waiting.values():
            group = [lookup for lookup in waited if not lookup.future.done()]  # not the ones gone meanwhile
            for start in range(0, len(group), most):
                chunk = group[start : start + most]
                if len(chunk) == 1:
                    chunk[0].future.set_result(None)
                    continue
                task = asyncio.get_running_loop().create_task(self._read(chunk))
                self._tasks.add(task)
                task.add_done_callback(partial(self._ended, chunk))
                for lookup in chunk:
                    lookup.group, lookup.task = chunk, task

    def _ended(self, group: list[Lookup], task: asyncio.Task[None]) -> None:
        """A shared search's task is over: the lookups it did not answer (cancelled before it started, so
        ``_read`` never ran) are read alone. Each lookup lets go of its group and task: both refer back to it,
        and every lookup would otherwise be left to the cyclic garbage collector."""
        self._tasks.discard(task)
        for lookup in group:
            if not lookup.future.done():
                lookup.future.set_result(None)
            lookup.group, lookup.task = [], None  # no cycles left for the collector to find

    async def _read(self, group: list[Lookup]) -> None:
        """``_search`` the group, then answer each lookup: what the search gave it, or None (read it alone)
        when the search was abandoned, failed for its own reasons or never finished. A failure of the
        directory itself (``recoverable_errors``: down, busy, timed out) is each lookup's own error, as it
        would be alone, without a second wait for it."""
        complete = False
        failure: BaseException | None = None
        try:
            complete = await self._search(group)
        except self._handler.directory.recoverable_errors as unavailable:
            failure = unavailable
        except Exception:  # noqa: S110 - each is read alone and gets its own answer or error
            pass
        finally:
            for lookup in group:
                future = lookup.future
                if future.done():
                    continue
                if failure is not None:
                    future.set_exception(_copied(failure))
                elif complete and not lookup.unsure:
                    self.answered += 1
                    future.set_result(lookup.found)
                else:
                    future.set_result(None)

    async def _search(self, group: list[Lookup]) -> bool:
        """Read ``group`` with one search and hand out what it finds; False when it finds too much."""
        handler = self._handler
        mapping, name = group[0].mapping, group[0].name
        filters = list(dict.fromkeys(lookup.ldap_filter for lookup in group))
        combined = any_of(mapping, filters)
        key: Callable[[str], str] = scimeval.eq_key(name)
        by_key: dict[str, list[Lookup]] = {}
        for lookup in group:
            by_key.setdefault(key(lookup.value), []).append(lookup)
        limit = _ENTRIES_PER_LOOKUP * len(filters) + _ENTRIES_SPARE
        seen = 0
        self.searches += 1
        pages = handler.bases.search(combined, attributes=mapping.ldap_attributes, page_size=limit + 1)
        try:
            async for page in pages:
                seen += len(page)
                if seen > limit:
                    return False
                for resource in await handler.resources(mapping, page):
                    _hand_out(resource, name, key, by_key)
                page.clear()
        finally:
            closer = getattr(pages, "aclose", None)
            if closer is not None:
                await closer()
        return True


def _hand_out(resource: Resource, name: str, key: Callable[[str], str], by_key: dict[str, list[Lookup]]) -> None:
    """Give ``resource`` to the lookups it passes with the value they asked for; mark the ones it passes by
    another spelling."""
    texts = scimeval.text_values(resource, name)  # what the lookups' predicates compare
    passed: dict[int, Lookup] = {}
    for text in texts:
        for lookup in by_key.get(key(text), ()):
            passed[id(lookup)] = lookup
    for lookup in passed.values():
        if lookup.value in texts and lookup.test(resource):
            lookup.found.append(resource)
        else:
            lookup.unsure = True


def _copied(error: BaseException) -> BaseException:
    """A copy of ``error`` for each waiting lookup to raise (one exception raised by several tasks would
    gather every task's traceback), caused by the original."""
    try:
        made = copy.copy(error)
    except Exception:  # an exception that cannot be copied is raised as it is
        return error
    made.__cause__ = error
    return made
