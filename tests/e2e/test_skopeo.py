"""skopeo against Portside: copy every test image there and back, inspect, list, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.clients import OCILayout, Skopeo, sha256_digest, skopeo_round_trip
from support.e2e import Registry, need_layout

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

#: A nested repository name (namespace ``alice``, repository ``team/app``).
NESTED_REPO = "alice/team/app"


@pytest.mark.parametrize(
    ("layout_name", "all_images"),
    [
        ("debian-minbase", False),
        ("debian-python", False),
        ("multiarch-index", True),
        ("big-layers", False),
        ("helm-artifact", False),
    ],
)
def test_skopeo_round_trip(registry: Registry, skopeo: Skopeo, tmp_path: Path,
                           layout_name: str, all_images: bool) -> None:
    """What skopeo pushes is served byte for byte and pulls back unchanged."""
    layout, tag = need_layout(layout_name)
    skopeo.logs.append(registry.server.log_path)
    dest = registry.ref(NESTED_REPO, layout_name)

    trip = skopeo_round_trip(skopeo, layout, tag, dest, registry.creds, tmp_path / "trip",
                             all_images=all_images)

    assert trip.pushed_digest == trip.source_digest
    assert trip.served == OCILayout(layout).blob(trip.source_digest)
    assert trip.served_digest == trip.source_digest
    assert trip.pulled_digest == trip.source_digest
    assert layout_name in skopeo.list_tags(f"docker://{registry.host}/{NESTED_REPO}",
                                           registry.creds)


def test_multiarch_index_brings_every_platform(registry: Registry, skopeo: Skopeo,
                                               tmp_path: Path) -> None:
    """``--all`` pushes the index and both platform manifests; each is served by digest."""
    layout, tag = need_layout("multiarch-index")
    skopeo.logs.append(registry.server.log_path)
    repo = "alice/multi/arch"
    trip = skopeo_round_trip(skopeo, layout, tag, registry.ref(repo, "v1"), registry.creds,
                             tmp_path / "trip", all_images=True)

    index = json.loads(trip.served)
    children = index["manifests"]
    platforms = {(c["platform"]["os"], c["platform"]["architecture"],
                  c["platform"].get("variant")) for c in children}
    assert platforms == {("linux", "amd64", None), ("linux", "arm64", "v8")}
    for child in children:
        raw = skopeo.inspect_raw(registry.ref(repo, child["digest"]), registry.creds)
        assert sha256_digest(raw) == child["digest"]
        assert len(raw) == child["size"]
    # The pulled layout holds (and verified) both platform images, blob by blob.
    assert sorted(trip.pulled_images) == sorted(c["digest"] for c in children)

    # Without --all, skopeo picks the platform asked for: the arm64 manifest arrives.
    arm = next(c for c in children if c["platform"]["architecture"] == "arm64")
    one = tmp_path / "arm64"
    skopeo.run("--override-arch", "arm64", "--override-variant", "v8", "copy",
               "--src-tls-verify=false", "--src-creds", registry.creds, "--preserve-digests",
               registry.ref(repo, "v1"), f"oci:{one}:arm")
    assert OCILayout(one).descriptor("arm")["digest"] == arm["digest"]


def test_inspect_list_tags_and_delete(registry: Registry, skopeo: Skopeo,
                                      tmp_path: Path) -> None:
    """inspect shows the image; delete removes one tag's manifest and leaves the others."""
    skopeo.logs.append(registry.server.log_path)
    repo = "alice/team/tags"
    pushed: dict[str, str] = {}
    for tag, layout_name in (("base", "debian-minbase"), ("python", "debian-python"),
                             ("chart", "helm-artifact")):
        layout, layout_tag = need_layout(layout_name)
        digestfile = tmp_path / f"{tag}.digest"
        skopeo.copy(f"oci:{layout}:{layout_tag}", registry.ref(repo, tag),
                    dest_creds=registry.creds, digestfile=digestfile)
        pushed[tag] = digestfile.read_text().strip()

    repo_ref = f"docker://{registry.host}/{repo}"
    assert sorted(skopeo.list_tags(repo_ref, registry.creds)) == ["base", "chart", "python"]

    info = skopeo.inspect(registry.ref(repo, "base"), registry.creds)
    layout, layout_tag = need_layout("debian-minbase")
    manifest = OCILayout(layout).json_blob(pushed["base"])
    assert info["Digest"] == pushed["base"]
    assert info["Os"] == "linux"
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert sorted(info["RepoTags"]) == ["base", "chart", "python"]

    skopeo.delete(registry.ref(repo, "base"), registry.creds)

    assert sorted(skopeo.list_tags(repo_ref, registry.creds)) == ["chart", "python"]
    gone = skopeo.run("inspect", "--raw", "--tls-verify=false", "--creds", registry.creds,
                      registry.ref(repo, "base"), check=False)
    assert gone.returncode != 0
    assert "manifest unknown" in gone.stderr.lower()
    by_digest = skopeo.run("inspect", "--raw", "--tls-verify=false", "--creds",
                           registry.creds, registry.ref(repo, pushed["base"]), check=False)
    assert by_digest.returncode != 0

    # The other tags are intact, including debian-python that shares the deleted
    # image's base layer.
    for tag in ("python", "chart"):
        raw = skopeo.inspect_raw(registry.ref(repo, tag), registry.creds)
        assert sha256_digest(raw) == pushed[tag]
    pulled = tmp_path / "python"
    skopeo.copy(registry.ref(repo, "python"), f"oci:{pulled}:python",
                src_creds=registry.creds)
    assert OCILayout(pulled).verify_image(pushed["python"]) == [pushed["python"]]


def test_helm_chart_artifact(registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    """A Helm chart (OCI artifact) round-trips and keeps its Helm config media type."""
    layout, tag = need_layout("helm-artifact")
    skopeo.logs.append(registry.server.log_path)
    repo = "alice/charts/mychart"
    trip = skopeo_round_trip(skopeo, layout, tag, registry.ref(repo, tag), registry.creds,
                             tmp_path / "trip")
    assert trip.pushed_digest == trip.source_digest == trip.served_digest == trip.pulled_digest

    with registry.http() as http:
        response = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == OCI_MANIFEST
        assert response.headers["docker-content-digest"] == trip.source_digest
        assert sha256_digest(response.content) == trip.source_digest
        manifest = response.json()
        assert manifest["config"]["mediaType"] == HELM_CONFIG
        assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART_LAYER]
        for descriptor in [manifest["config"], *manifest["layers"]]:
            blob = http.get(f"/v2/{repo}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200
            assert sha256_digest(blob.content) == descriptor["digest"]
            assert len(blob.content) == descriptor["size"]
