"""The replay guard: exact ids, the Bloom filters of those it lets go, expiry, its bound, and its saved form."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable

import pytest

from protocol.replayguard import BUCKET_SECONDS, FILTER_BITS, ReplayGuard


def _known(guard: ReplayGuard, request_id: str, deadline: float) -> bool:
    """What the verifier refuses: an id held exactly, or one the filters hold (or that is due too early)."""
    return guard.seen(request_id) or guard.unprovable(request_id, deadline)


def test_ids_are_forgotten_once_the_horizon_passes_their_deadline() -> None:
    """An id remembered again with a later deadline is kept to that one; an id past the horizon is forgotten."""
    guard = ReplayGuard()
    guard.remember("a", 30.0, 0.0)
    guard.remember("b", 20.0, 0.0)
    guard.remember("a", 40.0, 0.0)
    guard.remember("c", 50.0, 25.0)  # the horizon passed "b"'s deadline, not "a"'s later one
    assert not _known(guard, "b", 20.0)
    assert guard.seen("a")
    assert guard.seen("c")
    assert len(guard) == 2


def test_past_its_bound_the_ids_due_first_spill_and_are_still_found() -> None:
    """Past ``max_entries`` the ids due first, whenever they came, leave the exact memory for the Bloom filters,
    where a copy (same id, same signed deadline) still finds them; nothing is forgotten, and an id never
    given is not found."""
    guard = ReplayGuard(max_entries=2)
    for number, deadline in enumerate([300.0, 100.0, 200.0, 400.0]):
        guard.remember(f"r{number}", deadline, 0.0)
    assert len(guard) == 2
    assert guard.spilled == 2
    assert [guard.seen(f"r{n}") for n in range(4)] == [True, False, False, True]
    assert guard.unprovable("r1", 100.0)
    assert guard.unprovable("r2", 200.0)
    assert guard.floor == -math.inf
    assert not guard.unprovable("new", 100.0)


COUNTER = itertools.count()


@pytest.mark.parametrize(
    "make_id",
    [
        lambda: os.urandom(16).hex(),  # the service's
        lambda: f"{next(COUNTER):032x}",  # hex, but a counter: ids a digit apart
        lambda: f"req-{next(COUNTER)}",
    ],
    ids=["random hex", "counter hex", "other"],
)
def test_new_ids_are_not_taken_for_spilled_ones(make_id: Callable[[], str]) -> None:
    """20,000 new ids due in the bucket of 10,000 spilled ones: none is taken for one of them, and every spilled
    one is found. Ids of 32 hex digits (the service's; any client's counter) and any others."""
    guard = ReplayGuard(max_entries=1000)
    old = [make_id() for _ in range(11_000)]
    for number, request_id in enumerate(old):
        guard.remember(request_id, 100.0 + number / 1000, 0.0)
    assert guard.spilled == 10_000
    assert all(guard.unprovable(request_id, 100.0 + number / 1000) for number, request_id in enumerate(old[:10_000]))
    assert sum(guard.unprovable(make_id(), 105.0) for _ in range(20_000)) == 0


def test_spilled_buckets_go_once_the_horizon_passes_them() -> None:
    """A bucket of spilled ids takes its memory until every deadline in it passed."""
    guard = ReplayGuard(max_entries=1)
    guard.remember("a", 10.0, 0.0)
    guard.remember("b", 500.0, 0.0)  # "a" spills
    assert guard.spill_bytes == FILTER_BITS // 8
    guard.remember("c", 600.0, BUCKET_SECONDS + 1)  # past the end of "a"'s bucket; "b" spills into its own
    assert guard.spill_bytes == FILTER_BITS // 8
    assert not _known(guard, "a", 10.0)
    assert guard.unprovable("b", 500.0)


def test_beyond_the_spill_bound_the_bucket_due_first_is_forgotten_and_the_floor_rises() -> None:
    """Spilled ids over ``max_spill_bytes``: the bucket due first goes, and the floor rises to its end."""
    guard = ReplayGuard(max_entries=1, max_spill_bytes=FILTER_BITS // 8)
    for number, deadline in enumerate([40.0, 100.0, 400.0]):
        guard.remember(f"r{number}", deadline, 0.0)
    assert guard.floor == 60.0  # the end of the 30-second bucket that held 40.0
    assert guard.unprovable("new", 59.0)
    assert not guard.unprovable("new", 61.0)
    assert guard.unprovable("r1", 100.0)


def test_what_is_saved_brings_back_exact_and_spilled_ids_still_live() -> None:
    """``to_json`` then ``restore`` in a new guard (a restart): live exact and spilled ids are found again, ids
    past the horizon are not brought back, and the floor carries over."""
    before = ReplayGuard(max_entries=2, max_spill_bytes=FILTER_BITS // 8)
    for number, deadline in enumerate([50.0, 300.0, 200.0, 700.0, 900.0]):
        before.remember(f"r{number}", deadline, 0.0)
    saved = json.loads(json.dumps(before.to_json(0.0)))
    after = ReplayGuard()
    assert after.restore(saved, 250.0) == 2
    assert len(after) == 2
    assert after.seen("r3")
    assert after.seen("r4")
    assert after.unprovable("r1", 300.0)  # spilled before the restart, found after it
    assert not after.unprovable("r9", 300.0)
    assert after.floor == before.floor == 210.0  # the two buckets shed: ends 60 and 210


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"spill": {}}, "'ids' is not a list"),
        ({"ids": [["r1"]]}, "an entry is not [id, deadline]"),
        ({"ids": [["r1", "soon"]]}, "the deadline of 'r1' is not a number"),
        ({"ids": [], "spill": []}, "'spill' is not an object"),
        ({"ids": [], "spill": {"buckets": {"1": [[1, "AA=="]]}}}, "a filter of bucket 1 is damaged"),
        ({"ids": [], "spill": {"buckets": {}}, "floor": "x"}, "the floor is not a number"),
        ({"ids": [], "spill": {"buckets": {str(10**30): []}}}, "is not a deadline bucket"),
    ],
)
def test_a_damaged_document_is_refused_with_what_is_wrong(document: dict[str, object], problem: str) -> None:
    """Each way a saved guard can be damaged is a ValueError that says where."""
    with pytest.raises(ValueError, match=re.escape(problem)):
        ReplayGuard().restore(document, 0.0)
