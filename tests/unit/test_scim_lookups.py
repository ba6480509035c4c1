"""Equality lookups read together (``agent.scim.lookups``): how many searches they take, and what each gets
when the shared search is abandoned, fails or cannot tell two spellings apart. What they answer is held to
what each answers alone by the SCIM suite (``test_lookups_at_once_answer_as_each_alone``) on every backend."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ScimSection
from agent.scim.handler import ScimHandler
from agent.scim.lookups import Lookup
from agent.scim.profile import load_profile
from agent.scim.translate import any_of
from plugins.directory import Entry, LimitExceededError, UnavailableError
from plugins.memory import MemorySettings
from protocol import scimeval
from protocol.envelope import ScimOperation
from protocol.scimfilter import AttrPath, Compare
from tests.unit.test_scim_memory import SharingMemoryDirectory

PEOPLE = "ou=people,dc=example,dc=com"


class RiggedSharedSearches(SharingMemoryDirectory):
    """Hands every search that ORs lookups together to ``shared``, which may fail it or slow it down."""

    def search(self, base: str, ldap_filter: str = "(objectClass=*)", **options: Any) -> AsyncIterator[list[Entry]]:
        pages = super().search(base, ldap_filter, **options)
        return self.shared(pages) if "(|(uid=" in ldap_filter else pages

    def shared(self, pages: AsyncIterator[list[Entry]]) -> AsyncIterator[list[Entry]]:
        return pages


class FailingSharedSearches(RiggedSharedSearches):
    """Refuses every shared search with ``error`` (by default a limit of the server's)."""

    error: Exception = LimitExceededError("administrative limit exceeded")
    shared_searches = 0

    def shared(self, pages: AsyncIterator[list[Entry]]) -> AsyncIterator[list[Entry]]:
        self.shared_searches += 1
        raise self.error


class UnavailableForSharedSearches(FailingSharedSearches):
    error = UnavailableError("the server is busy")


class SlowSharedSearches(RiggedSharedSearches):
    """Takes far longer over a shared search than anyone waits."""

    def shared(self, pages: AsyncIterator[list[Entry]]) -> AsyncIterator[list[Entry]]:
        return _late(pages)


async def _late(pages: AsyncIterator[list[Entry]]) -> AsyncIterator[list[Entry]]:
    await asyncio.sleep(60)
    async for page in pages:
        yield page


async def _opened(cls: type[SharingMemoryDirectory]) -> SharingMemoryDirectory:
    directory = cls(MemorySettings(seed_users=0, seed_groups=0))
    await directory.open()
    await directory.add(PEOPLE, {"objectClass": ["top", "organizationalUnit"], "ou": ["people"]})
    for index in range(16):
        uid = f"user{index}"
        title = "Engineer" if index < 14 else "Manager"
        attributes = {"objectClass": ["inetOrgPerson"], "uid": [uid], "cn": [uid], "sn": [uid], "title": [title]}
        await directory.add(f"uid={uid},{PEOPLE}", attributes)
    return directory


@pytest.fixture
async def directory() -> AsyncIterator[SharingMemoryDirectory]:
    opened = await _opened(SharingMemoryDirectory)
    yield opened
    await opened.close()


async def _lookups(handler: ScimHandler, filters: list[str]) -> list[list[str]]:
    """The userNames each filter lists, the lists sent at once."""
    results = await asyncio.gather(
        *(handler.handle(ScimOperation("GET", "/Users", {"filter": text})) for text in filters)
    )
    for result in results:
        assert result.status == 200, result.body
    return [[resource["userName"] for resource in result.body["Resources"]] for result in results]


async def test_lookups_at_once_take_one_search(directory: SharingMemoryDirectory) -> None:
    handler = ScimHandler(directory, load_profile("openldap"))
    filters = [f'userName eq "user{index}"' for index in (3, 1, 3, 7)] + ['userName eq "nobody"']
    assert await _lookups(handler, filters) == [["user3"], ["user1"], ["user3"], ["user7"], []]
    lookups = handler.lister.lookups
    assert (lookups.searches, lookups.answered) == (1, 5)


async def test_lookups_go_in_searches_of_at_most_lookup_batch(directory: SharingMemoryDirectory) -> None:
    handler = ScimHandler(directory, load_profile("openldap"), ScimSection(lookup_batch=2))
    filters = [f'userName eq "user{index}"' for index in range(5)]
    assert await _lookups(handler, filters) == [[f"user{index}"] for index in range(5)]
    lookups = handler.lister.lookups
    assert (lookups.searches, lookups.answered) == (2, 4)  # the fifth, alone in its share, went by itself


async def test_lookup_batch_one_reads_each_alone(directory: SharingMemoryDirectory) -> None:
    handler = ScimHandler(directory, load_profile("openldap"), ScimSection(lookup_batch=1))
    assert await _lookups(handler, ['userName eq "user1"', 'userName eq "user2"']) == [["user1"], ["user2"]]
    assert handler.lister.lookups.searches == 0


async def test_a_value_many_entries_share_abandons_the_shared_search(directory: SharingMemoryDirectory) -> None:
    """Fourteen Engineers are more than a search shared by two lookups keeps: each is read alone, and gets them all."""
    handler = ScimHandler(directory, load_profile("openldap"))
    listed = await _lookups(handler, ['title eq "Engineer"', 'title eq "Manager"'])
    assert sorted(listed[0]) == sorted(f"user{index}" for index in range(14))
    assert sorted(listed[1]) == ["user14", "user15"]
    assert (handler.lister.lookups.searches, handler.lister.lookups.answered) == (1, 0)


async def test_another_spelling_is_read_alone(directory: SharingMemoryDirectory) -> None:
    """``USER1`` finds user1 by SCIM's case rule, but whether the directory's own filter for it does is the
    attribute's matching rule's say: that lookup is read alone; the exact one is answered from the shared search."""
    handler = ScimHandler(directory, load_profile("openldap"))
    assert await _lookups(handler, ['userName eq "user1"', 'userName eq "USER1"']) == [["user1"], ["user1"]]
    assert (handler.lister.lookups.searches, handler.lister.lookups.answered) == (1, 1)


async def test_a_shared_search_the_server_refuses_reads_each_alone() -> None:
    """A refusal that may come from the OR filter itself (a limit): each lookup gets its own search."""
    directory = await _opened(FailingSharedSearches)
    try:
        handler = ScimHandler(directory, load_profile("openldap"))
        filters = ['userName eq "user1"', 'userName eq "user2"', 'userName eq "nobody"']
        assert await _lookups(handler, filters) == [["user1"], ["user2"], []]
        assert (handler.lister.lookups.searches, handler.lister.lookups.answered) == (1, 0)
    finally:
        await directory.close()


async def test_a_directory_unavailable_to_the_shared_search_is_each_lookups_error() -> None:
    """The directory down or busy: each lookup answers the 503 it would alone (put back for a later try),
    without waiting for a search of its own to fail too."""
    directory = await _opened(UnavailableForSharedSearches)
    try:
        handler = ScimHandler(directory, load_profile("openldap"))
        operations = [ScimOperation("GET", "/Users", {"filter": f'userName eq "user{i}"'}) for i in range(3)]
        results = await asyncio.gather(*(handler.handle(operation) for operation in operations))
        assert [(result.status, result.transient) for result in results] == [(503, True)] * 3
        assert directory.shared_searches == 1
    finally:
        await directory.close()


async def test_a_lookup_past_its_deadline_ends_the_shared_search_nobody_waits_for() -> None:
    """Every request of a shared search gone (their deadlines): the search is cancelled, not left running."""
    directory = await _opened(SlowSharedSearches)
    try:
        handler = ScimHandler(directory, load_profile("openldap"))
        lookups = handler.lister.lookups
        waiting = [
            asyncio.ensure_future(handler.handle(ScimOperation("GET", "/Users", {"filter": f'userName eq "user{i}"'})))
            for i in range(2)
        ]
        await asyncio.sleep(0.05)
        (task,) = lookups._tasks
        for request in waiting:
            request.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(0)
        assert task.cancelled()
    finally:
        await directory.close()


@pytest.mark.parametrize("started", [False, True])
async def test_a_cancelled_shared_search_answers_nothing_for_anyone(started: bool) -> None:
    """A shared search cancelled before it started or before it finished leaves each lookup to be read alone
    (not waiting forever, nor answered with the nothing found so far)."""
    directory = await _opened(SlowSharedSearches)
    try:
        handler = ScimHandler(directory, load_profile("openldap"))
        waiting = asyncio.gather(
            *(handler.handle(ScimOperation("GET", "/Users", {"filter": f'userName eq "user{i}"'})) for i in (1, 2))
        )
        for _ in range(2):  # the requests join, then the turn ends and the shared search is made
            await asyncio.sleep(0)
        if started:
            await asyncio.sleep(0.05)
        (task,) = handler.lister.lookups._tasks
        task.cancel()
        results = await waiting
        assert [[r["userName"] for r in result.body["Resources"]] for result in results] == [["user1"], ["user2"]]
        assert handler.lister.lookups.answered == 0
    finally:
        await directory.close()


def test_any_of_puts_the_mapping_filter_once_around_the_assertions() -> None:
    users = load_profile("openldap").users
    head = f"(&{users.ldap_filter}"
    assert any_of(users, [f"{head}(uid=a))", f"{head}(|(uid=b)(cn=b)))"]) == f"{head}(|(uid=a)(|(uid=b)(cn=b))))"
    assert any_of(users, ["(uid=a)", f"{head}(uid=b))"]) == f"(|(uid=a){head}(uid=b)))"


_TEXT = st.text(alphabet=st.sampled_from([*"aAbBsS ß\u017f\u212a kK0:-T", "\u0130", "\u03a3", "\u03c2"]), max_size=6)


@given(_TEXT, _TEXT, st.sampled_from(["userName", "title", "id", "externalId"]))
def test_eq_key_decides_what_the_predicate_decides(wanted: str, stored: str, name: str) -> None:
    """``name eq "wanted"`` holds on a stored text exactly when their ``eq_key`` is the same (for a wanted value
    that is not a date-time, which is compared chronologically)."""
    if scimeval.parse_datetime(wanted) is not None:
        return
    holds = scimeval.predicate(Compare(AttrPath(name), "eq", wanted))
    key = scimeval.eq_key(name)
    resource: dict[str, Any] = {name: stored}
    assert holds(resource) == (key(wanted) == key(stored))
    assert holds({name: [{"value": stored}]}) == (key(wanted) == key(stored))


async def test_lookups_read_together_are_freed_without_the_cyclic_collector(directory: SharingMemoryDirectory) -> None:
    """A lookup and its group, and its group's search task, refer to each other until the search ends: then
    they are let go, so that a busy agent does not leave every lookup to the garbage collector."""
    handler = ScimHandler(directory, load_profile("openldap"))
    gc.collect()
    gc.disable()
    try:
        assert await _lookups(handler, [f'userName eq "user{index}"' for index in range(4)]) == [
            [f"user{index}"] for index in range(4)
        ]
        await asyncio.sleep(0)  # the search task's done callbacks
        assert handler.lister.lookups.searches == 1
        assert not [thing for thing in gc.get_objects() if isinstance(thing, Lookup)]
    finally:
        gc.enable()


async def test_a_lookup_gone_before_the_turn_ends_is_not_searched_for(directory: SharingMemoryDirectory) -> None:
    """Of two lookups joined in one turn, one cancelled before the turn ended: the other is read alone."""
    handler = ScimHandler(directory, load_profile("openldap"))
    requests = [
        asyncio.ensure_future(handler.handle(ScimOperation("GET", "/Users", {"filter": f'userName eq "user{i}"'})))
        for i in (1, 2)
    ]
    await asyncio.sleep(0)  # both have joined; the turn in which they did has not ended
    requests[0].cancel()
    result = await requests[1]
    assert [resource["userName"] for resource in result.body["Resources"]] == ["user2"]
    assert requests[0].cancelled()
    assert handler.lister.lookups.searches == 0
