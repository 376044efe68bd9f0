"""HTTPS served by ``portside serve`` itself, and forwarded headers believed only from
``TRUSTED_PROXIES``."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functional.conftest import PASSWORDS, Deployment, create_users
from functional.test_api_organizations import api
from functional.test_api_repositories import short
from portside.certificates import ensure_tls_files
from support.server import postgres_database, running_registry


@pytest.fixture(scope="module")
def tls_registry(backend: str, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[Deployment, Path]]:
    """A server on HTTPS with a certificate from a private CA, behind no proxy, that
    trusts forwarded headers from 127.0.0.1 only. Yields it and the CA certificate."""
    root = tmp_path_factory.mktemp(f"tls-{backend}")
    files = ensure_tls_files(root / "tls", ["127.0.0.1", "localhost"])
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        registry = stack.enter_context(running_registry(
            root, db_uri=db_uri, LOGIN_FAILURE_LIMIT=0, PREFERRED_URL_SCHEME="https",
            SSL_CERTIFICATE_PATH=str(files.certificate),
            SSL_PRIVATE_KEY_PATH=str(files.private_key),
            TRUSTED_PROXIES=["127.0.0.1/32"]))
        create_users(registry, ("alice",))
        deployment = Deployment(registry, backend, f"tls-{backend}")
        yield deployment, files.ca_certificate
        deployment.close_clients()


def test_https_with_the_private_ca(tls_registry: tuple[Deployment, Path]) -> None:
    deployment, ca = tls_registry
    assert deployment.url.startswith("https://")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        first = client.get(f"{deployment.url}/v2/")
        second = client.get(f"{deployment.url}/health/instance")
    assert first.status_code == 401 and first.http_version == "HTTP/1.1"
    assert second.status_code == 200, second.text
    # Without the CA the certificate is not trusted; plain HTTP is not spoken.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{deployment.url}/v2/")
    with pytest.raises(httpx.HTTPError):
        httpx.get(deployment.url.replace("https://", "http://") + "/v2/")


def test_token_realm_uses_https(tls_registry: tuple[Deployment, Path]) -> None:
    deployment, ca = tls_registry
    response = httpx.get(f"{deployment.url}/v2/", verify=ssl.create_default_context(
        cafile=str(ca)))
    assert 'realm="https://' in response.headers["www-authenticate"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_logs_in_with_the_ca(tls_registry: tuple[Deployment, Path],
                                    tmp_path: Path) -> None:
    deployment, ca = tls_registry
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    shutil.copy(ca, cert_dir / "ca.crt")
    auth = tmp_path / "auth.json"
    login = subprocess.run(
        ["skopeo", "login", "--cert-dir", str(cert_dir), "--authfile", str(auth),
         "-u", "alice", "--password-stdin", deployment.registry.host],
        input=PASSWORDS["alice"].encode(), capture_output=True, timeout=60, check=False)
    assert login.returncode == 0, login.stderr.decode()
    untrusted = subprocess.run(
        ["skopeo", "login", "--authfile", str(tmp_path / "other.json"), "-u", "alice",
         "--password-stdin", deployment.registry.host],
        input=PASSWORDS["alice"].encode(), capture_output=True, timeout=60, check=False)
    assert untrusted.returncode != 0
    assert b"certificate" in untrusted.stderr


def _robot_created_from(client: httpx.Client, forwarded: str | None) -> str:
    """Create a robot sending ``X-Forwarded-For``; the address its log entry got."""
    name = short("fwd").replace("-", "_")
    headers = {"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"} if forwarded else {}
    created = client.put(f"/user/robots/{name}", json={"description": ""}, headers=headers)
    assert created.status_code == 201, created.text
    logs = client.get("/user/logs").json()["logs"]
    entry = next(e for e in logs if e["kind"] == "create_robot"
                 and e["metadata"]["robot"].endswith(name))
    return str(entry["ip"])


@contextlib.contextmanager
def _tls_api(deployment: Deployment, ca: Path) -> Iterator[httpx.Client]:
    with api(deployment, "alice") as plain:
        headers, base_url = dict(plain.headers), plain.base_url
    verify = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=base_url, headers=headers, verify=verify) as client:
        yield client


def test_forwarded_for_from_a_trusted_proxy(tls_registry: tuple[Deployment, Path]) -> None:
    deployment, ca = tls_registry
    with _tls_api(deployment, ca) as client:
        # The test client connects from 127.0.0.1, which this server trusts.
        assert _robot_created_from(client, "203.0.113.9") == "203.0.113.9"
        # A chain: the right-most address that is not a trusted proxy counts.
        assert _robot_created_from(client, "198.51.100.1, 203.0.113.7") == "203.0.113.7"
        assert _robot_created_from(client, None) == "127.0.0.1"


def test_forwarded_for_from_anyone_else_is_ignored(registry: Deployment) -> None:
    # The main server trusts no proxy: the header cannot choose the logged address.
    with api(registry, "alice") as client:
        assert _robot_created_from(client, "203.0.113.9") == "127.0.0.1"


def test_metrics_export_the_certificate_expiry(tls_registry: tuple[Deployment, Path]) -> None:
    deployment, ca = tls_registry
    from cryptography import x509
    from prometheus_client.parser import text_string_to_metric_families

    served = Path(deployment.registry.config["SSL_CERTIFICATE_PATH"]).read_bytes()
    expires = x509.load_pem_x509_certificate(served).not_valid_after_utc.timestamp()
    text = httpx.get(f"{deployment.url}/metrics",
                     verify=ssl.create_default_context(cafile=str(ca))).text
    values = [sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples
              if sample.name == "portside_tls_certificate_expiry_timestamp_seconds"]
    assert values == [expires]
