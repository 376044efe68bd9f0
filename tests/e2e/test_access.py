"""Anonymous pulls: public repositories serve them, private ones refuse them."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.clients import OCILayout, Podman, Skopeo, sha256_digest
from support.e2e import Registry, need_layout

pytestmark = pytest.mark.e2e


def test_anonymous_pull_from_public_repository(public_registry: Registry, skopeo: Skopeo,
                                               tmp_path: Path) -> None:
    """Pushed with credentials, pulled and listed without any."""
    layout, tag = need_layout("debian-minbase")
    skopeo.logs.append(public_registry.server.log_path)
    repo = "alice/public/base"
    digestfile = tmp_path / "pushed.digest"
    skopeo.copy(f"oci:{layout}:{tag}", public_registry.ref(repo, "v1"),
                dest_creds=public_registry.creds, digestfile=digestfile)
    pushed = digestfile.read_text().strip()

    pulled = tmp_path / "pulled"
    skopeo.copy(public_registry.ref(repo, "v1"), f"oci:{pulled}:v1", src_creds=None)
    assert OCILayout(pulled).descriptor("v1")["digest"] == pushed
    assert OCILayout(pulled).verify_image(pushed) == [pushed]
    assert sha256_digest(skopeo.inspect_raw(public_registry.ref(repo, "v1"))) == pushed
    assert skopeo.list_tags(f"docker://{public_registry.host}/{repo}") == ["v1"]

    # Reading is all an anonymous caller may do.
    helm, helm_tag = need_layout("helm-artifact")
    push = skopeo.run("copy", "--dest-tls-verify=false", "--dest-no-creds",
                      f"oci:{helm}:{helm_tag}", public_registry.ref(repo, "anonymous"),
                      check=False)
    assert push.returncode != 0
    assert "unauthorized" in push.stderr.lower() or "authentication required" in (
        push.stderr.lower())
    assert skopeo.list_tags(f"docker://{public_registry.host}/{repo}") == ["v1"]


def test_anonymous_catalog_shows_only_public_repositories(
    public_registry: Registry, registry: Registry, skopeo: Skopeo, podman: Podman
) -> None:
    """podman search (the catalog) without credentials lists public repositories only."""
    layout, tag = need_layout("helm-artifact")
    podman.logs += [public_registry.server.log_path, registry.server.log_path]
    skopeo.copy(f"oci:{layout}:{tag}", public_registry.ref("alice/public/chart", tag),
                dest_creds=public_registry.creds)
    skopeo.copy(f"oci:{layout}:{tag}", registry.ref("alice/hidden/chart", tag),
                dest_creds=registry.creds)

    found = podman.run("search", "--tls-verify=false", "--format", "{{.Name}}",
                       f"{public_registry.host}/alice").stdout.split()
    assert f"{public_registry.host}/alice/public/chart" in found
    hidden = podman.run("search", "--tls-verify=false", "--format", "{{.Name}}",
                        f"{registry.host}/alice", check=False)
    assert "alice/hidden/chart" not in hidden.stdout
    with registry.http(auth=False) as http:
        response = http.get("/v2/_catalog")
        assert response.status_code in (200, 401)
        if response.status_code == 200:
            assert response.json()["repositories"] == []
    with registry.http() as http:
        assert "alice/hidden/chart" in http.get("/v2/_catalog").json()["repositories"]


def test_private_repository_refuses_anonymous_pull(registry: Registry, skopeo: Skopeo,
                                                   tmp_path: Path) -> None:
    """Without credentials (or with wrong ones) a private repository gives nothing away."""
    layout, tag = need_layout("helm-artifact")
    skopeo.logs.append(registry.server.log_path)
    repo = "alice/private/chart"
    digestfile = tmp_path / "pushed.digest"
    skopeo.copy(f"oci:{layout}:{tag}", registry.ref(repo, tag), dest_creds=registry.creds,
                digestfile=digestfile)
    pushed = digestfile.read_text().strip()

    for auth in (["--src-no-creds"], ["--src-creds", f"{registry.user}:wrong-password"]):
        result = skopeo.run("copy", "--src-tls-verify=false", *auth, registry.ref(repo, tag),
                            f"oci:{tmp_path / 'denied'}:{tag}", check=False)
        assert result.returncode != 0, result.stdout
        assert "unauthorized" in result.stderr.lower() or "authentication required" in (
            result.stderr.lower()), result.stderr
    listing = skopeo.run("list-tags", "--tls-verify=false", "--no-creds",
                         f"docker://{registry.host}/{repo}", check=False)
    assert listing.returncode != 0

    with registry.http(auth=False) as http:
        response = http.get(f"/v2/{repo}/manifests/{tag}")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer realm=")
        assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"

    # The owner still pulls it.
    pulled = tmp_path / "pulled"
    skopeo.copy(registry.ref(repo, tag), f"oci:{pulled}:{tag}", src_creds=registry.creds)
    assert OCILayout(pulled).descriptor(tag)["digest"] == pushed
