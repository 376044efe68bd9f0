"""How long the quota usage queries take on a large namespace.

Creates a throwaway database (PostgreSQL by default, ``--sqlite`` for a temporary SQLite
file), inserts rows directly: a namespace with ``--manifests`` manifests over 50
repositories referencing ``--blobs`` distinct blobs (a config each and five layers drawn
from a shared pool, so layers repeat across manifests and repositories), plus
``--other-namespaces`` namespaces of the same shape as background. Then it times:

- ``namespace_usage``: the distinct-blob sum of the big namespace (views, reports);
- ``added bytes``: what :class:`QuotaGuard` runs first on a push into a namespace with
  a quota: the bytes a manifest would add (new blobs, and blobs already there);
- ``repository_usage`` and ``registry_usage``.

    .venv/bin/python benchmarks/quota_usage.py [--sqlite] [--manifests 5000] [--blobs 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from portside.db.engine import Database, create_db_engine
from portside.db.models import Base, Blob, Manifest, ManifestBlob, Namespace, Repository
from portside.services.quotas import (
    QuotaGuard,
    _namespace_blob_ids,
    namespace_usage,
    registry_usage,
    repository_usage,
)

POSTGRES_ADMIN_URI = "postgresql://postgres@127.0.0.1:5432/postgres"
LAYERS_PER_MANIFEST = 5
REPOSITORIES = 50


@contextlib.contextmanager
def throwaway_database(sqlite: bool) -> Iterator[str]:
    """A fresh database URI, removed afterwards."""
    if sqlite:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    import psycopg

    name = f"portside_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URI.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URI, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def populate(db: Database, namespace: str, manifests: int, blobs: int,
             rng: random.Random) -> int:
    """One namespace of the given shape; returns its id."""
    with db.session() as session:
        ns = Namespace(name=namespace, kind="organization")
        session.add(ns)
        session.flush()
        repo_ids = list(session.scalars(insert(Repository).returning(Repository.id), [
            {"namespace_id": ns.id, "name": f"repo-{i}"} for i in range(REPOSITORIES)]))
        blob_rows = [{"digest": f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}",
                      "size": rng.randint(1_000, 50_000_000), "locations": ["default"]}
                     for _ in range(blobs)]
        blob_ids = list(session.scalars(insert(Blob).returning(Blob.id), blob_rows))
        # The first `manifests` blobs are the configs (one each); the rest is the pool
        # of layers the manifests share.
        configs, pool = blob_ids[:manifests], blob_ids[manifests:] or blob_ids
        manifest_ids = list(session.scalars(insert(Manifest).returning(Manifest.id), [
            {"repository_id": repo_ids[i % REPOSITORIES],
             "digest": f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}",
             "media_type": "application/vnd.oci.image.manifest.v1+json",
             "size": 1000, "content": b"{}"} for i in range(manifests)]))
        links = []
        for index, manifest_id in enumerate(manifest_ids):
            chosen = {configs[index % len(configs)],
                      *rng.sample(pool, min(LAYERS_PER_MANIFEST, len(pool)))}
            links += [{"manifest_id": manifest_id, "blob_id": b} for b in chosen]
        session.execute(insert(ManifestBlob), links)
        return ns.id


def timed(label: str, function: Callable[[], object], runs: int) -> None:
    """Print the median and worst time of ``runs`` calls (after one warm-up)."""
    result = function()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    print(f"{label:<22} median {statistics.median(samples) * 1000:8.2f} ms   "
          f"max {max(samples) * 1000:8.2f} ms   -> {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--manifests", type=int, default=5000)
    parser.add_argument("--blobs", type=int, default=20000)
    parser.add_argument("--other-namespaces", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(7)
    with throwaway_database(args.sqlite) as uri:
        db = Database(create_db_engine(uri))
        Base.metadata.create_all(db.engine)
        started = time.perf_counter()
        ns_id = populate(db, "big", args.manifests, args.blobs, rng)
        for index in range(args.other_namespaces):
            populate(db, f"other-{index}", args.manifests, args.blobs, rng)
        if not args.sqlite:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        print(f"{'sqlite' if args.sqlite else 'postgresql'}: "
              f"{1 + args.other_namespaces} namespaces x {args.manifests} manifests, "
              f"{args.blobs} blobs each; inserted in {time.perf_counter() - started:.1f} s")
        with db.session() as session:
            repo_id = session.scalar(select(Repository.id)
                                     .where(Repository.namespace_id == ns_id).limit(1))
            new_digests = list(session.scalars(select(Blob.digest)
                                               .where(Blob.id.not_in(
                                                   _namespace_blob_ids(ns_id))).limit(6)))
            old_digests = list(session.scalars(select(Blob.digest)
                                               .where(Blob.id.in_(
                                                   _namespace_blob_ids(ns_id))).limit(6)))
            links = session.scalar(select(func.count()).select_from(ManifestBlob))
        print(f"manifest_blob rows in total: {links}")

        def with_session(work: Callable[[Session], object]) -> Callable[[], object]:
            def run() -> object:
                with db.session() as session:
                    return work(session)
            return run

        timed("namespace_usage", with_session(lambda s: namespace_usage(s, ns_id)), args.runs)
        timed("added bytes (push)", with_session(
            lambda s: QuotaGuard._added_bytes(s, ns_id, set(new_digests))), args.runs)
        timed("added bytes (re-push)", with_session(
            lambda s: QuotaGuard._added_bytes(s, ns_id, set(old_digests))), args.runs)
        timed("repository_usage", with_session(lambda s: repository_usage(s, repo_id)),
              args.runs)
        timed("registry_usage", with_session(registry_usage), args.runs)
        db.dispose()


if __name__ == "__main__":
    main()
