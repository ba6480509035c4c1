"""The AD anchor store (plugins.ldap.anchors): scan comparison, the deletion log and its pruning."""

from __future__ import annotations

from pathlib import Path

from plugins.ldap.anchors import AnchorStore


def guid(n: int) -> bytes:
    return n.to_bytes(16, "little")


def scan(store: AnchorStore, rows: list[tuple[bytes, str]], page: int = 2) -> int:
    store.begin_scan()
    for start in range(0, len(rows), page):
        store.add_scan(rows[start : start + page])
    return store.finish_scan()


def stored(store: AnchorStore, count: int = 20) -> dict[bytes, str]:
    return store.lookup(guid(n) for n in range(count))


def test_first_scan_fills_the_store_without_deletions(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "a.sqlite")
    rows = [(guid(n), f"CN=o{n},DC=x") for n in range(5)]
    assert scan(store, rows) == 0
    assert stored(store) == dict(rows)
    assert store.deletions_after(0) == []
    assert store.last_seq() == 0


def test_vanished_objects_are_logged_in_dn_order_and_leave_the_set(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "a.sqlite")
    scan(store, [(guid(n), f"CN=o{n},DC=x") for n in range(5)])
    assert scan(store, [(guid(n), f"CN=o{n},DC=x") for n in (0, 2, 4)]) == 2
    assert store.deletions_after(0) == [(1, guid(1), "CN=o1,DC=x"), (2, guid(3), "CN=o3,DC=x")]
    assert set(stored(store)) == {guid(0), guid(2), guid(4)}
    # an unchanged scan logs nothing more; a returning object is simply stored again
    assert scan(store, [(guid(n), f"CN=o{n},DC=x") for n in (0, 2, 4)]) == 0
    assert scan(store, [(guid(n), f"CN=o{n},DC=x") for n in (0, 1, 2, 4)]) == 0
    assert set(stored(store)) == {guid(0), guid(1), guid(2), guid(4)}
    assert store.last_seq() == 2


def test_new_and_moved_objects_take_the_scanned_dn(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "a.sqlite")
    scan(store, [(guid(1), "CN=a,DC=x"), (guid(2), "CN=b,DC=x")])
    assert scan(store, [(guid(1), "CN=a,OU=moved,DC=x"), (guid(2), "CN=b,DC=x"), (guid(3), "CN=c,DC=x")]) == 0
    assert stored(store) == {guid(1): "CN=a,OU=moved,DC=x", guid(2): "CN=b,DC=x", guid(3): "CN=c,DC=x"}


def test_a_guid_seen_twice_in_one_scan_is_one_anchor(tmp_path: Path) -> None:
    """Overlapping base DNs return an object twice: it is stored once and not reported as vanished."""
    store = AnchorStore(tmp_path / "a.sqlite")
    rows = [(guid(1), "CN=a,DC=x"), (guid(2), "CN=b,DC=x"), (guid(1), "CN=a,DC=x")]
    assert scan(store, rows) == 0
    assert scan(store, rows) == 0
    assert stored(store) == {guid(1): "CN=a,DC=x", guid(2): "CN=b,DC=x"}


def test_the_deletion_log_keeps_the_newest_and_sequence_numbers_survive_pruning(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "a.sqlite", keep_deletions=2)
    scan(store, [(guid(n), f"CN=o{n},DC=x") for n in range(5)])
    assert scan(store, []) == 5
    assert [seq for seq, _, _ in store.deletions_after(0)] == [4, 5]
    assert store.oldest_seq() == 4
    assert store.last_seq() == 5
    scan(store, [(guid(9), "CN=o9,DC=x")])
    assert scan(store, []) == 1
    assert store.last_seq() == 6
    assert store.deletions_after(5) == [(6, guid(9), "CN=o9,DC=x")]


def test_the_store_and_its_id_survive_a_reopen(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "a.sqlite")
    scan(store, [(guid(1), "CN=a,DC=x"), (guid(2), "CN=b,DC=x")])
    scan(store, [(guid(1), "CN=a,DC=x")])
    first_id = store.store_id
    store.close()
    again = AnchorStore(tmp_path / "a.sqlite")
    assert again.store_id == first_id
    assert again.deletions_after(0) == [(1, guid(2), "CN=b,DC=x")]
    assert scan(again, []) == 1
    assert again.last_seq() == 2
