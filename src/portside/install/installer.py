"""Install, upgrade and remove a self-contained registry under one root directory.

The root holds everything: ``config.yaml`` (0600, with the generated
``DATABASE_SECRET_KEY``), ``data/`` (SQLite database and blobs), ``tls/`` (the CA and the
server certificate), ``logs/``, and ``install.json`` (what was installed and how it
runs). Installing again over an existing root keeps the config's secrets, the data, the
CA and the users, applies the options given, migrates the database with the code now
installed, and restarts the service: that is the upgrade path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from portside.certificates import ensure_tls_files
from portside.install.service import ServeCommand, ServiceManager, service_manager

__all__ = ["InstallError", "InstallOptions", "InstallResult", "install", "uninstall"]

#: Marks a directory as an installation root: uninstall removes nothing without it.
MARKER = "install.json"
#: Seconds to wait for ``/health/instance`` after starting.
HEALTH_TIMEOUT_S = 90.0


class InstallError(Exception):
    """Installing or removing failed; the message says what to do."""


@dataclass(frozen=True)
class InstallOptions:
    """``portside install``'s options; ``None`` means "keep what is installed, or the
    default on a first install"."""

    root: Path
    hostname: str | None = None
    port: int | None = None
    init_user: str | None = None
    init_password: str | None = None
    ssl_cert: Path | None = None
    ssl_key: Path | None = None
    use_systemd: bool | None = None


@dataclass(frozen=True)
class InstallResult:
    """What the operator needs to know afterwards."""

    url: str
    hostname: str
    port: int
    username: str
    #: The initial user's password when it was set now; ``None`` when the user existed.
    password: str | None
    #: The CA to trust; ``None`` when the operator brought their own certificate.
    ca_certificate: Path | None
    service: str
    upgraded: bool


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _read_state(root: Path) -> dict[str, Any]:
    try:
        state = json.loads((root / MARKER).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InstallError(f"{root / MARKER} is unreadable: {exc}") from None
    return state if isinstance(state, dict) else {}


def _config(root: Path, hostname: str, port: int, username: str,
            existing: dict[str, Any]) -> dict[str, Any]:
    config = dict(existing)
    config.setdefault("DATABASE_SECRET_KEY", secrets.token_urlsafe(48))
    config.setdefault("DB_URI", f"sqlite:///{root / 'data' / 'portside.db'}")
    config.setdefault("DISTRIBUTED_STORAGE_CONFIG", {
        "default": ["LocalStorage", {"storage_path": str(root / "data" / "storage")}]})
    config.setdefault("DISTRIBUTED_STORAGE_PREFERENCE", ["default"])
    config["SERVER_HOSTNAME"] = hostname if port == 443 else f"{hostname}:{port}"
    config["PREFERRED_URL_SCHEME"] = "https"
    supers = list(config.get("SUPER_USERS") or [])
    if username not in supers:
        supers.append(username)
    config["SUPER_USERS"] = supers
    return config


def _tls(options: InstallOptions, root: Path, hostname: str) -> Path | None:
    """Put the server certificate and key in ``root/tls``; returns the CA to trust
    (``None`` for a certificate the operator brought)."""
    tls = root / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    if options.ssl_cert is not None and options.ssl_key is not None:
        for given in (options.ssl_cert, options.ssl_key):
            if not given.is_file():
                raise InstallError(f"{given} does not exist")
        shutil.copyfile(options.ssl_cert, tls / "ssl.cert")
        _write_private(tls / "ssl.key", options.ssl_key.read_text())
        (tls / "operator-certificate").touch()
        return None
    if (tls / "operator-certificate").exists():
        return None  # an upgrade keeps the operator's certificate
    hosts = list(dict.fromkeys([hostname, "localhost", "127.0.0.1"]))
    return ensure_tls_files(tls, hosts).ca_certificate


def _portside(config_path: Path, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portside", *args, "--config", str(config_path)],
        input=stdin, text=True, capture_output=True, check=False,
        env={key: value for key, value in os.environ.items() if key != "PORTSIDE_CONFIG"},
    )
    if result.returncode != 0:
        problem = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError(f"portside {args[0]} failed: {problem[-1] if problem else '?'}")


def _user_exists(config: dict[str, Any], username: str) -> bool:
    from sqlalchemy import select

    from portside.db.engine import create_db_engine
    from portside.db.models import User

    engine = create_db_engine(str(config["DB_URI"]))
    try:
        with engine.connect() as connection:
            return connection.scalar(
                select(User.id).where(User.username == username)) is not None
    finally:
        engine.dispose()


def _wait_healthy(port: int, ca: Path | None, manager: ServiceManager) -> None:
    # An operator's certificate need not name 127.0.0.1: then only "is it up?" is asked.
    context = (ssl.create_default_context(cafile=str(ca)) if ca is not None
               else ssl._create_unverified_context())
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/health/instance",
                                        timeout=5, context=context) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise InstallError(f"the registry did not become healthy ({last}); see "
                       f"{manager.log_hint()}")


