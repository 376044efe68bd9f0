"""Tests for portside.config.loader: reading files and reporting problems as one-liners."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from portside.config import (
    ConfigError,
    PortsideConfig,
    config_from_mapping,
    load_config,
    validate_file,
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_for(tmp_path: Path, text: str) -> list[str]:
    """Load ``text`` as a config file and return the ConfigError's problem lines."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # validate_file must report exactly the same without raising.
    problems, _warnings = validate_file(path)
    assert problems == info.value.problems
    for line in problems:
        assert "\n" not in line
    return info.value.problems


FULL_CONFIG = """\
    SERVER_HOSTNAME: registry.example.com
    PREFERRED_URL_SCHEME: https
    DB_URI: postgresql://portside:secret@db.example.com:5432/portside
    DB_CONNECTION_ARGS:
      connect_timeout: 10
    DISTRIBUTED_STORAGE_CONFIG:
      local_one:
        - LocalStorage
        - storage_path: /var/lib/portside/blobs
      s3_primary:
        - S3Storage
        - s3_bucket: blobs
          s3_access_key: AKIAEXAMPLE
          s3_secret_key: secret
          host: s3.example.com
          port: 443
          is_secure: true
          storage_path: /registry
          s3_region: eu-west-1
    DISTRIBUTED_STORAGE_PREFERENCE: [s3_primary, local_one]
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [s3_primary]
    FEATURE_ANONYMOUS_ACCESS: false
    CREATE_PRIVATE_REPO_ON_PUSH: false
    CREATE_NAMESPACE_ON_PUSH: true
    SUPER_USERS: [admin, ops]
    FEATURE_USER_INITIALIZE: true
    FEATURE_PROXY_STORAGE: true
    MAXIMUM_LAYER_SIZE: 10Gi
    MAXIMUM_MANIFEST_SIZE: 8M
    BLOB_UPLOAD_EXPIRATION_S: 7200
    BLOB_UPLOAD_CLEANUP_INTERVAL_S: 600
    REGISTRY_JWT_EXPIRATION_S: 600
    LOGIN_FAILURE_LIMIT: 0
    LOGIN_FAILURE_WINDOW_S: 60
    SERVER_WORKERS: 4
    BLOB_PROXY_CHUNK_SIZE: 4Mi
"""


# --- Loading ------------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    config, warnings = load_config(environ={})
    assert warnings == []
    assert config == PortsideConfig()
    assert config.SERVER_HOSTNAME == "127.0.0.1:8080"
    assert config.DB_URI == "sqlite:///data/portside.db"
    assert config.DISTRIBUTED_STORAGE_CONFIG == {
        "default": ("LocalStorage", {"storage_path": "data/storage"})
    }
    assert config.preferred_location == "default"


def test_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "SERVER_HOSTNAME: from-env.example.com\n")
    config, _ = load_config(environ={"PORTSIDE_CONFIG": str(path)})
    assert config.SERVER_HOSTNAME == "from-env.example.com"


def test_explicit_path_wins_over_environment(tmp_path: Path) -> None:
    explicit = write(tmp_path, "SERVER_HOSTNAME: explicit.example.com\n", "a.yaml")
    from_env = write(tmp_path, "SERVER_HOSTNAME: env.example.com\n", "b.yaml")
    config, _ = load_config(explicit, environ={"PORTSIDE_CONFIG": str(from_env)})
    assert config.SERVER_HOSTNAME == "explicit.example.com"


def test_empty_environment_variable_means_defaults() -> None:
    config, _ = load_config(environ={"PORTSIDE_CONFIG": ""})
    assert config == PortsideConfig()


