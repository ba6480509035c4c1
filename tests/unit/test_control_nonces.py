"""The control plane's nonce memory: bounded without forgetting a nonce whose request is still fresh."""

from __future__ import annotations

from service.control.plane import NonceCache


def test_a_nonce_is_refused_again_while_its_request_is_fresh_and_forgotten_after() -> None:
    nonces = NonceCache()
    assert nonces.add("a1", "n", until=130.0, now=100.0) is None
    assert nonces.add("a1", "n", until=131.0, now=101.0) == "replayed"
    assert nonces.add("a2", "n", until=140.0, now=101.0) is None  # another agent's nonce is its own
    assert nonces.add("a1", "n", until=161.0, now=131.0) is None  # expired at 130: a new request may reuse it
    assert len(nonces) == 2


def test_an_agent_over_its_share_is_refused_without_crowding_out_the_others() -> None:
    """A flood from one agent fills only its own share: every nonce already held is still refused as a
    replay, and the other agents' requests still get in."""
    nonces = NonceCache(max_entries=100, per_agent=3)
    assert nonces.add("other", "o1", until=200.0, now=100.0) is None
    for index in range(3):
        assert nonces.add("flooder", f"f{index}", until=200.0, now=100.0) is None
    assert nonces.add("flooder", "f3", until=200.0, now=100.0) == "agent_busy"
    assert nonces.add("other", "o1", until=200.0, now=100.0) == "replayed"
    assert nonces.add("other", "o2", until=200.0, now=100.0) is None
    assert nonces.add("flooder", "f0", until=200.0, now=100.0) == "replayed"
    # once its nonces expire, the agent gets its share back
    assert nonces.add("flooder", "f4", until=300.0, now=201.0) is None


def test_a_full_memory_refuses_new_nonces_instead_of_forgetting_live_ones() -> None:
    nonces = NonceCache(max_entries=4, per_agent=10)
    for index in range(4):
        assert nonces.add(f"agent-{index}", "n", until=200.0, now=100.0) is None
    assert nonces.add("agent-9", "n", until=200.0, now=100.0) == "busy"
    assert all(nonces.add(f"agent-{index}", "n", until=200.0, now=150.0) == "replayed" for index in range(4))
    assert nonces.add("agent-9", "n", until=300.0, now=200.5) is None  # the others expired: room again
    assert len(nonces) == 1


def test_a_request_no_fresher_than_a_forgotten_nonce_is_refused_as_stale() -> None:
    """A nonce is dropped once its request's freshness ends; a request whose freshness ends no later than
    the latest dropped one is refused, so its copy cannot come back as new: at the very moment its nonce
    goes, or after the clock stepped back."""
    nonces = NonceCache()
    assert nonces.add("a1", "n", until=130.0, now=100.0) is None
    assert nonces.add("a1", "other", until=140.0, now=130.0) is None  # at 130 the first nonce is dropped
    assert nonces.add("a1", "n", until=130.0, now=130.0) == "stale"  # its copy, still fresh at 130
    assert nonces.add("a1", "n", until=130.0, now=120.0) == "stale"  # the clock stepped back 10 s
    assert nonces.horizon == 130.0


def test_nonces_go_in_the_order_they_expire_not_the_order_they_came() -> None:
    """One request sent ahead of time (its freshness ends late) keeps no expired nonce of another agent
    alive: they stop counting against that agent's share and the total, and may be used again."""
    nonces = NonceCache(max_entries=4, per_agent=3)
    assert nonces.add("ahead", "x", until=1600.0, now=1000.0) is None
    for index in range(3):
        assert nonces.add("victim", f"v{index}", until=1000.5, now=1000.0) is None
    assert nonces.add("victim", "v3", until=1400.0, now=1100.0) is None
    assert nonces.add("victim", "v0", until=1400.0, now=1100.0) is None  # expired, so a new request may reuse it
    assert len(nonces) == 3
