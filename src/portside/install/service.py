"""Keeping an installed registry running: a systemd unit where systemd runs, otherwise a
managed background process with a pid file.

Both run the same command line, ``<python> -m portside serve --config <root>/config.yaml
...``, with the Python of the environment ``portside install`` ran from; removing that
environment breaks the service (install again from the new one).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BackgroundProcess", "ServiceManager", "SystemdUnit", "service_manager"]

#: Where systemd looks for administrator units.
SYSTEMD_UNIT_DIR = Path("/etc/systemd/system")
#: Seconds a stopping server gets before it is killed.
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ServeCommand:
    """What the service runs."""

    root: Path
    port: int
    host: str = "0.0.0.0"

    def argv(self) -> list[str]:
        """The command line (no secrets on it: they are in the config file)."""
        tls = self.root / "tls"
        return [sys.executable, "-m", "portside", "serve",
                "--config", str(self.root / "config.yaml"),
                "--host", self.host, "--port", str(self.port),
                "--ssl-cert", str(tls / "ssl.cert"), "--ssl-key", str(tls / "ssl.key")]


class ServiceManager:
    """Starts, stops and removes the registry's service."""

    description: str = ""

    def start(self, command: ServeCommand) -> None:
        """Start (or restart) the service running ``command``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the service if it runs."""
        raise NotImplementedError

    def remove(self) -> None:
        """Stop the service and remove what :meth:`start` set up."""
        raise NotImplementedError

    def log_hint(self) -> str:
        """Where to look when the service does not come up."""
        raise NotImplementedError


class SystemdUnit(ServiceManager):
    """A systemd unit ``portside-registry-<name>.service``, enabled at boot."""

    def __init__(self, root: Path, unit_dir: Path = SYSTEMD_UNIT_DIR) -> None:
        # One unit per root, so several installations can live side by side.
        self.name = f"portside-registry-{_unit_suffix(root)}.service"
        self.path = unit_dir / self.name
        self.description = f"systemd unit {self.name}"

    def start(self, command: ServeCommand) -> None:
        self.path.write_text(
            "[Unit]\n"
            f"Description=Portside container registry ({command.root})\n"
            "After=network-online.target\nWants=network-online.target\n\n"
            "[Service]\n"
            f"WorkingDirectory={command.root}\n"
            f"ExecStart={shlex.join(command.argv())}\n"
            "Restart=on-failure\nRestartSec=5\nTimeoutStopSec=30\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
        _run("systemctl", "daemon-reload")
        _run("systemctl", "enable", self.name)
        _run("systemctl", "restart", self.name)

    def stop(self) -> None:
        if self.path.exists():
            _run("systemctl", "stop", self.name, check=False)

    def remove(self) -> None:
        if self.path.exists():
            _run("systemctl", "disable", "--now", self.name, check=False)
            self.path.unlink()
            _run("systemctl", "daemon-reload", check=False)

    def log_hint(self) -> str:
        return f"journalctl -u {self.name}"


class BackgroundProcess(ServiceManager):
    """The server as a detached process group; its pid in ``<root>/portside.pid`` and its
    output in ``<root>/logs/portside.log``. It does not come back after a reboot: run
    ``portside install`` again (it keeps everything) or use a host with systemd."""

    description = "background process (no systemd on this host)"

    def __init__(self, root: Path) -> None:
        self.pid_file = root / "portside.pid"
        self.log_file = root / "logs" / "portside.log"

    def start(self, command: ServeCommand) -> None:
        self.stop()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                command.argv(), cwd=command.root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                env={key: value for key, value in os.environ.items()
                     if key != "PORTSIDE_CONFIG"},
            )
        self.pid_file.write_text(f"{process.pid}\n")

    def running_pid(self) -> int | None:
        """The pid of the running server, ``None`` when it does not run."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A pid reused by an unrelated process after a reboot is not ours.
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"portside" not in cmdline.read_bytes():
            return None
        return pid

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            # The whole group: granian's worker processes go with their parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def remove(self) -> None:
        self.stop()

    def log_hint(self) -> str:
        return str(self.log_file)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        if " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]:
            return False
    return True


def systemd_available() -> bool:
    """Whether systemd manages this host and we may install system units."""
    return (Path("/run/systemd/system").is_dir() and os.geteuid() == 0
            and SYSTEMD_UNIT_DIR.is_dir())


def service_manager(root: Path, use_systemd: bool | None = None) -> ServiceManager:
    """systemd when available (or when ``use_systemd`` says so), else a background
    process."""
    if use_systemd is None:
        use_systemd = systemd_available()
    return SystemdUnit(root) if use_systemd else BackgroundProcess(root)


def _unit_suffix(root: Path) -> str:
    import hashlib

    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]


def _run(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