def test_full_valid_file(tmp_path: Path) -> None:
    config, warnings = load_config(write(tmp_path, FULL_CONFIG))
    assert warnings == []
    assert config.SERVER_HOSTNAME == "registry.example.com"
    assert config.PREFERRED_URL_SCHEME == "https"
    assert config.sqlalchemy_url == (
        "postgresql+psycopg://portside:secret@db.example.com:5432/portside"
    )
    assert config.DB_CONNECTION_ARGS == {"connect_timeout": 10}
    assert set(config.DISTRIBUTED_STORAGE_CONFIG) == {"local_one", "s3_primary"}
    assert config.DISTRIBUTED_STORAGE_CONFIG["s3_primary"][0] == "S3Storage"
    assert config.preferred_location == "s3_primary"
    assert config.DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS == ["s3_primary"]
    assert config.FEATURE_ANONYMOUS_ACCESS is False
    assert config.CREATE_PRIVATE_REPO_ON_PUSH is False
    assert config.CREATE_NAMESPACE_ON_PUSH is True
    assert config.SUPER_USERS == ["admin", "ops"]
    assert config.FEATURE_USER_INITIALIZE is True
    assert config.FEATURE_PROXY_STORAGE is True
    assert config.maximum_layer_size_bytes == 10 * 1024**3
    assert config.maximum_manifest_size_bytes == 8_000_000
    assert config.blob_proxy_chunk_size_bytes == 4 * 1024**2
    assert config.BLOB_UPLOAD_EXPIRATION_S == 7200
    assert config.BLOB_UPLOAD_CLEANUP_INTERVAL_S == 600
    assert config.REGISTRY_JWT_EXPIRATION_S == 600
    assert config.LOGIN_FAILURE_LIMIT == 0
    assert config.LOGIN_FAILURE_WINDOW_S == 60
    assert config.SERVER_WORKERS == 4
    assert validate_file(write(tmp_path, FULL_CONFIG, "again.yaml")) == ([], [])


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config, warnings = load_config(write(tmp_path, ""))
    assert config == PortsideConfig()
    assert warnings == []


def test_comment_only_file_gives_defaults(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, "# nothing configured yet\n"))
    assert config == PortsideConfig()


def test_preference_defaults_to_all_locations_in_order(tmp_path: Path) -> None:
    config, _ = load_config(
        write(
            tmp_path,
            """\
            DISTRIBUTED_STORAGE_CONFIG:
              zeta: [LocalStorage, {storage_path: /z}]
              alpha: [LocalStorage, {storage_path: /a}]
            """,
        )
    )
    assert config.DISTRIBUTED_STORAGE_PREFERENCE == ["zeta", "alpha"]
    assert config.preferred_location == "zeta"


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = PROJECT_ROOT / "config.example.yaml"
    config, warnings = load_config(example)
    assert warnings == []
    assert config.DB_URI.startswith("sqlite:///")
    text = example.read_text(encoding="utf-8")
    for key in PortsideConfig.model_fields:
        assert f"{key}:" in text, f"{key} missing from config.example.yaml"
    for needle in (
        "postgresql://",
        "S3Storage",
        "LocalStorage",
        "s3_bucket",
        "s3_access_key",
        "s3_secret_key",
        "host:",
        "port:",
        "is_secure",
        "storage_path",
        "s3_region",
    ):
        assert needle in text


def test_config_from_mapping() -> None:
    config, warnings = config_from_mapping({"SERVER_WORKERS": 2, "SECRET_KEY": "x"})
    assert config.SERVER_WORKERS == 2
    assert warnings == [
        "SECRET_KEY: Quay configuration key not implemented by Portside yet; ignored"
    ]
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"SERVER_WORKERS": 0})
    assert info.value.problems == ["SERVER_WORKERS: must be at least 1, got 0"]


