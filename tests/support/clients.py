"""Drive real container clients (skopeo, podman, buildah, docker) in end-to-end tests.

Every client runs with its own state in a temporary folder (auth file, runtime dir,
storage root, temp dir), so tests neither read nor change the machine's client state.
A failing command raises :class:`CommandFailed` with the client's output and the tail
of the server logs handed in, which is usually enough to see which side is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Generous per-command limit: a hung client must not hang the suite.
COMMAND_TIMEOUT_S = 300


class CommandFailed(AssertionError):
    """A client command exited non-zero (or timed out)."""


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def client_env(state: Path) -> dict[str, str]:
    """Environment that keeps a client's per-user state inside ``state``."""
    for sub in ("home", "run", "config", "tmp", "docker"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "run").chmod(0o700)
    authfile = state / "auth.json"
    if not authfile.exists():
        # buildah refuses a REGISTRY_AUTH_FILE that does not exist.
        authfile.write_text('{"auths": {}}\n')
    env = dict(os.environ)
    for name in ("DOCKER_HOST", "CONTAINER_HOST", "CONTAINERS_STORAGE_CONF", "DOCKER_CONTEXT"):
        env.pop(name, None)
    env.update(
        HOME=str(state / "home"),
        XDG_RUNTIME_DIR=str(state / "run"),
        XDG_CONFIG_HOME=str(state / "config"),
        TMPDIR=str(state / "tmp"),
        REGISTRY_AUTH_FILE=str(authfile),
        DOCKER_CONFIG=str(state / "docker"),
    )
    return env


