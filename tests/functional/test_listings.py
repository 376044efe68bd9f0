"""Tag lists, the catalog (with pagination) and the referrers API."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from functional.client import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    descriptor,
    error_codes,
    random_bytes,
    sha256,
    to_json,
)
from functional.conftest import Deployment, unique_repo

LINK_RE = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')


def next_page(response: httpx.Response) -> tuple[str, dict[str, list[str]]] | None:
    """The ``Link: <...>; rel="next"`` target as (path, query), or ``None``."""
    link = response.headers.get("Link")
    if link is None:
        return None
    match = LINK_RE.match(link)
    assert match, link
    url = urlsplit(match.group("url"))
    return url.path, parse_qs(url.query)


def walk(client: RegistryClient, path: str, key: str, n: int,
         repo: str | None = None) -> list[list[str]]:
    """Follow ``Link`` headers from ``path?n=<n>``; return every page's entries."""
    pages: list[list[str]] = []
    params: dict[str, str | list[str]] = {"n": str(n)}
    while True:
        response = client.request("GET", path, repo=repo, actions="pull", params=params,
                                  auth=client.basic if repo is None else None)
        assert response.status_code == 200, response.text
        pages.append(response.json()[key])
        following = next_page(response)
        if following is None:
            return pages
        next_path, query = following
        assert next_path == path
        assert query["n"] == [str(n)]
        params = {"n": query["n"][0], "last": query["last"][0]}


# --- tags -----------------------------------------------------------------------------------


@pytest.fixture
def tagged(alice: RegistryClient, repo: str) -> list[str]:
    """Five tags on one image in ``repo``, returned in lexical order."""
    image = alice.push_image(repo, "v1.0")
    tags = ["v1.0", "latest", "a", "Z-upper", "v2"]
    for tag in tags[1:]:
        alice.push_manifest(repo, tag, image.manifest)
    return sorted(tags)


def test_tags_list(alice: RegistryClient, repo: str, tagged: list[str]) -> None:
    response = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, actions="pull")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"name": repo, "tags": tagged}
    assert "Link" not in response.headers


def test_tags_pagination(alice: RegistryClient, repo: str, tagged: list[str]) -> None:
    pages = walk(alice, f"/v2/{repo}/tags/list", "tags", 2, repo=repo)
    assert pages == [tagged[0:2], tagged[2:4], tagged[4:5]]
    # n equal to the number of tags: one page, no Link.
    assert walk(alice, f"/v2/{repo}/tags/list", "tags", 5, repo=repo) == [tagged]
    # last alone continues after the given name.
    response = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo,
                             params={"last": tagged[2]})
    assert response.json()["tags"] == tagged[3:]


def test_tags_n_zero_and_bad_n(alice: RegistryClient, repo: str, tagged: list[str]) -> None:
    response = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, params={"n": "0"})
    assert response.status_code == 200
    assert response.json()["tags"] == []
    for bad in ("-1", "abc", "1.5", "9" * 30):
        response = alice.request("GET", f"/v2/{repo}/tags/list", repo=repo, params={"n": bad})
        if bad == "9" * 30:
            # Huge but well-formed: capped, not refused.
            assert response.status_code == 200
            assert response.json()["tags"] == tagged
            continue
        assert response.status_code == 400, bad
        assert error_codes(response) == ["PAGINATION_NUMBER_INVALID"], bad


def test_tags_of_empty_and_unknown_repository(alice: RegistryClient) -> None:
    empty = unique_repo("alice")
    alice.push_blob(empty, b"no manifests yet")
    response = alice.request("GET", f"/v2/{empty}/tags/list", repo=empty)
    assert response.status_code == 200
    assert response.json() == {"name": empty, "tags": []}
    unknown = unique_repo("alice")
    response = alice.request("GET", f"/v2/{unknown}/tags/list", repo=unknown)
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]


def test_tags_need_pull(alice: RegistryClient, bob: RegistryClient, anonymous: RegistryClient,
                        repo: str, tagged: list[str]) -> None:
    assert bob.request("GET", f"/v2/{repo}/tags/list", repo=repo).status_code == 403
    response = anonymous.http.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


# --- catalog --------------------------------------------------------------------------------


def test_catalog_shows_only_what_the_caller_may_see(registry: Deployment) -> None:
    carol = registry.client("carol")
    bob = registry.client("bob")
    names = sorted(f"carol/{name}" for name in ("zeta", "alpha", "team/app", "mid", "beta"))
    for name in names:
        if carol.request("GET", f"/v2/{name}/tags/list", repo=name).status_code == 404:
            carol.push_blob(name, b"catalog entry")
    bob_repo = unique_repo("bob")
    bob.push_blob(bob_repo, b"bob's")

    token = carol.token("registry:catalog:*")
    response = carol.http.get("/v2/_catalog", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"repositories": names}
    with_basic = carol.http.get("/v2/_catalog", auth=carol.basic)
    assert with_basic.json() == {"repositories": names}
    assert bob_repo not in with_basic.json()["repositories"]

    pages = walk(carol, "/v2/_catalog", "repositories", 2)
    assert pages == [names[0:2], names[2:4], names[4:5]]
    assert walk(carol, "/v2/_catalog", "repositories", 5) == [names]
    zero = carol.http.get("/v2/_catalog", params={"n": "0"}, auth=carol.basic)
    assert zero.status_code == 200
    assert zero.json() == {"repositories": []}
    after = carol.http.get("/v2/_catalog", params={"last": names[1]}, auth=carol.basic)
    assert after.json() == {"repositories": names[2:]}
    for bad in ("-3", "x"):
        response = carol.http.get("/v2/_catalog", params={"n": bad}, auth=carol.basic)
        assert response.status_code == 400, bad
        assert error_codes(response) == ["PAGINATION_NUMBER_INVALID"]


