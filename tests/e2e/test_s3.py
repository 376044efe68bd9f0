"""The skopeo round trip with blobs in S3 (a real moto server on loopback).

Blob downloads are redirected to presigned S3 URLs by default; with
``FEATURE_PROXY_STORAGE`` Portside streams them itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.clients import OCILayout, Skopeo, sha256_digest, skopeo_round_trip
from support.e2e import Registry, need_layout, start_registry, unavailable
from support.s3server import S3Endpoint, create_bucket, running_s3_server

pytestmark = pytest.mark.e2e

STORAGE_PATH = "/registry"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A moto S3 server for this module."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        unavailable(f"moto[server] is not installed: {exc}")
    with running_s3_server() as endpoint:
        yield endpoint


def s3_storage(endpoint: S3Endpoint, bucket: str) -> dict[str, Any]:
    """``DISTRIBUTED_STORAGE_CONFIG`` for one bucket, configured the Quay way."""
    return {"default": ["S3Storage", {
        "s3_bucket": bucket,
        "s3_access_key": endpoint.access_key,
        "s3_secret_key": endpoint.secret_key,
        "host": endpoint.host,
        "port": endpoint.port,
        "is_secure": False,
        "storage_path": STORAGE_PATH,
        "s3_region": endpoint.region,
    }]}


@pytest.mark.parametrize("proxy", [False, True], ids=["redirect", "proxy"])
def test_round_trip_on_s3(s3: S3Endpoint, skopeo: Skopeo, tmp_path: Path, proxy: bool) -> None:
    """debian-minbase and multiarch-index (--all) there and back through S3."""
    bucket = create_bucket(s3)
    with start_registry(tmp_path / "registry", storage=s3_storage(s3, bucket),
                        FEATURE_PROXY_STORAGE=proxy) as registry:
        skopeo.logs.append(registry.server.log_path)
        repo = "alice/s3/app"
        for layout_name, all_images in (("debian-minbase", False), ("multiarch-index", True)):
            layout, tag = need_layout(layout_name)
            trip = skopeo_round_trip(skopeo, layout, tag, registry.ref(repo, layout_name),
                                     registry.creds, tmp_path / layout_name,
                                     all_images=all_images)
            assert trip.pushed_digest == trip.source_digest
            assert trip.served == OCILayout(layout).blob(trip.source_digest)
            assert trip.pulled_digest == trip.source_digest
            if all_images:
                assert len(trip.pulled_images) == 2

        # The blobs really are in the bucket, under the configured prefix.
        layout, tag = need_layout("debian-minbase")
        manifest = OCILayout(layout).json_blob(OCILayout(layout).descriptor(tag)["digest"])
        layer = manifest["layers"][0]
        keys = [obj["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for obj in page.get("Contents", [])]
        hexpart = layer["digest"].split(":", 1)[1]
        assert any(key.startswith("registry/") and hexpart in key for key in keys), keys[:20]

        _check_blob_delivery(registry, s3, repo, layer, proxy)


def _check_blob_delivery(registry: Registry, s3: S3Endpoint, repo: str,
                         layer: dict[str, Any], proxy: bool) -> None:
    """A blob GET redirects to a presigned S3 URL, or is streamed by Portside (proxy)."""
    with registry.http() as http:
        response = http.get(f"/v2/{repo}/blobs/{layer['digest']}", follow_redirects=False)
        if proxy:
            assert response.status_code == 200
            content = response.content
        else:
            assert response.status_code == 307, response.text
            location = response.headers["location"]
            assert location.startswith(f"{s3.endpoint_url}/"), location
            assert "Signature" in location or "X-Amz-Signature" in location
            # The presigned URL works without the registry's credentials.
            content = httpx.get(location, timeout=60).content
        assert len(content) == layer["size"]
        assert sha256_digest(content) == layer["digest"]
