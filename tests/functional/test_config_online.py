"""``portside config validate --online`` and the same checks when ``portside serve``
starts: unreachable databases and storage are named, one line each; start-up refuses
them unless ``IGNORE_VALIDATION=true``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support.server import free_port


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _unreachable_s3(root: Path) -> dict[str, Any]:
    return {
        "DB_URI": f"sqlite:///{root / 'portside.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": {
            "local": ["LocalStorage", {"storage_path": str(root / "storage")}],
            "remote": ["S3Storage", {
                "s3_bucket": "bucket", "s3_access_key": "key", "s3_secret_key": "secret",
                "host": "127.0.0.1", "port": free_port(), "is_secure": False,
                "storage_path": "/registry"}],
        },
        "DISTRIBUTED_STORAGE_PREFERENCE": ["local"],
    }


def _portside(*args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portside", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def test_validate_online_passes_when_everything_answers(tmp_path: Path) -> None:
    path = _write(tmp_path / "config.yaml", {
        "DB_URI": f"sqlite:///{tmp_path / 'portside.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": {
            "default": ["LocalStorage", {"storage_path": str(tmp_path / "storage")}]},
    })
    result = _portside("config", "validate", "--online", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: database" in result.stdout and "ok: storage:default" in result.stdout
    assert "valid and reachable" in result.stdout


def test_validate_online_names_each_unreachable_dependency(tmp_path: Path) -> None:
    config = _unreachable_s3(tmp_path)
    config["DB_URI"] = f"postgresql://portside:secret-pw@127.0.0.1:{free_port()}/portside"
    path = _write(tmp_path / "config.yaml", config)
    started = time.monotonic()
    result = _portside("config", "validate", "--online", str(path))
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stdout
    assert errors[0].startswith("error: database: ") and "refused" in errors[0]
    assert errors[1].startswith("error: storage:remote: ")
    assert "ok: storage:local" in result.stdout
    assert "secret-pw" not in result.stdout + result.stderr
    # Offline validation alone accepts the same file.
    assert _portside("config", "validate", str(path)).returncode == 0


def _wait_for(port: int, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


def test_serve_refuses_unreachable_storage_unless_told_to_ignore(tmp_path: Path) -> None:
    path = _write(tmp_path / "config.yaml", _unreachable_s3(tmp_path))
    port = free_port()
    refused = _portside("serve", "--port", str(port), "--config", str(path))
    assert refused.returncode == 2
    assert "error: storage:remote:" in refused.stderr
    assert "IGNORE_VALIDATION=true" in refused.stderr

    process = subprocess.Popen(
        [sys.executable, "-m", "portside", "serve", "--port", str(port), "--config",
         str(path)], env={**os.environ, "IGNORE_VALIDATION": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait_for(port, 60), "the server did not start with IGNORE_VALIDATION"
    finally:
        os.killpg(process.pid, 15)
        output = process.communicate(timeout=30)[0].decode()
    assert "warning: storage:remote:" in output


def test_serve_names_an_unreachable_database(tmp_path: Path) -> None:
    config = _unreachable_s3(tmp_path)
    config["DB_URI"] = f"postgresql://portside@127.0.0.1:{free_port()}/portside"
    path = _write(tmp_path / "config.yaml", config)
    refused = _portside("serve", "--port", str(free_port()), "--config", str(path))
    assert refused.returncode == 1
    assert "error: cannot reach the database:" in refused.stderr
    assert "Traceback" not in refused.stderr and "╭" not in refused.stderr
