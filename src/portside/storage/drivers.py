"""The storage driver registry: names, parameter validation and construction.

Drivers are configured like in Quay's ``DISTRIBUTED_STORAGE_CONFIG``: a driver name and
a mapping of parameters, e.g. ``["S3Storage", {"s3_bucket": "quay", ...}]``.

* ``LocalStorage``   -- ``storage_path``
* ``S3Storage``      -- ``s3_bucket`` plus optional ``s3_access_key``, ``s3_secret_key``,
  ``host``, ``port``, ``is_secure``, ``storage_path``, ``s3_region``, ``endpoint_url``,
  ``server_side_assembly``
* ``RadosGWStorage`` (Ceph) and ``RHOCSStorage`` (OpenShift Data Foundation / NooBaa) --
  Quay's ``hostname``, ``port``, ``is_secure``, ``storage_path``, ``access_key``,
  ``secret_key``, ``bucket_name`` (plus ``server_side_assembly``), served by
  :class:`~portside.storage.s3.S3Storage`.

Quay's other drivers are recognised so that a migrated configuration gets a clear
"not supported yet" message instead of "unknown driver".

Validation never touches the network or the filesystem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portside.storage.base import StorageDriver
from portside.storage.local import LocalStorage

NonEmptyStr = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]

#: A DNS name or IPv4 address, or an IPv6 address (bracketed or not, >= 2 colons).
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+|[A-Za-z0-9._-]+)$")


def _check_host(value: str | None) -> str | None:
    if value is None:
        return None
    if "://" in value:
        raise ValueError(
            f"must be a bare host name without scheme, got {value!r} "
            "(use is_secure for the scheme, or endpoint_url for a full URL)"
        )
    if value.count(":") == 1:
        raise ValueError(f"must not include a port, got {value!r} (use parameter 'port')")
    if not _HOST_RE.fullmatch(value):
        raise ValueError(f"not a valid host name: {value!r}")
    return value


class _Params(BaseModel):
    """Common settings: unknown keys are errors, YAML scalars are coerced sensibly."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class LocalStorageParams(_Params):
    """Parameters of ``LocalStorage``."""

    storage_path: NonEmptyStr


