"""Pull-through proxy cache: Quay's ``/api/v1/organization/{org}/proxycache`` and pulls
through ``/v2`` of a Portside server whose proxy-cache organizations front real
upstreams (Debian's ``docker-registry`` on loopback: plain HTTP and anonymous, or HTTPS
with a self-signed CA and htpasswd Basic auth), plus a real ``skopeo copy``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from functional.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, error_codes, sha256, to_json
from functional.conftest import PASSWORDS, Deployment, RegistryPool, _deployment
from functional.test_api_organizations import api, in_db, unique_org
from portside.db.models import Blob, BlobUpload, Namespace, Repository, Tag
from support.clients import Skopeo
from support.distribution import (
    Distribution,
    DistributionClient,
    distribution_available,
    running_distribution,
)

pytestmark = pytest.mark.skipif(not distribution_available(),
                                reason="Debian's docker-registry is not installed")

UPSTREAM_USER, UPSTREAM_PASSWORD = "cacheuser", "upstream-secret-pw"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX,
                    "application/vnd.docker.distribution.manifest.v2+json"])


@pytest.fixture
def cache(registries: RegistryPool) -> Iterator[Deployment]:
    """A server with ``FEATURE_PROXY_CACHE`` (private cached repositories)."""
    yield from _deployment(registries, "proxy-cache")


@pytest.fixture
def public_cache(registries: RegistryPool) -> Iterator[Deployment]:
    """The same with ``CREATE_PRIVATE_REPO_ON_PUSH: false`` (anonymous pulls)."""
    yield from _deployment(registries, "proxy-cache-public")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """docker-registry over plain HTTP, anonymous (stays up for the whole module)."""
    with running_distribution(tmp_path_factory.mktemp("upstream-plain")) as registry:
        yield registry


@pytest.fixture(scope="module")
def secure_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """docker-registry over HTTPS (self-signed CA) with htpasswd Basic auth."""
    with running_distribution(tmp_path_factory.mktemp("upstream-tls"), tls=True,
                              users={UPSTREAM_USER: UPSTREAM_PASSWORD}) as registry:
        yield registry


# --- helpers ------------------------------------------------------------------------------
def create_cache_org(deployment: Deployment, upstream_registry: str, *,
                     username: str | None = None, password: str | None = None,
                     expiration_s: int | None = None, insecure: bool = True,
                     owner: str = "alice") -> str:
    """A new organization of ``owner`` configured as a cache of ``upstream_registry``."""
    org = unique_org("cache")
    with api(deployment, owner) as client:
        created = client.post("/organization/", json={"name": org, "email": f"{org}@x.io"})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = {"org_name": org, "upstream_registry": upstream_registry,
                                "insecure": insecure}
        if username is not None:
            body.update(upstream_registry_username=username,
                        upstream_registry_password=password)
        if expiration_s is not None:
            body["expiration_s"] = expiration_s
        response = client.post(f"/organization/{org}/proxycache", json=body)
        assert response.status_code == 201, response.text
        assert response.json() == "Created"
    return org


def add_member(deployment: Deployment, org: str, member: str) -> None:
    """Put ``member`` in a ``readers`` team (role ``member``) of ``org``."""
    with api(deployment, "alice") as client:
        team = client.put(f"/organization/{org}/team/readers", json={"role": "member"})
        assert team.status_code == 200, team.text
        added = client.put(f"/organization/{org}/team/readers/members/{member}")
        assert added.status_code == 200, added.text


def get_manifest(client: RegistryClient, repo: str, reference: str,
                 method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/manifests/{reference}", repo=repo,
                          actions="pull", headers={"Accept": ACCEPT})


def get_blob(client: RegistryClient, repo: str, digest: str,
             method: str = "GET") -> httpx.Response:
    return client.request(method, f"/v2/{repo}/blobs/{digest}", repo=repo, actions="pull")


def tag_expiry_ms(deployment: Deployment, org: str, repo: str, tag: str) -> int | None:
    """The active tag's ``expiration_ms`` in the server's database."""
    db = in_db(deployment)
    try:
        with db.session() as session:
            row = session.execute(
                select(Tag.expiration_ms)
                .join(Repository, Repository.id == Tag.repository_id)
                .join(Namespace, Namespace.id == Repository.namespace_id)
                .where(Namespace.name == org, Repository.name == repo, Tag.name == tag,
                       Tag.lifetime_end_ms.is_(None))
            ).first()
            return None if row is None else row[0]
    finally:
        db.dispose()


def stored_blob_and_uploads(deployment: Deployment, digest: str) -> tuple[bool, int]:
    """Whether a blob row exists for ``digest``, and how many uploads are open."""
    db = in_db(deployment)
    try:
        with db.session() as session:
            blob = session.scalar(select(Blob.id).where(Blob.digest == digest))
            uploads = len(session.scalars(select(BlobUpload.id)).all())
            return blob is not None, uploads
    finally:
        db.dispose()


# --- configuration API ----------------------------------------------------------------------
def test_configuration_api(cache: Deployment, upstream: Distribution,
                           secure_upstream: Distribution) -> None:
    org = create_cache_org(cache, f"{upstream.host}/library", username="u",
                           password="top-secret-pw", expiration_s=3600)
    with api(cache, "alice") as alice, api(cache, "bob") as bob, api(cache) as anonymous:
        view = alice.get(f"/organization/{org}/proxycache")
        assert view.status_code == 200, view.text
        assert view.json() == {"upstream_registry": f"{upstream.host}/library",
                               "expiration_s": 3600, "insecure": True}
        assert "top-secret-pw" not in view.text
        again = alice.post(f"/organization/{org}/proxycache",
                           json={"upstream_registry": upstream.host})
        assert again.status_code == 400
        # Outsiders neither read nor change it.
        assert bob.get(f"/organization/{org}/proxycache").status_code == 403
        assert bob.delete(f"/organization/{org}/proxycache").status_code == 403
        assert anonymous.get(f"/organization/{org}/proxycache").status_code == 401

        other = unique_org("cache")
        assert alice.post("/organization/", json={"name": other, "email": f"{other}@x.io"}
                          ).status_code == 201
        for bad in ({"upstream_registry": "https://quay.io"},
                    {"upstream_registry": "user:pw@quay.io"},
                    {"upstream_registry": "quay.io/UPPER"},
                    {"upstream_registry": "169.254.169.254"},   # SSRF policy: link-local
                    {"upstream_registry": "quay.io", "expiration_s": 5},
                    {"upstream_registry": "quay.io", "upstream_registry_username": "x"},
                    {"upstream_registry": ""}):
            refused = alice.post(f"/organization/{other}/proxycache", json=bad)
            assert refused.status_code in (400, 422), (bad, refused.text)
        assert alice.get(f"/organization/{other}/proxycache").json()["upstream_registry"] == ""

        # validateproxycache tries the upstream.
        valid = alice.post(f"/organization/{other}/validateproxycache",
                           json={"upstream_registry": upstream.host, "insecure": True})
        assert (valid.status_code, valid.json()) == (202, "Anonymous")
        creds = {"upstream_registry": secure_upstream.host, "insecure": True,
                 "upstream_registry_username": UPSTREAM_USER}
        good = alice.post(f"/organization/{other}/validateproxycache",
                          json={**creds, "upstream_registry_password": UPSTREAM_PASSWORD})
        assert (good.status_code, good.json()) == (202, "Valid")
        wrong = alice.post(f"/organization/{other}/validateproxycache",
                           json={**creds, "upstream_registry_password": "wrong-pw-123"})
        assert wrong.status_code == 400 and "wrong-pw-123" not in wrong.text
        strict = alice.post(f"/organization/{other}/validateproxycache",
                            json={"upstream_registry": secure_upstream.host})
        assert strict.status_code == 400  # certificate not trusted without insecure

        deleted = alice.delete(f"/organization/{org}/proxycache")
        assert (deleted.status_code, deleted.json()) == (201, "Deleted")
        assert alice.get(f"/organization/{org}/proxycache").json()["upstream_registry"] == ""
        assert alice.delete(f"/organization/{org}/proxycache").status_code == 404


def test_configuration_api_is_hidden_without_the_feature(registry: Deployment) -> None:
    with api(registry, "alice") as alice:
        assert alice.get("/organization/whatever/proxycache").status_code == 404


# --- pulls --------------------------------------------------------------------------------
def test_pull_through_caches_and_serves_while_upstream_is_down(
        cache: Deployment, tmp_path: Path) -> None:
    with running_distribution(tmp_path / "upstream") as upstream:
        with upstream.client() as pusher:
            image = pusher.push_image("library/alpine", "3", layers=2,
                                      layer_size=2 * 1024 * 1024 + 5)
        org = create_cache_org(cache, upstream.host, expiration_s=7200)
        add_member(cache, org, "bob")
        bob = cache.client("bob")
        repo = f"{org}/library/alpine"

        # HEAD behaves like GET: it caches the tag.
        head = get_manifest(bob, repo, "3", "HEAD")
        assert head.status_code == 200, head.text
        assert head.headers["Docker-Content-Digest"] == image.digest
        started = time.time() * 1000
        pulled = get_manifest(bob, repo, "3")
        assert pulled.status_code == 200, pulled.text
        assert pulled.content == image.manifest
        assert pulled.headers["Content-Type"] == OCI_MANIFEST
        expiry = tag_expiry_ms(cache, org, "library/alpine", "3")
        assert expiry is not None and started + 7000_000 <= expiry <= started + 7300_000
        # Blobs stream through while they are stored.
        assert get_blob(bob, repo, sha256(image.config), "HEAD").headers[
            "Content-Length"] == str(len(image.config))
        for blob in (image.config, *image.layers):
            response = get_blob(bob, repo, sha256(blob))
            assert response.status_code == 200, response.text
            assert response.content == blob
        assert stored_blob_and_uploads(cache, sha256(image.layers[0]))[0]

        # The repository exists in the organization, in state NORMAL.
        with api(cache, "alice") as alice:
            info = alice.get(f"/repository/{repo}")
            assert info.status_code == 200, info.text
            assert info.json()["state"] == "NORMAL"
        upstream.stop()
        time.sleep(0.01)
        again = get_manifest(bob, repo, "3")
        assert again.status_code == 200 and again.content == image.manifest
        assert get_manifest(bob, repo, image.digest).content == image.manifest
        for blob in (image.config, *image.layers):
            assert get_blob(bob, repo, sha256(blob)).content == blob
        # Renewed by the pull even though the upstream is down.
        assert (tag_expiry_ms(cache, org, "library/alpine", "3") or 0) >= expiry
        # Never fetched and the upstream is down: a clean 404.
        missing = get_manifest(bob, repo, "never-pulled")
        assert missing.status_code == 404 and error_codes(missing) == ["MANIFEST_UNKNOWN"]
        blob_missing = get_blob(bob, repo, sha256(b"never"))
        assert blob_missing.status_code == 404 and error_codes(blob_missing) == ["BLOB_UNKNOWN"]


def test_moved_upstream_tag_is_refreshed_and_prefix_prepended(
        cache: Deployment, upstream: Distribution) -> None:
    name = f"refresh-{time.monotonic_ns()}"
    with upstream.client() as pusher:
        first = pusher.push_image(f"library/{name}", "latest")
    org = create_cache_org(cache, f"{upstream.host}/library")
    alice = cache.client("alice")
    repo = f"{org}/{name}"  # the prefix "library" comes from the configuration
    assert get_manifest(alice, repo, "latest").content == first.manifest
    with upstream.client() as pusher:
        second = pusher.push_image(f"library/{name}", "latest")
    refreshed = get_manifest(alice, repo, "latest")
    assert refreshed.status_code == 200
    assert refreshed.headers["Docker-Content-Digest"] == second.digest
    assert refreshed.content == second.manifest
    # The earlier manifest stays reachable by digest; an unknown tag is a 404.
    assert get_manifest(alice, repo, first.digest).content == first.manifest
    assert get_manifest(alice, repo, "nope").status_code == 404
    tags = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert tags.json()["tags"] == ["latest"]


def test_index_and_children_by_digest(cache: Deployment, upstream: Distribution) -> None:
    name = f"multi-{time.monotonic_ns()}"
    with upstream.client() as pusher:
        amd = pusher.push_image(f"ns/{name}")
        arm = pusher.push_image(f"ns/{name}")
        index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            amd.descriptor(platform={"os": "linux", "architecture": "amd64"}),
            arm.descriptor(platform={"os": "linux", "architecture": "arm64"})]})
        pusher.push_manifest(f"ns/{name}", "v1", index, OCI_INDEX)
    org = create_cache_org(cache, upstream.host)
    alice = cache.client("alice")
    repo = f"{org}/ns/{name}"
    pulled = get_manifest(alice, repo, "v1")
    assert pulled.content == index and pulled.headers["Content-Type"] == OCI_INDEX
    child = get_manifest(alice, repo, amd.digest)
    assert child.content == amd.manifest
    assert get_blob(alice, repo, sha256(amd.layers[0])).content == amd.layers[0]


def test_pushes_into_a_cache_are_refused(cache: Deployment, upstream: Distribution) -> None:
    org = create_cache_org(cache, upstream.host)
    alice = cache.client("alice")  # administers the organization
    repo = f"{org}/library/pushed"
    token = alice.token_response(f"repository:{repo}:pull,push")
    assert token.status_code == 200
    response = alice.http.post(f"/v2/{repo}/blobs/uploads/", auth=("alice", PASSWORDS["alice"]))
    assert response.status_code in (401, 403), response.text
    bearer = alice.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo)
    assert bearer.status_code in (401, 403), bearer.text


def test_who_may_pull(cache: Deployment, public_cache: Deployment,
                      upstream: Distribution) -> None:
    name = f"perm-{time.monotonic_ns()}"
    with upstream.client() as pusher:
        image = pusher.push_image(f"library/{name}", "1")
    org = create_cache_org(cache, upstream.host)
    repo = f"{org}/library/{name}"
    # Not a member: refused, and nothing is created.
    refused = get_manifest(cache.client("bob"), repo, "1")
    assert refused.status_code in (401, 403), refused.text
    anonymous = cache.client().request("GET", f"/v2/{repo}/manifests/1")
    assert anonymous.status_code == 401
    with api(cache, "alice") as alice:
        assert alice.get(f"/repository/{repo}").status_code == 404
    # A member of any team pulls (and thereby creates the cached repository).
    add_member(cache, org, "carol")
    assert get_manifest(cache.client("carol"), repo, "1").content == image.manifest
    # The repository is private: bob still cannot pull it.
    assert get_manifest(cache.client("bob"), repo, "1").status_code in (401, 403)
    # Without the configuration the organization is ordinary; it cannot become a cache
    # again while it holds repositories.
    with api(cache, "alice") as alice:
        assert alice.delete(f"/organization/{org}/proxycache").status_code == 201
        again = alice.post(f"/organization/{org}/proxycache",
                           json={"upstream_registry": upstream.host, "insecure": True})
        assert again.status_code == 400 and "without repositories" in again.text

    # Where new repositories are public, anyone may pull through the cache.
    public_org = create_cache_org(public_cache, upstream.host)
    public_repo = f"{public_org}/library/{name}"
    anonymous_client = public_cache.client()
    response = anonymous_client.http.get(
        f"/v2/{public_repo}/manifests/1", headers={
            "Accept": ACCEPT,
            "Authorization": "Bearer " + str(anonymous_client.token_response(
                f"repository:{public_repo}:pull", auth=None).json()["token"])})
    assert response.status_code == 200, response.text
    assert response.content == image.manifest


def test_authenticated_tls_upstream_and_several_caches(
        cache: Deployment, upstream: Distribution, secure_upstream: Distribution) -> None:
    name = f"secure-{time.monotonic_ns()}"
    with secure_upstream.client() as pusher:
        secure_image = pusher.push_image(f"team/{name}", "v1")
    with upstream.client() as pusher:
        plain_image = pusher.push_image(f"team/{name}", "v1")
    secure_org = create_cache_org(cache, secure_upstream.host, username=UPSTREAM_USER,
                                  password=UPSTREAM_PASSWORD)
    plain_org = create_cache_org(cache, upstream.host)
    wrong_org = create_cache_org(cache, secure_upstream.host, username=UPSTREAM_USER,
                                 password="wrong-pw-456")
    alice = cache.client("alice")
    secure = get_manifest(alice, f"{secure_org}/team/{name}", "v1")
    assert secure.status_code == 200, secure.text
    assert secure.content == secure_image.manifest
    assert get_blob(alice, f"{secure_org}/team/{name}",
                    sha256(secure_image.layers[0])).content == secure_image.layers[0]
    assert get_manifest(alice, f"{plain_org}/team/{name}", "v1").content == plain_image.manifest
    refused = get_manifest(alice, f"{wrong_org}/team/{name}", "v1")
    assert refused.status_code == 404 and error_codes(refused) == ["MANIFEST_UNKNOWN"]
    assert "wrong-pw-456" not in refused.text
    assert "wrong-pw-456" not in cache.registry.log_path.read_text(errors="replace")


def test_client_going_away_stores_nothing(cache: Deployment, upstream: Distribution) -> None:
    name = f"big-{time.monotonic_ns()}"
    with upstream.client() as pusher:
        image = pusher.push_image(f"library/{name}", "1", layer_size=48 * 1024 * 1024)
    layer = image.layers[0]
    digest = sha256(layer)
    org = create_cache_org(cache, upstream.host)
    alice = cache.client("alice")
    repo = f"{org}/library/{name}"
    assert get_manifest(alice, repo, "1").status_code == 200
    headers = alice.auth_headers(repo, "pull")
    with httpx.Client(base_url=cache.url, timeout=30) as http, \
            http.stream("GET", f"/v2/{repo}/blobs/{digest}", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(layer))
        received = next(response.iter_raw(65536))
        assert received == layer[:len(received)]
    # The partial upload is discarded and no blob row appears.
    deadline = time.monotonic() + 15
    state = stored_blob_and_uploads(cache, digest)
    while state != (False, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
        state = stored_blob_and_uploads(cache, digest)
    assert state == (False, 0)
    # A full pull later gets (and caches) the right bytes.
    complete = get_blob(alice, repo, digest)
    assert complete.status_code == 200 and complete.content == layer
    # The blob is committed once its last bytes were verified, just after they were sent.
    deadline = time.monotonic() + 15
    while stored_blob_and_uploads(cache, digest) != (True, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored_blob_and_uploads(cache, digest) == (True, 0)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copies_from_the_cache(cache: Deployment, upstream: Distribution,
                                      tmp_path: Path) -> None:
    name = f"skopeo-{time.monotonic_ns()}"
    with upstream.client() as pusher:
        image = pusher.push_image(f"library/{name}", "3", layers=3, layer_size=300_000)
    org = create_cache_org(cache, upstream.host)
    skopeo = Skopeo("skopeo", tmp_path / "skopeo-state", logs=[cache.registry.log_path])
    target = tmp_path / "copied"
    skopeo.copy(f"docker://{cache.registry.host}/{org}/library/{name}:3", f"dir:{target}",
                src_creds=f"alice:{PASSWORDS['alice']}")
    assert (target / "manifest.json").read_bytes() == image.manifest
    for blob in (image.config, *image.layers):
        assert (target / sha256(blob).split(":", 1)[1]).read_bytes() == blob
    # skopeo's pull cached every layer on the way.
    assert len(json.loads(image.manifest)["layers"]) == 3
    for blob in image.layers:
        assert stored_blob_and_uploads(cache, sha256(blob))[0]


def test_distribution_client_helper_is_real(upstream: Distribution) -> None:
    """The fixture's client talks to the real registry (guards the other tests)."""
    with DistributionClient(upstream.url, None) as client:
        image = client.push_image("check/helper", "t")
        response = client.http.get("/v2/check/helper/manifests/t",
                                   headers={"Accept": OCI_MANIFEST})
        assert response.content == image.manifest
