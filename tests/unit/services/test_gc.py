"""Reachability and locks of garbage collection, without a server."""

from __future__ import annotations

from pathlib import Path

from portside.db.engine import Database, create_db_engine
from portside.services.gc_locks import digest_key, try_gc_lock
from portside.services.gc_marks import marked_name, original_name
from portside.services.gc_reach import ManifestNode, unreachable


def node(i: int, subject: str | None = None, young: bool = False) -> ManifestNode:
    return ManifestNode(i, f"sha256:{i:064x}", subject, young)


def test_tagged_manifests_and_their_children_and_referrers_are_kept() -> None:
    index, child, signature, sig_of_child, orphan = (
        node(1),
        node(2),
        node(3, f"sha256:{1:064x}"),
        node(4, f"sha256:{2:064x}"),
        node(5),
    )
    doomed = unreachable([index, child, signature, sig_of_child, orphan], {1}, [(1, 2)])
    assert doomed == {5}


def test_everything_goes_with_its_root() -> None:
    nodes = [node(1), node(2), node(3, f"sha256:{1:064x}")]
    assert unreachable(nodes, set(), [(1, 2)]) == {1, 2, 3}


def test_young_manifests_are_roots() -> None:
    nodes = [node(1, young=True), node(2)]
    assert unreachable(nodes, set(), [(1, 2)]) == set()


def test_a_referrer_of_a_missing_subject_is_garbage() -> None:
    assert unreachable([node(1, f"sha256:{9:064x}")], set(), []) == {1}


def test_marked_names_never_collide_and_are_invalid() -> None:
    first, second = marked_name("alice"), marked_name("alice")
    assert first != second and "!" in first and original_name(first) == "alice"
    assert len(marked_name("x" * 255)) <= 255


def test_digest_keys_are_stable_signed_64_bit() -> None:
    key = digest_key("sha256:" + "a" * 64)
    assert key == digest_key("sha256:" + "a" * 64) and -(2**63) <= key < 2**63
    assert key != digest_key("sha256:" + "b" * 64)


def test_only_one_pass_at_a_time_on_sqlite(tmp_path: Path) -> None:
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'gc.db'}"))
    other = Database(create_db_engine(f"sqlite:///{tmp_path / 'gc.db'}"))
    try:
        with try_gc_lock(db) as first:
            assert first
            with try_gc_lock(other) as second:
                # flock is per open file description: a second opener is refused.
                assert not second
        with try_gc_lock(other) as again:
            assert again
    finally:
        db.dispose()
        other.dispose()
