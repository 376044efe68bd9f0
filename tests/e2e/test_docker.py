"""docker (Debian's docker.io: dockerd started by hand) against Portside."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clients import Docker, DockerDaemon, OCILayout, Skopeo, sha256_digest
from support.e2e import Registry, need_binary, need_layout, unavailable

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture(scope="module")
def docker(registry: Registry, public_registry: Registry,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    """A private dockerd trusting both registries over plain HTTP, and a CLI for it."""
    dockerd = need_binary("dockerd")
    # Debian's CLI matches Debian's daemon; another docker on PATH may be far newer.
    cli = need_binary("docker", preferred="/usr/bin/docker")
    # Unix socket paths are limited to 108 bytes: keep the daemon's root short.
    root = Path(tempfile.mkdtemp(prefix="ps-e2e-dockerd-", dir="/tmp"))
    daemon = DockerDaemon(root, [registry.host, public_registry.host], dockerd=dockerd)
    try:
        try:
            daemon.start()
        except RuntimeError as exc:
            unavailable(f"dockerd cannot start in this environment: {exc}")
        yield Docker(cli, tmp_path_factory.mktemp("docker-cli"), daemon,
                     logs=[registry.server.log_path, public_registry.server.log_path])
    finally:
        daemon.stop()
        # vfs keeps a full copy of every layer: do not leave it behind.
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def minbase_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """debian-minbase as a docker-archive named ``e2e/minbase:latest`` (for docker load)."""
    layout, tag = need_layout("debian-minbase")
    work = tmp_path_factory.mktemp("docker-archive")
    archive = work / "minbase.tar"
    # skopeo converts the OCI layout into the archive format docker load reads.
    Skopeo(need_binary("skopeo"), work / "skopeo-state").copy(
        f"oci:{layout}:{tag}", f"docker-archive:{archive}:e2e/minbase:latest",
        preserve_digests=False)
    return archive


def _login(docker: Docker, registry: Registry) -> None:
    result = docker.run("login", "--username", registry.user, "--password-stdin",
                        registry.host, input=registry.password + "\n")
    assert "Login Succeeded" in result.stdout


def _pulled_digest(output: str) -> str:
    match = re.search(r"Digest: (sha256:[0-9a-f]{64})", output)
    assert match, output
    return match.group(1)


def test_docker_login_load_push_pull(registry: Registry, docker: Docker, skopeo: Skopeo,
                                     minbase_archive: Path) -> None:
    """docker login, load, tag, push, rmi, pull: the same image comes back."""
    layout, tag = need_layout("debian-minbase")
    skopeo.logs.append(registry.server.log_path)
    _login(docker, registry)
    loaded = docker.run("load", "--input", str(minbase_archive)).stdout
    assert "e2e/minbase:latest" in loaded
    image_id = docker.image_id("e2e/minbase:latest")
    config_digest = OCILayout(layout).json_blob(
        OCILayout(layout).descriptor(tag)["digest"])["config"]["digest"]
    assert image_id == config_digest

    name = f"{registry.host}/alice/docker/app"
    docker.run("tag", "e2e/minbase:latest", f"{name}:v1")
    pushed_out = docker.run("push", f"{name}:v1").stdout
    match = re.search(r"v1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed_out)
    assert match, pushed_out
    pushed, size = match.group(1), int(match.group(2))

    served = skopeo.inspect_raw(f"docker://{name}:v1", registry.creds)
    assert sha256_digest(served) == pushed
    assert len(served) == size
    manifest = json.loads(served)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["digest"] == image_id

    docker.run("rmi", f"{name}:v1", "e2e/minbase:latest")
    assert docker.run("image", "inspect", image_id, check=False).returncode != 0

    pulled_out = docker.run("pull", f"{name}:v1").stdout
    assert _pulled_digest(pulled_out) == pushed
    assert docker.image_id(f"{name}:v1") == image_id
    repo_digests = json.loads(docker.run("image", "inspect", "--format",
                                         "{{json .RepoDigests}}", f"{name}:v1").stdout)
    assert f"{name}@{pushed}" in repo_digests

    # Pull by digest too.
    docker.run("rmi", f"{name}:v1")
    by_digest = docker.run("pull", f"{name}@{pushed}").stdout
    assert _pulled_digest(by_digest) == pushed
    assert docker.image_id(f"{name}@{pushed}") == image_id


def test_docker_manifest_list(registry: Registry, docker: Docker, skopeo: Skopeo,
                              minbase_archive: Path) -> None:
    """docker manifest create/push makes a Docker manifest list docker pulls again."""
    skopeo.logs.append(registry.server.log_path)
    _login(docker, registry)
    # The source must be pushed by docker itself: `docker manifest` re-serialises the
    # manifests it copies (indented JSON), so a list made from a compact manifest (as
    # skopeo writes them) would name a digest the CLI never pushes; Distribution
    # refuses such a list just the same.
    docker.run("load", "--input", str(minbase_archive))
    source = f"{registry.host}/alice/docker/src:v1"
    docker.run("tag", "e2e/minbase:latest", source)
    docker.run("push", source)
    image = json.loads(skopeo.inspect_raw(f"docker://{source}", registry.creds))
    assert image["mediaType"] == DOCKER_MANIFEST
    listed = f"{registry.host}/alice/docker/list:v1"
    docker.run("manifest", "create", "--insecure", listed, source)
    output = docker.run("manifest", "push", "--insecure", "--purge", listed).stdout
    pushed = output.split()[-1]
    assert pushed.startswith("sha256:"), output

    served = skopeo.inspect_raw(f"docker://{listed}", registry.creds)
    assert sha256_digest(served) == pushed
    document = json.loads(served)
    assert document["mediaType"] == DOCKER_MANIFEST_LIST
    [entry] = document["manifests"]
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    # The list's image was copied into the list's repository, by digest.
    assert sha256_digest(skopeo.inspect_raw(
        f"docker://{registry.host}/alice/docker/list@{entry['digest']}", registry.creds)
    ) == entry["digest"]

    assert _pulled_digest(docker.run("pull", listed).stdout) == pushed
    assert docker.image_id(listed) == image["config"]["digest"]
    docker.run("rmi", listed, source, "e2e/minbase:latest")


def test_docker_pulls_oci_images_and_indexes(registry: Registry, docker: Docker,
                                             skopeo: Skopeo) -> None:
    """docker pulls an OCI manifest and picks linux/amd64 from an OCI index."""
    skopeo.logs.append(registry.server.log_path)
    _login(docker, registry)
    cases = (("debian-minbase", False, "alice/docker/oci"),
             ("multiarch-index", True, "alice/docker/multi"))
    for layout_name, all_images, repo in cases:
        layout, tag = need_layout(layout_name)
        source = OCILayout(layout)
        top = source.descriptor(tag)["digest"]
        skopeo.copy(f"oci:{layout}:{tag}", registry.ref(repo, "v1"),
                    dest_creds=registry.creds, all_images=all_images)
        document = source.json_blob(top)
        if "manifests" in document:
            amd64 = next(m for m in document["manifests"]
                         if m["platform"]["architecture"] == "amd64")
            document = source.json_blob(amd64["digest"])
        name = f"{registry.host}/{repo}:v1"
        output = docker.run("pull", name).stdout
        assert _pulled_digest(output) == top
        assert docker.image_id(name) == document["config"]["digest"]
        docker.run("rmi", name)


def test_docker_logout_then_private_pull_is_refused(registry: Registry, docker: Docker,
                                                    skopeo: Skopeo) -> None:
    """Without the login, docker cannot pull from a private repository."""
    layout, tag = need_layout("helm-artifact")
    skopeo.copy(f"oci:{layout}:{tag}", registry.ref("alice/docker/private", "v1"),
                dest_creds=registry.creds)
    docker.run("logout", registry.host)
    result = docker.run("pull", f"{registry.host}/alice/docker/private:v1", check=False)
    assert result.returncode != 0
    text = result.stderr.lower()
    assert "unauthorized" in text or "denied" in text or "authentication required" in text, (
        result.stderr)


def test_docker_anonymous_pull_from_public_repository(public_registry: Registry,
                                                      docker: Docker, skopeo: Skopeo) -> None:
    """docker pulls a public repository without ever logging in to the registry."""
    layout, tag = need_layout("debian-minbase")
    skopeo.logs.append(public_registry.server.log_path)
    repo = "alice/public/docker"
    skopeo.copy(f"oci:{layout}:{tag}", public_registry.ref(repo, "v1"),
                dest_creds=public_registry.creds)
    source = OCILayout(layout)
    top = source.descriptor(tag)["digest"]
    name = f"{public_registry.host}/{repo}:v1"
    config = docker.state / "docker" / "config.json"
    auths = json.loads(config.read_text()).get("auths", {}) if config.exists() else {}
    assert public_registry.host not in auths
    assert _pulled_digest(docker.run("pull", name).stdout) == top
    assert docker.image_id(name) == source.json_blob(top)["config"]["digest"]
    docker.run("rmi", name)
