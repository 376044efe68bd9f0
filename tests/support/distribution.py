"""Run Debian's ``docker-registry`` (CNCF Distribution) on loopback as an upstream.

Usage::

    from support.distribution import running_distribution

    with running_distribution(tmp_path / "upstream", tls=True,
                              users={"mirror": "mirror-pw"}) as upstream:
        client = upstream.client()           # pushes with the first user's credentials
        image = client.push_image("library/alpine", "3")
        ...  # point the code under test at upstream.host (plain_http=not upstream.tls,
             # ca_bundle=str(upstream.ca_path))
        upstream.stop()                      # "the upstream is down"
        upstream.start()                     # same port, same data

Options: ``tls=True`` serves HTTPS with a certificate for ``127.0.0.1``/``localhost``
signed by a fresh CA (``upstream.ca_path``, PEM); ``users={name: password}`` turns on
htpasswd (Basic) authentication; ``delete=True`` (default) allows deletes.
The registry is a real separate process; its data lives under ``root``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from functional.client import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    random_bytes,
    sha256,
    to_json,
)
from portside.certificates import ensure_tls_files
from support.server import free_port

DISTRIBUTION_BIN = "/usr/bin/docker-registry"


def distribution_available() -> bool:
    """True if Debian's ``docker-registry`` is installed."""
    return os.access(DISTRIBUTION_BIN, os.X_OK)


@dataclass(frozen=True)
class TLSFiles:
    """A CA and a server certificate/key signed by it (PEM files)."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                   ) -> TLSFiles:
    """Create a private CA and a server certificate for ``hosts`` in ``directory`` (with
    the registry's own :func:`portside.certificates.ensure_tls_files`)."""
    files = ensure_tls_files(directory, list(hosts), ca_name="Portside test CA")
    return TLSFiles(files.ca_certificate, files.certificate, files.private_key)


def htpasswd_line(username: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash (the only kind Distribution accepts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libxcrypt's bcrypt; no extra dependency needed

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this system's crypt(3) has no bcrypt")
    return f"{username}:{hashed}"


@dataclass
class Distribution:
    """A running ``docker-registry``; restartable on the same port with the same data."""

    root: Path
    port: int
    tls: TLSFiles | None = None
    users: dict[str, str] = field(default_factory=dict)
    delete: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry part of image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate (PEM) to trust, with ``tls``."""
        return self.tls.ca_path if self.tls else None

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def credentials(self) -> tuple[str, str] | None:
        """The first user's ``(name, password)``, or ``None`` without auth."""
        return next(iter(self.users.items()), None)

    def write_config(self) -> None:
        http: dict[str, Any] = {"addr": self.host, "secret": "portside-test-secret"}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls.cert_path),
                           "key": str(self.tls.key_path)}
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "cache": {"blobdescriptor": "inmemory"},
                "delete": {"enabled": self.delete},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n"
                                        for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "portside-test", "path": str(htpasswd)}}
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML

    def start(self) -> None:
        """Start (or restart) the registry and wait until ``/v2/`` answers."""
        if self.process is not None:
            return
        self.write_config()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [DISTRIBUTION_BIN, "serve", str(self.config_path)], cwd=self.root,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError("docker-registry exited early:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                with httpx.Client(verify=False, timeout=1) as http:
                    http.get(f"{self.url}/v2/")
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        """Stop the registry (the port stops answering: connection refused)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def client(self, username: str | None = None, password: str | None = None,
               ) -> DistributionClient:
        """A pushing/pulling client; the first configured user unless told otherwise."""
        auth = (username, password or "") if username else self.credentials()
        return DistributionClient(self.url, auth, self.ca_path)

    def skopeo_args(self) -> list[str]:
        """``skopeo copy`` destination flags for this registry (TLS and credentials)."""
        args = ["--dest-tls-verify=false"]
        creds = self.credentials()
        if creds:
            args.append(f"--dest-creds={creds[0]}:{creds[1]}")
        return args


class DistributionClient:
    """Push and pull against Distribution with Basic auth (no token service)."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None,
                 ca_path: Path | None = None) -> None:
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_path)) if ca_path else True)
        self.http = httpx.Client(base_url=base_url, auth=auth, timeout=30, verify=verify)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DistributionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT ?digest=); returns the digest."""
        digest = sha256(data)
        started = self.http.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        # Location carries Distribution's upload state in its query: add to it.
        location = httpx.URL(started.headers["Location"]).copy_merge_params(
            {"digest": digest})
        put = self.http.put(location, content=data,
                            headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes,
                      media_type: str = OCI_MANIFEST) -> str:
        response = self.http.put(f"/v2/{repo}/manifests/{reference}", content=body,
                                 headers={"Content-Type": media_type})
        assert response.status_code == 201, response.text
        return sha256(body)

    def push_image(self, repo: str, reference: str | None = None, *, layers: int = 1,
                   layer_size: int = 256, media_type: str = OCI_MANIFEST) -> Image:
        """Random config and layers, and a manifest tagged ``reference`` (if given)."""
        docker = media_type == DOCKER_MANIFEST
        config = to_json({"architecture": "amd64", "os": "linux",
                          "nonce": random_bytes(8).hex()})
        blobs = tuple(random_bytes(layer_size) for _ in range(layers))
        self.push_blob(repo, config)
        for blob in blobs:
            self.push_blob(repo, blob)
        document = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                       "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                        "digest": sha256(b), "size": len(b)} for b in blobs],
        }
        body = to_json(document)
        digest = self.push_manifest(repo, reference or sha256(body), body, media_type)
        return Image(body, digest, media_type, config, blobs)

    def delete_manifest(self, repo: str, digest: str) -> None:
        response = self.http.delete(f"/v2/{repo}/manifests/{digest}")
        assert response.status_code == 202, response.text


@contextlib.contextmanager
def running_distribution(root: Path, *, tls: bool = False,
                         users: dict[str, str] | None = None,
                         delete: bool = True) -> Iterator[Distribution]:
    """Start ``docker-registry`` in ``root`` on a free loopback port; stop it afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    registry = Distribution(root=root, port=free_port(),
                            tls=make_tls_files(root / "tls") if tls else None,
                            users=dict(users or {}), delete=delete)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(root / "data", ignore_errors=True)
