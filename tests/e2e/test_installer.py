"""``portside install`` / ``uninstall``: one command to a running HTTPS registry that real
clients trust through the printed CA; installing again upgrades in place."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.clients import OCILayout, Podman, Skopeo
from support.e2e import need_layout
from support.server import free_port


def _portside(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portside", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def _field(output: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.+)$", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1).strip()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_install_login_push_pull_upgrade_uninstall(tmp_path: Path, podman: Podman,
                                                   skopeo: Skopeo) -> None:
    layout, tag = need_layout("debian-minbase")
    root = tmp_path / "registry"
    port = free_port()
    installed = _portside("install", "--root", str(root), "--hostname", "localhost",
                          "--port", str(port))
    try:
        assert installed.returncode == 0, installed.stderr
        assert _field(installed.stdout, "URL") == f"https://localhost:{port}"
        assert _field(installed.stdout, "User") == "init"
        password = _field(installed.stdout, "Password")
        assert len(password) >= 20
        ca = Path(_field(installed.stdout, "CA"))
        assert ca == root / "tls" / "ca.crt" and ca.is_file()
        # Secrets are readable by their owner only.
        assert (root / "config.yaml").stat().st_mode & 0o077 == 0
        assert (root / "tls" / "ssl.key").stat().st_mode & 0o077 == 0
        host = f"localhost:{port}"
        cert_dir = tmp_path / "certs"
        cert_dir.mkdir()
        shutil.copy(ca, cert_dir / "ca.crt")

        # Without the CA the certificate is refused; with it, podman logs in.
        refused = podman.run("login", "--authfile", podman.authfile, "--username", "init",
                             "--password-stdin", host, input=password + "\n", check=False)
        assert refused.returncode != 0 and "certificate" in refused.stderr
        login = podman.run("login", "--cert-dir", str(cert_dir), "--authfile",
                           podman.authfile, "--username", "init", "--password-stdin", host,
                           input=password + "\n")
        assert "Login Succeeded" in login.stdout

        name = f"{host}/init/minbase:v1"
        skopeo.run("copy", "--dest-cert-dir", str(cert_dir), "--dest-creds",
                   f"init:{password}", "--preserve-digests", f"oci:{layout}:{tag}",
                   f"docker://{name}")
        pulled = podman.run("pull", "--cert-dir", str(cert_dir), name).stdout
        image_id = pulled.strip().splitlines()[-1]
        config_digest = OCILayout(layout).json_blob(
            OCILayout(layout).descriptor(tag)["digest"])["config"]["digest"]
        assert f"sha256:{image_id}" == config_digest

        # Installing again upgrades in place: same secrets, CA, user and data.
        secret = yaml.safe_load((root / "config.yaml").read_text())["DATABASE_SECRET_KEY"]
        ca_before = ca.read_bytes()
        again = _portside("install", "--root", str(root))
        assert again.returncode == 0, again.stderr
        assert "upgraded" in again.stdout
        assert _field(again.stdout, "Password") == "(unchanged)"
        assert yaml.safe_load((root / "config.yaml").read_text())[
            "DATABASE_SECRET_KEY"] == secret
        assert ca.read_bytes() == ca_before
        served = skopeo.run("inspect", "--cert-dir", str(cert_dir), "--creds",
                            f"init:{password}", f"docker://{name}").stdout
        assert json.loads(served)["Digest"] == OCILayout(layout).descriptor(tag)["digest"]
        podman.run("rmi", "--force", image_id)
        assert podman.run("pull", "--cert-dir", str(cert_dir), name).stdout.strip(
            ).splitlines()[-1] == image_id
    finally:
        removed = _portside("uninstall", "--root", str(root), "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not root.exists()
    assert not _port_open(port)


def test_install_refuses_a_foreign_directory_and_uninstall_a_non_installation(
        tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    result = _portside("install", "--root", str(foreign), "--port", str(free_port()))
    assert result.returncode == 1
    assert "not a Portside installation" in result.stderr
    removed = _portside("uninstall", "--root", str(foreign), "--yes")
    assert removed.returncode == 1
    assert "not a Portside installation" in removed.stderr
    assert (foreign / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["--ssl-cert", "/nonexistent.pem"], "--ssl-cert and --ssl-key must be given together"),
    (["--port", "70000"], "is not a TCP port"),
])
def test_install_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    root = tmp_path / "registry"
    result = _portside("install", "--root", str(root), *args)
    assert result.returncode == 1
    assert message in result.stderr
