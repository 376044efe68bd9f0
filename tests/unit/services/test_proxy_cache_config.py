"""Parsing of ``upstream_registry`` and the organization → upstream name mapping."""

from __future__ import annotations

import pytest

from portside.services.proxy_cache_config import ProxyCacheSettings, split_upstream_registry
from portside.services.refusals import Invalid


@pytest.mark.parametrize(("value", "expected"), [
    ("quay.io", ("quay.io", "")),
    ("Registry.Local:5000/library", ("registry.local:5000", "library")),
    ("127.0.0.1:5000/a/b/", ("127.0.0.1:5000", "a/b")),
    ("[::1]:5000", ("[::1]:5000", "")),
    ("localhost", ("localhost", "")),
])
def test_split_upstream_registry(value: str, expected: tuple[str, str]) -> None:
    assert split_upstream_registry(value) == expected


@pytest.mark.parametrize("value", [
    "", "https://quay.io", "user:pw@quay.io", "quay.io/UPPER", "quay.io:99999",
    "-bad.host", "quay.io/a//b", "quay io",
])
def test_split_upstream_registry_refuses(value: str) -> None:
    with pytest.raises(Invalid):
        split_upstream_registry(value)


def settings(upstream: str) -> ProxyCacheSettings:
    host, prefix = split_upstream_registry(upstream)
    return ProxyCacheSettings(1, "cacheorg", upstream, host, prefix, "u", "secret-pw",
                              86400, False)


def test_upstream_repository_mapping() -> None:
    assert settings("host:5000").upstream_repository("library/alpine") == "library/alpine"
    assert settings("host:5000/library").upstream_repository("alpine") == "library/alpine"
    assert settings("host:5000").upstream_repository("alpine") == "alpine"
    # Docker Hub: single names are official images; its API lives elsewhere.
    hub = settings("docker.io")
    assert hub.upstream_repository("alpine") == "library/alpine"
    assert hub.upstream_settings().registry == "registry-1.docker.io"


def test_settings_never_show_the_password() -> None:
    shown = settings("host:5000")
    assert "secret-pw" not in repr(shown)
    assert "secret-pw" not in repr(shown.upstream_settings())
