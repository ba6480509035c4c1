"""ResponseStore keeps responses within its entry and byte bounds, newest first."""

from __future__ import annotations

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