class S3StorageParams(_Params):
    """Parameters of ``S3Storage`` (Quay's names, plus ``endpoint_url``)."""

    s3_bucket: NonEmptyStr
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    host: str | None = None
    port: Port | None = None
    is_secure: bool = True
    storage_path: str = ""
    s3_region: str | None = None
    endpoint_url: str | None = None
    server_side_assembly: bool = True

    @field_validator("s3_access_key", "s3_secret_key", "host", "port", "s3_region",
                     "endpoint_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # Quay configurations often spell an unset optional value as "" (Quay itself
        # treats "" like None, e.g. for IAM-role credentials).
        return None if value == "" else value

    _host = field_validator("host")(_check_host)

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> S3StorageParams:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError(
                "give both 's3_access_key' and 's3_secret_key', or neither "
                "(to use the default AWS credential chain)"
            )
        if self.host and self.endpoint_url:
            raise ValueError("give either 'host' or 'endpoint_url', not both")
        if self.port is not None and not self.host:
            raise ValueError("parameter 'port' needs 'host'")
        return self


class RadosGWStorageParams(_Params):
    """Parameters of ``RadosGWStorage`` / ``RHOCSStorage`` (Quay's names)."""

    hostname: NonEmptyStr
    port: Port | None = None
    is_secure: bool = True
    storage_path: str = ""
    access_key: NonEmptyStr
    secret_key: NonEmptyStr
    bucket_name: NonEmptyStr
    server_side_assembly: bool = True

    _hostname = field_validator("hostname")(_check_host)

    @field_validator("port", mode="before")
    @classmethod
    def _empty_port_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


def _make_local(params: BaseModel) -> StorageDriver:
    assert isinstance(params, LocalStorageParams)
    return LocalStorage(storage_path=params.storage_path)


def _make_s3(params: BaseModel) -> StorageDriver:
    # boto3 costs ~35 MB of memory: import it only when S3 is configured.
    from portside.storage.s3 import S3Storage

    assert isinstance(params, S3StorageParams)
    return S3Storage(
        s3_bucket=params.s3_bucket,
        s3_access_key=params.s3_access_key,
        s3_secret_key=params.s3_secret_key,
        host=params.host,
        port=params.port,
        is_secure=params.is_secure,
        storage_path=params.storage_path,
        s3_region=params.s3_region,
        endpoint_url=params.endpoint_url,
        server_side_assembly=params.server_side_assembly,
    )


def _make_radosgw(params: BaseModel) -> StorageDriver:
    from portside.storage.s3 import S3Storage

    assert isinstance(params, RadosGWStorageParams)
    return S3Storage(
        s3_bucket=params.bucket_name,
        s3_access_key=params.access_key,
        s3_secret_key=params.secret_key,
        host=params.hostname,
        port=params.port,
        is_secure=params.is_secure,
        storage_path=params.storage_path,
        server_side_assembly=params.server_side_assembly,
    )


#: Supported drivers: name -> (parameter model, factory).
_REGISTRY: dict[str, tuple[type[_Params], Callable[[BaseModel], StorageDriver]]] = {
    "LocalStorage": (LocalStorageParams, _make_local),
    "S3Storage": (S3StorageParams, _make_s3),
    "RadosGWStorage": (RadosGWStorageParams, _make_radosgw),
    "RHOCSStorage": (RadosGWStorageParams, _make_radosgw),
}

DRIVER_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Names of the storage drivers Portside implements."""

UNSUPPORTED_DRIVER_NAMES: tuple[str, ...] = (
    "GoogleCloudStorage",
    "AzureStorage",
    "SwiftStorage",
    "CloudFrontedS3Storage",
    "CloudFlareStorage",
    "IBMCloudStorage",
    "STSS3Storage",
)
"""Quay drivers that Portside recognises but does not implement (yet)."""

PARAMETER_MODELS: Mapping[str, type[BaseModel]] = {
    name: model for name, (model, _) in _REGISTRY.items()
}
"""The pydantic model describing each supported driver's parameters."""

# People moving between the S3 and the RadosGW spelling of the same setting get a precise
# hint; difflib would not relate "s3_bucket" to "bucket_name".
_RENAMED: dict[str, dict[str, str]] = {
    "S3Storage": {"bucket_name": "s3_bucket", "access_key": "s3_access_key",
                  "secret_key": "s3_secret_key", "hostname": "host"},
    "RadosGWStorage": {"s3_bucket": "bucket_name", "s3_access_key": "access_key",
                       "s3_secret_key": "secret_key", "host": "hostname"},
}
_RENAMED["RHOCSStorage"] = _RENAMED["RadosGWStorage"]


def _suggest(word: str, candidates: list[str], renamed: Mapping[str, str]) -> str | None:
    """The candidate ``word`` was probably meant to be, if any."""
    if word in renamed:
        return renamed[word]
    lowered = {candidate.lower(): candidate for candidate in candidates}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _check_driver_name(driver_name: str) -> None:
    if driver_name in _REGISTRY:
        return
    if driver_name in UNSUPPORTED_DRIVER_NAMES:
        raise ValueError(f"storage driver {driver_name!r} is not supported by Portside yet")
    known = list(DRIVER_NAMES)
    suggestion = _suggest(str(driver_name), known + list(UNSUPPORTED_DRIVER_NAMES), {})
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    raise ValueError(f"unknown storage driver {driver_name!r} (known: {', '.join(known)}){hint}")


def _format_error(driver_name: str, error: Mapping[str, Any], fields: list[str]) -> str:
    location = error.get("loc") or ()
    parameter = str(location[0]) if location else None
    kind = error.get("type")
    if kind == "missing":
        return f"missing required parameter {parameter!r}"
    if kind == "extra_forbidden" and parameter is not None:
        suggestion = _suggest(parameter, fields, _RENAMED.get(driver_name, {}))
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        return f"unknown parameter {parameter!r}{hint}"
    context = error.get("ctx") or {}
    # For our own validators pydantic prefixes "Value error, "; show the bare message.
    message = str(context["error"]) if kind == "value_error" and "error" in context else str(
        error.get("msg", "invalid value"))
    if parameter is None:
        return message
    return f"invalid value for parameter {parameter!r}: {message}"


def _validate(driver_name: str, params: Mapping[str, Any]) -> BaseModel:
    _check_driver_name(driver_name)
    model, _ = _REGISTRY[driver_name]
    if not isinstance(params, Mapping):
        raise ValueError(
            f"{driver_name}: parameters must be a mapping, got {type(params).__name__}"
        )
    bad_keys = [key for key in params if not isinstance(key, str)]
    if bad_keys:
        raise ValueError(f"{driver_name}: parameter names must be strings, got {bad_keys[0]!r}")
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        fields = list(model.model_fields)
        messages = [_format_error(driver_name, error, fields) for error in exc.errors()]
        # One line, even if a message happened to contain a newline.
        raise ValueError(
            f"{driver_name}: " + "; ".join(" ".join(m.split()) for m in messages)
        ) from None


def validate_storage_params(driver_name: str, params: Mapping[str, Any]) -> None:
    """Check a driver name and its parameters without connecting anywhere.

    Raises :class:`ValueError` with a one-line message naming the offending driver or
    parameter, e.g. ``S3Storage: missing required parameter 's3_bucket'``.
    """
    _validate(driver_name, params)


def create_driver(driver_name: str, params: Mapping[str, Any]) -> StorageDriver:
    """Validate ``params`` and build the driver; its ``driver_name`` is ``driver_name``.

    No network request is made: a wrong endpoint or credentials only show up on the
    first storage operation.
    """
    validated = _validate(driver_name, params)
    _, factory = _REGISTRY[driver_name]
    driver = factory(validated)
    # RadosGWStorage/RHOCSStorage are served by S3Storage but keep their configured name.
    driver.driver_name = driver_name
    return driver
