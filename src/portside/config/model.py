"""The typed Portside configuration.

:class:`PortsideConfig` mirrors the subset of Red Hat Quay's ``config.yaml`` that Portside
implements, using Quay's key names and defaults, plus a few Portside-only keys. It is
immutable (``frozen``) and rejects unknown keys; reading a file, tolerating Quay-only keys
and turning validation errors into readable lines is the job of
:mod:`portside.config.loader`.

Field descriptions double as the configuration reference (they end up in the JSON
Schema produced by ``PortsideConfig.model_json_schema()``).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from portside.config.durations import DURATION_PATTERN, parse_duration
from portside.config.hosts import parse_allowed_entry
from portside.config.sizes import parse_size

__all__ = [
    "DEFAULT_STORAGE_CONFIG",
    "POSTGRES_SCHEMES",
    "PortsideConfig",
    "StorageEntry",
]

POSTGRES_SCHEMES: tuple[str, ...] = ("postgresql", "postgresql+psycopg")
"""Database URI schemes accepted for PostgreSQL (normalised to ``postgresql+psycopg``)."""

DEFAULT_STORAGE_CONFIG: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("LocalStorage", {"storage_path": "data/storage"}),
}
"""The storage used when ``DISTRIBUTED_STORAGE_CONFIG`` is not configured."""

# A DNS label: letters, digits and inner hyphens, at most 63 characters.
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


# --------------------------------------------------------------------------------------
# Field-level validators
# --------------------------------------------------------------------------------------


def _check_port(port: str, value: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port {port!r} in {value!r} (expected 1-65535)")


def _validate_server_hostname(value: str) -> str:
    """Accept ``host``, ``host:port``, ``1.2.3.4[:port]`` and ``[v6addr][:port]``."""
    if "://" in value:
        raise ValueError(
            f"must not include a URL scheme, got {value!r} "
            "(set the scheme with PREFERRED_URL_SCHEME)"
        )
    if not value:
        raise ValueError("must not be empty")
    if "/" in value or "?" in value or "#" in value:
        raise ValueError(f"must be a host name or IP address with an optional port, got {value!r}")
    if any(ch.isspace() for ch in value) or "@" in value:
        raise ValueError(f"must be a host name or IP address with an optional port, got {value!r}")

    if value.startswith("["):
        # Bracketed IPv6 literal, optionally followed by :port.
        end = value.find("]")
        if end == -1:
            raise ValueError(f"unterminated IPv6 address in {value!r}")
        address, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {address!r}") from None
        if rest:
            if not rest.startswith(":"):
                raise ValueError(
                    f"must be a host name or IP address with an optional port, got {value!r}"
                )
            _check_port(rest[1:], value)
        return value

    if value.count(":") > 1:
        raise ValueError(
            f"IPv6 addresses must be written in brackets, e.g. '[::1]:8080', got {value!r}"
        )
    host, sep, port = value.partition(":")
    if sep:
        _check_port(port, value)
    labels = host.rstrip(".").split(".") if host else []
    if not labels or len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError(f"must be a host name or IP address with an optional port, got {value!r}")
    if all(label.isdigit() for label in labels):
        # Looks like an IPv4 address: make sure it is a valid one.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv4 address {host!r}") from None
    return value


def _db_scheme(uri: str) -> str | None:
    """Return the scheme of ``uri`` (the part before ``://``) or ``None``."""
    scheme, sep, _ = uri.partition("://")
    return scheme.lower() if sep else None


def _validate_db_uri(value: str) -> str:
    """Accept SQLite file URIs and PostgreSQL URIs; never echo the URI (it may hold a password)."""
    scheme = _db_scheme(value)
    if scheme is None:
        raise ValueError("not a database URI (use sqlite:///PATH or postgresql://...)")
    if scheme == "sqlite":
        if not value.startswith("sqlite:///") or len(value) <= len("sqlite:///"):
            raise ValueError(
                "SQLite URIs must look like sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        return value
    if scheme in POSTGRES_SCHEMES:
        if not value.partition("://")[2]:
            raise ValueError("PostgreSQL URI is missing the host and database name")
        return value
    raise ValueError(f"unsupported database scheme {scheme!r} (use sqlite:/// or postgresql://)")


def _validate_size(value: str) -> str:
    parse_size(value)  # raises ValueError with a one-line message
    return value


def _validate_duration(value: str) -> str:
    parse_duration(value)  # raises ValueError with a one-line message
    return value


Duration = Annotated[StrictStr, AfterValidator(_validate_duration)]
"""A Quay duration string such as ``90d`` (see :mod:`portside.config.durations`)."""


def _check_storage_entry_shape(value: Any) -> Any:
    """Give a clear message when an entry is not ``[DriverName, {params}]``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(
                f"expected a list [DriverName, {{parameters}}] with 2 items, got {len(value)}"
            )
        driver, params = value
        if not isinstance(driver, str) or not driver:
            raise ValueError(f"the storage driver name must be a string, got {driver!r}")
        if params is None:
            # "[LocalStorage, ]" or an empty parameter block in YAML.
            params = {}
        if not isinstance(params, dict):
            raise ValueError(
                f"the parameters of driver {driver} must be a mapping, got {type(params).__name__}"
            )
        return (driver, params)
    raise ValueError("expected a list [DriverName, {parameters}]")


def _validate_storage_entry(value: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Let the storage driver registry check the driver name and its parameters."""
    # Imported lazily: the storage package imports heavy client libraries (boto3).
    from portside.storage.drivers import validate_storage_params

    driver, params = value
    validate_storage_params(driver, params)
    return value


StorageEntry = Annotated[
    tuple[StrictStr, dict[str, Any]],
    BeforeValidator(_check_storage_entry_shape),
    AfterValidator(_validate_storage_entry),
]
"""One ``DISTRIBUTED_STORAGE_CONFIG`` value: ``(driver name, driver parameters)``."""


def _check_location_names(
    names: list[str], info: ValidationInfo, *, allow_empty: bool
) -> list[str]:
    """Ensure every name in ``names`` is a configured storage location."""
    if not names and not allow_empty:
        raise ValueError("must name at least one storage location")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"location {name!r} is listed more than once")
        seen.add(name)
    storage = info.data.get("DISTRIBUTED_STORAGE_CONFIG")
    if storage is None:
        # DISTRIBUTED_STORAGE_CONFIG itself is invalid; that error is reported instead.
        return names
    missing = [name for name in names if name not in storage]
    if missing:
        known = ", ".join(sorted(storage))
        listed = ", ".join(repr(name) for name in missing)
        noun = "location" if len(missing) == 1 else "locations"
        raise ValueError(
            f"unknown storage {noun} {listed} (DISTRIBUTED_STORAGE_CONFIG defines: {known})"
        )
    return names


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class PortsideConfig(BaseModel):
    """Portside's configuration, read from a Quay-style ``config.yaml``.

    Keys use Red Hat Quay's names and defaults where Quay has them. Construct it with
    :func:`portside.config.loader.load_config` rather than directly, so that Quay-only
    keys are tolerated and problems are reported as readable one-line messages.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="Portside configuration",
    )

    # --- Hosting ------------------------------------------------------------------------
    SERVER_HOSTNAME: Annotated[StrictStr, AfterValidator(_validate_server_hostname)] = Field(
        default="127.0.0.1:8080",
        description=(
            "Host name or IP address, with an optional port, that clients use to reach the "
            "registry (no scheme, no path), e.g. 'registry.example.com' or '10.0.0.5:8080'. "
            "It appears in image references and in token-service URLs."
        ),
    )
    PREFERRED_URL_SCHEME: Literal["http", "https"] = Field(
        default="http",
        description=(
            "URL scheme clients use to reach the registry. Must be 'https' whenever TLS is "
            "used anywhere in front of Portside."
        ),
    )
    REGISTRY_STATE: Literal["normal", "readonly"] = Field(
        default="normal",
        description=(
            "'readonly' keeps serving pulls and reads but refuses every write: pushes, "
            "deletes and mounts on /v2, and changes through /api/v1 (signing in and out "
            "still work). Garbage collection and auto-prune do not run. For maintenance, "
            "migrations and read-only replicas."
        ),
    )
    DISABLE_PUSHES: StrictBool = Field(
        default=False,
        description=(
            "Refuse all writes as with REGISTRY_STATE 'readonly' (pushes and other "
            "changes); pulls and reads go on."
        ),
    )

    # --- Database -----------------------------------------------------------------------
    DB_URI: Annotated[StrictStr, AfterValidator(_validate_db_uri)] = Field(
        default="sqlite:///data/portside.db",
        description=(
            "Database URI, including any credentials: 'sqlite:///relative/path.db', "
            "'sqlite:////absolute/path.db' or 'postgresql://user:password@host:5432/dbname' "
            "('postgresql+psycopg://' is accepted too)."
        ),
    )
    DB_CONNECTION_ARGS: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra keyword arguments passed to the database driver when connecting, e.g. "
            "{'connect_timeout': 10, 'sslmode': 'require'} for PostgreSQL."
        ),
        json_schema_extra={"default": {}},
    )
    DATABASE_SECRET_KEY: StrictStr | None = Field(
        default=None,
        min_length=1,
        description=(
            "Secret from which the key that encrypts secrets stored in the database "
            "(robot tokens) is derived. Keep it stable and identical on every node; "
            "changing it invalidates existing robot tokens. When unset, a random secret is "
            "generated once in 'database_secret.key' next to the SQLite database (or "
            "./data/database_secret.key with PostgreSQL, where setting this key is "
            "strongly recommended)."
        ),
    )

    # --- Storage ------------------------------------------------------------------------
    DISTRIBUTED_STORAGE_CONFIG: dict[StrictStr, StorageEntry] = Field(
        default_factory=lambda: {k: (d, dict(p)) for k, (d, p) in DEFAULT_STORAGE_CONFIG.items()},
        description=(
            "Storage locations: each key is a location name and each value a list "
            "[DriverName, {parameters}], e.g. ['LocalStorage', {'storage_path': "
            "'/var/lib/portside'}] or ['S3Storage', {'s3_bucket': ..., 's3_access_key': ..., "
            "'s3_secret_key': ..., 'host': ..., 'storage_path': ...}]. At least one "
            "location is required."
        ),
        json_schema_extra={
            "minProperties": 1,
            "default": {"default": ["LocalStorage", {"storage_path": "data/storage"}]},
        },
    )
    DISTRIBUTED_STORAGE_PREFERENCE: list[StrictStr] = Field(
        default_factory=lambda: ["default"],
        description=(
            "Storage locations in order of preference, by name in DISTRIBUTED_STORAGE_CONFIG. "
            "New blobs are written to the first one. Defaults to all configured locations "
            "in the order they are defined."
        ),
        json_schema_extra={"default": ["default"]},
    )
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: list[StrictStr] = Field(
        default_factory=list,
        description=(
            "Storage locations (by name in DISTRIBUTED_STORAGE_CONFIG) whose content should "
            "be replicated to all other locations by default."
        ),
        json_schema_extra={"default": []},
    )
    FEATURE_PROXY_STORAGE: StrictBool = Field(
        default=False,
        description=(
            "Serve blobs held in object storage through the registry itself instead of "
            "redirecting clients to a pre-signed storage URL."
        ),
    )
    MAXIMUM_LAYER_SIZE: Annotated[StrictStr, AfterValidator(_validate_size)] = Field(
        default="20G",
        description=(
            "Largest accepted blob (layer), as a number with an optional unit: K, M, G, T "
            "(powers of 1000, optionally followed by B) or Ki, Mi, Gi, Ti (powers of 1024), "
            "e.g. '20G' or '512Mi'."
        ),
    )

    # --- Access -------------------------------------------------------------------------
    FEATURE_ANONYMOUS_ACCESS: StrictBool = Field(
        default=True,
        description="Allow anonymous (not logged in) users to pull public repositories.",
    )
    CREATE_PRIVATE_REPO_ON_PUSH: StrictBool = Field(
        default=True,
        description="Make repositories that are created by a push private.",
    )
    CREATE_NAMESPACE_ON_PUSH: StrictBool = Field(
        default=False,
        description="Create a missing organization when a user pushes into it.",
    )
    SUPER_USERS: list[StrictStr] = Field(
        default_factory=list,
        description="User names granted superuser (administrator) privileges.",
        json_schema_extra={"default": []},
    )
    FEATURE_USER_INITIALIZE: StrictBool = Field(
        default=False,
        description=(
            "Allow creating the first user through the API (POST /api/v1/user/initialize) "
            "while no user exists yet."
        ),
    )
    FEATURE_APP_SPECIFIC_TOKENS: StrictBool = Field(
        default=True,
        description=(
            "Let users create application-specific tokens (/api/v1/user/apptoken) and log "
            "in to the registry with user name '$app' and such a token as the password."
        ),
    )
    APP_SPECIFIC_TOKEN_EXPIRATION: Duration | None = Field(
        default=None,
        description=(
            "Lifetime of new application-specific tokens, as a whole number and a unit "
            "(s, m, h, d, w), e.g. '90d'. Unset (null): tokens never expire."
        ),
        json_schema_extra={"pattern": DURATION_PATTERN},
    )
    EXPIRED_APP_SPECIFIC_TOKEN_GC: Duration | None = Field(
        default="1d",
        description=(
            "How long expired application-specific tokens stay listed before they are "
            "deleted, in the same format as APP_SPECIFIC_TOKEN_EXPIRATION; null keeps "
            "them forever."
        ),
        json_schema_extra={"pattern": DURATION_PATTERN},
    )
    FEATURE_REQUIRE_ENCRYPTED_BASIC_AUTH: StrictBool = Field(
        default=False,
        description=(
            "Refuse plain user passwords on registry logins (/v2 Basic authentication and "
            "/v2/auth). Encrypted passwords (POST /api/v1/user/clientkey), "
            "application-specific tokens, robot tokens and API access tokens still work, "
            "as does signing in to the API with the password."
        ),
    )

    # --- Tag history and garbage collection ---------------------------------------------
    DEFAULT_TAG_EXPIRATION: Duration = Field(
        default="2w",
        description=(
            "The time-machine window of namespaces that chose none: how long a tag's "
            "history (moved or deleted tags) is kept and can be restored. Must be one of "
            "TAG_EXPIRATION_OPTIONS."
        ),
        json_schema_extra={"pattern": DURATION_PATTERN},
    )
    TAG_EXPIRATION_OPTIONS: list[Duration] = Field(
        default=["0s", "1d", "1w", "2w", "4w"],
        min_length=1,
        description="The time-machine windows users may choose for their namespaces.",
    )
    FEATURE_CHANGE_TAG_EXPIRATION: StrictBool = Field(
        default=True,
        description=(
            "Let users and organization admins choose their namespace's time-machine "
            "window (tag_expiration_s) and set expirations on tags."
        ),
    )
    FEATURE_GARBAGE_COLLECTION: StrictBool = Field(
        default=True,
        description=(
            "Run online garbage collection: expired tags, history past the time-machine "
            "window, unreferenced manifests and blobs, abandoned uploads and deleted "
            "repositories and namespaces are removed while the registry serves."
        ),
    )
    GARBAGE_COLLECTION_FREQUENCY: StrictInt = Field(
        default=30, ge=1,
        description="Seconds between garbage-collection passes.",
    )
    PUSH_TEMP_TAG_EXPIRATION_SEC: StrictInt = Field(
        default=3600, ge=0,
        description=(
            "Grace period in seconds for content pushed without a tag (blobs uploaded "
            "before their manifest, manifests pushed by digest): garbage collection "
            "leaves it alone this long."
        ),
    )
    FEATURE_AUTO_PRUNE: StrictBool = Field(
        default=True,
        description=(
            "Auto-prune policies: namespace and repository policies that end tags beyond "
            "a count or older than an age (the autoprunepolicy API and the pruning job)."
        ),
    )
    AUTO_PRUNE_INTERVAL_S: StrictInt = Field(
        default=300, ge=1,
        description="Seconds between auto-prune passes (Portside-only key; at least 1).",
    )

    # --- Storage quotas ------------------------------------------------------------------
    FEATURE_QUOTA_MANAGEMENT: StrictBool = Field(
        default=False,
        description=(
            "Storage quotas per namespace: the quota API, usage reports in organization "
            "and repository views, and pushes refused over a Reject limit."
        ),
    )
    FEATURE_EDIT_QUOTA: StrictBool = Field(
        default=True,
        description=(
            "With FEATURE_QUOTA_MANAGEMENT: the superuser quota paths and the quotas and "
            "quota_report fields of organization views."
        ),
    )
    DEFAULT_SYSTEM_REJECT_QUOTA_BYTES: StrictInt = Field(
        default=0, ge=0, le=2**63 - 1,
        description=(
            "With FEATURE_QUOTA_MANAGEMENT: pushes that would bring a namespace without a "
            "quota over this many bytes are refused; 0 means no default limit."
        ),
    )

    # --- Audit log and e-mail -----------------------------------------------------------
    ACTION_LOG_AUDIT_LOGINS: StrictBool = Field(
        default=True,
        description=(
            "Record logins (UI sign-ins, /v2/auth token requests and Basic-auth logins to "
            "the registry, successful or not) in the audit log as login_success and "
            "login_failure."
        ),
    )
    FEATURE_MAILING: StrictBool = Field(
        default=False,
        description="Send e-mail (e.g. log export notices); needs MAIL_SERVER.",
    )
    MAIL_SERVER: StrictStr = Field(
        default="", description="SMTP server host name used when FEATURE_MAILING is on."
    )
    MAIL_PORT: StrictInt = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    MAIL_USE_TLS: StrictBool = Field(
        default=True, description="Upgrade the SMTP connection with STARTTLS."
    )
    MAIL_USE_AUTH: StrictBool = Field(
        default=False, description="Log in to the SMTP server with MAIL_USERNAME/MAIL_PASSWORD."
    )
    MAIL_USERNAME: StrictStr = Field(default="", description="SMTP user name.")
    MAIL_PASSWORD: StrictStr = Field(default="", description="SMTP password.")
    MAIL_DEFAULT_SENDER: StrictStr = Field(
        default="admin@example.com", description="The From address of e-mail sent."
    )

    # --- Content ingress: mirroring, proxy cache; notifications; outbound calls ---------
    FEATURE_REPO_MIRROR: StrictBool = Field(
        default=False,
        description=(
            "Repository mirroring: repositories in state MIRROR follow an upstream "
            "repository on a schedule (/api/v1/repository/{ns}/{repo}/mirror)."
        ),
    )
    REPO_MIRROR_INTERVAL: StrictInt = Field(
        default=30, ge=1,
        description="Seconds between a mirror worker's looks for due mirrors.",
    )
    REPO_MIRROR_TLS_VERIFY: StrictBool = Field(
        default=True,
        description=(
            "Quay's switch for verifying the registry's own certificate during mirroring. "
            "Portside's mirror workers write into storage directly, without an HTTPS hop "
            "to the registry, so there is nothing to verify; accepted for compatibility. "
            "Upstream certificates follow each mirror's external_registry_config.verify_tls."
        ),
    )
    REPO_MIRROR_ROLLBACK: StrictBool = Field(
        default=False,
        description=(
            "When a sync fails, put every tag it changed back as it was before the sync "
            "(true), or keep what was synced (false, best effort)."
        ),
    )
    REPO_MIRROR_CONCURRENCY: StrictInt = Field(
        default=2, ge=1, le=64,
        description=(
            "Mirrors one worker process syncs at the same time (Portside-only key); "
            "any number of processes share the due mirrors."
        ),
    )
    FEATURE_PROXY_CACHE: StrictBool = Field(
        default=False,
        description=(
            "Organizations can be pull-through caches of an upstream registry "
            "(/api/v1/organization/{org}/proxycache)."
        ),
    )
    SSRF_ALLOWED_HOSTS: list[StrictStr] = Field(
        default=[],
        description=(
            "Host names, IP addresses or CIDR ranges that user-set outbound URLs (mirror "
            "sources, proxy-cache upstreams, webhooks, Slack, log export callbacks) may "
            "reach although they are private, loopback or link-local addresses."
        ),
    )
    OUTBOUND_CONNECT_TIMEOUT_S: float = Field(
        default=5.0, gt=0, le=300,
        description="Connect timeout of user-aimed outbound calls (Portside-only key).",
    )
    OUTBOUND_READ_TIMEOUT_S: float = Field(
        default=30.0, gt=0, le=3600,
        description=(
            "Read timeout (between bytes) of user-aimed outbound calls (Portside-only key)."
        ),
    )
    NOTIFICATION_FAILURE_LIMIT: StrictInt = Field(
        default=3, ge=1,
        description=(
            "A notification whose deliveries failed this many times in a row (each after "
            "the work queue's retries) is disabled until its failures are reset "
            "(Portside-only key)."
        ),
    )

    # --- Portside-only keys ---------------------------------------------------------------
    MAXIMUM_MANIFEST_SIZE: Annotated[StrictStr, AfterValidator(_validate_size)] = Field(
        default="4Mi",
        description=(
            "Largest accepted manifest or index, in the same format as MAXIMUM_LAYER_SIZE "
            "(Portside-only key)."
        ),
    )
    BLOB_UPLOAD_EXPIRATION_S: StrictInt = Field(
        default=86400,
        ge=60,
        description=(
            "Abandoned blob uploads older than this many seconds are deleted "
            "(Portside-only key; at least 60)."
        ),
    )
    BLOB_UPLOAD_CLEANUP_INTERVAL_S: StrictInt = Field(
        default=3600,
        ge=1,
        description=(
            "Seconds between runs of the abandoned-upload cleanup (Portside-only key; at least 1)."
        ),
    )
    METRICS_DATABASE_CACHE_S: StrictInt = Field(
        default=30,
        ge=0,
        description=(
            "Seconds /metrics reuses the figures it reads from the database (row counts, "
            "queue depth, garbage collection) (Portside-only key; 0 reads on every scrape)."
        ),
    )
    REGISTRY_JWT_EXPIRATION_S: StrictInt = Field(
        default=3600,
        ge=60,
        le=86400,
        description=(
            "Lifetime in seconds of the bearer tokens issued by /v2/auth "
            "(Portside-only key; 60 to 86400)."
        ),
    )
    LOGIN_FAILURE_LIMIT: StrictInt = Field(
        default=10,
        ge=0,
        description=(
            "Failed logins allowed per client address within LOGIN_FAILURE_WINDOW_S before "
            "further attempts are answered with 429 Too Many Requests; 0 disables the limit "
            "(Portside-only key)."
        ),
    )
    LOGIN_FAILURE_WINDOW_S: StrictInt = Field(
        default=300,
        ge=1,
        description=(
            "Length in seconds of the window in which failed logins are counted "
            "(Portside-only key; at least 1)."
        ),
    )
    SSL_CERTIFICATE_PATH: StrictStr = Field(
        default="",
        description=(
            "PEM certificate (chain) to serve HTTPS with, together with "
            "SSL_PRIVATE_KEY_PATH (Portside-only key; empty: plain HTTP, e.g. behind a "
            "TLS-terminating load balancer)."
        ),
    )
    SSL_PRIVATE_KEY_PATH: StrictStr = Field(
        default="", description="PEM private key of SSL_CERTIFICATE_PATH (Portside-only key)."
    )
    TRUSTED_PROXIES: list[StrictStr] = Field(
        default=[],
        description=(
            "Addresses or CIDR ranges of load balancers whose X-Forwarded-For and "
            "X-Forwarded-Proto headers are believed (client address in the audit log and "
            "login limits). Requests from anywhere else keep their own address "
            "(Portside-only key)."
        ),
    )
    SERVER_WORKERS: StrictInt = Field(
        default=1,
        ge=1,
        le=64,
        description="Number of HTTP worker processes (Portside-only key; 1 to 64).",
    )
    BLOB_PROXY_CHUNK_SIZE: Annotated[StrictStr, AfterValidator(_validate_size)] = Field(
        default="1M",
        description=(
            "Chunk size used when streaming blobs from object storage through the registry, "
            "in the same format as MAXIMUM_LAYER_SIZE (Portside-only key)."
        ),
    )

    # --- Cross-field validation ---------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _default_preference(cls, data: Any) -> Any:
        """Default DISTRIBUTED_STORAGE_PREFERENCE to every configured location, in order."""
        if (
            isinstance(data, dict)
            and "DISTRIBUTED_STORAGE_PREFERENCE" not in data
            and isinstance(data.get("DISTRIBUTED_STORAGE_CONFIG"), dict)
            and data["DISTRIBUTED_STORAGE_CONFIG"]
        ):
            data = dict(data)
            data["DISTRIBUTED_STORAGE_PREFERENCE"] = [
                name for name in data["DISTRIBUTED_STORAGE_CONFIG"] if isinstance(name, str)
            ]
        return data

    @field_validator("SSRF_ALLOWED_HOSTS")
    @classmethod
    def _check_allowed_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allowed_entry(entry)  # raises ValueError with the entry named
        return value

    @field_validator("DISTRIBUTED_STORAGE_CONFIG")
    @classmethod
    def _require_a_location(
        cls, value: dict[str, tuple[str, dict[str, Any]]]
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        if not value:
            raise ValueError("at least one storage location is required")
        return value

    @field_validator("DISTRIBUTED_STORAGE_PREFERENCE")
    @classmethod
    def _check_preference(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _check_location_names(value, info, allow_empty=False)

    @field_validator("DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS")
    @classmethod
    def _check_default_locations(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _check_location_names(value, info, allow_empty=True)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _check_trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
        return value

    @model_validator(mode="after")
    def _certificate_and_key_together(self) -> PortsideConfig:
        if bool(self.SSL_CERTIFICATE_PATH) != bool(self.SSL_PRIVATE_KEY_PATH):
            raise ValueError("SSL_CERTIFICATE_PATH and SSL_PRIVATE_KEY_PATH must be set together")
        return self

    @model_validator(mode="after")
    def _default_expiration_is_an_option(self) -> PortsideConfig:
        if self.DEFAULT_TAG_EXPIRATION not in self.TAG_EXPIRATION_OPTIONS:
            raise ValueError(
                f"DEFAULT_TAG_EXPIRATION {self.DEFAULT_TAG_EXPIRATION!r} must be one of "
                f"TAG_EXPIRATION_OPTIONS {self.TAG_EXPIRATION_OPTIONS}"
            )
        return self

    # --- Derived values -----------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        """``DB_URI`` as an SQLAlchemy URL: PostgreSQL URIs use the psycopg (v3) driver."""
        scheme, sep, rest = self.DB_URI.partition("://")
        if sep and scheme.lower() in POSTGRES_SCHEMES:
            return f"postgresql+psycopg://{rest}"
        return self.DB_URI

    @property
    def read_only(self) -> bool:
        """Whether writes are refused (``REGISTRY_STATE: readonly`` or ``DISABLE_PUSHES``)."""
        return self.REGISTRY_STATE == "readonly" or self.DISABLE_PUSHES

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (otherwise PostgreSQL)."""
        return _db_scheme(self.DB_URI) == "sqlite"

    @property
    def preferred_location(self) -> str:
        """The storage location new blobs are written to."""
        return self.DISTRIBUTED_STORAGE_PREFERENCE[0]

    @property
    def server_url(self) -> str:
        """The registry's external base URL, e.g. ``https://registry.example.com``."""
        return f"{self.PREFERRED_URL_SCHEME}://{self.SERVER_HOSTNAME}"

    @property
    def maximum_layer_size_bytes(self) -> int:
        """``MAXIMUM_LAYER_SIZE`` in bytes."""
        return parse_size(self.MAXIMUM_LAYER_SIZE)

    @property
    def maximum_manifest_size_bytes(self) -> int:
        """``MAXIMUM_MANIFEST_SIZE`` in bytes."""
        return parse_size(self.MAXIMUM_MANIFEST_SIZE)

    @property
    def blob_proxy_chunk_size_bytes(self) -> int:
        """``BLOB_PROXY_CHUNK_SIZE`` in bytes."""
        return parse_size(self.BLOB_PROXY_CHUNK_SIZE)

    @property
    def default_tag_expiration_s(self) -> int:
        """``DEFAULT_TAG_EXPIRATION`` in seconds."""
        return int(parse_duration(self.DEFAULT_TAG_EXPIRATION).total_seconds())

    @property
    def tag_expiration_options_s(self) -> list[int]:
        """``TAG_EXPIRATION_OPTIONS`` in seconds."""
        return [int(parse_duration(v).total_seconds()) for v in self.TAG_EXPIRATION_OPTIONS]

    @property
    def app_token_lifetime(self) -> timedelta | None:
        """``APP_SPECIFIC_TOKEN_EXPIRATION`` as a duration (``None``: never expire)."""
        value = self.APP_SPECIFIC_TOKEN_EXPIRATION
        return parse_duration(value) if value is not None else None

    @property
    def expired_app_token_retention(self) -> timedelta | None:
        """``EXPIRED_APP_SPECIFIC_TOKEN_GC`` as a duration (``None``: keep them)."""
        value = self.EXPIRED_APP_SPECIFIC_TOKEN_GC
        return parse_duration(value) if value is not None else None
