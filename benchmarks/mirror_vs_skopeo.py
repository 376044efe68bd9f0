#!/usr/bin/env python3
"""Repository mirroring: a Portside mirror sync against ``skopeo sync`` of the same
upstream content, side by side in one run.

The upstream is Debian's ``docker-registry`` on loopback holding ``--tags`` tags that
share ``--shared`` base layers (``--shared-size`` bytes each) and each have one unique
layer (``--unique-size``) and config. Every client reaches it through a counting TCP
relay, so "bytes" is what the upstream actually sent. Runs:

- Portside, first sync (state MIRROR, due at once; the worker looks every second);
- Portside, second sync with nothing changed upstream (sync-now);
- ``skopeo sync --src docker --dest docker`` into a second docker-registry, twice (the
  second run finds every blob at the destination), and ``--dest dir`` (a fresh
  directory: one folder per image, shared layers fetched for each).

    .venv/bin/python benchmarks/mirror_vs_skopeo.py [--tags 50] [--backend postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from functional.client import (  # noqa: E402
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    to_json,
)
from functional.conftest import LOOPBACK, create_users  # noqa: E402
from functional.test_api_mirror import (  # noqa: E402
    SCOPES,
    make_repo,
    make_robot,
    mirror_body,
    set_state,
)
from functional.test_api_repositories import api  # noqa: E402
from support.distribution import running_distribution  # noqa: E402
from support.server import RunningRegistry, postgres_database, running_registry  # noqa: E402
from support.tcp_proxy import TcpProxy  # noqa: E402


def seed_upstream(client: Any, repo: str, tags: int, shared: int, shared_size: int,
                  unique_size: int) -> int:
    """Push the tags; returns the bytes of distinct blobs stored upstream."""
    base = [os.urandom(shared_size) for _ in range(shared)]
    for blob in base:
        client.push_blob(repo, blob)
    total = sum(len(b) for b in base)
    for number in range(tags):
        unique = os.urandom(unique_size)
        config = to_json({"architecture": "amd64", "os": "linux", "n": number})
        client.push_blob(repo, unique)
        client.push_blob(repo, config)
        total += len(unique) + len(config)
        manifest = to_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": descriptor(OCI_CONFIG, config),
                            "layers": [descriptor(OCI_LAYER, b) for b in [*base, unique]]})
        client.push_manifest(repo, f"tag-{number:03}", manifest, OCI_MANIFEST)
    return total


def wait_done(alice: Any, repo: str, after: str | None) -> dict[str, Any]:
    while True:
        view: dict[str, Any] = alice.get(f"/repository/{repo}/mirror").json()
        if view["sync_status"] in ("SUCCESS", "FAIL") and view["last_sync"] != after:
            if view["sync_status"] != "SUCCESS":
                raise SystemExit(f"mirror sync failed: {view['last_error']}")
            return view
        time.sleep(0.05)


@contextlib.contextmanager
def portside(root: Path, backend: str) -> Iterator[RunningRegistry]:
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(running_registry(
            root, db_uri=db_uri, LOGIN_FAILURE_LIMIT=0, FEATURE_REPO_MIRROR=True,
            REPO_MIRROR_INTERVAL=1, SSRF_ALLOWED_HOSTS=LOOPBACK))
        create_users(registry, ("alice",))
        yield registry


class _Deployment:
    """The little of ``functional.conftest.Deployment`` that ``api`` needs."""

    def __init__(self, registry: RunningRegistry) -> None:
        self.registry = registry
        self.url = registry.url


def run_portside(registry: RunningRegistry, upstream_port: int, repo: str,
                 ) -> list[tuple[str, float, int]]:
    deployment = _Deployment(registry)
    results = []
    with closing(api(deployment, "alice", SCOPES)) as alice:  # type: ignore[arg-type]
        local = make_repo(alice)
        robot, _ = make_robot(alice)
        proxy = TcpProxy(upstream_port)
        try:
            created = alice.post(f"/repository/{local}/mirror",
                                 json=mirror_body(f"{proxy.host}/{repo}", robot))
            assert created.status_code == 201, created.text
            started = time.monotonic()
            set_state(alice, local, "MIRROR")
            view = wait_done(alice, local, None)
            results.append(("Portside mirror, first sync", time.monotonic() - started,
                            proxy.bytes_down))
            sent = proxy.bytes_down
            started = time.monotonic()
            assert alice.post(f"/repository/{local}/mirror/sync-now").status_code == 204
            wait_done(alice, local, view["last_sync"])
            results.append(("Portside mirror, re-sync (no change)",
                            time.monotonic() - started, proxy.bytes_down - sent))
        finally:
            proxy.stop()
    return results


def _skopeo(args: list[str]) -> None:
    done = subprocess.run(["skopeo", "--insecure-policy", "sync", "--src", "docker",
                           "--src-tls-verify=false", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"skopeo failed:\n{done.stderr[-2000:]}")


def run_skopeo(upstream_port: int, repo: str, work: Path) -> list[tuple[str, float, int]]:
    """``skopeo sync`` into a directory (one folder per image: shared layers are fetched
    for every image) and into a second docker-registry (a blob the destination has is
    skipped), twice (the directory transport refuses to overwrite: a fresh one)."""
    results = []
    proxy = TcpProxy(upstream_port)
    try:
        with running_distribution(work / "skopeo-target") as target:
            runs: list[tuple[str, list[str]]] = [
                ("skopeo sync --dest docker, first",
                 ["--dest", "docker", "--dest-tls-verify=false", f"{proxy.host}/{repo}",
                  f"{target.host}/copy"]),
                ("skopeo sync --dest docker, again",
                 ["--dest", "docker", "--dest-tls-verify=false", f"{proxy.host}/{repo}",
                  f"{target.host}/copy"]),
                ("skopeo sync --dest dir",
                 ["--dest", "dir", "--scoped", f"{proxy.host}/{repo}",
                  str(work / "skopeo-dir")]),
            ]
            for label, args in runs:
                sent = proxy.bytes_down
                started = time.monotonic()
                _skopeo(args)
                results.append((label, time.monotonic() - started, proxy.bytes_down - sent))
    finally:
        proxy.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--shared", type=int, default=3, help="base layers every tag shares")
    parser.add_argument("--shared-size", type=int, default=4 << 20)
    parser.add_argument("--unique-size", type=int, default=256 << 10)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with running_distribution(work / "upstream") as upstream, upstream.client() as up:
            repo = "bench/app"
            stored = seed_upstream(up, repo, args.tags, args.shared, args.shared_size,
                                   args.unique_size)
            print(f"upstream: {args.tags} tags, {args.shared} shared layers of "
                  f"{args.shared_size} B, one unique layer of {args.unique_size} B each; "
                  f"{stored / 1e6:.1f} MB of distinct blobs")
            with portside(work / "portside", args.backend) as registry:
                rows = run_portside(registry, upstream.port, repo)
            rows += run_skopeo(upstream.port, repo, work)
    first_portside = rows[0]
    first_skopeo = rows[2]
    print()
    print(f"{'run':40} {'seconds':>8} {'MB from upstream':>17} {'vs skopeo first':>16}")
    for label, seconds, sent in rows:
        ratio = f"{seconds / first_skopeo[1]:.2f}x t, {sent / max(first_skopeo[2], 1):.2f}x B"
        print(f"{label:40} {seconds:8.2f} {sent / 1e6:17.1f} {ratio:>16}")
    print()
    print(f"Portside first sync: {first_skopeo[1] / first_portside[1]:.2f}x skopeo's speed, "
          f"{first_portside[2] / max(first_skopeo[2], 1):.2f}x its bytes "
          f"(distinct blob bytes upstream: {stored / 1e6:.1f} MB; the Portside time "
          "includes up to one worker interval, 1 s, before the claim)")


if __name__ == "__main__":
    main()
