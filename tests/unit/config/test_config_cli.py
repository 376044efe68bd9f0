"""``portside config print`` and ``portside config schema``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from portside.cli.main import app
from portside.config import CONFIG_ENV_VAR, PortsideConfig


@pytest.fixture(autouse=True)
def _own_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command sets the config path in the environment; keep that inside the test.
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_print_shows_defaults_and_masks_secrets(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
DB_URI: postgresql://quay:hunter2@db:5432/quay
DATABASE_SECRET_KEY: very-secret-value
MAIL_PASSWORD: mail-pass
FEATURE_MAILING: false
REGISTRY_STATE: readonly
DISTRIBUTED_STORAGE_CONFIG:
  default: [LocalStorage, {{storage_path: {tmp_path / "storage"}}}]
""",
    )
    result = CliRunner().invoke(app, ["config", "print", "--config", str(path)])
    assert result.exit_code == 0, result.output
    for secret in ("hunter2", "very-secret-value", "mail-pass"):
        assert secret not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["DATABASE_SECRET_KEY"] == "********"
    assert printed["MAIL_PASSWORD"] == "********"
    assert printed["DB_URI"] == "postgresql://quay:********@db:5432/quay"
    assert printed["REGISTRY_STATE"] == "readonly"
    # Defaults are included, and booleans are never masked.
    assert printed["DISABLE_PUSHES"] is False
    assert printed["FEATURE_APP_SPECIFIC_TOKENS"] is True
    assert set(printed) == set(PortsideConfig.model_fields)


def test_print_masks_storage_credentials(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
DISTRIBUTED_STORAGE_CONFIG:
  s3: [S3Storage, {s3_bucket: b, s3_access_key: AKIAEXAMPLE, s3_secret_key: s3cr3t,
                   host: minio, storage_path: /r}]
DISTRIBUTED_STORAGE_PREFERENCE: [s3]
""",
    )
    result = CliRunner().invoke(app, ["config", "print", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "s3cr3t" not in result.stdout and "AKIAEXAMPLE" not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["DISTRIBUTED_STORAGE_CONFIG"]["s3"][1]["s3_bucket"] == "b"


def test_print_reports_invalid_config(tmp_path: Path) -> None:
    path = _write(tmp_path, "REGISTRY_STATE: frozen\n")
    result = CliRunner().invoke(app, ["config", "print", "--config", str(path)])
    assert result.exit_code == 2
    assert "REGISTRY_STATE" in result.output


def test_schema_is_the_models_json_schema() -> None:
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(PortsideConfig.model_json_schema()))
    assert schema["properties"]["REGISTRY_STATE"]["enum"] == ["normal", "readonly"]
    assert schema["properties"]["DISABLE_PUSHES"]["default"] is False


def test_read_only_follows_either_key() -> None:
    assert not PortsideConfig().read_only
    assert PortsideConfig(REGISTRY_STATE="readonly").read_only
    assert PortsideConfig(DISABLE_PUSHES=True).read_only
