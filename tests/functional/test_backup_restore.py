"""``portside backup`` while pushes go on, ``portside restore`` onto a fresh root: every
tag acknowledged before the backup pulls with identical digests and bytes, and secrets
(robot tokens) still work."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import yaml

from functional.client import Image, RegistryClient, sha256
from functional.conftest import PASSWORDS, Deployment, create_users
from functional.test_api_organizations import api
from support.server import RunningRegistry, free_port, postgres_database, running_registry


def _portside(*args: str, config: Path | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "portside", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          cwd=cwd)


def _pull_and_verify(client: RegistryClient, repo: str, tag: str, image: Image) -> None:
    response = client.request("GET", f"/v2/{repo}/manifests/{tag}", repo=repo,
                              actions="pull", headers={"Accept": image.media_type})
    assert response.status_code == 200, response.text
    assert response.content == image.manifest
    assert response.headers["docker-content-digest"] == image.digest
    for blob in (image.config, *image.layers):
        got = client.request("GET", f"/v2/{repo}/blobs/{sha256(blob)}", repo=repo,
                             actions="pull")
        assert got.status_code == 200 and got.content == blob


def _robot_token(deployment: Deployment) -> tuple[str, str]:
    with api(deployment, "alice") as client:
        created = client.put("/user/robots/backup", json={"description": "ci"})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
    return str(body["name"]), str(body["token"])


def _can_log_in(url: str, username: str, password: str) -> bool:
    client = RegistryClient(url, username, password)
    try:
        return client.token_response().status_code == 200
    finally:
        client.close()


def test_backup_while_pushing_then_restore(backend: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        db_uri = stack.enter_context(postgres_database()) if backend == "postgres" else None
        source = stack.enter_context(running_registry(tmp_path / "source", db_uri=db_uri,
                                                      LOGIN_FAILURE_LIMIT=0))
        create_users(source, ("alice",))
        deployment = Deployment(source, backend, "backup")
        alice = RegistryClient(source.url, "alice", PASSWORDS["alice"])
        stack.callback(alice.close)
        acknowledged: dict[tuple[str, str], Image] = {}
        for index in range(6):
            repo = f"alice/backup-{index % 3}"
            acknowledged[(repo, f"v{index}")] = alice.push_image(repo, f"v{index}",
                                                                 layers=2)
        robot, token = _robot_token(deployment)

        # Pushes go on while the backup runs; whatever it catches must be whole.
        stop = threading.Event()
        during: dict[tuple[str, str], Image] = {}

        def keep_pushing() -> None:
            pusher = RegistryClient(source.url, "alice", PASSWORDS["alice"])
            try:
                count = 0
                while not stop.is_set():
                    key = ("alice/during", f"d{count}")
                    during[key] = pusher.push_image(*key)
                    count += 1
            finally:
                pusher.close()

        thread = threading.Thread(target=keep_pushing, daemon=True)
        thread.start()
        archive = tmp_path / "registry-backup.tar"
        # In the registry's working directory, as an operator would: without
        # DATABASE_SECRET_KEY, a PostgreSQL registry keeps its secret in ./data there.
        result = _portside("backup", "--output", str(archive), config=source.config_path,
                           cwd=source.root)
        stop.set()
        thread.join(timeout=60)
        assert during, "no push went on during the backup"
        assert result.returncode == 0, result.stderr
        assert "wrote" in result.stdout
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert "backup.json" in names and "config/config.yaml" in names
        assert not any("/uploads/" in name for name in names)
        assert not archive.with_name(archive.name + ".partial").exists()

        target_db = stack.enter_context(postgres_database()) if backend == "postgres" else None
        root = tmp_path / "restored"
        restore_args = ["restore", str(archive), "--root", str(root)]
        if target_db is not None:
            restore_args += ["--db-uri", target_db]
        restored = _portside(*restore_args)
        assert restored.returncode == 0, restored.stderr
        config = yaml.safe_load((root / "config.yaml").read_text())
        assert (root / "config.yaml").stat().st_mode & 0o077 == 0
        if backend == "sqlite":
            assert config["DB_URI"] == f"sqlite:///{root / 'data' / 'portside.db'}"
        else:
            assert config["DB_URI"] == target_db
        # The source goes away: the restored registry stands on its own.
        source.stop()

        port = free_port()
        config["SERVER_HOSTNAME"] = f"127.0.0.1:{port}"
        copy = RunningRegistry(root=root, port=port, config=config)
        copy.start()
        stack.callback(copy.stop)
        reader = RegistryClient(copy.url, "alice", PASSWORDS["alice"])
        stack.callback(reader.close)
        for (repo, tag), image in acknowledged.items():
            _pull_and_verify(reader, repo, tag, image)
        listed = reader.request("GET", "/v2/alice/during/tags/list", repo="alice/during",
                                actions="pull")
        caught = (listed.json().get("tags") or []) if listed.status_code == 200 else []
        for tag in caught:
            _pull_and_verify(reader, "alice/during", tag, during[("alice/during", tag)])
        # Robot tokens are encrypted with the database secret: they still work.
        assert _can_log_in(copy.url, robot, token)
        assert not _can_log_in(copy.url, robot, token[:-2] + "xx")


def test_restore_refuses_a_non_empty_root_and_a_bad_archive(tmp_path: Path) -> None:
    root = tmp_path / "busy"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar archive at all")
    refused = _portside("restore", str(bogus), "--root", str(root))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    assert (root / "keep.txt").read_text() == "mine"
    bad = _portside("restore", str(bogus), "--root", str(tmp_path / "fresh"))
    assert bad.returncode == 1 and "not a Portside backup" in bad.stderr
    fresh = tmp_path / "fresh"
    assert not fresh.exists() or not any(fresh.iterdir())