def _check_port_free(port: int, previous_port: int | None) -> None:
    if port == previous_port:
        return  # our own server holds it until it restarts
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            raise InstallError(f"port {port} is in use; choose another with --port") from None


def install(options: InstallOptions,
            progress: Callable[[str], None] = lambda _message: None) -> InstallResult:
    """Install (or upgrade in place) and start the registry; see the module docstring."""
    root = options.root.resolve()
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise InstallError(f"{root} exists and is not a Portside installation; "
                           "choose an empty or new --root")
    state = _read_state(root)
    upgraded = bool(state)
    hostname = options.hostname or state.get("hostname") or socket.getfqdn()
    port = options.port or int(state.get("port") or 8443)
    username = options.init_user or state.get("init_user") or "init"
    if not 1 <= port <= 65535:
        raise InstallError(f"--port {port} is not a TCP port")
    if (options.ssl_cert is None) != (options.ssl_key is None):
        raise InstallError("--ssl-cert and --ssl-key must be given together")
    _check_port_free(port, state.get("port"))

    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for sub in ("data", "logs", "tls"):
        (root / sub).mkdir(exist_ok=True)
    progress(f"{'upgrading' if upgraded else 'installing'} in {root}")

    ca = _tls(options, root, hostname)
    config_path = root / "config.yaml"
    existing = (yaml.safe_load(config_path.read_text()) or {}) if config_path.exists() else {}
    config = _config(root, hostname, port, username, existing)
    _write_private(config_path, yaml.safe_dump(config, sort_keys=True))

    use_systemd = state.get("service") == "systemd" if upgraded else options.use_systemd
    manager = service_manager(root, use_systemd)
    manager.stop()  # an upgrade: the schema is migrated while nothing serves
    progress("migrating the database")
    _portside(config_path, "db", "upgrade")

    password: str | None = None
    if not _user_exists(config, username):
        password = options.init_password or secrets.token_urlsafe(18)
        progress(f"creating the user {username}")
        _portside(config_path, "user", "create", username, "--superuser", "--password-stdin",
                  stdin=password + "\n")

    service = "systemd" if manager.__class__.__name__ == "SystemdUnit" else "process"
    _write_private(root / MARKER, json.dumps({
        "hostname": hostname, "port": port, "init_user": username, "service": service,
    }, indent=2) + "\n")
    progress(f"starting the registry ({manager.description})")
    manager.start(ServeCommand(root, port))
    _wait_healthy(port, ca, manager)
    url = f"https://{hostname}" + ("" if port == 443 else f":{port}")
    return InstallResult(url, hostname, port, username, password, ca, manager.description,
                         upgraded)


def uninstall(root: Path, progress: Callable[[str], None] = lambda _message: None) -> None:
    """Stop the registry and delete its root (data included)."""
    root = root.resolve()
    if not (root / MARKER).exists():
        raise InstallError(f"{root} is not a Portside installation (no {MARKER})")
    state = _read_state(root)
    manager = service_manager(root, state.get("service") == "systemd")
    progress(f"stopping the registry ({manager.description})")
    manager.remove()
    progress(f"removing {root}")
    shutil.rmtree(root)
