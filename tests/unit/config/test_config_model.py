"""Tests for portside.config.model.PortsideConfig (constructed directly)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portside.config import PortsideConfig


def test_defaults_match_quay_and_portside_documentation() -> None:
    config = PortsideConfig()
    assert config.SERVER_HOSTNAME == "127.0.0.1:8080"
    assert config.PREFERRED_URL_SCHEME == "http"
    assert config.DB_URI == "sqlite:///data/portside.db"
    assert config.DB_CONNECTION_ARGS == {}
    assert config.DISTRIBUTED_STORAGE_CONFIG == {
        "default": ("LocalStorage", {"storage_path": "data/storage"})
    }
    assert config.DISTRIBUTED_STORAGE_PREFERENCE == ["default"]
    assert config.DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS == []
    assert config.FEATURE_ANONYMOUS_ACCESS is True
    assert config.CREATE_PRIVATE_REPO_ON_PUSH is True
    assert config.CREATE_NAMESPACE_ON_PUSH is False
    assert config.SUPER_USERS == []
    assert config.FEATURE_USER_INITIALIZE is False
    assert config.FEATURE_PROXY_STORAGE is False
    assert config.MAXIMUM_LAYER_SIZE == "20G"
    assert config.maximum_layer_size_bytes == 20_000_000_000
    assert config.MAXIMUM_MANIFEST_SIZE == "4Mi"
    assert config.maximum_manifest_size_bytes == 4 * 1024 * 1024
    assert config.BLOB_UPLOAD_EXPIRATION_S == 86400
    assert config.BLOB_UPLOAD_CLEANUP_INTERVAL_S == 3600
    assert config.REGISTRY_JWT_EXPIRATION_S == 3600
    assert config.LOGIN_FAILURE_LIMIT == 10
    assert config.LOGIN_FAILURE_WINDOW_S == 300
    assert config.SERVER_WORKERS == 1
    assert config.BLOB_PROXY_CHUNK_SIZE == "1M"
    assert config.blob_proxy_chunk_size_bytes == 1_000_000


def test_frozen() -> None:
    config = PortsideConfig()
    with pytest.raises(ValidationError):
        config.SERVER_WORKERS = 2  # type: ignore[misc]


def test_extra_keys_forbidden() -> None:
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"NOT_A_KEY": 1})


def test_defaults_are_not_shared_between_instances() -> None:
    first, second = PortsideConfig(), PortsideConfig()
    assert first.DISTRIBUTED_STORAGE_CONFIG is not second.DISTRIBUTED_STORAGE_CONFIG
    assert first.SUPER_USERS is not second.SUPER_USERS


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///data/portside.db", "sqlite:///data/portside.db"),
        ("sqlite:////var/lib/portside.db", "sqlite:////var/lib/portside.db"),
        ("postgresql://u:p@db:5432/portside", "postgresql+psycopg://u:p@db:5432/portside"),
        ("postgresql+psycopg://u:p@db/portside", "postgresql+psycopg://u:p@db/portside"),
        ("POSTGRESQL://u@db/portside", "postgresql+psycopg://u@db/portside"),
    ],
)
def test_sqlalchemy_url(uri: str, expected: str) -> None:
    config = PortsideConfig.model_validate({"DB_URI": uri})
    assert config.sqlalchemy_url == expected
    assert config.is_sqlite == uri.startswith("sqlite")


@pytest.mark.parametrize(
    "uri",
    ["mysql://x@y/z", "sqlite://", "sqlite:///", "postgres://u@db/x", "postgresql://", "db.sqlite"],
)
def test_rejected_database_uris(uri: str) -> None:
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"DB_URI": uri})


@pytest.mark.parametrize(
    "hostname",
    [
        "localhost",
        "registry.example.com",
        "registry.example.com:5000",
        "10.1.2.3",
        "10.1.2.3:8080",
        "[::1]",
        "[2001:db8::1]:443",
        "my-registry",
        "registry.example.com.",
    ],
)
def test_valid_server_hostnames(hostname: str) -> None:
    config = PortsideConfig.model_validate({"SERVER_HOSTNAME": hostname})
    assert hostname == config.SERVER_HOSTNAME


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "https://registry.example.com",
        "registry.example.com/path",
        "registry.example.com:",
        "registry.example.com:0",
        "registry.example.com:http",
        "-bad.example.com",
        "bad_name.example.com",
        "two words",
        "::1",
        "[::1",
        "[not-ipv6]:80",
        "999.1.1.1",
        "user@registry.example.com",
    ],
)
def test_invalid_server_hostnames(hostname: str) -> None:
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"SERVER_HOSTNAME": hostname})


def test_server_url() -> None:
    config = PortsideConfig.model_validate(
        {"SERVER_HOSTNAME": "registry.example.com", "PREFERRED_URL_SCHEME": "https"}
    )
    assert config.server_url == "https://registry.example.com"


def test_strict_types_reject_coercible_strings() -> None:
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"FEATURE_ANONYMOUS_ACCESS": "true"})
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"SERVER_WORKERS": "4"})
    with pytest.raises(ValidationError):
        PortsideConfig.model_validate({"SERVER_WORKERS": 4.0})


def test_json_schema_has_a_description_for_every_field() -> None:
    schema = PortsideConfig.model_json_schema()
    properties = schema["properties"]
    assert set(properties) == set(PortsideConfig.model_fields)
    for name, prop in properties.items():
        assert prop.get("description"), f"{name} has no description"
    assert schema["additionalProperties"] is False
    assert properties["DISTRIBUTED_STORAGE_PREFERENCE"]["default"] == ["default"]
    assert properties["SERVER_WORKERS"]["maximum"] == 64


def test_json_schema_shows_every_default() -> None:
    properties = PortsideConfig.model_json_schema()["properties"]
    defaults = PortsideConfig().model_dump(mode="json")
    for name, prop in properties.items():
        assert prop.get("default") == defaults[name], name