# --- Problems with the file itself --------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: configuration file not found"]
    assert validate_file(path) == ([f"{path}: configuration file not found"], [])


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems == [f"{tmp_path}: is a directory, not a configuration file"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"SERVER_HOSTNAME: \xff\xfe\n")
    problems, _ = validate_file(path)
    assert problems == [f"{path}: not a UTF-8 text file (invalid byte at offset 17)"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        SERVER_HOSTNAME: registry.example.com
        DB_URI: sqlite:///data/portside.db
          SUPER_USERS: [admin
        """,
    )
    problems, _ = validate_file(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: line 3, column ")
    assert "invalid YAML" in problems[0]


def test_yaml_unclosed_flow_sequence(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, "SUPER_USERS: [admin\nSERVER_WORKERS: 2\n")
    assert len(problems) == 1
    assert "line 3" in problems[0] or "line 2" in problems[0]
    assert "invalid YAML" in problems[0]


def test_top_level_list(tmp_path: Path) -> None:
    path = write(tmp_path, "- SERVER_HOSTNAME: x\n- DB_URI: y\n")
    assert problems_for(tmp_path, "- SERVER_HOSTNAME: x\n- DB_URI: y\n") == [
        f"{path}: the top level must be a mapping of configuration keys, got a list"
    ]


def test_top_level_scalar(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert problems_for(tmp_path, "just a string\n") == [
        f"{path}: the top level must be a mapping of configuration keys, got a string"
    ]


def test_duplicate_keys_warn_and_last_value_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "SERVER_WORKERS: 2\nSERVER_WORKERS: 3\n")
    config, warnings = load_config(path)
    assert config.SERVER_WORKERS == 3
    assert warnings == [
        f"{path}: line 2: duplicate key 'SERVER_WORKERS' (first defined on line 1); "
        "the last value is used"
    ]


# --- One problem, one exact line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # wrong types
        (
            "FEATURE_ANONYMOUS_ACCESS: 'yes'\n",
            "FEATURE_ANONYMOUS_ACCESS: expected true or false, got 'yes'",
        ),
        ("FEATURE_PROXY_STORAGE: 1\n", "FEATURE_PROXY_STORAGE: expected true or false, got 1"),
        ("SERVER_WORKERS: '4'\n", "SERVER_WORKERS: expected an integer, got '4'"),
        ("SERVER_WORKERS: true\n", "SERVER_WORKERS: expected an integer, got true"),
        ("LOGIN_FAILURE_LIMIT: 2.5\n", "LOGIN_FAILURE_LIMIT: expected an integer, got 2.5"),
        ("SUPER_USERS: admin\n", "SUPER_USERS: expected a list, got 'admin'"),
        ("SUPER_USERS: [admin, 42]\n", "SUPER_USERS[1]: expected a string, got 42"),
        ("SERVER_HOSTNAME: 8080\n", "SERVER_HOSTNAME: expected a string, got 8080"),
        ("DB_CONNECTION_ARGS: [a, b]\n", "DB_CONNECTION_ARGS: expected a mapping, got a list"),
        (
            "SUPER_USERS:\n",
            "SUPER_USERS: expected a list, got null (remove the key to use the default)",
        ),
        # enums and ranges
        (
            "PREFERRED_URL_SCHEME: ftp\n",
            "PREFERRED_URL_SCHEME: expected 'http' or 'https', got 'ftp'",
        ),
        ("SERVER_WORKERS: 0\n", "SERVER_WORKERS: must be at least 1, got 0"),
        ("SERVER_WORKERS: 65\n", "SERVER_WORKERS: must be at most 64, got 65"),
        ("BLOB_UPLOAD_EXPIRATION_S: 59\n", "BLOB_UPLOAD_EXPIRATION_S: must be at least 60, got 59"),
        (
            "REGISTRY_JWT_EXPIRATION_S: 100000\n",
            "REGISTRY_JWT_EXPIRATION_S: must be at most 86400, got 100000",
        ),
        ("LOGIN_FAILURE_LIMIT: -1\n", "LOGIN_FAILURE_LIMIT: must be at least 0, got -1"),
        # database
        (
            "DB_URI: mysql://quay:secret@db/quay\n",
            "DB_URI: unsupported database scheme 'mysql' (use sqlite:/// or postgresql://)",
        ),
        (
            "DB_URI: mysql+pymysql://quay:secret@db/quay\n",
            "DB_URI: unsupported database scheme 'mysql+pymysql' (use sqlite:/// or postgresql://)",
        ),
        (
            "DB_URI: portside.db\n",
            "DB_URI: not a database URI (use sqlite:///PATH or postgresql://...)",
        ),
        # sizes
        (
            "MAXIMUM_LAYER_SIZE: lots\n",
            "MAXIMUM_LAYER_SIZE: expected a size such as 20G, 512M or 1Gi, got 'lots'",
        ),
        (
            "MAXIMUM_LAYER_SIZE: 20X\n",
            "MAXIMUM_LAYER_SIZE: expected a size such as 20G, 512M or 1Gi, got '20X'",
        ),
        (
            "MAXIMUM_MANIFEST_SIZE: 1024\n",
            "MAXIMUM_MANIFEST_SIZE: expected a size such as 20G, 512M or 1Gi (as a string), "
            "got 1024",
        ),
        (
            "BLOB_PROXY_CHUNK_SIZE: 0M\n",
            "BLOB_PROXY_CHUNK_SIZE: must be larger than zero, got '0M'",
        ),
        # host name
        (
            "SERVER_HOSTNAME: https://registry.example.com\n",
            "SERVER_HOSTNAME: must not include a URL scheme, got 'https://registry.example.com' "
            "(set the scheme with PREFERRED_URL_SCHEME)",
        ),
        (
            "SERVER_HOSTNAME: registry.example.com/v2\n",
            "SERVER_HOSTNAME: must be a host name or IP address with an optional port, "
            "got 'registry.example.com/v2'",
        ),
        (
            "SERVER_HOSTNAME: 'registry.example.com:99999'\n",
            "SERVER_HOSTNAME: invalid port '99999' in 'registry.example.com:99999' "
            "(expected 1-65535)",
        ),
        # storage
        (
            "DISTRIBUTED_STORAGE_PREFERENCE: [default, elsewhere]\n",
            "DISTRIBUTED_STORAGE_PREFERENCE: unknown storage location 'elsewhere' "
            "(DISTRIBUTED_STORAGE_CONFIG defines: default)",
        ),
        (
            "DISTRIBUTED_STORAGE_PREFERENCE: []\n",
            "DISTRIBUTED_STORAGE_PREFERENCE: must name at least one storage location",
        ),
        (
            "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [missing]\n",
            "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: unknown storage location 'missing' "
            "(DISTRIBUTED_STORAGE_CONFIG defines: default)",
        ),
        (
            "DISTRIBUTED_STORAGE_CONFIG: {}\n",
            "DISTRIBUTED_STORAGE_CONFIG: at least one storage location is required",
        ),
        (
            "DISTRIBUTED_STORAGE_CONFIG:\n  default: LocalStorage\n",
            "DISTRIBUTED_STORAGE_CONFIG.default: expected a list [DriverName, {parameters}]",
        ),
        (
            "DISTRIBUTED_STORAGE_CONFIG:\n  default: [LocalStorage]\n",
            "DISTRIBUTED_STORAGE_CONFIG.default: expected a list [DriverName, {parameters}] "
            "with 2 items, got 1",
        ),
        (
            "DISTRIBUTED_STORAGE_CONFIG:\n  default: [LocalStorage, data/storage]\n",
            "DISTRIBUTED_STORAGE_CONFIG.default: the parameters of driver LocalStorage must be "
            "a mapping, got str",
        ),
        # unknown keys
        (
            "SERVR_HOSTNAME: registry.example.com\n",
            "SERVR_HOSTNAME: unknown configuration key (did you mean SERVER_HOSTNAME?)",
        ),
        (
            "server_workers: 2\n",
            "server_workers: unknown configuration key (did you mean SERVER_WORKERS?)",
        ),
        ("WHATEVER_ELSE: 1\n", "WHATEVER_ELSE: unknown configuration key"),
    ],
)
def test_single_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_for(tmp_path, text) == [expected]


def test_unknown_storage_driver_names_the_location(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path,
        """\
        DISTRIBUTED_STORAGE_CONFIG:
          primary:
            - FancyCloudStorage
            - storage_path: /x
        """,
    )
    assert len(problems) == 1
    assert problems[0].startswith("DISTRIBUTED_STORAGE_CONFIG.primary: ")


def test_bad_storage_location_does_not_also_blame_the_preference(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path,
        """\
        DISTRIBUTED_STORAGE_CONFIG:
          primary: [FancyCloudStorage, {storage_path: /x}]
        DISTRIBUTED_STORAGE_PREFERENCE: [primary]
        """,
    )
    assert len(problems) == 1
    assert problems[0].startswith("DISTRIBUTED_STORAGE_CONFIG.primary: ")


def test_database_password_is_never_echoed(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, "DB_URI: mysql://quay:hunter2@db/quay\n")
    assert "hunter2" not in problems[0]


# --- Quay keys ----------------------------------------------------------------------------


def test_quay_only_key_is_a_warning_not_an_error(tmp_path: Path) -> None:
    config, warnings = load_config(
        write(
            tmp_path,
            """\
            SERVER_HOSTNAME: quay.example.com
            BUILDLOGS_REDIS:
              host: redis.example.com
              port: 6379
            SETUP_COMPLETE: true
            AZURE_LOGIN_CONFIG:
              CLIENT_ID: abc
            """,
        )
    )
    assert config.SERVER_HOSTNAME == "quay.example.com"
    assert warnings == [
        "BUILDLOGS_REDIS: Quay configuration key not implemented by Portside yet; ignored",
        "SETUP_COMPLETE: Quay configuration key not implemented by Portside yet; ignored",
        "AZURE_LOGIN_CONFIG: Quay configuration key not implemented by Portside yet; ignored",
    ]


def test_typical_quay_config_loads(tmp_path: Path) -> None:
    """A minimal Quay config.yaml (using only what Portside supports) loads with warnings."""
    path = write(
        tmp_path,
        """\
        AUTHENTICATION_TYPE: Database
        BUILDLOGS_REDIS: {host: quay-redis, port: 6379}
        DATABASE_SECRET_KEY: a8c2744b-7004-4af2-bcee-e417e7bdd235
        DB_URI: postgresql://quayuser:quaypass@quay-db:5432/quay
        DEFAULT_TAG_EXPIRATION: 2w
        DISTRIBUTED_STORAGE_CONFIG:
          default:
            - LocalStorage
            - storage_path: /datastorage/registry
        DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: []
        DISTRIBUTED_STORAGE_PREFERENCE:
          - default
        FEATURE_MAILING: false
        PREFERRED_URL_SCHEME: http
        SECRET_KEY: e9bd34f4-900c-436a-979e-7530e5d74ac8
        SERVER_HOSTNAME: quay-server.example.com
        SETUP_COMPLETE: true
        SUPER_USERS:
          - quayadmin
        TAG_EXPIRATION_OPTIONS:
          - 2w
        USER_EVENTS_REDIS: {host: quay-redis, port: 6379}
        """,
    )
    config, warnings = load_config(path)
    assert config.SUPER_USERS == ["quayadmin"]
    assert config.sqlalchemy_url.startswith("postgresql+psycopg://")
    # DATABASE_SECRET_KEY is implemented (robot token encryption): no warning for it.
    assert config.DATABASE_SECRET_KEY == "a8c2744b-7004-4af2-bcee-e417e7bdd235"
    # FEATURE_MAILING, DEFAULT_TAG_EXPIRATION and TAG_EXPIRATION_OPTIONS are implemented too.
    assert len(warnings) == 5
    assert all(
        w.endswith("Quay configuration key not implemented by Portside yet; ignored")
        for w in warnings
    )


# --- Several problems at once -------------------------------------------------------------


def test_all_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path,
        """\
        SERVER_HOSTNAME: http://registry.example.com
        PREFERRED_URL_SCHEME: ftp
        BUILDLOGS_REDIS: {host: redis}
        FEATURE_ANONYMOUS_ACCESS: 'yes'
        SERVR_WORKERS: 2
        DB_URI: mysql://x@y/z
        MAXIMUM_LAYER_SIZE: big
        SERVER_WORKERS: '4'
        DISTRIBUTED_STORAGE_PREFERENCE: [nowhere]
        """,
    )
    assert problems == [
        "SERVER_HOSTNAME: must not include a URL scheme, got 'http://registry.example.com' "
        "(set the scheme with PREFERRED_URL_SCHEME)",
        "PREFERRED_URL_SCHEME: expected 'http' or 'https', got 'ftp'",
        "FEATURE_ANONYMOUS_ACCESS: expected true or false, got 'yes'",
        "SERVR_WORKERS: unknown configuration key (did you mean SERVER_WORKERS?)",
        "DB_URI: unsupported database scheme 'mysql' (use sqlite:/// or postgresql://)",
        "MAXIMUM_LAYER_SIZE: expected a size such as 20G, 512M or 1Gi, got 'big'",
        "SERVER_WORKERS: expected an integer, got '4'",
        "DISTRIBUTED_STORAGE_PREFERENCE: unknown storage location 'nowhere' "
        "(DISTRIBUTED_STORAGE_CONFIG defines: default)",
    ]


def test_validate_file_returns_warnings_alongside_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "SECRET_KEY: abc\nSERVER_WORKERS: 0\n")
    problems, warnings = validate_file(path)
    assert problems == ["SERVER_WORKERS: must be at least 1, got 0"]
    assert warnings == [
        "SECRET_KEY: Quay configuration key not implemented by Portside yet; ignored"
    ]


def test_config_error_str_lists_every_problem() -> None:
    error = ConfigError(["A: one", "B: two"])
    assert error.problems == ["A: one", "B: two"]
    assert str(error) == "A: one\nB: two"
