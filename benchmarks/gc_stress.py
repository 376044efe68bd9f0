#!/usr/bin/env python3
"""Garbage collection under load, for minutes: the workload of
``tests/functional/test_gc_stress.py`` (concurrent pushes re-using layers that are being
collected, tag moves and deletes, the server collecting every second with a zero
time-machine window), then the same checks: every acknowledged tag pulls completely with
verified digests, and a final pass leaves storage holding exactly the database's blobs.

    .venv/bin/python benchmarks/gc_stress.py --duration 300 [--backend postgres]
    .venv/bin/python benchmarks/gc_stress.py --push-latency [--backend postgres]

``--push-latency`` instead measures a loop of small sequential pushes (one 1 KiB layer,
a config, a tagged manifest) and prints pushes per second, with collection off and on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from functional.client import RegistryClient  # noqa: E402
from functional.conftest import PASSWORDS, create_users  # noqa: E402
from functional.test_gc_stress import (  # noqa: E402
    OVERRIDES,
    _push,
    final_collection_matches_storage,
    run_workload,
    stress_registry,
    verify_pulls,
)
from support.server import postgres_database, running_registry  # noqa: E402


def stress(backend: str, duration: float, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, stress_registry(backend, Path(tmp)) as reg:
        started = time.monotonic()
        outcome = run_workload(reg.url, duration, workers)
        elapsed = time.monotonic() - started
        print(
            f"{backend}: {outcome.pushes} pushes acknowledged, {outcome.deletes} deletes "
            f"in {elapsed:.0f}s ({outcome.pushes / elapsed:.1f} pushes/s), "
            f"{len(outcome.errors)} failed requests"
        )
        for error in outcome.errors[:10]:
            print("  error:", error)
        verify_pulls(reg.url, outcome)
        print(f"  {len(outcome.expected)} tags pull completely with verified digests")
        blobs, passes = final_collection_matches_storage(reg)
        print(
            f"  {passes} passes ran during the load; after a final pass storage holds "
            f"exactly the {blobs} blobs the database references"
        )
        if outcome.errors:
            sys.exit(1)


def push_latency(backend: str, pushes: int) -> None:
    for gc_on in (False, True):
        overrides = {
            **OVERRIDES,
            "FEATURE_GARBAGE_COLLECTION": gc_on,
            "PUSH_TEMP_TAG_EXPIRATION_SEC": 60,
        }
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
            reg = stack.enter_context(running_registry(Path(tmp), db_uri=db_uri, **overrides))
            create_users(reg, ("alice",))
            client = RegistryClient(reg.url, "alice", PASSWORDS["alice"])
            repo = f"alice/latency-{uuid.uuid4().hex[:6]}"
            _push(client, repo, "warm", [os.urandom(1024)])
            times = []
            for i in range(pushes):
                start = time.perf_counter()
                status, _ = _push(client, repo, f"t{i % 5}", [os.urandom(1024)])
                times.append(time.perf_counter() - start)
                assert status == 201
            client.close()
        print(
            f"{backend}, collection {'on (every 1 s)' if gc_on else 'off'}: "
            f"{pushes / sum(times):.1f} pushes/s, median {statistics.median(times) * 1000:.1f}"
            f" ms per push (3 uploads + manifest)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--push-latency", action="store_true")
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    if args.push_latency:
        push_latency(args.backend, args.pushes)
    else:
        stress(args.backend, args.duration, args.workers)


if __name__ == "__main__":
    main()