def test_catalog_anonymous(registry: Deployment, alice: RegistryClient) -> None:
    alice.push_blob(unique_repo("alice"), b"private")
    response = registry.client().http.get("/v2/_catalog")
    # Anonymous access is on but every repository here is private.
    assert response.status_code == 200
    assert response.json() == {"repositories": []}


def test_catalog_public_repositories(public_registry: Deployment) -> None:
    alice, bob = public_registry.client("alice"), public_registry.client("bob")
    repo = unique_repo("alice")
    alice.push_blob(repo, b"public")
    assert repo in bob.http.get("/v2/_catalog", auth=bob.basic).json()["repositories"]
    anonymous = public_registry.client().http.get("/v2/_catalog")
    assert anonymous.status_code == 200
    assert repo in anonymous.json()["repositories"]


def test_catalog_anonymous_access_off(anonymous_off_registry: Deployment) -> None:
    response = anonymous_off_registry.client().http.get("/v2/_catalog")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


# --- referrers --------------------------------------------------------------------------------


def push_referrer(client: RegistryClient, repo: str, subject: dict[str, object],
                  artifact_type: str | None, annotations: dict[str, str] | None = None,
                  config_type: str = OCI_EMPTY) -> str:
    """Push an artifact manifest whose ``subject`` is ``subject``; returns its digest."""
    config = b"{}" if config_type == OCI_EMPTY else to_json({"v": random_bytes(4).hex()})
    payload = random_bytes(32)
    client.push_blob(repo, config)
    client.push_blob(repo, payload)
    document: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [descriptor("application/octet-stream", payload)],
        "subject": subject,
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if annotations:
        document["annotations"] = annotations
    body = to_json(document)
    return client.push_manifest(repo, sha256(body), body)


def test_referrers(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "v1")
    signature = push_referrer(alice, repo, image.descriptor(), "application/vnd.example.sig",
                              {"org.example.signer": "alice"})
    sbom = push_referrer(alice, repo, image.descriptor(), "application/spdx+json")
    from_config = push_referrer(alice, repo, image.descriptor(), None,
                                config_type="application/vnd.example.config.v1+json")
    alice.push_image(repo, "unrelated")

    response = alice.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo,
                             actions="pull")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in response.headers
    index = response.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {signature, sbom, from_config}
    assert by_digest[signature]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[signature]["annotations"] == {"org.example.signer": "alice"}
    assert by_digest[signature]["mediaType"] == OCI_MANIFEST
    assert by_digest[sbom]["artifactType"] == "application/spdx+json"
    assert "annotations" not in by_digest[sbom]
    # Without artifactType, the config's media type stands in for it.
    assert by_digest[from_config]["artifactType"] == "application/vnd.example.config.v1+json"
    for digest, entry in by_digest.items():
        got = alice.request("GET", f"/v2/{repo}/manifests/{digest}", repo=repo)
        assert entry["size"] == len(got.content)

    filtered = alice.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo,
                             params={"artifactType": "application/spdx+json"})
    assert filtered.status_code == 200
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [sbom]


def test_referrers_of_index_subject(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo)
    index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                     "manifests": [image.descriptor()]})
    index_digest = alice.push_manifest(repo, "idx", index, OCI_INDEX)
    subject = {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index)}
    referrer = push_referrer(alice, repo, subject, "application/vnd.example.sig")
    response = alice.request("GET", f"/v2/{repo}/referrers/{index_digest}", repo=repo)
    assert [d["digest"] for d in response.json()["manifests"]] == [referrer]


def test_referrers_of_unknown_subject(alice: RegistryClient, repo: str) -> None:
    alice.push_image(repo, "v1")
    response = alice.request("GET", f"/v2/{repo}/referrers/{sha256(b'nothing')}", repo=repo)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    filtered = alice.request("GET", f"/v2/{repo}/referrers/{sha256(b'nothing')}", repo=repo,
                             params={"artifactType": "application/x"})
    assert filtered.status_code == 200
    assert filtered.json()["manifests"] == []


def test_referrers_bad_digest_and_permissions(alice: RegistryClient, bob: RegistryClient,
                                              repo: str) -> None:
    image = alice.push_image(repo, "v1")
    response = alice.request("GET", f"/v2/{repo}/referrers/sha256:short", repo=repo)
    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    response = alice.request("GET", f"/v2/{repo}/referrers/latest", repo=repo)
    assert response.status_code == 400
    denied = bob.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo)
    assert denied.status_code == 403


def test_referrer_deleted_disappears(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "v1")
    signature = push_referrer(alice, repo, image.descriptor(), "application/vnd.example.sig")
    assert alice.request("DELETE", f"/v2/{repo}/manifests/{signature}",
                         repo=repo).status_code == 202
    response = alice.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo)
    assert response.json()["manifests"] == []


def test_referrer_config_type(alice: RegistryClient, repo: str) -> None:
    image = alice.push_image(repo, "v1")
    push_referrer(alice, repo, image.descriptor(), None, config_type=OCI_CONFIG)
    response = alice.request("GET", f"/v2/{repo}/referrers/{image.digest}", repo=repo,
                             params={"artifactType": OCI_CONFIG})
    assert len(response.json()["manifests"]) == 1
