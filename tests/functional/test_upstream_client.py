"""The upstream registry client against real registries on loopback.

Upstreams: Debian's ``docker-registry`` (plain HTTP; HTTPS with a test CA and htpasswd
Basic auth) and a running Portside (Docker token auth), plus a tiny HTTP server that
redirects blob downloads to a second origin (to see which headers reach "storage").
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from functional.client import DOCKER_MANIFEST, OCI_MANIFEST, sha256
from functional.conftest import LOOPBACK, PASSWORDS, Deployment, unique_repo
from portside.services.outbound import OutboundPolicy
from portside.services.upstream import (
    UpstreamClient,
    UpstreamError,
    UpstreamNotFound,
    UpstreamSettings,
    UpstreamUnauthorized,
    UpstreamUnavailable,
    parse_upstream_reference,
)
from support.distribution import Distribution, distribution_available, running_distribution

pytestmark = pytest.mark.skipif(not distribution_available(),
                                reason="Debian's docker-registry is not installed")

T = TypeVar("T")
POLICY = OutboundPolicy(LOOPBACK, connect_timeout_s=3, read_timeout_s=10)
UPSTREAM_USER, UPSTREAM_PASSWORD = "mirror", "upstream-secret-pw"


def run(factory: Callable[[UpstreamClient], Coroutine[Any, Any, T]],
        settings: UpstreamSettings, policy: OutboundPolicy = POLICY) -> T:
    """Run ``factory(client)`` with a fresh client, closed afterwards."""

    async def main() -> T:
        async with UpstreamClient(settings, policy) as client:
            return await factory(client)

    return asyncio.run(main())


async def read_blob(client: UpstreamClient, repo: str, digest: str) -> tuple[int, bytes, int]:
    stream = await client.open_blob(repo, digest)
    parts, chunks = [], 0
    async for chunk in stream.chunks:
        parts.append(chunk)
        chunks += 1
    return stream.size, b"".join(parts), chunks


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """docker-registry over plain HTTP, anonymous."""
    with running_distribution(tmp_path_factory.mktemp("dist-plain")) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """docker-registry over HTTPS (test CA) with htpasswd Basic auth."""
    with running_distribution(tmp_path_factory.mktemp("dist-tls"), tls=True,
                              users={UPSTREAM_USER: UPSTREAM_PASSWORD}) as upstream:
        yield upstream


# --- references ---------------------------------------------------------------------------
@pytest.mark.parametrize(("reference", "expected"), [
    ("host:5000/ns/name", ("host:5000", "ns/name")),
    ("registry.example.com/library/alpine", ("registry.example.com", "library/alpine")),
    ("localhost/alpine", ("localhost", "alpine")),
    ("127.0.0.1:5000/a/b/c", ("127.0.0.1:5000", "a/b/c")),
    ("[::1]:5000/ns/app", ("[::1]:5000", "ns/app")),
])
def test_parse_upstream_reference(reference: str, expected: tuple[str, str]) -> None:
    assert parse_upstream_reference(reference) == expected


@pytest.mark.parametrize("reference", [
    "library/alpine", "alpine", "ns/name/deeper", "host:5000", "host:5000/",
    "host:5000/UPPER/case", "bad host.com/x", "",
])
def test_parse_upstream_reference_refuses(reference: str) -> None:
    with pytest.raises(ValueError):
        parse_upstream_reference(reference)


# --- plain HTTP, anonymous ------------------------------------------------------------------
def test_manifests_tags_and_blobs_over_plain_http(plain: Distribution) -> None:
    repo = "library/alpine-" + sha256(b"x" * 3)[7:15]
    with plain.client() as pusher:
        image = pusher.push_image(repo, "3", layers=2, layer_size=3 * 1024 * 1024 + 17)
        docker = pusher.push_image(repo, "docker", media_type=DOCKER_MANIFEST)
        for tag in ("a", "b", "c"):
            pusher.push_manifest(repo, tag, image.manifest)
    settings = UpstreamSettings(plain.host, plain_http=True)

    async def scenario(client: UpstreamClient) -> dict[str, Any]:
        await client.ping()
        return {
            "by_tag": await client.get_manifest(repo, "3"),
            "by_digest": await client.get_manifest(repo, image.digest),
            "docker": await client.get_manifest(repo, "docker"),
            "head": await client.head_manifest(repo, "3"),
            "head_missing": await client.head_manifest(repo, "nope"),
            "tags": await client.list_tags(repo, page_size=2),
            "layer": await read_blob(client, repo, sha256(image.layers[0])),
        }

    result = run(scenario, settings)
    assert result["by_tag"].content == image.manifest
    assert result["by_tag"].digest == image.digest
    assert result["by_tag"].media_type == OCI_MANIFEST
    assert result["by_digest"].content == image.manifest
    assert result["docker"].media_type == DOCKER_MANIFEST
    assert result["docker"].digest == docker.digest
    assert result["head"] == (image.digest, OCI_MANIFEST)
    assert result["head_missing"] is None
    assert sorted(result["tags"]) == ["3", "a", "b", "c", "docker"]  # three pages of 2
    size, data, chunks = result["layer"]
    assert size == len(image.layers[0]) and data == image.layers[0]
    assert chunks > 1  # streamed, not read whole


def test_missing_things_are_not_found(plain: Distribution) -> None:
    settings = UpstreamSettings(plain.host, plain_http=True)
    missing = sha256(b"never pushed")

    async def scenario(client: UpstreamClient) -> list[str]:
        outcomes = []
        for call in (client.get_manifest("nobody/here", "latest"),
                     client.get_manifest("nobody/here", missing),
                     client.open_blob("nobody/here", missing),
                     client.list_tags("nobody/here")):
            try:
                await call
                outcomes.append("ok")
            except UpstreamNotFound as exc:
                assert exc.status == 404
                outcomes.append("404")
        return outcomes

    assert run(scenario, settings) == ["404"] * 4


def test_stopped_upstream_is_unavailable(tmp_path: Path) -> None:
    with running_distribution(tmp_path / "dist") as upstream:
        upstream.stop()
        with pytest.raises(UpstreamUnavailable) as caught:
            run(lambda c: c.get_manifest("library/alpine", "3"),
                UpstreamSettings(upstream.host, plain_http=True))
    assert caught.value.status is None


def test_policy_refuses_loopback_unless_allowed(plain: Distribution) -> None:
    strict = OutboundPolicy([])
    settings = UpstreamSettings(plain.host, plain_http=True, username="u",
                                password="do-not-leak")
    with pytest.raises(UpstreamUnavailable) as caught:
        run(lambda c: c.ping(), settings, strict)
    assert "SSRF_ALLOWED_HOSTS" in str(caught.value)
    assert "do-not-leak" not in str(caught.value) and "do-not-leak" not in repr(settings)


# --- TLS and Basic auth ----------------------------------------------------------------------
def test_tls_with_ca_bundle_and_basic_auth(secure: Distribution) -> None:
    repo = "library/busybox"
    with secure.client() as pusher:
        image = pusher.push_image(repo, "1.36")
    assert secure.ca_path is not None
    good = UpstreamSettings(secure.host, UPSTREAM_USER, UPSTREAM_PASSWORD,
                            ca_bundle=str(secure.ca_path))

    async def scenario(client: UpstreamClient) -> tuple[bytes, bytes]:
        manifest = await client.get_manifest(repo, "1.36")
        _size, config, _n = await read_blob(client, repo, sha256(image.config))
        return manifest.content, config

    assert run(scenario, good) == (image.manifest, image.config)
    # Without the CA the certificate is not trusted; verify_tls=False accepts it.
    with pytest.raises(UpstreamUnavailable):
        run(lambda c: c.ping(), UpstreamSettings(secure.host, UPSTREAM_USER,
                                                 UPSTREAM_PASSWORD))
    insecure = UpstreamSettings(secure.host, UPSTREAM_USER, UPSTREAM_PASSWORD,
                                verify_tls=False)
    assert run(lambda c: c.get_manifest(repo, "1.36"), insecure).content == image.manifest


def test_private_ca_in_the_host_trust_store(secure: Distribution,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA the host trusts (here via ``SSL_CERT_FILE``, as after
    ``update-ca-certificates``) verifies with plain ``verify_tls``."""
    assert secure.ca_path is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.ca_path))
    settings = UpstreamSettings(secure.host, UPSTREAM_USER, UPSTREAM_PASSWORD)
    run(lambda c: c.ping(), settings)


