"""podman and buildah against Portside (private vfs storage, plain HTTP on loopback)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from support.clients import Buildah, OCILayout, Podman, Skopeo, sha256_digest
from support.e2e import Registry, need_layout

pytestmark = pytest.mark.e2e


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip()


def test_podman_login_push_pull(registry: Registry, podman: Podman, skopeo: Skopeo,
                                tmp_path: Path) -> None:
    """podman login, push of a pulled image, pull back: the image ID survives."""
    layout, tag = need_layout("debian-minbase")
    podman.logs.append(registry.server.log_path)
    skopeo.logs.append(registry.server.log_path)

    login = podman.run("login", "--tls-verify=false", "--authfile", podman.authfile,
                       "--username", registry.user, "--password-stdin", registry.host,
                       input=registry.password + "\n")
    assert "Login Succeeded" in login.stdout
    assert registry.host in json.loads(Path(podman.authfile).read_text())["auths"]

    # `podman pull oci:<dir>` names the image after the directory, and `.cache` is not a
    # valid reference component; `podman load` of the layout as an oci-archive is not picky.
    archive = tmp_path / "minbase.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    loaded = podman.run("load", "--input", str(archive)).stdout
    local_name = loaded.split("Loaded image:", 1)[1].split()[0].strip()
    image_id = podman.image_id(local_name)
    assert f"sha256:{image_id}" == OCILayout(layout).json_blob(
        OCILayout(layout).descriptor(tag)["digest"])["config"]["digest"]
    name = f"{registry.host}/alice/podman/app:v1"
    podman.run("tag", image_id, name)
    digestfile = tmp_path / "pushed.digest"
    # Credentials come from the auth file written by the login.
    podman.run("push", "--tls-verify=false", "--digestfile", str(digestfile), name)
    pushed = digestfile.read_text().strip()

    served = skopeo.inspect_raw(f"docker://{name}", registry.creds)
    assert sha256_digest(served) == pushed
    # podman re-compresses layers from its storage, but the config, hence the image
    # ID, is unchanged.
    assert json.loads(served)["config"]["digest"] == f"sha256:{image_id}"

    podman.run("rmi", "--force", image_id)
    assert podman.run("image", "exists", name, check=False).returncode != 0
    pulled_id = _last_line(podman.run("pull", "--tls-verify=false", name).stdout)
    assert pulled_id == image_id
    assert podman.image_id(name) == image_id
    assert podman.run("image", "inspect", "--format", "{{.Digest}}", name).stdout.strip() == (
        pushed)

    # podman search reads the catalog (/v2/_catalog) and filters it by the term.
    found = podman.run("search", "--tls-verify=false", "--format", "{{.Name}}",
                       f"{registry.host}/alice/podman").stdout.split()
    assert f"{registry.host}/alice/podman/app" in found

    podman.run("logout", "--authfile", podman.authfile, registry.host)
    denied = podman.run("pull", "--tls-verify=false", name, check=False)
    assert denied.returncode != 0


def test_buildah_scratch_image_push(registry: Registry, buildah: Buildah, skopeo: Skopeo,
                                    tmp_path: Path) -> None:
    """An image built from scratch with buildah is pushed and arrives intact."""
    buildah.logs.append(registry.server.log_path)
    skopeo.logs.append(registry.server.log_path)
    payload = tmp_path / "hello.txt"
    payload.write_text("hello from the Portside e2e suite\n")

    container = _last_line(buildah.run("from", "scratch").stdout)
    buildah.run("copy", container, str(payload), "/hello.txt")
    buildah.run("config", "--label", "org.example.built-by=portside-e2e",
                "--cmd", "/hello.txt", container)
    image_id = _last_line(buildah.run("commit", container, "localhost/e2e/scratch:latest").stdout)

    dest = f"docker://{registry.host}/alice/buildah/scratch:v1"
    digestfile = tmp_path / "pushed.digest"
    buildah.run("push", "--tls-verify=false", "--creds", registry.creds,
                "--digestfile", str(digestfile), "localhost/e2e/scratch:latest", dest)
    pushed = digestfile.read_text().strip()

    assert sha256_digest(skopeo.inspect_raw(dest, registry.creds)) == pushed
    pulled_dir = tmp_path / "pulled"
    skopeo.copy(dest, f"oci:{pulled_dir}:v1", src_creds=registry.creds)
    pulled = OCILayout(pulled_dir)
    assert pulled.descriptor("v1")["digest"] == pushed
    assert pulled.verify_image(pushed) == [pushed]
    manifest = pulled.json_blob(pushed)
    assert manifest["config"]["digest"] == f"sha256:{image_id}"
    config = pulled.json_blob(manifest["config"]["digest"])
    assert config["config"]["Labels"]["org.example.built-by"] == "portside-e2e"
    [layer] = manifest["layers"]
    with tarfile.open(pulled.blob_path(layer["digest"]), "r:*") as archive:
        member = archive.extractfile("hello.txt")
        assert member is not None
        assert member.read() == payload.read_bytes()

    # zstd-compressed layers (buildah compresses from its uncompressed storage). A new
    # layer, because clients reuse an already pushed gzip variant of a known layer.
    zstd_container = _last_line(buildah.run("from", "scratch").stdout)
    (tmp_path / "zstd.txt").write_text("zstd layer\n")
    buildah.run("copy", zstd_container, str(tmp_path / "zstd.txt"), "/zstd.txt")
    buildah.run("commit", zstd_container, "localhost/e2e/zstd:latest")
    zstd_dest = f"docker://{registry.host}/alice/buildah/scratch:zstd"
    buildah.run("push", "--tls-verify=false", "--creds", registry.creds,
                "--compression-format", "zstd", "--digestfile", str(digestfile),
                "localhost/e2e/zstd:latest", zstd_dest)
    zstd_pushed = digestfile.read_text().strip()
    zstd_manifest = json.loads(skopeo.inspect_raw(zstd_dest, registry.creds))
    assert [la["mediaType"] for la in zstd_manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"]
    zstd_dir = tmp_path / "pulled-zstd"
    skopeo.copy(zstd_dest, f"oci:{zstd_dir}:zstd", src_creds=registry.creds)
    assert OCILayout(zstd_dir).verify_image(zstd_pushed) == [zstd_pushed]

    # buildah pulls it back into its own storage under the same image ID.
    buildah.run("rmi", "--all", "--force")
    pulled_id = _last_line(buildah.run("pull", "--tls-verify=false", "--creds", registry.creds,
                                       dest).stdout)
    assert pulled_id == image_id
