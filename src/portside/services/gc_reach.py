"""Which manifests of a repository garbage collection may delete: pure logic, no I/O.

A manifest is kept when it is a *root* — referenced by a tag row that stays (an active
tag, or history still inside the namespace's time-machine window, so it can be
restored), or younger than the grace period (pushed by digest, perhaps about to be
tagged or listed by an index) — or when it is reachable from a kept manifest: a child
(``ManifestChild``) of a kept index, or a referrer whose ``subject`` is a kept manifest
of the same repository (referrers live as long as their subject).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ManifestNode:
    """What reachability needs to know about one manifest."""

    id: int
    digest: str
    subject_digest: str | None
    young: bool


def unreachable(
    manifests: Iterable[ManifestNode], tagged: set[int], edges: Iterable[tuple[int, int]]
) -> set[int]:
    """Ids of ``manifests`` that are neither roots nor reachable from one.

    ``tagged``: ids referenced by the tag rows that stay; ``edges``: (index, child).
    """
    nodes = {m.id: m for m in manifests}
    children: dict[int, list[int]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    referrers: dict[str, list[int]] = {}
    for node in nodes.values():
        if node.subject_digest is not None:
            referrers.setdefault(node.subject_digest, []).append(node.id)
    kept = {i for i in nodes if i in tagged or nodes[i].young}
    pending = list(kept)
    while pending:
        current = pending.pop()
        following = children.get(current, [])
        if current in nodes:
            following = [*following, *referrers.get(nodes[current].digest, [])]
        for nxt in following:
            if nxt not in kept and nxt in nodes:
                kept.add(nxt)
                pending.append(nxt)
    return set(nodes) - kept