@pytest.mark.parametrize(("username", "password"), [
    (UPSTREAM_USER, "wrong-password-xyz"), (None, None), ("nobody", "wrong-password-xyz"),
])
def test_basic_auth_refusals(secure: Distribution, username: str | None,
                             password: str | None) -> None:
    settings = UpstreamSettings(secure.host, username, password, verify_tls=False)
    with pytest.raises(UpstreamUnauthorized) as caught:
        run(lambda c: c.get_manifest("library/busybox", "1.36"), settings)
    assert "wrong-password-xyz" not in str(caught.value)


# --- Bearer tokens (a Portside upstream) ----------------------------------------------------
def test_bearer_token_auth_against_portside(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "upstream")
    image = alice.push_image(repo, "v1", layers=1)
    host = registry.url.split("://", 1)[1]
    name = repo

    async def scenario(client: UpstreamClient) -> tuple[bytes, bytes, list[str], Any]:
        await client.ping()
        manifest = await client.get_manifest(name, "v1")
        _size, layer, _n = await read_blob(client, name, sha256(image.layers[0]))
        tags = await client.list_tags(name)
        head = await client.head_manifest(name, "v1")
        return manifest.content, layer, tags, head

    settings = UpstreamSettings(host, "alice", PASSWORDS["alice"], plain_http=True)
    content, layer, tags, head = run(scenario, settings)
    assert content == image.manifest and layer == image.layers[0]
    assert tags == ["v1"] and head == (image.digest, OCI_MANIFEST)

    # Wrong password: the token service refuses; the message does not echo it.
    wrong = UpstreamSettings(host, "alice", "wrong-password-xyz", plain_http=True)
    with pytest.raises(UpstreamUnauthorized) as caught:
        run(lambda c: c.get_manifest(name, "v1"), wrong)
    assert "wrong-password-xyz" not in str(caught.value)
    # bob and anonymous callers get a token without pull access: refused.
    for other in (UpstreamSettings(host, "bob", PASSWORDS["bob"], plain_http=True),
                  UpstreamSettings(host, plain_http=True)):
        with pytest.raises((UpstreamUnauthorized, UpstreamNotFound)):
            run(lambda c: c.get_manifest(name, "v1"), other)


