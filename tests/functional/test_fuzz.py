"""Nothing ever answers 5xx: random manifests, headers, paths and queries (Hypothesis).

The fixtures also fail a test if the server logged a traceback while it ran.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functional.client import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    raw_request,
    sha256,
)
from functional.conftest import Deployment, unique_repo

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST,
               "application/vnd.docker.distribution.manifest.v1+prettyjws",
               "application/vnd.docker.distribution.manifest.v1+json",
               "application/json", "text/plain", "", "application/vnd.oci.image.manifest.v1+json;"
               " charset=utf-8", "\u00e9/\u00e9"]
KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject",
        "artifactType", "annotations", "digest", "size", "urls", "platform"]

KNOWN_BLOB = b"0123456789" * 10

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                      max_size=80)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), st.text(max_size=20),
                         st.sampled_from(MEDIA_TYPES),
                         st.sampled_from([sha256(b"x"), "sha256:abc", "sha512:" + "0" * 128]))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children,
                        max_size=6),
    ),
    max_leaves=25,
)
manifest_like = st.fixed_dictionaries(
    {"schemaVersion": st.one_of(st.just(2), json_scalars)},
    optional={key: json_values for key in KEYS[1:]},
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    manifest_like.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@pytest.fixture
def fuzz_repo(alice: RegistryClient) -> str:
    """A repository of alice's with one image in it (so references can resolve)."""
    repo = unique_repo("alice", "fuzz")
    alice.push_image(repo, "base")
    alice.push_blob(repo, KNOWN_BLOB)
    return repo


@FUZZ
@given(body=bodies,
       content_type=st.one_of(st.sampled_from(MEDIA_TYPES), header_text.map(str.strip)),
       reference=st.one_of(st.sampled_from(["latest", "v1", sha256(b"x"), "sha256:abc"]),
                           st.text(alphabet="abcXYZ019._-:", min_size=1, max_size=20)))
def test_manifest_put_never_fails(alice: RegistryClient, fuzz_repo: str, body: bytes,
                                  content_type: str, reference: str) -> None:
    token = alice.token(f"repository:{fuzz_repo}:pull,push")
    response = alice.http.put(f"/v2/{fuzz_repo}/manifests/{reference}", content=body,
                              headers={b"Authorization": f"Bearer {token}".encode(),
                                       b"Content-Type": content_type.encode()})
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.status_code in (201, 400, 404, 405, 413, 415), response.text


segment = st.one_of(
    st.sampled_from(["alice", "bob", "v2", "blobs", "uploads", "manifests", "tags", "list",
                     "referrers", "_catalog", "auth", "..", ".", "", "%2e%2e", "%2F", "%00",
                     "%ff", "%", "sha256:" + "a" * 64, "sha256:", "latest", "x" * 300,
                     "%C3%A9", "~", "@", "+"]),
    st.text(alphabet="abcAZ019._-:%~+@!$&'()*,;=", max_size=12),
)
methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
queries = st.one_of(
    st.just(""),
    st.lists(st.tuples(st.sampled_from(["n", "last", "digest", "mount", "from",
                                        "artifactType", "scope", "service"]),
                       st.text(alphabet="abc019:/,_-.%", max_size=20)),
             max_size=3).map(lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)),
)


@FUZZ
@given(method=methods, segments=st.lists(segment, max_size=7), query=queries,
       body=st.binary(max_size=200), authenticated=st.booleans())
def test_random_paths_never_fail(registry: Deployment, alice: RegistryClient, method: str,
                                 segments: list[str], query: str, body: bytes,
                                 authenticated: bool) -> None:
    target = "/v2/" + "/".join(segments) + query
    headers = {"Authorization": f"Bearer {alice.token()}"} if authenticated else {}
    status, _, payload = raw_request(registry.registry.port, method, target, headers,
                                     body if method in ("PUT", "POST", "PATCH") else b"")
    assert status < 500, (method, target, status, payload[:300])


@FUZZ
@given(headers=st.dictionaries(
    st.sampled_from(["Range", "Content-Range", "Accept", "Authorization", "Content-Type",
                     "If-None-Match", "Docker-Upload-UUID"]),
    st.one_of(header_text, st.sampled_from(["bytes=0-", "bytes=-1", "bytes=5-1", "0-10",
                                            "bytes 0-0/*", "Bearer x.y.z", "Basic Og==",
                                            "bytes=0-1,3-4", "bytes=99999999999999999999-"])),
    max_size=4),
    target=st.sampled_from(["blob", "manifest", "upload", "tags", "referrers", "base"]),
    method=methods, body=st.binary(max_size=300))
def test_random_headers_never_fail(registry: Deployment, alice: RegistryClient,
                                   fuzz_repo: str, headers: dict[str, Any], target: str,
                                   method: str, body: bytes) -> None:
    paths = {
        "blob": f"/v2/{fuzz_repo}/blobs/{sha256(KNOWN_BLOB)}",
        "manifest": f"/v2/{fuzz_repo}/manifests/base",
        "upload": alice.start_upload(fuzz_repo) if target == "upload" else "",
        "tags": f"/v2/{fuzz_repo}/tags/list?n=1",
        "referrers": f"/v2/{fuzz_repo}/referrers/{sha256(b'x')}",
        "base": "/v2/",
    }
    if "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {alice.token(f'repository:{fuzz_repo}:pull,push')}"
    status, _, payload = raw_request(registry.registry.port, method, paths[target], headers,
                                     body if method in ("PUT", "POST", "PATCH") else b"")
    assert status < 500, (method, paths[target], headers, status, payload[:300])
