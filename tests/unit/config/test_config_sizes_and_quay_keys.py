"""Tests for size parsing (portside.config.sizes) and the Quay key list."""

from __future__ import annotations

import pytest

from portside.config import QUAY_CONFIG_KEYS, PortsideConfig, is_quay_key, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("512B", 512),
        ("1K", 1000),
        ("1k", 1000),
        ("1KB", 1000),
        ("1Ki", 1024),
        ("1KiB", 1024),
        ("1kib", 1024),
        ("4M", 4_000_000),
        ("4Mi", 4 * 1024**2),
        ("20G", 20_000_000_000),
        ("20GB", 20_000_000_000),
        ("20Gi", 20 * 1024**3),
        ("2T", 2_000_000_000_000),
        ("2Ti", 2 * 1024**4),
        ("1.5G", 1_500_000_000),
        (" 10 M ", 10_000_000),
        ("0.5K", 500),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "20X", "20 GiG", "-1G", "5i", "5iB", "1e3", "ten"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a size such as 20G, 512M or 1Gi, got "):
        parse_size(text)


@pytest.mark.parametrize("text", ["0", "0G", "0.0001"])
def test_parse_size_rejects_zero(text: str) -> None:
    with pytest.raises(ValueError, match=r"^must be larger than zero"):
        parse_size(text)


def test_quay_key_list_is_comprehensive() -> None:
    assert len(QUAY_CONFIG_KEYS) >= 150
    for key in (
        "AUTHENTICATION_TYPE",
        "BUILDLOGS_REDIS",
        "USER_EVENTS_REDIS",
        "DATABASE_SECRET_KEY",
        "SECRET_KEY",
        "SETUP_COMPLETE",
        "TAG_EXPIRATION_OPTIONS",
        "DEFAULT_TAG_EXPIRATION",
        "FEATURE_BUILD_SUPPORT",
        "FEATURE_SECURITY_SCANNER",
        "SECURITY_SCANNER_V4_ENDPOINT",
        "FEATURE_MAILING",
        "MAIL_SERVER",
        "LDAP_URI",
        "FEATURE_REPO_MIRROR",
        "FEATURE_PROXY_CACHE",
        "FEATURE_GARBAGE_COLLECTION",
        "ENTERPRISE_LOGO_URL",
        "REGISTRY_TITLE",
        "REGISTRY_TITLE_SHORT",
        "ALLOW_PULLS_WITHOUT_STRICT_LOGGING",
        "FEATURE_ACI_CONVERSION",
        "TESTING",
        "EXTERNAL_TLS_TERMINATION",
        "FEATURE_QUOTA_MANAGEMENT",
    ):
        assert key in QUAY_CONFIG_KEYS, key
    assert all(key == key.upper() and " " not in key for key in QUAY_CONFIG_KEYS)


def test_portside_keys_with_quay_names_are_quay_keys() -> None:
    portside_only = {
        "MAXIMUM_MANIFEST_SIZE",
        "BLOB_UPLOAD_EXPIRATION_S",
        "BLOB_UPLOAD_CLEANUP_INTERVAL_S",
        "REGISTRY_JWT_EXPIRATION_S",
        "LOGIN_FAILURE_LIMIT",
        "LOGIN_FAILURE_WINDOW_S",
        "SERVER_WORKERS",
        "BLOB_PROXY_CHUNK_SIZE",
        "AUTO_PRUNE_INTERVAL_S",
        "METRICS_DATABASE_CACHE_S",
        "REPO_MIRROR_CONCURRENCY",
        "SSRF_ALLOWED_HOSTS",
        "OUTBOUND_CONNECT_TIMEOUT_S",
        "OUTBOUND_READ_TIMEOUT_S",
        "NOTIFICATION_FAILURE_LIMIT",
        "SSL_CERTIFICATE_PATH",
        "SSL_PRIVATE_KEY_PATH",
        "TRUSTED_PROXIES",
    }
    fields = set(PortsideConfig.model_fields)
    assert fields - QUAY_CONFIG_KEYS == portside_only


def test_oidc_provider_blocks_are_quay_keys() -> None:
    assert is_quay_key("AZURE_LOGIN_CONFIG")
    assert is_quay_key("RHSSO_LOGIN_CONFIG")
    assert not is_quay_key("_LOGIN_CONFIG")
    assert not is_quay_key("azure_login_config")
    assert not is_quay_key("NOT_A_QUAY_KEY")