def test_tokens_are_reused_per_scope(registry: Deployment) -> None:
    alice = registry.client("alice")
    repo = unique_repo("alice", "tokens")
    image = alice.push_image(repo, "v1")
    host = registry.url.split("://", 1)[1]
    token_requests: list[str] = []

    async def scenario() -> None:
        policy = OutboundPolicy(LOOPBACK)
        client = UpstreamClient(UpstreamSettings(host, "alice", PASSWORDS["alice"],
                                                 plain_http=True), policy)

        async def count(request: Any) -> None:
            if request.url.path == "/v2/auth":
                token_requests.append(str(request.url.params.get("scope")))

        client._http.event_hooks["request"].append(count)
        try:
            for _ in range(3):
                assert (await client.get_manifest(repo, "v1")).digest == image.digest
                await client.head_manifest(repo, "v1")
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert token_requests == [f"repository:{repo}:pull"]


# --- redirects to storage ---------------------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    """Origin A: a registry needing Basic auth that redirects blobs to origin B.
    Origin B: "storage", recording the headers it receives."""

    seen: list[dict[str, str]]
    storage_url: str
    blob: bytes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()} | {
            "path": self.path})
        if self.path.startswith("/storage/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.blob)))
            self.end_headers()
            self.wfile.write(self.blob)
            return
        if "authorization" not in {k.lower() for k in self.headers}:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(307)
        self.send_header("Location", f"{self.storage_url}/storage/blob?sig=secret")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_blob_redirect_does_not_send_credentials_to_storage() -> None:
    seen: list[dict[str, str]] = []
    blob = b"layer bytes" * 1000
    handler: type[_Recorder] = type(
        "Handler", (_Recorder,), {"seen": seen, "blob": blob, "storage_url": ""})
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    registry_server, storage_server = servers
    handler.storage_url = f"http://127.0.0.1:{storage_server.server_address[1]}"
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        settings = UpstreamSettings(f"127.0.0.1:{registry_server.server_address[1]}",
                                    "user", "pw-not-for-storage", plain_http=True)
        size, data, _n = run(lambda c: read_blob(c, "ns/app", digest), settings)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert (size, data) == (len(blob), blob)
    storage_hits = [h for h in seen if h["path"].startswith("/storage/")]
    assert len(storage_hits) == 1 and "authorization" not in storage_hits[0]
    registry_hits = [h for h in seen if not h["path"].startswith("/storage/")]
    assert registry_hits[0].get("authorization") is None  # anonymous first
    assert registry_hits[-1]["authorization"].startswith("Basic ")


def test_digest_reference_must_match(plain: Distribution) -> None:
    settings = UpstreamSettings(plain.host, plain_http=True)
    with pytest.raises(UpstreamError):
        run(lambda c: c.get_manifest("library/alpine", "sha256:nothex"), settings)