@dataclass
class Client:
    """A client binary run with an isolated environment."""

    binary: str
    state: Path
    #: Server logs whose tails are shown when a command fails.
    logs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.env = client_env(self.state)

    def close(self) -> None:
        """Remove state that should not outlive the test (big or outside ``state``)."""

    @property
    def authfile(self) -> str:
        """The client's private auth file."""
        return self.env["REGISTRY_AUTH_FILE"]

    def base_args(self) -> list[str]:
        """Global options put before every sub-command."""
        return []

    def run(self, *args: str, check: bool = True, input: str | None = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``binary <base args> <args>``; raise :class:`CommandFailed` if asked to."""
        result = self.run_bytes(*args, check=check,
                                input=None if input is None else input.encode(),
                                timeout=timeout)
        return subprocess.CompletedProcess(result.args, result.returncode,
                                           result.stdout.decode(errors="replace"),
                                           result.stderr.decode(errors="replace"))

    def run_bytes(self, *args: str, check: bool = True, input: bytes | None = None,
                  timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
        """Like :meth:`run`, with stdout and stderr as bytes (exact output)."""
        cmd = [self.binary, *self.base_args(), *args]
        try:
            if input is None:
                result = subprocess.run(cmd, env=self.env, capture_output=True,
                                        stdin=subprocess.DEVNULL, timeout=timeout)
            else:
                result = subprocess.run(cmd, env=self.env, capture_output=True,
                                        input=input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(self._report(cmd, f"timed out after {timeout}s",
                                             exc.stdout, exc.stderr)) from None
        if check and result.returncode != 0:
            raise CommandFailed(self._report(cmd, f"exit status {result.returncode}",
                                             result.stdout, result.stderr))
        return result

    def _report(self, cmd: Sequence[str], what: str, stdout: bytes | str | None,
                stderr: bytes | str | None) -> str:
        def text(value: bytes | str | None) -> str:
            if isinstance(value, bytes):
                return value.decode(errors="replace")
            return value or ""

        lines = [f"{' '.join(cmd)}: {what}", "--- stdout ---", text(stdout)[-3000:],
                 "--- stderr ---", text(stderr)[-6000:]]
        for log in self.logs:
            lines += [f"--- {log} (tail) ---", _tail(log)]
        return "\n".join(lines)


class Skopeo(Client):
    """``skopeo`` against plain-HTTP registries on loopback."""

    def copy(self, source: str, dest: str, *, src_creds: str | None = None,
             dest_creds: str | None = None, all_images: bool = False,
             digestfile: Path | None = None, preserve_digests: bool = True,
             format_: str | None = None) -> None:
        """``skopeo copy`` (manifests kept byte for byte unless told otherwise).

        ``format_`` (``oci``, ``v2s2``) converts the manifest; it needs
        ``preserve_digests=False``.
        """
        args = ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
        if format_:
            args += ["--format", format_]
        if source.startswith("docker://"):
            args += ["--src-creds", src_creds] if src_creds else ["--src-no-creds"]
        if dest.startswith("docker://"):
            args += ["--dest-creds", dest_creds] if dest_creds else ["--dest-no-creds"]
        if all_images:
            args.append("--all")
        if preserve_digests:
            args.append("--preserve-digests")
        if digestfile is not None:
            args += ["--digestfile", str(digestfile)]
        self.run(*args, source, dest)

    @staticmethod
    def _auth(creds: str | None) -> list[str]:
        return ["--creds", creds] if creds else ["--no-creds"]

    def inspect_raw(self, ref: str, creds: str | None = None) -> bytes:
        """The manifest bytes as the registry serves them."""
        args = ["inspect", "--raw", "--tls-verify=false", *self._auth(creds), ref]
        return self.run_bytes(*args).stdout

    def inspect(self, ref: str, creds: str | None = None) -> dict[str, Any]:
        """``skopeo inspect`` (config-derived summary) as JSON."""
        result = self.run("inspect", "--tls-verify=false", *self._auth(creds), ref)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def list_tags(self, repo_ref: str, creds: str | None = None) -> list[str]:
        """``skopeo list-tags`` of ``docker://host/repo``."""
        result = self.run("list-tags", "--tls-verify=false", *self._auth(creds), repo_ref)
        tags: list[str] = json.loads(result.stdout)["Tags"]
        return tags

    def delete(self, ref: str, creds: str | None = None) -> None:
        """``skopeo delete`` (deletes the manifest the reference resolves to)."""
        self.run("delete", "--tls-verify=false", *self._auth(creds), ref)


class ContainersStorageClient(Client):
    """podman / buildah with a private vfs storage root."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # podman refuses a runroot longer than 50 characters, so it cannot live in
        # pytest's (long) tmp_path.
        self.runroot = Path(tempfile.mkdtemp(prefix="ps-e2e-runroot-", dir="/tmp"))

    def base_args(self) -> list[str]:
        return [
            "--root", str(self.state / "storage"),
            "--runroot", str(self.runroot),
            "--storage-driver", "vfs",
        ]

    def close(self) -> None:
        """Drop the vfs storage (full copies of every layer) and the runroot."""
        shutil.rmtree(self.state / "storage", ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


class Podman(ContainersStorageClient):
    """``podman`` with private storage, cgroupfs and file events (no systemd needed)."""

    def base_args(self) -> list[str]:
        return [*super().base_args(), "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--tmpdir", str(self.state / "libpod-tmp")]

    def image_id(self, ref: str) -> str:
        """The local image ID (the config digest's hex)."""
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


class Buildah(ContainersStorageClient):
    """``buildah`` with private storage."""


class OCILayout:
    """Read-only view of an OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def index(self) -> dict[str, Any]:
        """The layout's ``index.json``."""
        data: dict[str, Any] = json.loads((self.path / "index.json").read_text())
        return data

    def descriptor(self, tag: str) -> dict[str, Any]:
        """The top-level descriptor named ``tag`` (``org.opencontainers.image.ref.name``)."""
        for descriptor in self.index()["manifests"]:
            if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return dict(descriptor)
        raise KeyError(f"{self.path}: no manifest tagged {tag!r}")

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives in the layout."""
        algorithm, hexpart = digest.split(":", 1)
        return self.path / "blobs" / algorithm / hexpart

    def blob(self, digest: str) -> bytes:
        """A (small) blob's bytes."""
        return self.blob_path(digest).read_bytes()

    def json_blob(self, digest: str) -> dict[str, Any]:
        """A JSON blob (manifest, index, config)."""
        data: dict[str, Any] = json.loads(self.blob(digest))
        return data

    def verify_blob(self, digest: str) -> None:
        """Assert that the blob is present and its bytes hash to its digest."""
        path = self.blob_path(digest)
        assert path.is_file(), f"{self.path}: blob {digest} missing"
        actual = file_digest(path)
        assert actual == digest, f"{self.path}: blob {digest} holds content {actual}"

    def verify_image(self, digest: str) -> list[str]:
        """Check a manifest (or index, recursively) and everything it references.

        Returns the digests of the image manifests found (one per platform for an index).
        """
        self.verify_blob(digest)
        document = self.json_blob(digest)
        if "manifests" in document:
            found: list[str] = []
            for child in document["manifests"]:
                found += self.verify_image(child["digest"])
            return found
        self.verify_blob(document["config"]["digest"])
        for layer in document.get("layers", []):
            self.verify_blob(layer["digest"])
        return [digest]


# --- docker ---------------------------------------------------------------------------

@dataclass
class DockerDaemon:
    """A ``dockerd`` started by hand with all its state in ``root``."""

    root: Path
    insecure_registries: list[str]
    dockerd: str = "dockerd"
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        """The daemon's API socket."""
        return self.root / "docker.sock"

    @property
    def log_path(self) -> Path:
        """dockerd's (and its containerd's) output."""
        return self.root / "dockerd.log"

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` value for clients."""
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until its API answers; raise RuntimeError if it cannot."""
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            self.dockerd,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "-H", self.host,
            "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--ip-masq=false", "--storage-driver", "vfs",
            "--log-level", os.environ.get("PORTSIDE_E2E_DOCKERD_LOG_LEVEL", "info"),
        ]
        for registry in self.insecure_registries:
            args += ["--insecure-registry", registry]
        log = self.log_path.open("ab")
        # Its own session, so the daemon and the containerd it spawns can be signalled
        # as a group without touching anything else.
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited with status {self.process.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout}s:\n{_tail(self.log_path)}")

    def _ping(self) -> bool:
        import socket as socketlib

        try:
            with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL of its process group)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Anything dockerd left in its session (its containerd) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


class Docker(Client):
    """The docker CLI talking to one private daemon."""

    def __init__(self, binary: str, state: Path, daemon: DockerDaemon,
                 logs: list[Path] | None = None) -> None:
        super().__init__(binary, state, list(logs or []))
        self.daemon = daemon
        self.env["DOCKER_HOST"] = daemon.host
        self.logs.append(daemon.log_path)

    def image_id(self, ref: str) -> str:
        """The local image ID (``sha256:<config digest hex>``)."""
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


# --- skopeo round trip ------------------------------------------------------------------

@dataclass(frozen=True)
class RoundTrip:
    """What a push of a layout to a registry and a pull back into a fresh layout gave."""

    #: The manifest (or index) digest in the source layout.
    source_digest: str
    #: The digest skopeo reported for the push (``--digestfile``).
    pushed_digest: str
    #: The manifest bytes the registry serves for the pushed reference.
    served: bytes
    #: The digest at the top of the freshly pulled layout.
    pulled_digest: str
    pulled: OCILayout
    #: Image manifests found (and verified blob by blob) in the pulled layout.
    pulled_images: list[str]

    @property
    def served_digest(self) -> str:
        """sha256 of the served manifest bytes."""
        return sha256_digest(self.served)


def skopeo_round_trip(skopeo: Skopeo, layout: Path, tag: str, dest: str, creds: str | None,
                      work: Path, all_images: bool = False) -> RoundTrip:
    """Copy ``oci:<layout>:<tag>`` to ``dest`` and back into ``work/pulled``."""
    source = OCILayout(layout)
    source_digest = str(source.descriptor(tag)["digest"])
    work.mkdir(parents=True, exist_ok=True)
    digestfile = work / "pushed.digest"
    skopeo.copy(f"oci:{layout}:{tag}", dest, dest_creds=creds, all_images=all_images,
                digestfile=digestfile)
    pushed_digest = digestfile.read_text().strip()
    served = skopeo.inspect_raw(dest, creds)
    pulled_dir = work / "pulled"
    skopeo.copy(dest, f"oci:{pulled_dir}:{tag}", src_creds=creds, all_images=all_images)
    pulled = OCILayout(pulled_dir)
    pulled_digest = str(pulled.descriptor(tag)["digest"])
    return RoundTrip(source_digest, pushed_digest, served, pulled_digest, pulled,
                     pulled.verify_image(pulled_digest))
