"""The skopeo round trip with PostgreSQL as the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import OCILayout, Skopeo, skopeo_round_trip
from support.e2e import Registry, need_layout, start_registry, unavailable
from support.server import POSTGRES_ADMIN_URI, postgres_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry on a fresh PostgreSQL database (dropped afterwards)."""
    try:
        import psycopg

        psycopg.connect(POSTGRES_ADMIN_URI, connect_timeout=5).close()
    except Exception as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URI}: {exc}")
    with postgres_database() as uri, start_registry(
        tmp_path_factory.mktemp("pg-registry"), db_uri=uri
    ) as reg:
        yield reg


def test_round_trip_on_postgres(pg_registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    """debian-minbase there and back; inspect, list-tags and delete work on PostgreSQL."""
    layout, tag = need_layout("debian-minbase")
    skopeo.logs.append(pg_registry.server.log_path)
    repo = "alice/team/app"
    trip = skopeo_round_trip(skopeo, layout, tag, pg_registry.ref(repo, "v1"),
                             pg_registry.creds, tmp_path / "trip")
    assert trip.pushed_digest == trip.source_digest
    assert trip.served == OCILayout(layout).blob(trip.source_digest)
    assert trip.pulled_digest == trip.source_digest

    helm, helm_tag = need_layout("helm-artifact")
    skopeo.copy(f"oci:{helm}:{helm_tag}", pg_registry.ref(repo, "chart"),
                dest_creds=pg_registry.creds)
    repo_ref = f"docker://{pg_registry.host}/{repo}"
    assert sorted(skopeo.list_tags(repo_ref, pg_registry.creds)) == ["chart", "v1"]
    assert skopeo.inspect(pg_registry.ref(repo, "v1"), pg_registry.creds)["Digest"] == (
        trip.source_digest)

    skopeo.delete(pg_registry.ref(repo, "v1"), pg_registry.creds)
    assert skopeo.list_tags(repo_ref, pg_registry.creds) == ["chart"]
