"""A small /v2 client for the functional tests, built on httpx.

It speaks the Docker token flow (``/v2/auth`` with Basic credentials and ``scope``) and
knows just enough of the OCI Distribution API to push blobs, manifests and images, so
tests can set the stage in one line and then poke at the one request they are about.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

ALL_ACTIONS = "pull,push,delete"


def sha256(data: bytes) -> str:
    """The OCI digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_bytes(size: int) -> bytes:
    """``size`` random bytes (distinct content, hence distinct digests, per call)."""
    return os.urandom(size)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """A content descriptor for ``data``."""
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def to_json(document: Any) -> bytes:
    """Compact JSON bytes for a manifest (what clients usually push)."""
    return json.dumps(document, separators=(",", ":")).encode()


def error_codes(response: httpx.Response) -> list[str]:
    """The ``code`` of every error in an OCI error body (empty if there is none)."""
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    return [str(e.get("code")) for e in body.get("errors", []) if isinstance(e, dict)]


def challenge_params(header: str) -> dict[str, str]:
    """The ``key="value"`` pairs of a ``WWW-Authenticate: Bearer ...`` header."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params: dict[str, str] = {}
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    return params


def _split_params(value: str) -> Iterable[str]:
    """Split on commas outside quotes (scopes contain commas: ``pull,push``)."""
    current, quoted = "", False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            yield current
            current = ""
        else:
            current += char
    if current:
        yield current


def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request to 127.0.0.1:``port`` with ``target`` exactly as written.

    httpx normalises paths (``..``, percent-escapes); path-traversal and fuzz tests need
    the bytes to reach the server untouched. Returns status, lower-cased headers, body.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


@dataclass(frozen=True)
class Image:
    """A manifest pushed by :meth:`RegistryClient.push_image`, and its blobs."""

    manifest: bytes
    digest: str
    media_type: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Length of the manifest bytes."""
        return len(self.manifest)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """A descriptor of the manifest (for indexes and ``subject``)."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                **extra}


class RegistryClient:
    """One caller of the registry: a user with a password, or anonymous."""

    def __init__(self, base_url: str, username: str | None = None,
                 password: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.username = username
        self.password = password
        self.http = httpx.Client(base_url=base_url, timeout=timeout)
        self._tokens: dict[tuple[str, ...], str] = {}

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # --- authentication -----------------------------------------------------------
    @property
    def basic(self) -> tuple[str, str] | None:
        """Basic credentials for httpx, or ``None`` when anonymous."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def token_response(self, *scopes: str, auth: tuple[str, str] | bool | None = True,
                       ) -> httpx.Response:
        """``GET /v2/auth`` for ``scopes``; ``auth=True`` uses this client's credentials."""
        params = [("service", self.base_url.split("://", 1)[1])]
        params += [("scope", scope) for scope in scopes]
        credentials = self.basic if auth is True else (auth or None)
        return self.http.get("/v2/auth", params=params, auth=credentials)  # type: ignore[arg-type]

    def token(self, *scopes: str) -> str:
        """A bearer token for ``scopes`` (cached per scope set)."""
        key = tuple(sorted(scopes))
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        response = self.token_response(*scopes)
        assert response.status_code == 200, response.text
        token = str(response.json()["token"])
        self._tokens[key] = token
        return token

    def forget_tokens(self) -> None:
        """Drop cached tokens (e.g. after the server restarted)."""
        self._tokens.clear()

    def drop_connections(self) -> None:
        """Close pooled keep-alive connections (a server stops faster without them)."""
        self.http.close()
        self.http = httpx.Client(base_url=self.base_url, timeout=self.http.timeout)

    def auth_headers(self, repo: str, actions: str = ALL_ACTIONS) -> dict[str, str]:
        """``Authorization: Bearer`` for ``repository:<repo>:<actions>``."""
        return {"Authorization": f"Bearer {self.token(f'repository:{repo}:{actions}')}"}

    # --- requests -------------------------------------------------------------------
    def request(self, method: str, path: str, *, repo: str | None = None,
                actions: str = ALL_ACTIONS, headers: dict[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        """Send a request, with a bearer token for ``repo`` when one is named."""
        all_headers = dict(headers or {})
        if repo is not None and "Authorization" not in all_headers:
            all_headers.update(self.auth_headers(repo, actions))
        return self.http.request(method, path, headers=all_headers, **kwargs)

    def start_upload(self, repo: str) -> str:
        """``POST /v2/<repo>/blobs/uploads/``; returns the upload's ``Location``."""
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo)
        assert response.status_code == 202, response.text
        return response.headers["Location"]

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload ``data`` monolithically (``POST ?digest=``); returns its digest."""
        digest = sha256(data)
        response = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo=repo,
                                params={"digest": digest}, content=data,
                                headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == digest
        return digest

    def put_manifest(self, repo: str, reference: str, body: bytes,
                     media_type: str | None = OCI_MANIFEST) -> httpx.Response:
        """``PUT /v2/<repo>/manifests/<reference>`` with ``body`` as is."""
        headers = {"Content-Type": media_type} if media_type else {}
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", repo=repo,
                            content=body, headers=headers)

    def push_manifest(self, repo: str, reference: str, body: bytes,
                      media_type: str = OCI_MANIFEST) -> str:
        """Push a manifest that must be accepted; returns its digest."""
        response = self.put_manifest(repo, reference, body, media_type)
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == sha256(body)
        return sha256(body)

    def push_image(self, repo: str, reference: str | None = None, *, layers: int = 1,
                   media_type: str = OCI_MANIFEST, config_type: str | None = None,
                   **fields: Any) -> Image:
        """Push random layers, a config and a manifest (tagged ``reference`` if given).

        Extra keyword arguments become top-level manifest fields (``subject``,
        ``artifactType``, ``annotations``).
        """
        docker = media_type == DOCKER_MANIFEST
        config = to_json({"architecture": "amd64", "os": "linux",
                          "nonce": random_bytes(8).hex()})
        layer_blobs = tuple(random_bytes(256) for _ in range(layers))
        self.push_blob(repo, config)
        for blob in layer_blobs:
            self.push_blob(repo, blob)
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(config_type or (DOCKER_CONFIG if docker else OCI_CONFIG),
                                 config),
            "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, b)
                       for b in layer_blobs],
            **fields,
        }
        body = to_json(document)
        digest = self.push_manifest(repo, reference or sha256(body), body, media_type)
        return Image(body, digest, media_type, config, layer_blobs)
