"""Garbage collection under load: concurrent pushes that re-use layers being collected,
tag moves and deletes, with the server collecting every second and a zero time-machine
window. Afterwards every tag that was acknowledged pulls completely with verified
digests, and a final pass leaves storage holding exactly the blobs the database knows.

``GC_STRESS_SECONDS`` sets the duration (20 by default); ``benchmarks/gc_stress.py``
runs the same workload for minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

from functional.client import OCI_MANIFEST, RegistryClient, descriptor, to_json
from functional.conftest import PASSWORDS, create_users
from portside.app import build_services
from portside.config import load_config
from portside.db.models import Blob, GcRun
from portside.services.gc import garbage_collector_for
from support.server import RunningRegistry, postgres_database, running_registry

OVERRIDES = {
    "LOGIN_FAILURE_LIMIT": 0,
    "FEATURE_GARBAGE_COLLECTION": True,
    "GARBAGE_COLLECTION_FREQUENCY": 1,
    "DEFAULT_TAG_EXPIRATION": "0s",
    # Long enough for a push to go from its uploads to its manifest.
    "PUSH_TEMP_TAG_EXPIRATION_SEC": 2,
}
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Outcome:
    """What the workers did, and the tags that must exist afterwards."""

    expected: dict[tuple[str, str], tuple[str, list[bytes]]] = field(default_factory=dict)
    pushes: int = 0
    refused: int = 0
    deletes: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _push(client: RegistryClient, repo: str, tag: str, layers: list[bytes]) -> tuple[int, str]:
    config = to_json({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex})
    for blob in (config, *layers):
        response = client.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            repo=repo,
            params={"digest": sha(blob)},
            content=blob,
        )
        if response.status_code != 201:
            return response.status_code, response.text
    body = to_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(CONFIG_TYPE, config),
            "layers": [descriptor(LAYER_TYPE, b) for b in layers],
        }
    )
    response = client.put_manifest(repo, tag, body)
    return response.status_code, sha(body) if response.status_code == 201 else response.text


def worker(
    url: str, index: int, repos: list[str], pool: list[bytes], stop: float, outcome: Outcome
) -> None:
    """Push, move and delete this worker's own tags until ``stop``."""
    rng = random.Random(index)
    client = RegistryClient(url, "alice", PASSWORDS["alice"])
    try:
        while time.monotonic() < stop:
            repo = rng.choice(repos)
            tag = f"w{index}-t{rng.randrange(3)}"
            if rng.random() < 0.2:
                response = client.request("DELETE", f"/v2/{repo}/manifests/{tag}", repo=repo)
                if response.status_code in (202, 404):
                    with outcome.lock:
                        outcome.expected.pop((repo, tag), None)
                        outcome.deletes += 1
                else:
                    outcome.errors.append(f"DELETE {repo}:{tag} {response.status_code}")
                continue
            layers = [*rng.sample(pool, 2), os.urandom(64)]
            status, result = _push(client, repo, tag, layers)
            with outcome.lock:
                if status == 201:
                    outcome.expected[(repo, tag)] = (result, layers)
                    outcome.pushes += 1
                else:
                    outcome.errors.append(f"push {repo}:{tag} {status} {result[:200]}")
    except httpx.HTTPError as exc:
        outcome.errors.append(f"worker {index}: {exc!r}")
    finally:
        client.close()


def run_workload(url: str, seconds: float, workers: int = 4) -> Outcome:
    """The concurrent workload; returns what must be pullable."""
    repos = [f"alice/stress-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    pool = [os.urandom(2048) for _ in range(6)]  # shared layers, collected and re-pushed
    outcome = Outcome()
    stop = time.monotonic() + seconds
    threads = [
        threading.Thread(target=worker, args=(url, i, repos, pool, stop, outcome))
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def verify_pulls(url: str, outcome: Outcome) -> None:
    """Every acknowledged tag pulls completely, every byte matching its digest."""
    client = RegistryClient(url, "alice", PASSWORDS["alice"])
    try:
        for (repo, tag), (digest, layers) in outcome.expected.items():
            response = client.request(
                "GET", f"/v2/{repo}/manifests/{tag}", repo=repo, headers={"Accept": OCI_MANIFEST}
            )
            assert response.status_code == 200, (repo, tag, response.text)
            assert sha(response.content) == digest
            for blob in (
                *(d["digest"] for d in [response.json()["config"]]),
                *(sha(layer) for layer in layers),
            ):
                pulled = client.request("GET", f"/v2/{repo}/blobs/{blob}", repo=repo)
                assert pulled.status_code == 200, (repo, tag, blob)
                assert sha(pulled.content) == blob
    finally:
        client.close()


def final_collection_matches_storage(registry: RunningRegistry) -> tuple[int, int]:
    """Run passes until one is not skipped; storage must equal the blob table. Returns
    the number of blobs and of passes the server had run."""
    config, _ = load_config(registry.config_path)
    services = build_services(config, migrate=False)
    try:
        with services.db.session() as session:
            server_passes = session.scalar(select(func.count()).select_from(GcRun)) or 0
        collector = garbage_collector_for(services)
        collector.grace_s = 0
        deadline = time.monotonic() + 60
        while True:
            report = collector.run()
            if not report.skipped:
                break
            assert time.monotonic() < deadline, "the server's pass never ended"
            time.sleep(0.2)
        assert report.error is None, report.error
        with services.db.session() as session:
            known = set(session.scalars(select(Blob.digest)))
    finally:
        services.close()
    root = Path(registry.config["DISTRIBUTED_STORAGE_CONFIG"]["default"][1]["storage_path"])
    stored = {f"sha256:{p.name}" for p in (root / "sha256").glob("*/*") if p.is_file()}
    assert stored == known, (stored - known, known - stored)
    return len(known), server_passes


@contextlib.contextmanager
def stress_registry(backend: str, root: Path) -> Iterator[RunningRegistry]:
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(running_registry(root, db_uri=db_uri, **OVERRIDES))
        create_users(registry, ("alice",))
        yield registry


def test_gc_under_concurrent_pushes(backend: str, tmp_path: Path) -> None:
    seconds = float(os.environ.get("GC_STRESS_SECONDS", "20"))
    with stress_registry(backend, tmp_path / "stress") as registry:
        outcome = run_workload(registry.url, seconds)
        assert not outcome.errors, outcome.errors[:10]
        assert outcome.pushes > 10 and outcome.expected
        verify_pulls(registry.url, outcome)
        _, server_passes = final_collection_matches_storage(registry)
        assert server_passes >= seconds / 4, "the server hardly collected"
        verify_pulls(registry.url, outcome)
        log = registry.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-5000:]
