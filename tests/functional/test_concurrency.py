"""Concurrent pushes of the same blob, tag and new repository all succeed consistently."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx

from functional.client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    random_bytes,
    sha256,
    to_json,
)
from functional.conftest import Deployment, unique_repo

T = TypeVar("T")
WORKERS = 12


def in_parallel(count: int, job: Callable[[int], T]) -> list[T]:
    """Run ``job(0..count-1)`` on a thread pool; return the results in order."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(job, range(count)))


def test_same_blob_pushed_concurrently(registry: Deployment, alice: RegistryClient) -> None:
    repos = [unique_repo("alice") for _ in range(3)]
    data = random_bytes(100_000)
    tokens = {repo: alice.token(f"repository:{repo}:pull,push") for repo in repos}

    def push(i: int) -> int:
        repo = repos[i % len(repos)]  # the first pushes also create the repositories
        with httpx.Client(base_url=registry.url, timeout=60) as http:
            return http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)},
                             content=data,
                             headers={"Authorization": f"Bearer {tokens[repo]}"}).status_code

    assert in_parallel(24, push) == [201] * 24
    for repo in repos:
        got = alice.request("GET", f"/v2/{repo}/blobs/{sha256(data)}", repo=repo)
        assert got.content == data


def test_same_tag_pushed_concurrently(registry: Deployment, alice: RegistryClient,
                                      repo: str) -> None:
    config, layer = b"{}", random_bytes(500)
    alice.push_blob(repo, config)
    alice.push_blob(repo, layer)
    bodies = [to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": descriptor(OCI_CONFIG, config),
                       "layers": [descriptor(OCI_LAYER, layer)],
                       "annotations": {"n": str(i % 6)}}) for i in range(36)]
    token = alice.token(f"repository:{repo}:pull,push")

    def push(i: int) -> int:
        with httpx.Client(base_url=registry.url, timeout=60) as http:
            return http.put(f"/v2/{repo}/manifests/latest", content=bodies[i],
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": OCI_MANIFEST}).status_code

    assert in_parallel(len(bodies), push) == [201] * len(bodies)
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo).json()["tags"]
    assert tags == ["latest"]
    latest = alice.request("GET", f"/v2/{repo}/manifests/latest", repo=repo)
    assert latest.content in bodies
    for body in set(bodies):
        assert alice.request("HEAD", f"/v2/{repo}/manifests/{sha256(body)}",
                             repo=repo).status_code == 200
