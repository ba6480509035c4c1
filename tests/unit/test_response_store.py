"""ResponseStore keeps responses within its entry and byte bounds, newest first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.idempotency import ResponseStore


def test_oldest_responses_go_when_bytes_run_over() -> None:
    store = ResponseStore(max_bytes=1000)
    for number in range(5):
        store.put(f"r{number}", bytes(300))
    assert [store.get(f"r{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert len(store) == 3


def test_a_response_bigger_than_the_budget_is_kept_alone() -> None:
    store = ResponseStore(max_bytes=100)
    store.put("small", b"x")
    store.put("big", bytes(500))
    assert store.get("big") is not None
    assert store.get("small") is None


def test_storing_an_id_again_counts_its_bytes_once() -> None:
    store = ResponseStore(max_bytes=1000)
    for _ in range(10):
        store.put("same", bytes(400))
    store.put("other", bytes(400))
    assert store.get("same") is not None
    assert store.get("other") is not None


class _Clock:
    """A monotonic clock that the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _reference_put(
    items: dict[str, tuple[float, int]], request_id: str, size: int, now: float, bounds: tuple[float, int, int]
) -> None:
    """``put`` as a plain loop over the oldest responses: the store must keep exactly what this keeps."""
    ttl, max_entries, max_bytes = bounds
    items.pop(request_id, None)
    items[request_id] = (now + ttl, size)
    while items:
        oldest_id = next(iter(items))
        total = sum(held for _, held in items.values())
        fits = total <= max_bytes or len(items) == 1
        if items[oldest_id][0] >= now and len(items) <= max_entries and fits:
            break
        del items[oldest_id]


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 400), st.sampled_from([0.0, 0.0, 1.0, 7.0])), max_size=40
    ),
    st.integers(1, 6),
    st.integers(0, 1200),
)
def test_a_store_keeps_what_evicting_the_oldest_one_by_one_keeps(
    puts: list[tuple[str, int, float]], max_entries: int, max_bytes: int
) -> None:
    """After any puts, with time passing between them, the store holds exactly the responses that dropping the
    oldest while it has expired or a bound is exceeded (the newest always kept) would hold."""
    clock = _Clock()
    bounds = (5.0, max_entries, max_bytes)
    store = ResponseStore(ttl=5.0, max_entries=max_entries, max_bytes=max_bytes, clock=clock.monotonic)
    expected: dict[str, tuple[float, int]] = {}
    for request_id, size, later in puts:
        clock.now += later
        store.put(request_id, bytes(size))
        _reference_put(expected, request_id, size, clock.now, bounds)
        assert [(key, expires, len(held)) for key, (expires, held) in store._items.items()] == [
            (key, expires, size) for key, (expires, size) in expected.items()
        ]
        assert store._bytes == sum(size for _, size in expected.values())
