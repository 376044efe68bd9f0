"""podman and skopeo log in with an application-specific token (user ``$app``) on a
registry that refuses plain passwords (``FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH``)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import Podman, Skopeo
from support.e2e import Registry, need_layout, start_registry

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry where only encrypted passwords and tokens log in to /v2."""
    with start_registry(tmp_path_factory.mktemp("strict-registry"),
                        FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH=True) as reg:
        yield reg


def create_app_token(registry: Registry) -> tuple[str, str]:
    """Sign in to the API with the password and create a token: ``(uuid, token)``."""
    with registry.http(auth=False) as http:
        csrf = http.get("/csrf_token").json()["csrf_token"]
        signin = http.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                           json={"username": registry.user, "password": registry.password})
        assert signin.status_code == 200, signin.text
        csrf = http.get("/csrf_token").json()["csrf_token"]
        created = http.post("/api/v1/user/apptoken", json={"title": "e2e"},
                            headers={"X-CSRF-Token": csrf})
        assert created.status_code == 200, created.text
        token = created.json()["token"]
        return token["uuid"], token["token_code"]


def revoke_app_token(registry: Registry, uuid: str) -> None:
    """Revoke the token through a signed-in session."""
    with registry.http(auth=False) as http:
        csrf = http.get("/csrf_token").json()["csrf_token"]
        http.post("/api/v1/signin", headers={"X-CSRF-Token": csrf},
                  json={"username": registry.user, "password": registry.password})
        csrf = http.get("/csrf_token").json()["csrf_token"]
        assert http.delete(f"/api/v1/user/apptoken/{uuid}",
                           headers={"X-CSRF-Token": csrf}).status_code == 204


def test_app_token_push_and_pull(strict_registry: Registry, podman: Podman, skopeo: Skopeo,
                                 tmp_path: Path) -> None:
    registry = strict_registry
    layout, tag = need_layout("debian-minbase")
    podman.logs.append(registry.server.log_path)
    skopeo.logs.append(registry.server.log_path)
    uuid, token = create_app_token(registry)
    creds = f"$app:{token}"

    # The password is refused for registry logins here...
    refused = podman.run("login", "--tls-verify=false", "--authfile", podman.authfile,
                         "--username", registry.user, "--password-stdin", registry.host,
                         input=registry.password + "\n", check=False)
    assert refused.returncode != 0
    # ...the application-specific token is not.
    login = podman.run("login", "--tls-verify=false", "--authfile", podman.authfile,
                       "--username", "$app", "--password-stdin", registry.host,
                       input=token + "\n")
    assert "Login Succeeded" in login.stdout
    assert registry.host in json.loads(Path(podman.authfile).read_text())["auths"]

    archive = tmp_path / "minbase.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    loaded = podman.run("load", "--input", str(archive)).stdout
    local_name = loaded.split("Loaded image:", 1)[1].split()[0].strip()
    image_id = podman.image_id(local_name)
    name = f"{registry.host}/{registry.user}/apptoken/app:v1"
    podman.run("tag", image_id, name)
    podman.run("push", "--tls-verify=false", name)
    podman.run("rmi", "--force", image_id)
    podman.run("pull", "--tls-verify=false", name)
    assert podman.image_id(name) == image_id

    # skopeo with the token as --dest-creds, then reading it back.
    skopeo.copy(f"oci:{layout}:{tag}", registry.ref(f"{registry.user}/apptoken/app", "v2"),
                dest_creds=creds)
    assert skopeo.list_tags(f"docker://{registry.host}/{registry.user}/apptoken/app",
                            creds=creds) == ["v1", "v2"]

    # Revoked: the same credentials stop working.
    revoke_app_token(registry, uuid)
    after = skopeo.run("list-tags", "--tls-verify=false", "--creds", creds,
                       f"docker://{registry.host}/{registry.user}/apptoken/app", check=False)
    assert after.returncode != 0
