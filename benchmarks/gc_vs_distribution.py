#!/usr/bin/env python3
"""Garbage collection: Portside (online) vs. CNCF Distribution (offline), same content.

Both registries get exactly the same content over HTTP: ``--manifests`` OCI image
manifests (each a JSON config blob plus a few small random layers, some layers shared
between manifests of a repository) holding ``--blobs`` blobs in all. Then the manifests
that uniquely reference ``--garbage-fraction`` of the blobs are deleted by digest
(``DELETE /v2/<repo>/manifests/<digest>``), which makes those blobs garbage, and each
registry collects it:

- Distribution (Debian's ``docker-registry``) is stopped -- its collector refuses to run
  next to a live registry -- and ``docker-registry garbage-collect <config>`` runs;
- Portside keeps serving (optionally under a light pull load) while
  ``portside gc run --json`` runs.

Measured: population time, collection time, bytes freed on disk (file sizes and blocks
of the storage folder before/after) and what each collector reports. Verified: every
sampled remaining manifest pulls completely with matching digests, the garbage blob files
are gone from storage and no live blob file is.

Results: a Markdown table on stdout and ``benchmarks/results/gc-<M>m-<B>b.{md,json}``.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import functools
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from registry_vs_distribution import (
    DISTRIBUTION_BIN,
    PASSWORD,
    USER,
    Deadline,
    DistributionRegistry,
    PortsideRegistry,
    ProcessGroup,
    Registry,
    client_env,
    default_portside_bin,
    load_average,
    log,
    run,
    source_fingerprint,
    tool_version,
)

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN_URI = os.environ.get(
    "PORTSIDE_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REPO_PREFIX = f"{USER}/gc"
ALL_ACTIONS = "pull,push,delete"
RETRIES = 4


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What to run, from the command line."""

    manifests: int
    blobs: int
    garbage_fraction: float
    repositories: int
    shared_layers: int
    min_kib: int
    max_kib: int
    database: str
    postgres_uri: str
    concurrency: int
    portside_workers: int
    pull_load: int
    verify_sample: int
    registries: tuple[str, ...]
    seed: int
    keep: bool
    results_dir: Path
    portside_bin: Path
    budget_s: float


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse the command line into :class:`Settings`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--blobs", type=int, default=50_000,
                        help="config and layer blobs in all (manifests are not counted)")
    parser.add_argument("--garbage-fraction", type=float, default=0.5,
                        help="share of the blobs (and of the manifests) made garbage")
    parser.add_argument("--quick", action="store_true",
                        help="shorthand for --manifests 1000 --blobs 5000")
    parser.add_argument("--repositories", type=int, default=None,
                        help="repositories to spread the manifests over "
                             "(default: one per 100 manifests)")
    parser.add_argument("--shared-layers", type=int, default=1,
                        help="extra layers per manifest taken from other manifests of its "
                             "repository (default 1)")
    parser.add_argument("--min-kib", type=int, default=1, help="smallest layer, KiB")
    parser.add_argument("--max-kib", type=int, default=8, help="largest layer, KiB")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="Portside's database (postgres: a throwaway database on "
                             "$PORTSIDE_TEST_POSTGRES_URI's server, dropped afterwards)")
    parser.add_argument("--postgres-uri", default=POSTGRES_ADMIN_URI,
                        help="an admin connection used to create and drop the database")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in flight while populating and verifying")
    parser.add_argument("--portside-workers", type=int, default=2)
    parser.add_argument("--pull-load", type=int, default=2, metavar="N",
                        help="concurrent pullers against Portside while it collects "
                             "(0: none)")
    parser.add_argument("--verify-sample", type=int, default=300,
                        help="remaining manifests pulled completely after collection")
    parser.add_argument("--only", choices=("distribution", "portside"), default=None,
                        help="run one registry only (for iterating)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (and the PostgreSQL database)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--portside-bin", type=Path, default=None)
    parser.add_argument("--budget", type=float, default=3 * 3600.0,
                        help="time budget of the whole run, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.manifests, args.blobs = 1000, 5000
    if args.manifests < 1 or args.blobs < 1:
        parser.error("--manifests and --blobs must be positive")
    if not 0.0 <= args.garbage_fraction <= 1.0:
        parser.error("--garbage-fraction must be between 0 and 1")
    if not 1 <= args.min_kib <= args.max_kib:
        parser.error("need 1 <= --min-kib <= --max-kib")
    if args.concurrency < 1 or args.pull_load < 0 or args.shared_layers < 0:
        parser.error("--concurrency must be positive, --pull-load and --shared-layers >= 0")
    repositories = args.repositories or max(1, args.manifests // 100)
    if not 1 <= repositories <= args.manifests:
        parser.error("--repositories must be between 1 and --manifests")
    return Settings(
        manifests=args.manifests, blobs=args.blobs, garbage_fraction=args.garbage_fraction,
        repositories=repositories, shared_layers=args.shared_layers,
        min_kib=args.min_kib, max_kib=args.max_kib, database=args.database,
        postgres_uri=args.postgres_uri, concurrency=args.concurrency,
        portside_workers=args.portside_workers, pull_load=args.pull_load,
        verify_sample=args.verify_sample,
        registries=(args.only,) if args.only else ("distribution", "portside"),
        seed=args.seed, keep=args.keep,
        results_dir=args.results_dir.resolve(),
        portside_bin=(args.portside_bin or default_portside_bin()).resolve(),
        budget_s=args.budget,
    )


# --------------------------------------------------------------------------------------
# The content: a deterministic plan, blob bytes regenerated on demand
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobSpec:
    """One config or layer blob; its bytes come from :func:`blob_bytes`."""

    index: int
    repo: int
    config: bool
    garbage: bool
    size: int
    digest: str


@dataclass(slots=True)
class ManifestSpec:
    """One image manifest: its config, layers and raw JSON."""

    index: int
    repo: int
    garbage: bool
    config: int = -1
    layers: list[int] = field(default_factory=list)
    raw: bytes = b""
    digest: str = ""

    @property
    def tag(self) -> str:
        """Every manifest is pushed by tag (deleting it by digest removes the tag too)."""
        return f"m{self.index}"


@dataclass
class Plan:
    """Every blob and manifest, which ones become garbage, and their sizes."""

    repositories: list[str]
    blobs: list[BlobSpec]
    manifests: list[ManifestSpec]

    @property
    def live_blobs(self) -> list[BlobSpec]:
        """Blobs referenced by at least one manifest that is kept."""
        return [b for b in self.blobs if not b.garbage]

    @property
    def garbage_blobs(self) -> list[BlobSpec]:
        """Blobs referenced only by manifests that are deleted."""
        return [b for b in self.blobs if b.garbage]

    @property
    def live_manifests(self) -> list[ManifestSpec]:
        """Manifests that are kept."""
        return [m for m in self.manifests if not m.garbage]

    @property
    def garbage_manifests(self) -> list[ManifestSpec]:
        """Manifests that are deleted by digest."""
        return [m for m in self.manifests if m.garbage]

    def summary(self) -> dict[str, int]:
        """Counts and byte totals (recorded with the results)."""
        return {
            "repositories": len(self.repositories),
            "manifests": len(self.manifests),
            "blobs": len(self.blobs),
            "blob_bytes": sum(b.size for b in self.blobs),
            "manifest_bytes": sum(len(m.raw) for m in self.manifests),
            "garbage_manifests": len(self.garbage_manifests),
            "garbage_blobs": len(self.garbage_blobs),
            "garbage_blob_bytes": sum(b.size for b in self.garbage_blobs),
            "garbage_manifest_bytes": sum(len(m.raw) for m in self.garbage_manifests),
            "shared_layer_references": sum(
                len(m.layers) for m in self.manifests) - sum(
                1 for b in self.blobs if not b.config),
        }


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def blob_bytes(seed: int, index: int, config: bool, size: int) -> bytes:
    """The content of blob ``index``: random bytes, or a small JSON image config.

    Configs are JSON because Portside reads labels from image configs; the random
    ``pad`` makes every config unique.
    """
    rng = _rng(seed, index)
    if not config:
        return rng.randbytes(size)
    document = {"architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "pad": rng.randbytes(rng.randint(64, 256)).hex(), "n": index}
    return json.dumps(document, separators=(",", ":")).encode()


def build_plan(settings: Settings) -> Plan:
    """Split manifests and blobs into kept and garbage groups and wire them together.

    Within each group, blob ``j`` belongs to manifest ``j mod n`` of the group (the first
    blob of every manifest is its config), so every garbage blob is referenced only by
    garbage manifests and every kept blob by at least one kept manifest. On top, each
    manifest references ``--shared-layers`` layers of other manifests of its repository:
    a kept manifest only kept layers, a deleted one any layers -- so some blobs referenced
    by deleted manifests must survive.
    """
    m_total, b_total, fraction = settings.manifests, settings.blobs, settings.garbage_fraction
    m_garbage, b_garbage = round(m_total * fraction), round(b_total * fraction)
    groups = ((False, m_total - m_garbage, b_total - b_garbage), (True, m_garbage, b_garbage))
    for garbage, n_manifests, n_blobs in groups:
        if n_blobs < 2 * n_manifests or (n_manifests == 0 and n_blobs > 0):
            kind = "garbage" if garbage else "kept"
            raise SystemExit(f"{n_blobs} {kind} blobs for {n_manifests} {kind} manifests: "
                             "every manifest needs a config and at least one layer; "
                             "use more --blobs or fewer --manifests")
    rng = random.Random(settings.seed)
    garbage_ids = set(rng.sample(range(m_total), m_garbage))
    manifests = [ManifestSpec(i, i % settings.repositories, i in garbage_ids)
                 for i in range(m_total)]
    blobs: list[BlobSpec] = []
    for garbage, _n_manifests, n_blobs in groups:
        owners = [m for m in manifests if m.garbage == garbage]
        for j in range(n_blobs):
            owner = owners[j % len(owners)]
            index = len(blobs)
            config = j < len(owners)
            size = rng.randint(settings.min_kib * 1024, settings.max_kib * 1024)
            data = blob_bytes(settings.seed, index, config, size)
            blobs.append(BlobSpec(index, owner.repo, config, garbage, len(data),
                                  "sha256:" + hashlib.sha256(data).hexdigest()))
            if config:
                owner.config = index
            else:
                owner.layers.append(index)
    _share_layers(settings, rng, manifests, blobs)
    for manifest in manifests:
        manifest.raw = manifest_json(manifest, blobs)
        manifest.digest = "sha256:" + hashlib.sha256(manifest.raw).hexdigest()
    names = [f"{REPO_PREFIX}-{r:04d}" for r in range(settings.repositories)]
    return Plan(names, blobs, manifests)


def _share_layers(settings: Settings, rng: random.Random, manifests: list[ManifestSpec],
                  blobs: list[BlobSpec]) -> None:
    if settings.shared_layers == 0:
        return
    kept: dict[int, list[int]] = {}
    every: dict[int, list[int]] = {}
    for blob in blobs:
        if not blob.config:
            every.setdefault(blob.repo, []).append(blob.index)
            if not blob.garbage:
                kept.setdefault(blob.repo, []).append(blob.index)
    for manifest in manifests:
        pool = (every if manifest.garbage else kept).get(manifest.repo, [])
        own = set(manifest.layers)
        candidates = [b for b in rng.sample(pool, min(len(pool), settings.shared_layers + 8))
                      if b not in own]
        manifest.layers.extend(candidates[:settings.shared_layers])


def manifest_json(manifest: ManifestSpec, blobs: list[BlobSpec]) -> bytes:
    """The OCI image manifest (compact JSON, so both registries see the same bytes)."""
    def descriptor(index: int, media_type: str) -> dict[str, Any]:
        blob = blobs[index]
        return {"mediaType": media_type, "digest": blob.digest, "size": blob.size}

    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": descriptor(manifest.config, OCI_CONFIG),
                "layers": [descriptor(i, OCI_LAYER) for i in manifest.layers]}
    return json.dumps(document, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------
# The registries
# --------------------------------------------------------------------------------------


class GcPortside(PortsideRegistry):
    """Portside configured for the benchmark: no time machine, no grace, no background GC.

    ``FEATURE_GARBAGE_COLLECTION: false`` so that only the explicit ``portside gc run``
    collects; the time-machine window and the push grace period are 0 so that what was
    deleted is collectable at once.
    """

    def __init__(self, root: Path, procs: ProcessGroup, binary: Path, workers: int,
                 db_uri: str) -> None:
        super().__init__(root, procs, binary, workers)
        self.key, self.label = "portside", f"Portside ({workers} workers)"
        self.db_uri = db_uri
        self.storage = root / "storage"

    def _prepare(self, deadline: Deadline) -> None:
        self.config_path.write_text(json.dumps({  # JSON is valid YAML
            "SERVER_HOSTNAME": self.host,
            "DB_URI": self.db_uri,
            "DISTRIBUTED_STORAGE_CONFIG": {
                "default": ["LocalStorage", {"storage_path": str(self.storage)}],
            },
            "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
            "DEFAULT_TAG_EXPIRATION": "0s",
            "TAG_EXPIRATION_OPTIONS": ["0s"],
            "PUSH_TEMP_TAG_EXPIRATION_SEC": 0,
            "FEATURE_GARBAGE_COLLECTION": False,
            "REGISTRY_JWT_EXPIRATION_S": 86400,
            # Set, so that nothing writes ./data/database_secret.key into the caller's cwd.
            "DATABASE_SECRET_KEY": "benchmark-only-database-secret",
        }, indent=2))
        if not self._user_created:
            run([str(self.binary), "user", "create", USER, "--password-stdin"],
                timeout=deadline.cap(120), env=self._env(),
                stdin_text=f"{PASSWORD}\n")
            self._user_created = True

    def blob_file(self, digest: str) -> Path:
        """Where LocalStorage keeps a committed blob (``sha256/<h0h1>/<hex>``)."""
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "sha256" / hexdigest[:2] / hexdigest


class GcDistribution(DistributionRegistry):
    """Debian's ``docker-registry`` with deletes enabled (the parent's config)."""

    @property
    def data(self) -> Path:
        """The filesystem driver's root directory."""
        return self.root / "data"

    def blob_file(self, digest: str) -> Path:
        """``docker/registry/v2/blobs/sha256/<h0h1>/<hex>/data``."""
        hexdigest = digest.split(":", 1)[1]
        return (self.data / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2]
                / hexdigest / "data")


@contextlib.contextmanager
def portside_database(settings: Settings) -> Iterator[str]:
    """The Portside database URI: a throwaway PostgreSQL database, or a SQLite file."""
    if settings.database == "sqlite" or "portside" not in settings.registries:
        yield ""  # SQLite: filled in by the caller (a file in the Portside folder)
        return
    import psycopg

    name = f"portside_gcbench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(settings.postgres_uri, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise SystemExit(f"cannot create a PostgreSQL database via {settings.postgres_uri}: "
                         f"{exc} (use --database sqlite or --postgres-uri)") from None
    try:
        yield f"{settings.postgres_uri.rsplit('/', 1)[0]}/{name}"
    finally:
        if settings.keep:
            log(f"kept PostgreSQL database {name}")
        else:
            with psycopg.connect(settings.postgres_uri, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------
# HTTP: population, deletion, verification
# --------------------------------------------------------------------------------------


class RegistryError(RuntimeError):
    """A registry answered something unexpected (``status``: its HTTP status, if any)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Target:
    """One registry as the async clients see it: base URL and per-repository headers."""

    url: str
    headers: dict[str, dict[str, str]]
    monolithic_post: bool

    def h(self, repo: str, **extra: str) -> dict[str, str]:
        """Auth headers for ``repo`` plus ``extra``."""
        return {**self.headers.get(repo, {}), **extra}


def make_target(reg: Registry, plan: Plan) -> Target:
    """Fetch one token per repository up front (Portside); Distribution needs none."""
    headers = {repo: reg.auth_headers(repo, ALL_ACTIONS) for repo in plan.repositories}
    # Portside accepts a monolithic upload in the POST itself (?digest=): one request per
    # blob. Distribution 2.8 needs POST + PUT.
    return Target(reg.url, headers, monolithic_post=isinstance(reg, PortsideRegistry))


def new_client(connections: int) -> httpx.AsyncClient:
    """A keep-alive client without proxies."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=120.0, trust_env=False,
                             follow_redirects=True)


@dataclass
class PhaseStats:
    """How one bulk phase went."""

    name: str
    items: int
    requests: int
    seconds: float
    retries: int

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.seconds if self.seconds else 0.0


class Counter:
    """Requests and retries of a phase (asyncio: one thread, no locks needed)."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0


async def with_retries(counter: Counter, call: Callable[[], Awaitable[None]]) -> None:
    """Retry transport errors and 5xx answers a few times (shared machine, busy server)."""
    for attempt in range(RETRIES):
        try:
            await call()
            return
        except (httpx.TransportError, RegistryError) as exc:
            transient = (isinstance(exc, httpx.TransportError)
                         or (exc.status is not None and exc.status >= 500))
            if not transient or attempt == RETRIES - 1:
                raise
            counter.retries += 1
            await asyncio.sleep(0.5 * (attempt + 1))


def expect(response: httpx.Response, status: int, what: str) -> None:
    """Raise :class:`RegistryError` unless ``response`` has ``status``."""
    if response.status_code != status:
        raise RegistryError(f"answered {response.status_code} to {what} "
                            f"(expected {status}): {response.text[:300]}",
                            response.status_code)


async def run_pool(name: str, items: Sequence[Any], concurrency: int,
                   job: Callable[[httpx.AsyncClient, Counter, Any], Awaitable[None]],
                   deadline: Deadline) -> PhaseStats:
    """Run ``job`` over ``items`` with ``concurrency`` workers; log progress every 10%."""
    counter = Counter()
    iterator = iter(items)
    done = 0
    step = max(1, len(items) // 10)
    started = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        for item in iterator:  # shared: each item is taken by exactly one worker
            await with_retries(counter, functools.partial(job, client, counter, item))
            done += 1
            if done % step == 0:
                elapsed = time.perf_counter() - started
                log(f"    {name}: {done}/{len(items)} ({done / elapsed:.0f}/s)")

    async with new_client(concurrency) as client:
        await asyncio.wait_for(
            asyncio.gather(*(worker(client) for _ in range(concurrency))),
            timeout=deadline.cap(6 * 3600))
    return PhaseStats(name, len(items), counter.requests, time.perf_counter() - started,
                      counter.retries)


def upload_job(target: Target, plan: Plan, seed: int
               ) -> Callable[[httpx.AsyncClient, Counter, BlobSpec], Awaitable[None]]:
    """Upload one blob into its repository (monolithic POST, or POST + PUT)."""
    async def job(client: httpx.AsyncClient, counter: Counter, blob: BlobSpec) -> None:
        repo = plan.repositories[blob.repo]
        data = blob_bytes(seed, blob.index, blob.config, blob.size)
        octets = {"Content-Type": "application/octet-stream"}
        url = f"{target.url}/v2/{repo}/blobs/uploads/"
        if target.monolithic_post:
            counter.requests += 1
            response = await client.post(url, params={"digest": blob.digest}, content=data,
                                         headers=target.h(repo, **octets))
            expect(response, 201, f"POST upload {blob.digest}")
            return
        counter.requests += 2
        started = await client.post(url, headers=target.h(repo))
        expect(started, 202, "POST upload")
        location = httpx.URL(target.url).join(started.headers["location"])
        location = location.copy_merge_params({"digest": blob.digest})
        response = await client.put(location, content=data, headers=target.h(repo, **octets))
        expect(response, 201, f"PUT upload {blob.digest}")
    return job


def push_job(target: Target, plan: Plan
             ) -> Callable[[httpx.AsyncClient, Counter, ManifestSpec], Awaitable[None]]:
    """PUT one manifest by tag; check the digest the registry computed."""
    async def job(client: httpx.AsyncClient, counter: Counter, manifest: ManifestSpec) -> None:
        repo = plan.repositories[manifest.repo]
        counter.requests += 1
        response = await client.put(f"{target.url}/v2/{repo}/manifests/{manifest.tag}",
                                    content=manifest.raw,
                                    headers=target.h(repo, **{"Content-Type": OCI_MANIFEST}))
        expect(response, 201, f"PUT manifest {manifest.tag}")
        if response.headers.get("docker-content-digest") != manifest.digest:
            raise RegistryError(f"manifest {manifest.tag}: digest "
                                f"{response.headers.get('docker-content-digest')}, expected "
                                f"{manifest.digest}")
    return job


def delete_job(target: Target, plan: Plan
               ) -> Callable[[httpx.AsyncClient, Counter, ManifestSpec], Awaitable[None]]:
    """DELETE one manifest by digest (a retry may find it already gone)."""
    attempted: set[str] = set()

    async def job(client: httpx.AsyncClient, counter: Counter, manifest: ManifestSpec) -> None:
        repo = plan.repositories[manifest.repo]
        counter.requests += 1
        retry = manifest.digest in attempted
        attempted.add(manifest.digest)
        response = await client.delete(f"{target.url}/v2/{repo}/manifests/{manifest.digest}",
                                       headers=target.h(repo))
        if response.status_code == 404 and retry:
            return
        expect(response, 202, f"DELETE manifest {manifest.digest}")
    return job


def populate(reg: Registry, plan: Plan, settings: Settings,
             deadline: Deadline) -> dict[str, Any]:
    """Upload every blob, push every manifest, delete the garbage manifests; time each."""
    target = make_target(reg, plan)
    firsts: dict[int, BlobSpec] = {}
    for blob in plan.blobs:
        firsts.setdefault(blob.repo, blob)
    # One blob per repository first: creating a repository on first push is then never
    # raced by concurrent uploads into it.
    first_wave = list(firsts.values())
    chosen = {b.index for b in first_wave}
    rest = [b for b in plan.blobs if b.index not in chosen]
    conc = settings.concurrency
    started = time.perf_counter()
    upload = upload_job(target, plan, settings.seed)
    phases = [
        asyncio.run(run_pool("blobs (first per repository)", first_wave, conc, upload,
                             deadline)),
        asyncio.run(run_pool("blobs", rest, conc, upload, deadline)),
        asyncio.run(run_pool("manifests", plan.manifests, conc, push_job(target, plan),
                             deadline)),
    ]
    pushed_s = time.perf_counter() - started
    deleted = asyncio.run(run_pool("deletes", plan.garbage_manifests, conc,
                                   delete_job(target, plan), deadline))
    phases.append(deleted)
    for phase in phases:
        log(f"  {phase.name}: {phase.items} in {phase.seconds:.1f} s "
            f"({phase.rate:.0f}/s, {phase.retries} retries)")
    return {"push_seconds": round(pushed_s, 2), "delete_seconds": round(deleted.seconds, 2),
            "requests": sum(p.requests for p in phases),
            "retries": sum(p.retries for p in phases),
            "phases": [asdict(p) | {"rate": round(p.rate, 1)} for p in phases]}


# --------------------------------------------------------------------------------------
# Storage accounting and verification
# --------------------------------------------------------------------------------------


def tree_usage(root: Path) -> dict[str, int]:
    """Files, their total size and the disk blocks they use (``du``) under ``root``."""
    files = apparent = blocks = 0
    stack = [root]
    while stack:
        with contextlib.suppress(FileNotFoundError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    files += 1
                    apparent += st.st_size
                    blocks += st.st_blocks * 512
    return {"files": files, "bytes": apparent, "disk_bytes": blocks}


def storage_presence(blob_file: Callable[[str], Path], plan: Plan,
                     manifests_are_blobs: bool) -> dict[str, int]:
    """How many kept / garbage blob files exist in storage right now."""
    live = [b.digest for b in plan.live_blobs]
    dead = [b.digest for b in plan.garbage_blobs]
    if manifests_are_blobs:  # Distribution stores manifests as blobs too
        live += [m.digest for m in plan.live_manifests]
        dead += [m.digest for m in plan.garbage_manifests]
    return {
        "live_expected": len(live),
        "live_present": sum(blob_file(d).is_file() for d in live),
        "garbage_expected_gone": len(dead),
        "garbage_present": sum(blob_file(d).is_file() for d in dead),
    }


async def verify_pulls(target: Target, plan: Plan, settings: Settings) -> dict[str, Any]:
    """Pull sampled kept manifests completely; check deleted ones and garbage blobs 404."""
    rng = random.Random(settings.seed + 1)
    live = plan.live_manifests
    sample = rng.sample(live, min(settings.verify_sample, len(live)))
    gone = rng.sample(plan.garbage_manifests, min(50, len(plan.garbage_manifests)))
    dead_blobs = rng.sample(plan.garbage_blobs, min(50, len(plan.garbage_blobs)))
    failures: list[str] = []
    counts = {"manifests_pulled": 0, "blobs_pulled": 0, "bytes_pulled": 0,
              "deleted_manifests_404": 0, "garbage_blobs_404": 0}
    semaphore = asyncio.Semaphore(settings.concurrency)

    async def pull(client: httpx.AsyncClient, manifest: ManifestSpec) -> None:
        repo = plan.repositories[manifest.repo]
        async with semaphore:
            response = await client.get(f"{target.url}/v2/{repo}/manifests/{manifest.digest}",
                                        headers=target.h(repo, Accept=OCI_MANIFEST))
            if response.status_code != 200 or sha256(response.content) != manifest.digest:
                failures.append(f"manifest {repo}@{manifest.digest}: {response.status_code}")
                return
            counts["manifests_pulled"] += 1
            for index in [manifest.config, *manifest.layers]:
                blob = plan.blobs[index]
                got = await client.get(f"{target.url}/v2/{repo}/blobs/{blob.digest}",
                                       headers=target.h(repo))
                if got.status_code != 200 or sha256(got.content) != blob.digest:
                    failures.append(f"blob {repo}@{blob.digest}: {got.status_code}")
                    continue
                counts["blobs_pulled"] += 1
                counts["bytes_pulled"] += len(got.content)

    async def absent(client: httpx.AsyncClient, kind: str, repo: str, digest: str) -> None:
        async with semaphore:
            response = await client.get(f"{target.url}/v2/{repo}/{kind}s/{digest}",
                                        headers=target.h(repo, Accept=OCI_MANIFEST))
        if response.status_code == 404:
            counts["deleted_manifests_404" if kind == "manifest" else "garbage_blobs_404"] += 1
        else:
            failures.append(f"{kind} {repo}@{digest} should be gone: {response.status_code}")

    async with new_client(settings.concurrency) as client:
        await asyncio.gather(
            *(pull(client, m) for m in sample),
            *(absent(client, "manifest", plan.repositories[m.repo], m.digest) for m in gone),
            *(absent(client, "blob", plan.repositories[b.repo], b.digest) for b in dead_blobs))
    return {**counts, "manifests_sampled": len(sample),
            "deleted_manifests_checked": len(gone), "garbage_blobs_checked": len(dead_blobs),
            "failures": len(failures), "failure_examples": failures[:10]}


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# A light pull load while Portside collects
# --------------------------------------------------------------------------------------


class PullLoad:
    """``connections`` clients pulling random kept manifests (manifest + config) in a loop.

    Runs its own event loop in a thread while the main thread waits for the collector.
    """

    def __init__(self, target: Target, plan: Plan, connections: int) -> None:
        self.target, self.plan, self.connections = target, plan, connections
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="pull-load", daemon=True)
        self.seconds = 0.0

    def __enter__(self) -> PullLoad:
        if self.connections:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self.connections:
            self._thread.join(60)

    async def _main(self) -> None:
        live = self.plan.live_manifests
        started = time.perf_counter()
        async with new_client(self.connections) as client:
            await asyncio.gather(*(self._worker(client, live, random.Random(n))
                                   for n in range(self.connections)))
        self.seconds = time.perf_counter() - started

    async def _worker(self, client: httpx.AsyncClient, live: list[ManifestSpec],
                      rng: random.Random) -> None:
        while not self._stop.is_set():
            manifest = rng.choice(live)
            repo = self.plan.repositories[manifest.repo]
            config = self.plan.blobs[manifest.config]
            begin = time.perf_counter()
            try:
                got = await client.get(f"{self.target.url}/v2/{repo}/manifests/{manifest.tag}",
                                       headers=self.target.h(repo, Accept=OCI_MANIFEST))
                blob = await client.get(f"{self.target.url}/v2/{repo}/blobs/{config.digest}",
                                        headers=self.target.h(repo))
                ok = (got.status_code == 200 and sha256(got.content) == manifest.digest
                      and blob.status_code == 200 and sha256(blob.content) == config.digest)
                problem = f"{repo}:{manifest.tag}: {got.status_code}/{blob.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"{repo}:{manifest.tag}: {type(exc).__name__}"
            self.latencies_ms.append((time.perf_counter() - begin) * 1000)
            if not ok:
                self.errors.append(problem)

    def summary(self) -> dict[str, Any]:
        """Pulls, rate, latency percentiles and errors."""
        if not self.connections:
            return {"connections": 0}
        ordered = sorted(self.latencies_ms) or [float("nan")]
        return {"connections": self.connections, "pulls": len(self.latencies_ms),
                "pulls_per_s": round(len(self.latencies_ms) / self.seconds, 1)
                if self.seconds else None,
                "p50_ms": round(ordered[len(ordered) // 2], 1),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
                "errors": len(self.errors), "error_examples": self.errors[:5]}


# --------------------------------------------------------------------------------------
# The collectors
# --------------------------------------------------------------------------------------


_DISTRIBUTION_SUMMARY = re.compile(
    r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")


def collect_distribution(reg: GcDistribution, workdir: Path,
                         deadline: Deadline) -> dict[str, Any]:
    """``docker-registry garbage-collect <config>`` with the registry stopped."""
    reg.stop()
    output = workdir / "distribution-gc.log"
    before = tree_usage(reg.data)
    started = time.perf_counter()
    with output.open("wb") as out:
        proc = subprocess.run([reg.binary, "garbage-collect", str(reg.config_path)],
                              stdout=out, stderr=subprocess.STDOUT, timeout=deadline.cap(3600),
                              check=False)
    seconds = time.perf_counter() - started
    after = tree_usage(reg.data)
    text = output.read_text(errors="replace")
    if proc.returncode != 0:
        raise RegistryError(f"docker-registry garbage-collect exited {proc.returncode}: "
                            f"{text[-1000:]}")
    summary = _DISTRIBUTION_SUMMARY.search(text)
    reported = (dict(zip(("blobs_marked", "blobs_eligible", "manifests_eligible"),
                         map(int, summary.groups()), strict=True)) if summary else {})
    return {"seconds": round(seconds, 3), "reported": reported, "before": before,
            "after": after, **reclaimed(before, after), "log_tail": text[-1000:]}


def portside_gc_available(reg: GcPortside) -> str | None:
    """None when ``portside gc run`` exists, else why not."""
    try:
        proc = subprocess.run([str(reg.binary), "gc", "run", "--help"], capture_output=True,
                              text=True, timeout=60, env=client_env(), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{reg.binary} gc run --help failed: {exc}"
    if proc.returncode != 0 or "--json" not in proc.stdout:
        return (f"this Portside has no `portside gc run --json` command ({reg.binary} gc run "
                f"--help exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]})")
    return None


def collect_portside(reg: GcPortside, target: Target, plan: Plan, settings: Settings,
                     workdir: Path, deadline: Deadline) -> dict[str, Any]:
    """``portside gc run --json`` while the registry serves (and a light pull load runs)."""
    missing = portside_gc_available(reg)
    if missing is not None:
        raise RegistryError(missing)
    before = tree_usage(reg.storage)
    stderr_path = workdir / "portside-gc.stderr"
    with PullLoad(target, plan, settings.pull_load) as load, stderr_path.open("wb") as err:
        time.sleep(0.5 if settings.pull_load else 0)  # let the pullers connect first
        started = time.perf_counter()
        proc = subprocess.run([str(reg.binary), "gc", "run", "--config", str(reg.config_path),
                               "--json"], stdout=subprocess.PIPE, stderr=err,
                              timeout=deadline.cap(4 * 3600), env=reg._env(), cwd=reg.root,
                              check=False)
        seconds = time.perf_counter() - started
    after = tree_usage(reg.storage)
    stdout = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise RegistryError(f"portside gc run exited {proc.returncode}: "
                            f"{stderr_path.read_text(errors='replace')[-1000:]}{stdout[-500:]}")
    return {"seconds": round(seconds, 3), "reported": last_json_object(stdout),
            "before": before, "after": after, **reclaimed(before, after),
            "pull_load": load.summary(),
            "stderr_tail": stderr_path.read_text(errors="replace")[-1000:]}


def last_json_object(text: str) -> dict[str, Any]:
    """The JSON object ``--json`` printed (the last line that parses as one)."""
    with contextlib.suppress(ValueError):
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    raise RegistryError(f"portside gc run --json printed no JSON object: {text[-500:]!r}")


def reclaimed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Files removed and bytes freed between two :func:`tree_usage` results."""
    return {"files_removed": before["files"] - after["files"],
            "bytes_freed": before["bytes"] - after["bytes"],
            "disk_bytes_freed": before["disk_bytes"] - after["disk_bytes"]}


# --------------------------------------------------------------------------------------
# One registry end to end
# --------------------------------------------------------------------------------------


def bench_distribution(plan: Plan, settings: Settings, workdir: Path, procs: ProcessGroup,
                       deadline: Deadline) -> dict[str, Any]:
    """Populate, stop, collect offline, restart, verify."""
    reg = GcDistribution(workdir / "distribution", procs)
    result: dict[str, Any] = {"label": "Distribution (offline garbage-collect)"}
    log("Distribution: populating ...")
    reg.start(deadline)
    result["populate"] = populate(reg, plan, settings, deadline)
    result["presence_before"] = storage_presence(reg.blob_file, plan, True)
    log("Distribution: stopping it and running docker-registry garbage-collect ...")
    result["gc"] = collect_distribution(reg, workdir, deadline)
    log(f"  garbage-collect: {result['gc']['seconds']:.2f} s, "
        f"{result['gc']['bytes_freed']:,} bytes freed")
    result["presence_after"] = storage_presence(reg.blob_file, plan, True)
    reg.start(deadline)
    try:
        result["verify"] = asyncio.run(verify_pulls(make_target(reg, plan), plan, settings))
    finally:
        reg.stop()
    return result


def bench_portside(plan: Plan, settings: Settings, workdir: Path, procs: ProcessGroup,
                   deadline: Deadline, db_uri: str) -> dict[str, Any]:
    """Populate, collect online (under a light pull load), verify."""
    root = workdir / "portside"
    reg = GcPortside(root, procs, settings.portside_bin, settings.portside_workers,
                     db_uri or f"sqlite:///{root / 'portside.db'}")
    result: dict[str, Any] = {"label": f"Portside (online gc run, {settings.database})"}
    log(f"Portside ({settings.database}): populating ...")
    reg.start(deadline)
    try:
        result["populate"] = populate(reg, plan, settings, deadline)
        result["presence_before"] = storage_presence(reg.blob_file, plan, False)
        target = make_target(reg, plan)
        log(f"Portside: portside gc run --json while serving "
            f"({settings.pull_load} concurrent pullers) ...")
        result["gc"] = collect_portside(reg, target, plan, settings, workdir, deadline)
        log(f"  gc run: {result['gc']['seconds']:.2f} s, "
            f"{result['gc']['bytes_freed']:,} bytes freed; reported {result['gc']['reported']}")
        result["presence_after"] = storage_presence(reg.blob_file, plan, False)
        result["verify"] = asyncio.run(verify_pulls(target, plan, settings))
    finally:
        reg.stop()
    return result


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def verdict(result: dict[str, Any]) -> str:
    """PASS when storage holds exactly the kept blobs and every sampled pull worked."""
    if "error" in result:
        return "ERROR: " + result["error_summary"].replace("|", "/")
    presence, checks = result.get("presence_after"), result.get("verify")
    if presence is None or checks is None:
        return "not verified"
    problems = []
    if presence["live_present"] != presence["live_expected"]:
        problems.append(f"{presence['live_expected'] - presence['live_present']} kept blob "
                        "files missing")
    if presence["garbage_present"]:
        problems.append(f"{presence['garbage_present']} garbage blob files left")
    if checks["failures"]:
        problems.append(f"{checks['failures']} failed pulls/checks")
    return "PASS" if not problems else "FAIL: " + "; ".join(problems)


def fmt_bytes(value: int | None) -> str:
    """``12.3 MB`` (10^6 bytes)."""
    return "n/a" if value is None else f"{value / 1e6:,.1f} MB"


def table(plan_summary: dict[str, int], results: dict[str, dict[str, Any]]) -> str:
    """The Markdown comparison table."""
    keys = [k for k in ("distribution", "portside") if k in results]

    def get(key: str, *path: str) -> Any:
        value: Any = results[key]
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def seconds(value: Any) -> str:
        return "n/a" if value is None else f"{value:,.2f} s"

    def count(value: Any) -> str:
        return "n/a" if value is None else f"{value:,}"

    rows: list[tuple[str, Callable[[str], str]]] = [
        ("population (upload + push), wall clock",
         lambda k: seconds(get(k, "populate", "push_seconds"))),
        ("deleting the garbage manifests",
         lambda k: seconds(get(k, "populate", "delete_seconds"))),
        ("registry serving during GC", lambda k: "no (stopped)" if k == "distribution"
         else f"yes ({get(k, 'gc', 'pull_load', 'connections') or 0} pullers)"),
        ("**GC time** (the collector's process, wall clock)",
         lambda k: f"**{seconds(get(k, 'gc', 'seconds'))}**"),
        ("GC pass as the collector reports it (without start-up)",
         lambda k: seconds(get(k, "gc", "reported", "duration_s"))),
        ("**bytes freed (file sizes)**",
         lambda k: f"**{fmt_bytes(get(k, 'gc', 'bytes_freed'))}**"),
        ("disk space freed (blocks, du)", lambda k: fmt_bytes(get(k, "gc", "disk_bytes_freed"))),
        ("files removed from storage", lambda k: count(get(k, "gc", "files_removed"))),
        ("bytes reclaimed, as the collector reports it", lambda k: fmt_bytes(
            get(k, "gc", "reported", "bytes_reclaimed"))),
        ("blobs deleted, as the collector reports it", lambda k: count(
            get(k, "gc", "reported", "blobs_deleted")
            if k == "portside" else get(k, "gc", "reported", "blobs_eligible"))),
        ("storage after GC (files / size)", lambda k: (
            f"{count(get(k, 'gc', 'after', 'files'))} / "
            f"{fmt_bytes(get(k, 'gc', 'after', 'bytes'))}")),
        ("kept blob files present", lambda k: (
            f"{count(get(k, 'presence_after', 'live_present'))} of "
            f"{count(get(k, 'presence_after', 'live_expected'))}")),
        ("garbage blob files left", lambda k: (
            f"{count(get(k, 'presence_after', 'garbage_present'))} (of "
            f"{count(get(k, 'presence_before', 'garbage_present'))} before)")),
        ("sampled manifests pulled completely", lambda k: (
            f"{count(get(k, 'verify', 'manifests_pulled'))} of "
            f"{count(get(k, 'verify', 'manifests_sampled'))} "
            f"({count(get(k, 'verify', 'blobs_pulled'))} blobs)")),
        ("deleted manifests / garbage blobs answering 404", lambda k: (
            f"{count(get(k, 'verify', 'deleted_manifests_404'))} / "
            f"{count(get(k, 'verify', 'garbage_blobs_404'))}")),
        ("pulls during GC (errors, p99)", lambda k: "n/a (offline)" if k == "distribution"
         else (f"{count(get(k, 'gc', 'pull_load', 'pulls'))} "
               f"({count(get(k, 'gc', 'pull_load', 'errors'))} errors, "
               f"p99 {get(k, 'gc', 'pull_load', 'p99_ms')} ms)")),
        ("verdict", lambda k: verdict(results[k])),
    ]
    header = "| | " + " | ".join(results[k]["label"] for k in keys) + " |"
    lines = [header, "| --- |" + " --- |" * len(keys)]
    lines += [f"| {name} | " + " | ".join(fn(k) for k in keys) + " |" for name, fn in rows]
    expected = (f"Expected garbage: {plan_summary['garbage_blobs']:,} blobs, "
                f"{fmt_bytes(plan_summary['garbage_blob_bytes'])} (plus "
                f"{plan_summary['garbage_manifests']:,} manifests, "
                f"{fmt_bytes(plan_summary['garbage_manifest_bytes'])}, which Distribution "
                "stores as blobs and Portside in its database).")
    return "\n".join(lines) + "\n\n" + expected


def render(meta: dict[str, Any], plan_summary: dict[str, int],
           results: dict[str, dict[str, Any]]) -> str:
    """The whole Markdown report."""
    s = plan_summary
    parts = [f"# Garbage collection: Portside vs. CNCF Distribution ({meta['date']})", "",
             f"Command: `{meta['command']}` ({meta['elapsed_s']} s)", "",
             f"Content: {s['manifests']:,} manifests in {s['repositories']} repositories, "
             f"{s['blobs']:,} blobs ({fmt_bytes(s['blob_bytes'])}), "
             f"{s['shared_layer_references']:,} shared-layer references; deleted by digest: "
             f"{s['garbage_manifests']:,} manifests, leaving {s['garbage_blobs']:,} blobs "
             "unreferenced.", "", table(plan_summary, results), ""]
    if meta["source_fingerprint_start"] != meta.get("source_fingerprint_end"):
        parts += ["**WARNING: Portside's source files changed during this run.**", ""]
    parts += ["Notes:", "",
              "- Distribution's collector is offline: the registry was stopped for it "
              "(`docker-registry garbage-collect` must not run next to a serving "
              "registry). Portside's ran while the registry served.",
              "- Bytes freed = the storage folder's file sizes before minus after; disk space "
              "= allocated blocks (small files round up to 4 KiB). Portside keeps manifests "
              "in its database, so its storage holds blobs only.",
              f"- Machine: {meta['cpus']} cores shared with other work; load average "
              f"{meta['loadavg_start']} at the start, {meta.get('loadavg_end')} at the end.",
              f"- Tools: {meta['versions']}.", ""]
    return "\n".join(parts)


def write_results(settings: Settings, markdown: str, data: dict[str, Any]) -> Path:
    """``gc-<M>m-<B>b.md`` and ``.json`` in the results folder."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    only = "" if len(settings.registries) > 1 else f"-{settings.registries[0]}"
    stem = settings.results_dir / f"gc-{settings.manifests}m-{settings.blobs}b{only}"
    stem.with_suffix(".md").write_text(markdown)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
    log(f"results written to {stem}.md and .json")
    return stem


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def check_prerequisites(settings: Settings) -> None:
    """Fail early, with a clear message, when a required tool is missing."""
    missing = []
    if not Path(DISTRIBUTION_BIN).exists():
        missing.append(f"{DISTRIBUTION_BIN} (apt-get install docker-registry)")
    if not settings.portside_bin.exists():
        missing.append(str(settings.portside_bin))
    if missing:
        raise SystemExit("missing: " + ", ".join(missing))


@contextlib.contextmanager
def workspace(settings: Settings) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless ``--keep``."""
    path = Path(tempfile.mkdtemp(prefix="portside-gcbench-"))
    try:
        yield path
    finally:
        if settings.keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def guarded(name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one registry's benchmark; an error is recorded, not raised."""
    try:
        return step()
    except (TimeoutError, RegistryError, httpx.HTTPError, subprocess.SubprocessError,
            RuntimeError) as exc:
        log(f"{name} stopped: {type(exc).__name__}: {exc}")
        return {"label": name, "error": f"{type(exc).__name__}: {exc}",
                "error_summary": f"{type(exc).__name__}: {last_line(str(exc))}"}


def last_line(text: str) -> str:
    """The last non-empty line of an error message (tracebacks end with the cause)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:200]


def main(argv: Sequence[str] | None = None) -> int:
    """Run both registries one after the other; return the exit status."""
    settings = parse_args(argv)
    check_prerequisites(settings)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    procs = ProcessGroup()
    atexit.register(procs.end_all)
    deadline = Deadline(settings.budget_s)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "cpus": os.cpu_count(), "loadavg_start": load_average(),
        "versions": "; ".join([tool_version([DISTRIBUTION_BIN, "--version"]),
                               f"httpx {httpx.__version__}",
                               f"Portside database {settings.database}"]),
        "source_fingerprint_start": source_fingerprint(),
    }
    started = time.perf_counter()
    log(f"planning {settings.manifests} manifests / {settings.blobs} blobs ...")
    plan = build_plan(settings)
    plan_summary = plan.summary()
    log(f"  {plan_summary}")
    results: dict[str, dict[str, Any]] = {}
    with workspace(settings) as workdir, portside_database(settings) as db_uri:
        try:
            if "distribution" in settings.registries:
                results["distribution"] = guarded("Distribution", lambda: bench_distribution(
                    plan, settings, workdir, procs, deadline))
            if "portside" in settings.registries:
                results["portside"] = guarded("Portside", lambda: bench_portside(
                    plan, settings, workdir, procs, deadline, db_uri))
        finally:
            procs.end_all()
    meta |= {"elapsed_s": round(time.perf_counter() - started, 1),
             "loadavg_end": load_average(), "source_fingerprint_end": source_fingerprint()}
    markdown = render(meta, plan_summary, results)
    print(markdown)
    write_results(settings, markdown, {
        "meta": meta, "settings": {k: str(v) for k, v in asdict(settings).items()},
        "plan": plan_summary, "results": results})
    return 0 if all(verdict(r) == "PASS" for r in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
