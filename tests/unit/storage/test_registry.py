"""Tests for the driver registry: parameter validation messages and construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portside.storage import (
    DRIVER_NAMES,
    LocalStorage,
    StorageDriver,
    create_driver,
    validate_storage_params,
)
from portside.storage.s3 import S3Storage
from support.s3server import S3Endpoint

S3_PARAMS: dict[str, Any] = {
    "s3_bucket": "registry",
    "s3_access_key": "AKIA",
    "s3_secret_key": "secret",
    "storage_path": "/datastorage/registry",
}
RADOS_PARAMS: dict[str, Any] = {
    "hostname": "rgw.example.com",
    "port": 8080,
    "is_secure": False,
    "storage_path": "/datastorage/registry",
    "access_key": "AKIA",
    "secret_key": "secret",
    "bucket_name": "quay",
}


def error_of(driver: str, params: Any) -> str:
    with pytest.raises(ValueError) as excinfo:
        validate_storage_params(driver, params)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_driver_names() -> None:
    assert DRIVER_NAMES == ("LocalStorage", "S3Storage", "RadosGWStorage", "RHOCSStorage")


@pytest.mark.parametrize(
    ("driver", "params"),
    [
        ("LocalStorage", {"storage_path": "/datastorage/registry"}),
        ("S3Storage", S3_PARAMS),
        ("S3Storage", {"s3_bucket": "registry"}),  # default credential chain
        ("S3Storage", {**S3_PARAMS, "host": "minio.local", "port": "9000", "is_secure": "false"}),
        ("S3Storage", {**S3_PARAMS, "endpoint_url": "https://[::1]:9000", "s3_region": "eu"}),
        ("S3Storage", {**S3_PARAMS, "host": "10.0.0.1"}),
        ("S3Storage", {**S3_PARAMS, "host": "fd00::1"}),
        ("RadosGWStorage", RADOS_PARAMS),
        ("RHOCSStorage", {**RADOS_PARAMS, "server_side_assembly": False}),
    ],
)
def test_valid(driver: str, params: dict[str, Any]) -> None:
    validate_storage_params(driver, params)


@pytest.mark.parametrize(
    ("driver", "params", "message"),
    [
        ("S3Storage", {}, "S3Storage: missing required parameter 's3_bucket'"),
        ("LocalStorage", {}, "LocalStorage: missing required parameter 'storage_path'"),
        ("LocalStorage", {"storage_path": ""},
         "LocalStorage: invalid value for parameter 'storage_path'"),
        ("S3Storage", {**S3_PARAMS, "s3_buckt": "x"},
         "S3Storage: unknown parameter 's3_buckt' (did you mean 's3_bucket'?)"),
        ("S3Storage", {**S3_PARAMS, "bucket_name": "x"},
         "S3Storage: unknown parameter 'bucket_name' (did you mean 's3_bucket'?)"),
        ("RadosGWStorage", {**RADOS_PARAMS, "s3_bucket": "x"},
         "RadosGWStorage: unknown parameter 's3_bucket' (did you mean 'bucket_name'?)"),
        ("LocalStorage", {"storage_path": "/x", "frobnicate": 1},
         "LocalStorage: unknown parameter 'frobnicate'"),
        ("S3Storage", {**S3_PARAMS, "port": "http"},
         "S3Storage: invalid value for parameter 'port'"),
        ("S3Storage", {**S3_PARAMS, "host": "h", "port": 70000},
         "S3Storage: invalid value for parameter 'port'"),
        ("S3Storage", {**S3_PARAMS, "host": "https://minio.local"},
         "S3Storage: invalid value for parameter 'host': must be a bare host name"),
        ("S3Storage", {**S3_PARAMS, "host": "minio.local:9000"},
         "S3Storage: invalid value for parameter 'host': must not include a port"),
        ("S3Storage", {**S3_PARAMS, "endpoint_url": "minio.local:9000"},
         "S3Storage: invalid value for parameter 'endpoint_url'"),
        ("S3Storage", {**S3_PARAMS, "is_secure": "maybe"},
         "S3Storage: invalid value for parameter 'is_secure'"),
        ("S3Storage", {"s3_bucket": "b", "s3_access_key": "a"},
         "S3Storage: give both 's3_access_key' and 's3_secret_key', or neither"),
        ("S3Storage", {**S3_PARAMS, "host": "h", "endpoint_url": "http://h"},
         "S3Storage: give either 'host' or 'endpoint_url', not both"),
        ("S3Storage", {**S3_PARAMS, "port": 9000}, "S3Storage: parameter 'port' needs 'host'"),
        ("RadosGWStorage", {k: v for k, v in RADOS_PARAMS.items() if k != "hostname"},
         "RadosGWStorage: missing required parameter 'hostname'"),
        ("RHOCSStorage", {k: v for k, v in RADOS_PARAMS.items() if k != "bucket_name"},
         "RHOCSStorage: missing required parameter 'bucket_name'"),
        ("S3Storage", ["s3_bucket", "x"], "S3Storage: parameters must be a mapping, got list"),
    ],
)
def test_invalid(driver: str, params: Any, message: str) -> None:
    assert error_of(driver, params).startswith(message)


def test_several_problems_in_one_line() -> None:
    message = error_of("RadosGWStorage", {"hostname": "h", "extra": 1})
    assert message.startswith("RadosGWStorage: ")
    for word in ("'access_key'", "'secret_key'", "'bucket_name'", "'extra'"):
        assert word in message


def test_unknown_driver() -> None:
    assert error_of("S4Storage", {}) == (
        "unknown storage driver 'S4Storage' (known: LocalStorage, S3Storage, "
        "RadosGWStorage, RHOCSStorage); did you mean 'S3Storage'?"
    )
    assert error_of("localstorage", {}).endswith("did you mean 'LocalStorage'?")
    assert "did you mean" not in error_of("Tape", {})


@pytest.mark.parametrize(
    "driver",
    ["GoogleCloudStorage", "AzureStorage", "SwiftStorage", "CloudFrontedS3Storage",
     "CloudFlareStorage", "IBMCloudStorage", "STSS3Storage"],
)
def test_recognised_but_unsupported(driver: str) -> None:
    assert error_of(driver, {}) == f"storage driver {driver!r} is not supported by Portside yet"


def test_create_local(tmp_path: Path) -> None:
    driver = create_driver("LocalStorage", {"storage_path": str(tmp_path)})
    assert isinstance(driver, LocalStorage)
    assert isinstance(driver, StorageDriver)
    assert driver.driver_name == "LocalStorage"
    driver.put_bytes("x", b"y")
    assert (tmp_path / "x").read_bytes() == b"y"


def test_create_validates() -> None:
    with pytest.raises(ValueError, match="missing required parameter 's3_bucket'"):
        create_driver("S3Storage", {})


@pytest.mark.parametrize("driver_name", ["S3Storage", "RadosGWStorage", "RHOCSStorage"])
def test_create_s3_family_against_real_server(driver_name: str, s3_endpoint: S3Endpoint,
                                              s3_bucket: str) -> None:
    """Quay-style parameters of every S3-family driver reach the same server."""
    if driver_name == "S3Storage":
        params: dict[str, Any] = {
            "s3_bucket": s3_bucket, "s3_access_key": s3_endpoint.access_key,
            "s3_secret_key": s3_endpoint.secret_key, "endpoint_url": s3_endpoint.endpoint_url,
            "storage_path": f"/registry/{driver_name}",
        }
    else:
        params = {
            "hostname": s3_endpoint.host, "port": s3_endpoint.port, "is_secure": False,
            "access_key": s3_endpoint.access_key, "secret_key": s3_endpoint.secret_key,
            "bucket_name": s3_bucket, "storage_path": f"/registry/{driver_name}",
        }
    driver = create_driver(driver_name, params)
    assert isinstance(driver, S3Storage)
    assert driver.driver_name == driver_name
    driver.put_bytes("sha256/ab/abc", b"content")
    assert driver.get_bytes("sha256/ab/abc") == b"content"
    keys = [obj["Key"] for obj in s3_endpoint.client().list_objects_v2(
        Bucket=s3_bucket, Prefix=f"registry/{driver_name}/")["Contents"]]
    assert keys == [f"registry/{driver_name}/sha256/ab/abc"]


def test_empty_strings_mean_unset() -> None:
    """Quay configurations spell unset optional values as ""."""
    params = {"s3_bucket": "b", "s3_access_key": "", "s3_secret_key": "", "host": "",
              "port": "", "s3_region": "", "endpoint_url": ""}
    validate_storage_params("S3Storage", params)
    driver = create_driver("S3Storage", params)
    assert isinstance(driver, S3Storage)
    assert driver.endpoint_url is None
