#!/usr/bin/env python3
"""Portside vs. CNCF Distribution, side by side on one machine, with the same clients.

Starts Portside (granian, token auth) and Debian's ``docker-registry`` (CNCF Distribution,
no auth: token auth would need a separate token server) one after the other -- never both
at once -- and measures:

1. skopeo push and pull of a 256 MiB, four-layer OCI image (MB/s, median of rounds);
2. raw blob GET of a dedicated 256 MiB random blob with curl (and its monolithic upload);
3. manifest GET-by-tag (wrk) and blob HEAD (hey: wrk cannot do HEAD) at 32 connections:
   requests/s, p99 latency and the server's CPU time per request;
4. server memory: peak RSS of the server's process tree during the runs above, and while
   a 1 GiB random blob is uploaded and then streamed to curl (target: under 200 MB).

Results: a Markdown table on stdout and in ``benchmarks/results/latest.md``, everything
in ``benchmarks/results/latest.json``. Uses only the standard library (httpx only for the
fallback load generator). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import collections
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / ".cache" / "testimages" / "big-layers"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
DISTRIBUTION_BIN = "/usr/bin/docker-registry"

USER = "bench"
PASSWORD = "bench-password-not-a-secret"
PUSH_REPO = f"{USER}/push"  # push repetitions go to push-1, push-2, ...
BLOB_REPO = f"{USER}/blob"
STREAM_REPO = f"{USER}/stream"

MIB = 1 << 20
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes per second)
RSS_TARGET_MB = 200.0
SAMPLE_INTERVAL_S = 0.05
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
NO_PROXY_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the result table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Settings and time budget
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What to run, derived from the command line."""

    quick: bool
    workers: tuple[int, ...]
    keep: bool
    profile: bool
    force_httpx: bool
    image: Path
    results_dir: Path
    portside_bin: Path
    repeats: int
    load_rounds: int
    blob_size: int
    stream_size: int
    load_seconds: int
    connections: int
    budget_s: float


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse the command line into :class:`Settings`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 repeat/round, 32 MiB / 128 MiB blobs, 3 s load runs")
    parser.add_argument("--portside-workers", type=int, nargs="+", default=[1], metavar="N",
                        help="granian worker processes; several values give one table each "
                             "(e.g. --portside-workers 1 2). Default: 1")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--profile", action="store_true",
                        help="also record a py-spy profile of Portside's manifest GET under load")
    parser.add_argument("--httpx-load", action="store_true",
                        help="use the httpx load generator instead of wrk/hey (for testing it)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                        help="OCI image layout to push (tag 'latest')")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--portside-bin", type=Path, default=None,
                        help="the portside executable (default: .venv/bin/portside)")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if any(n < 1 or n > 64 for n in args.portside_workers):
        parser.error("--portside-workers takes values from 1 to 64")
    quick = bool(args.quick)
    return Settings(
        quick=quick,
        workers=tuple(dict.fromkeys(args.portside_workers)),
        keep=args.keep,
        profile=args.profile,
        force_httpx=args.httpx_load,
        image=args.image.resolve(),
        results_dir=args.results_dir.resolve(),
        portside_bin=(args.portside_bin or default_portside_bin()).resolve(),
        repeats=1 if quick else 3,
        load_rounds=1 if quick else 3,
        blob_size=(32 if quick else 256) * MIB,
        stream_size=(128 if quick else 1024) * MIB,
        load_seconds=3 if quick else 10,
        connections=args.connections,
        budget_s=240.0 if quick else 570.0,
    )


def default_portside_bin() -> Path:
    """The project's venv entry point, else whatever ``portside`` is on PATH."""
    venv = REPO_ROOT / ".venv" / "bin" / "portside"
    if venv.exists():
        return venv
    found = shutil.which("portside")
    if found is None:
        raise SystemExit("portside executable not found: pass --portside-bin")
    return Path(found)


class BudgetExceeded(RuntimeError):
    """The run would take longer than its time budget."""


class Deadline:
    """An overall time budget that every wait and subprocess is capped by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left."""
        return self._end - time.monotonic()

    def cap(self, wanted: float) -> float:
        """``wanted`` seconds, or what is left of the budget if that is less."""
        left = self.remaining()
        if left < 2:
            raise BudgetExceeded(f"time budget of {self.seconds:.0f} s used up")
        return min(wanted, left)


# --------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------


class CommandFailed(RuntimeError):
    """A client command exited non-zero or answered unexpectedly."""


class ProcessGroup:
    """Long-running children (servers, profilers), each in a session of its own.

    A server and the workers it forks share that session's process group, so they are
    ended together by the group id, which is the pid of the process we started.
    """

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` with stdout and stderr appended to ``log_path``."""
        with log_path.open("ab") as log_file:
            proc = subprocess.Popen(list(args), stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                    start_new_session=True)
        self._running.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; reap the leader."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        _signal_group(proc.pid, signal.SIGKILL)  # workers that outlived their parent
        if proc in self._running:
            self._running.remove(proc)

    def end_all(self) -> None:
        """End every child still running (idempotent; used on exit and interrupt)."""
        for proc in list(self._running):
            with contextlib.suppress(Exception):
                self.end(proc, grace_s=5.0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def run(args: Sequence[str], timeout: float, env: dict[str, str] | None = None,
        stdin_text: str | None = None) -> str:
    """Run a short client command; return its stdout, raise :class:`CommandFailed`."""
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                env=env, input=stdin_text, check=False)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{args[0]} timed out after {timeout:.0f} s") from None
    if result.returncode != 0:
        raise CommandFailed(f"{' '.join(args[:3])} ... exited {result.returncode}: "
                            f"{(result.stderr or result.stdout).strip()[-800:]}")
    return result.stdout


def client_env(**extra: str) -> dict[str, str]:
    """The environment for client tools: never through a proxy."""
    return {**os.environ, **NO_PROXY_ENV, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool_version(args: Sequence[str]) -> str:
    """First line a tool prints about its version, or ``"?"``."""
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0][:80] if lines else "?"


# --------------------------------------------------------------------------------------
# /proc: process tree, memory, CPU
# --------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError):
            found.extend(int(x) for x in Path(f"/proc/{pid}/task/{tid}/children")
                         .read_text().split())
    return found


def process_tree(root: int, limit: int = 256) -> list[int]:
    """``root`` and all its descendants."""
    pids: list[int] = []
    queue = [root]
    while queue and len(pids) < limit:
        pid = queue.pop()
        pids.append(pid)
        queue.extend(children_of(pid))
    return pids


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``; 0 if gone."""
    return _kb_field(f"/proc/{pid}/status", key)


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between their users); 0 if gone."""
    return _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")


def _kb_field(path: str, key: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def kb_to_mb(kb: float) -> float:
    """kB (as /proc counts them: KiB) to MB (10^6 bytes)."""
    return kb * 1024 / MB


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time consumed so far by ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLOCK_TICKS


def system_busy_seconds() -> float:
    """CPU time all cores have spent not idle since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    guest = sum(values[8:10])  # already included in user and nice
    return (sum(values) - idle - guest) / _CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU time of this script's finished child processes (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The 1-minute load average (other work on the machine skews results)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class RssSampler:
    """Samples the memory of a process tree in a background thread.

    Every 50 ms ``VmRSS``, every 250 ms also ``Pss``. ``peak_tree_kb`` is the largest
    *sum* over the tree in one sample (granian: main process + workers, shared pages
    counted once per process); ``peak_process_kb`` the largest single process;
    ``peak_pss_kb`` the largest sum of PSS (shared pages split, so not double-counted).
    """

    PSS_EVERY = 5

    def __init__(self, root_pid: int, max_seconds: float = 600.0) -> None:
        self.root_pid = root_pid
        self.max_seconds = max_seconds
        self.peak_tree_kb = 0
        self.peak_process_kb = 0
        self.peak_pss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _loop(self) -> None:
        until = time.monotonic() + self.max_seconds
        while not self._stop.wait(SAMPLE_INTERVAL_S) and time.monotonic() < until:
            self._sample()

    def _sample(self) -> None:
        pids = process_tree(self.root_pid)
        sizes = [status_kb(pid, "VmRSS") for pid in pids]
        if self.samples % self.PSS_EVERY == 0:
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss_kb(pid) for pid in pids))
        self.samples += 1
        self.peak_tree_kb = max(self.peak_tree_kb, sum(sizes))
        self.peak_process_kb = max(self.peak_process_kb, max(sizes, default=0))

    @property
    def peak_tree_mb(self) -> float:
        """Peak tree RSS in MB (10^6 bytes)."""
        return kb_to_mb(self.peak_tree_kb)

    @property
    def peak_process_mb(self) -> float:
        """Peak RSS of the largest single process, in MB."""
        return kb_to_mb(self.peak_process_kb)

    @property
    def peak_pss_mb(self) -> float:
        """Peak tree PSS in MB."""
        return kb_to_mb(self.peak_pss_kb)


def tree_memory_mb(root_pid: int) -> dict[str, float]:
    """Current RSS and PSS of every process in the tree (``main``, ``child-N``), in MB."""
    pids = process_tree(root_pid)
    report: dict[str, float] = {}
    for n, pid in enumerate(pids):
        name = "main" if n == 0 else f"child-{n}"
        report[f"{name}_rss"] = kb_to_mb(status_kb(pid, "VmRSS"))
        report[f"{name}_pss"] = kb_to_mb(pss_kb(pid))
    return report


def tree_hwm_mb(root_pid: int) -> float:
    """The largest ``VmHWM`` (lifetime peak RSS) of any process in the tree, in MB."""
    return kb_to_mb(max((status_kb(p, "VmHWM") for p in process_tree(root_pid)), default=0))


# --------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpAnswer:
    """Status, lower-cased headers and body of a small HTTP exchange."""

    status: int
    headers: dict[str, str]
    body: bytes


def http(method: str, url: str, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> HttpAnswer:
    """One small request with urllib (no proxy); HTTP errors are answers, not raises."""
    data = b"" if method in ("POST", "PUT") else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as resp:
            return HttpAnswer(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return HttpAnswer(err.code, _lower(err.headers.items()), err.read())


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log_path: Path,
                  timeout: float) -> None:
    """Poll ``url`` until any HTTP answer arrives; fail if the process exits first."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()[-2000:]}")
        try:
            http("GET", url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer within {timeout:.0f} s:\n"
                       f"{log_path.read_text()[-2000:]}")


# --------------------------------------------------------------------------------------
# The registries under test
# --------------------------------------------------------------------------------------


class Registry:
    """A registry server with its own data directory, started and stopped per phase."""

    key = "registry"
    label = "registry"
    uses_auth = False

    def __init__(self, root: Path, procs: ProcessGroup) -> None:
        self.root = root
        self.procs = procs
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"
        root.mkdir(parents=True, exist_ok=True)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>`` as used in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}"

    @property
    def pid(self) -> int:
        """The server's main process id."""
        assert self.process is not None, "server not running"
        return self.process.pid

    def start(self, deadline: Deadline) -> None:
        """Start on a fresh free port (same data) and wait until it answers."""
        self.port = free_port()
        self._prepare(deadline)
        self.process = self.procs.spawn(self._command(), self.log_path, env=self._env(),
                                        cwd=self.root)
        wait_until_up(f"{self.url}/v2/", self.process, self.log_path, deadline.cap(60))

    def stop(self) -> None:
        """Stop the server and any worker processes."""
        if self.process is not None:
            self.procs.end(self.process)
            self.process = None

    def auth_headers(self, repo: str, actions: str) -> dict[str, str]:
        """Headers that authorize ``actions`` on ``repo`` (none without auth)."""
        return {}

    def skopeo_creds(self, flag: str) -> list[str]:
        """skopeo's ``--src-creds``/``--dest-creds`` arguments, if the registry needs them."""
        return []

    def _prepare(self, deadline: Deadline) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return client_env()


class PortsideRegistry(Registry):
    """Portside under granian, SQLite + local storage, with token auth."""

    uses_auth = True

    def __init__(self, root: Path, procs: ProcessGroup, binary: Path, workers: int) -> None:
        super().__init__(root, procs)
        self.binary = binary
        self.workers = workers
        self.key = f"portside-w{workers}"
        self.label = f"Portside ({workers} worker{'s' if workers > 1 else ''})"
        self.config_path = root / "config.yaml"
        self._user_created = False
        self._tokens: dict[tuple[str, str, int], str] = {}

    def _prepare(self, deadline: Deadline) -> None:
        self.config_path.write_text(json.dumps({  # JSON is valid YAML
            "SERVER_HOSTNAME": self.host,
            "DB_URI": f"sqlite:///{self.root / 'portside.db'}",
            "DISTRIBUTED_STORAGE_CONFIG": {
                "default": ["LocalStorage", {"storage_path": str(self.root / "storage")}],
            },
            "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
        }, indent=2))
        if not self._user_created:
            run([str(self.binary), "user", "create", USER, "--password-stdin"],
                timeout=deadline.cap(120), env=self._env(), stdin_text=f"{PASSWORD}\n")
            self._user_created = True

    def _command(self) -> list[str]:
        return [str(self.binary), "serve", "--config", str(self.config_path),
                "--port", str(self.port), "--workers", str(self.workers)]

    def _env(self) -> dict[str, str]:
        return client_env(PORTSIDE_CONFIG=str(self.config_path))

    def auth_headers(self, repo: str, actions: str) -> dict[str, str]:
        """A bearer token from ``/v2/auth`` (cached per server start)."""
        cache_key = (repo, actions, self.port)
        if cache_key not in self._tokens:
            self._tokens[cache_key] = fetch_token(self.url, self.host, repo, actions)
        return {"Authorization": f"Bearer {self._tokens[cache_key]}"}

    def skopeo_creds(self, flag: str) -> list[str]:
        return [flag, f"{USER}:{PASSWORD}"]

    def time_login(self) -> float:
        """Seconds for one Basic-auth token request (on a new connection)."""
        started = time.perf_counter()
        fetch_token(self.url, self.host, PUSH_REPO + "-1", "pull")
        return time.perf_counter() - started


def fetch_token(url: str, service: str, repo: str, actions: str) -> str:
    """Get a registry token for ``repo`` with Basic credentials."""
    query = urllib.parse.urlencode({"service": service, "scope": f"repository:{repo}:{actions}"})
    basic = f"{USER}:{PASSWORD}".encode()
    answer = http("GET", f"{url}/v2/auth?{query}",
                  {"Authorization": f"Basic {base64.b64encode(basic).decode()}"})
    if answer.status != 200:
        raise CommandFailed(f"/v2/auth answered {answer.status}: {answer.body[:300]!r}")
    return str(json.loads(answer.body)["token"])


class DistributionRegistry(Registry):
    """Debian's ``docker-registry`` (CNCF Distribution 2.8) on local filesystem storage.

    Configured like the upstream image's default config (in-memory blob descriptor
    cache), without auth and with access logs off.
    """

    key = "distribution"
    label = "Distribution"

    def __init__(self, root: Path, procs: ProcessGroup, binary: str = DISTRIBUTION_BIN) -> None:
        super().__init__(root, procs)
        self.binary = binary
        self.config_path = root / "config.yml"

    def _prepare(self, deadline: Deadline) -> None:
        self.config_path.write_text(json.dumps({  # JSON is valid YAML
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "cache": {"blobdescriptor": "inmemory"},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "benchmark-only-secret"},
        }, indent=2))

    def _command(self) -> list[str]:
        return [self.binary, "serve", str(self.config_path)]


# --------------------------------------------------------------------------------------
# Clients: skopeo, curl, wrk, hey, httpx
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """The OCI layout that is pushed: total bytes and its largest layer."""

    layout: Path
    total_bytes: int
    layers: int
    largest_digest: str
    largest_size: int


def read_image(layout: Path) -> ImageInfo:
    """Sizes of the ``latest`` manifest, its config and layers."""
    index = json.loads((layout / "index.json").read_text())
    descriptor = next(m for m in index["manifests"]
                      if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                      == "latest")
    algo, hexdigest = descriptor["digest"].split(":", 1)
    manifest = json.loads((layout / "blobs" / algo / hexdigest).read_text())
    layers = manifest["layers"]
    largest = max(layers, key=lambda d: d["size"])
    total = descriptor["size"] + manifest["config"]["size"] + sum(d["size"] for d in layers)
    return ImageInfo(layout, total, len(layers), largest["digest"], largest["size"])


def skopeo_copy(src: str, dest: str, extra: Sequence[str], scratch: Path,
                timeout: float) -> float:
    """Run ``skopeo copy``; return its wall-clock seconds.

    Every run gets a fresh, private blob-info cache: skopeo running as root otherwise
    shares /var/lib/containers/cache, remembers where it pushed each layer and turns the
    next push of the same layers into cross-repository mounts (no bytes transferred).
    """
    cache = Path(tempfile.mkdtemp(prefix="skopeo-cache-", dir=scratch))
    env = client_env(XDG_DATA_HOME=str(cache))
    if os.geteuid() == 0:
        env["_CONTAINERS_ROOTLESS_UID"] = "1000"  # make skopeo honour XDG_DATA_HOME
    started = time.perf_counter()
    try:
        run(["skopeo", "copy", "-q", *extra, src, dest], timeout=timeout, env=env)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@dataclass(frozen=True)
class CurlTransfer:
    """What ``curl -w`` reports about one transfer."""

    status: int
    size_down: int
    size_up: int
    seconds: float
    speed_down: float
    speed_up: float


_CURL_FORMAT = ("%{http_code} %{size_download} %{size_upload} %{time_total} "
                "%{speed_download} %{speed_upload}")


def curl(args: Sequence[str], headers: dict[str, str], timeout: float) -> CurlTransfer:
    """Run curl with the body discarded; return the transfer's statistics."""
    header_args = [a for name, value in headers.items() for a in ("-H", f"{name}: {value}")]
    out = run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", _CURL_FORMAT,
               "--max-time", str(int(timeout)), *header_args, *args],
              timeout=timeout + 5, env=client_env())
    code, down, up, total, speed_down, speed_up = out.split()
    return CurlTransfer(int(code), int(float(down)), int(float(up)), float(total),
                        float(speed_down), float(speed_up))


def upload_blob(reg: Registry, repo: str, path: Path, digest: str,
                timeout: float) -> CurlTransfer:
    """POST an upload session, then stream the file in one monolithic PUT with curl."""
    headers = reg.auth_headers(repo, "pull,push")
    started = http("POST", f"{reg.url}/v2/{repo}/blobs/uploads/", headers)
    if started.status != 202 or "location" not in started.headers:
        raise CommandFailed(f"starting an upload answered {started.status}: "
                            f"{started.body[:300]!r}")
    url = urllib.parse.urljoin(reg.url, started.headers["location"])
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
    put_headers = {**headers, "Content-Type": "application/octet-stream", "Expect": ""}
    transfer = curl(["-X", "PUT", "-T", str(path), url], put_headers, timeout)
    if transfer.status != 201:
        raise CommandFailed(f"blob upload answered {transfer.status}")
    return transfer


@dataclass(frozen=True)
class BlobFile:
    """A file of random bytes and its digest."""

    path: Path
    size: int
    digest: str


def make_random_blob(path: Path, size: int, timeout: float) -> BlobFile:
    """``head -c SIZE /dev/urandom`` into ``path``; hash it."""
    with path.open("wb") as out:
        subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=out, check=True,
                       timeout=timeout)
    hasher = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(4 * MIB):
            hasher.update(chunk)
    return BlobFile(path, size, f"sha256:{hasher.hexdigest()}")


@dataclass(frozen=True)
class LoadResult:
    """One load-generator run."""

    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def pick_load_tool(method: str, force_httpx: bool) -> str:
    """wrk for GET; hey for HEAD (wrk 4.1 waits for a body after HEAD); else httpx."""
    if force_httpx:
        return "httpx"
    if method == "GET" and shutil.which("wrk"):
        return "wrk"
    if shutil.which("hey"):
        return "hey"
    return "httpx"


def run_load(tool: str, method: str, url: str, headers: dict[str, str], seconds: int,
             connections: int, scratch: Path, deadline: Deadline) -> LoadResult:
    """Drive ``url`` with ``connections`` concurrent keep-alive connections."""
    timeout = deadline.cap(seconds + 30)
    if tool == "wrk":
        return run_wrk(method, url, headers, seconds, connections, scratch, timeout)
    if tool == "hey":
        return run_hey(method, url, headers, seconds, connections, timeout)
    return run_httpx(method, url, headers, seconds, connections)


def lua_string(value: str) -> str:
    """A Lua string literal for a plain header value."""
    if not value.isprintable() or '"' in value or "\\" in value:
        raise ValueError(f"unsupported header value {value[:40]!r}")
    return f'"{value}"'


def run_wrk(method: str, url: str, headers: dict[str, str], seconds: int, connections: int,
            scratch: Path, timeout: float) -> LoadResult:
    """wrk with a Lua script for the method and headers, ``--latency`` for percentiles."""
    script = scratch / "wrk-request.lua"
    lines = [f"wrk.method = {lua_string(method)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "--latency", "-s", str(script), url], timeout=timeout)
    return parse_wrk(out)


_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> LoadResult:
    """Requests, rate, p50/p99 latency and errors from wrk's report."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done is None or rps is None:
        raise CommandFailed(f"unexpected wrk output:\n{out[-1000:]}")
    percentiles = {p: float(v) * _TIME_UNITS[u]
                   for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out,
                                             re.MULTILINE)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(status.group(1)) if status else 0
    seconds = float(done.group(2)) * _TIME_UNITS.get(done.group(3), 1000.0) / 1000
    return LoadResult("wrk", int(done.group(1)), seconds, float(rps.group(1)),
                      percentiles.get("50", float("nan")), percentiles.get("99", float("nan")),
                      errors)


def run_hey(method: str, url: str, headers: dict[str, str], seconds: int, connections: int,
            timeout: float) -> LoadResult:
    """hey (Go) for methods wrk cannot do."""
    header_args = [a for name, value in headers.items() for a in ("-H", f"{name}: {value}")]
    out = run(["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", method, "-t", "10",
               "-disable-compression", *header_args, url], timeout=timeout, env=client_env())
    return parse_hey(out)


def parse_hey(out: str) -> LoadResult:
    """Requests, rate, p50/p99 latency and errors from hey's summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"Total:\s+([\d.]+) secs", out)
    if rps is None or total is None:
        raise CommandFailed(f"unexpected hey output:\n{out[-1000:]}")
    percentiles = {p: float(v) * 1000 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = sum(n for code, n in statuses.items() if code >= 400)
    error_block = out.split("Error distribution:", 1)
    if len(error_block) == 2:
        errors += sum(int(n) for n in re.findall(r"\[(\d+)\]", error_block[1]))
    return LoadResult("hey", sum(statuses.values()), float(total.group(1)),
                      float(rps.group(1)), percentiles.get("50", float("nan")),
                      percentiles.get("99", float("nan")), errors)


def run_httpx(method: str, url: str, headers: dict[str, str], seconds: int,
              connections: int) -> LoadResult:
    """Fallback load generator: ``connections`` asyncio workers sharing one httpx client.

    Python on two shared cores is itself a bottleneck: numbers are a lower bound.
    """
    return asyncio.run(_httpx_load(method, url, headers, seconds, connections))


async def _httpx_load(method: str, url: str, headers: dict[str, str], seconds: int,
                      connections: int) -> LoadResult:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    started = time.perf_counter()
    until = started + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < until:
            begin = time.perf_counter()
            try:
                response = await client.request(method, url, headers=headers)
                await response.aread()
                ok = response.status_code < 400
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - begin) * 1000)
            errors += 0 if ok else 1

    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(connections))),
                               timeout=seconds + 30)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return LoadResult("httpx", len(latencies), elapsed, len(latencies) / elapsed,
                      ordered[len(ordered) // 2], ordered[min(len(ordered) - 1,
                                                             int(len(ordered) * 0.99))], errors)


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


@dataclass
class Context:
    """Everything the phases share."""

    settings: Settings
    deadline: Deadline
    procs: ProcessGroup
    image: ImageInfo
    scratch: Path
    blob: BlobFile
    stream: BlobFile
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Outcome:
    """Every sample of every metric of one registry, and supporting details."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        """Record one sample of ``key``."""
        self.samples.setdefault(key, []).append(value)

    def detail(self, key: str, value: Any) -> None:
        """Record supporting data (a list per key, one entry per call)."""
        self.details.setdefault(key, []).append(value)


Phase = Callable[[Registry, Context, Outcome, int], None]


def phase_transfer(reg: Registry, ctx: Context, out: Outcome, round_no: int) -> None:
    """One round: login timing; skopeo push and pull; upload and GET of the 256 MiB blob.

    Round N pushes to ``bench/push-N`` and uploads to ``bench/blob-N``; every round pulls
    ``bench/push-1``. Logins happen before the timed transfers, so that the throughput
    figures are steady-state ones (the login cost has rows of its own).
    """
    n = round_no + 1
    if isinstance(reg, PortsideRegistry):
        out.add("login_cold_ms", 1000 * reg.time_login())
        warm = [reg.time_login() for _ in range(2 * reg.workers + 2)]  # every worker, likely
        out.add("login_warm_ms", 1000 * statistics.median(warm))
    out.add("push_mbps", ctx.image.total_bytes / push_image(reg, ctx, n) / MB)
    out.add("pull_mbps", ctx.image.total_bytes / pull_image(reg, ctx, n) / MB)
    repo = f"{BLOB_REPO}-{n}"
    upload = upload_blob(reg, repo, ctx.blob.path, ctx.blob.digest, ctx.deadline.cap(300))
    out.add("blob_put_mbps", upload.speed_up / MB)
    out.add("blob_get_mbps", get_blob(reg, ctx, repo, ctx.blob).speed_down / MB)


def push_image(reg: Registry, ctx: Context, n: int) -> float:
    """Push the image to a repository of its own (``bench/push-N``); return seconds."""
    seconds = skopeo_copy(f"oci:{ctx.image.layout}:latest",
                          f"docker://{reg.host}/{PUSH_REPO}-{n}:latest",
                          ["--dest-tls-verify=false", *reg.skopeo_creds("--dest-creds")],
                          ctx.scratch, ctx.deadline.cap(300))
    log(f"  push {n}: {seconds:.2f} s ({ctx.image.total_bytes / seconds / MB:.0f} MB/s)")
    return seconds


def pull_image(reg: Registry, ctx: Context, n: int) -> float:
    """Pull ``bench/push-1`` into a fresh ``oci:`` directory; return seconds."""
    target = ctx.scratch / f"pull-{reg.key}-{n}"
    try:
        seconds = skopeo_copy(f"docker://{reg.host}/{PUSH_REPO}-1:latest", f"oci:{target}:latest",
                              ["--src-tls-verify=false", *reg.skopeo_creds("--src-creds")],
                              ctx.scratch, ctx.deadline.cap(300))
    finally:
        shutil.rmtree(target, ignore_errors=True)
    log(f"  pull {n}: {seconds:.2f} s ({ctx.image.total_bytes / seconds / MB:.0f} MB/s)")
    return seconds


def get_blob(reg: Registry, ctx: Context, repo: str, blob: BlobFile) -> CurlTransfer:
    """GET a blob with curl into /dev/null; check status and size."""
    transfer = curl([f"{reg.url}/v2/{repo}/blobs/{blob.digest}"],
                    reg.auth_headers(repo, "pull"), ctx.deadline.cap(300))
    if transfer.status != 200 or transfer.size_down != blob.size:
        raise CommandFailed(f"blob GET answered {transfer.status} with {transfer.size_down} "
                            f"bytes, expected {blob.size}")
    return transfer


def phase_load(reg: Registry, ctx: Context, out: Outcome, round_no: int) -> None:
    """Manifest GET by tag and blob HEAD under concurrent load (one round)."""
    repo = f"{PUSH_REPO}-1"
    auth = reg.auth_headers(repo, "pull")
    manifest_url = f"{reg.url}/v2/{repo}/manifests/latest"
    manifest_headers = {"Accept": MANIFEST_ACCEPT, **auth}
    head_url = f"{reg.url}/v2/{repo}/blobs/{ctx.image.largest_digest}"
    for method, url, headers, name in (("GET", manifest_url, manifest_headers, "manifest"),
                                       ("HEAD", head_url, auth, "head")):
        preflight(method, url, headers)
        result = measure_load(reg, ctx, method, url, headers)
        out.add(f"{name}_rps", result["rps"])
        out.add(f"{name}_p99_ms", result["p99_ms"])
        out.add(f"{name}_cpu_ms", result["server_cpu_ms_per_request"])
        out.detail(f"{name}_load", result)
    if ctx.settings.profile and round_no == 0 and isinstance(reg, PortsideRegistry):
        ctx.profiles[reg.key] = profile_manifest_get(reg, ctx, manifest_url, manifest_headers)


def preflight(method: str, url: str, headers: dict[str, str]) -> None:
    """One request that must succeed before a load run is worth starting."""
    answer = http(method, url, headers)
    if answer.status != 200:
        raise CommandFailed(f"{method} {url} answered {answer.status}: {answer.body[:300]!r}")


def measure_load(reg: Registry, ctx: Context, method: str, url: str,
                 headers: dict[str, str]) -> dict[str, Any]:
    """One load run, plus where the CPU went meanwhile: server, load generator, others."""
    tool = pick_load_tool(method, ctx.settings.force_httpx)
    pids = process_tree(reg.pid)
    before = (cpu_seconds(pids), children_cpu_seconds(), system_busy_seconds())
    load_before = load_average()
    result = run_load(tool, method, url, headers, ctx.settings.load_seconds,
                      ctx.settings.connections, ctx.scratch, ctx.deadline)
    server = cpu_seconds(pids) - before[0]
    generator = children_cpu_seconds() - before[1]
    others = system_busy_seconds() - before[2] - server - generator
    seconds = max(result.seconds, 1e-9)
    log(f"  {method} {url.rsplit('/v2/', 1)[1][:48]}: {result.rps:.0f} req/s, "
        f"p99 {result.p99_ms:.1f} ms, server {server / seconds:.2f} cores, "
        f"{tool} {generator / seconds:.2f}, others {max(others, 0) / seconds:.2f}")
    if result.errors:
        raise CommandFailed(f"{result.errors} failed requests during the {method} load run")
    return {**asdict(result),
            "server_cpu_ms_per_request": 1000 * server / max(result.requests, 1),
            "server_cores": server / seconds,
            "generator_cores": generator / seconds,
            "other_cores": max(others, 0.0) / seconds,
            "loadavg_before": load_before, "loadavg_after": load_average()}


def phase_stream(reg: Registry, ctx: Context, out: Outcome, _round: int) -> None:
    """Upload, then stream out, the big random blob while sampling the server's memory.

    Tokens are fetched first: the Basic-auth login behind a token has its own memory
    cost (Portside's password hash), which is not what these windows measure.
    """
    out.add("rss_idle_mb", kb_to_mb(sum(status_kb(p, "VmRSS") for p in process_tree(reg.pid))))
    out.detail("memory_idle", tree_memory_mb(reg.pid))
    reg.auth_headers(STREAM_REPO, "pull,push")
    reg.auth_headers(STREAM_REPO, "pull")
    with RssSampler(reg.pid) as upload_rss:
        upload = upload_blob(reg, STREAM_REPO, ctx.stream.path, ctx.stream.digest,
                             ctx.deadline.cap(300))
    with RssSampler(reg.pid) as get_rss:
        download = get_blob(reg, ctx, STREAM_REPO, ctx.stream)
    out.add("stream_put_mbps", upload.speed_up / MB)
    out.add("stream_put_rss_mb", upload_rss.peak_tree_mb)
    out.add("stream_get_mbps", download.speed_down / MB)
    out.add("stream_get_rss_mb", get_rss.peak_tree_mb)
    out.add("stream_get_rss_process_mb", get_rss.peak_process_mb)
    out.add("stream_get_pss_mb", get_rss.peak_pss_mb)
    log(f"  {ctx.stream.size // MIB} MiB: upload {upload.speed_up / MB:.0f} MB/s "
        f"(peak RSS {upload_rss.peak_tree_mb:.0f} MB), GET {download.speed_down / MB:.0f} MB/s "
        f"(peak RSS {get_rss.peak_tree_mb:.0f} MB, largest process "
        f"{get_rss.peak_process_mb:.0f} MB, PSS {get_rss.peak_pss_mb:.0f} MB)")


@dataclass(frozen=True)
class PhaseSpec:
    """A group of metrics measured against one freshly started server."""

    name: str
    run: Phase
    rounds: Callable[[Settings], int]


PHASES = [
    PhaseSpec("transfer", phase_transfer, lambda s: s.repeats),
    PhaseSpec("load", phase_load, lambda s: s.load_rounds),
    PhaseSpec("stream", phase_stream, lambda _s: 1),
]


def run_phase(spec: PhaseSpec, round_no: int, reg: Registry, ctx: Context,
              out: Outcome) -> None:
    """Start ``reg``, run one round of ``spec`` under a memory sampler, stop ``reg``."""
    log(f"[{spec.name} {round_no + 1}/{spec.rounds(ctx.settings)}] {reg.label} ...")
    reg.start(ctx.deadline)
    try:
        out.details.setdefault("processes", len(process_tree(reg.pid)))
        with RssSampler(reg.pid) as sampler:
            spec.run(reg, ctx, out, round_no)
            hwm = tree_hwm_mb(reg.pid)
        if spec.name != "stream":  # the big blob is reported on its own
            out.add("rss_peak_mb", sampler.peak_tree_mb)
            out.add("pss_peak_mb", sampler.peak_pss_mb)
            out.add("hwm_peak_mb", hwm)
        out.detail("memory_by_phase", {"phase": spec.name, "round": round_no,
                                       "peak_tree_rss_mb": sampler.peak_tree_mb,
                                       "peak_tree_pss_mb": sampler.peak_pss_mb,
                                       "max_vmhwm_mb": hwm})
    finally:
        reg.stop()


# --------------------------------------------------------------------------------------
# Profiling (optional): py-spy on Portside's manifest GET under load
# --------------------------------------------------------------------------------------


def find_py_spy() -> str | None:
    """py-spy next to this interpreter, in the project venv, or on PATH."""
    for candidate in (Path(sys.executable).with_name("py-spy"),
                      REPO_ROOT / ".venv" / "bin" / "py-spy"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("py-spy")


def profile_manifest_get(reg: PortsideRegistry, ctx: Context, url: str,
                         headers: dict[str, str]) -> dict[str, Any]:
    """A second manifest-GET load run with py-spy sampling the GIL holder of each worker."""
    py_spy = find_py_spy()
    if py_spy is None:
        log("  py-spy not found: skipping the profile (pip install py-spy into the venv)")
        return {"skipped": "py-spy not found"}
    seconds, rate = ctx.settings.load_seconds, 200
    ctx.settings.results_dir.mkdir(parents=True, exist_ok=True)
    raw = ctx.settings.results_dir / f"profile-manifest-get-{reg.key}.txt"
    raw.unlink(missing_ok=True)
    spy_log = ctx.scratch / f"py-spy-{reg.key}.log"
    spy = ctx.procs.spawn([py_spy, "record", "--pid", str(reg.pid), "--subprocesses", "--gil",
                           "--nonblocking", "--rate", str(rate), "--format", "raw",
                           "--duration", str(seconds), "-o", str(raw)], spy_log)
    try:
        time.sleep(1.0)  # let py-spy attach before the load starts
        result = run_load(pick_load_tool("GET", ctx.settings.force_httpx), "GET", url, headers,
                          seconds, ctx.settings.connections, ctx.scratch, ctx.deadline)
        spy.wait(ctx.deadline.cap(seconds + 30))
    finally:
        ctx.procs.end(spy)
    if not raw.exists():
        return {"skipped": f"py-spy wrote nothing: {spy_log.read_text()[-300:]}"}
    summary = summarise_profile(raw)
    summary["gil_busy_share"] = summary["samples"] / (rate * seconds * reg.workers)
    summary["rps_while_profiling"] = result.rps
    summary["raw_file"] = str(raw)
    return summary


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self share per package."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += n
        packages[frame_package(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n

    def shares(counter: collections.Counter[str], keep: Callable[[str], bool]) -> list[Any]:
        return [(name, round(100 * n / max(total, 1), 1))
                for name, n in counter.most_common() if keep(name)][:top]

    return {
        "samples": total,
        "self_top": shares(own, lambda _name: True),
        "inclusive_portside": shares(inclusive, lambda name: "portside/" in name
                                     and "cli/main" not in name and "server.py" not in name),
        "self_by_package": shares(packages, lambda _name: True),
    }


def frame_package(frame: str) -> str:
    """``sqlalchemy`` for ``Session.execute (sqlalchemy/orm/session.py)``, etc."""
    match = re.search(r"\(([^()]*)\)$", frame)
    path = match.group(1) if match else frame
    return path.split("/", 1)[0] if "/" in path else f"stdlib:{path}"


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the result table: a metric and how its samples are combined."""

    key: str
    label: str
    higher_is_better: bool
    aggregate: str = "median"  # or "max" for peaks

    def value(self, out: Outcome) -> float | None:
        """The median (or maximum) of the samples, ``None`` if there are none."""
        values = out.samples.get(self.key)
        if not values:
            return None
        return max(values) if self.aggregate == "max" else statistics.median(values)


def rows_for(settings: Settings, image: ImageInfo) -> list[Row]:
    """The table's rows, labelled with this run's sizes and repetitions."""
    n, rounds, conns = settings.repeats, settings.load_rounds, settings.connections
    img = f"{image.total_bytes / MIB:.0f} MiB, {image.layers} layers"
    blob, big = f"{settings.blob_size // MIB} MiB", f"{settings.stream_size // MIB} MiB"
    low = "lower is better"
    return [
        Row("login_cold_ms", f"first token request after start, Basic auth (ms, {low})",
            False),
        Row("login_warm_ms", f"token request, Basic auth, cached (ms, {low})", False),
        Row("push_mbps", f"skopeo push {img} (MB/s, median of {n})", True),
        Row("pull_mbps", f"skopeo pull {img} (MB/s, median of {n})", True),
        Row("blob_get_mbps", f"blob GET {blob}, curl (MB/s, median of {n})", True),
        Row("blob_put_mbps", f"blob upload {blob}, curl monolithic PUT (MB/s, median of {n})",
            True),
        Row("manifest_rps", f"manifest GET by tag, {conns} conns (req/s, median of {rounds})",
            True),
        Row("manifest_p99_ms", f"manifest GET p99 latency (ms, {low})", False),
        Row("manifest_cpu_ms", f"manifest GET server CPU per request (ms, {low})", False),
        Row("head_rps", f"blob HEAD, {conns} conns (req/s, median of {rounds})", True),
        Row("head_p99_ms", f"blob HEAD p99 latency (ms, {low})", False),
        Row("head_cpu_ms", f"blob HEAD server CPU per request (ms, {low})", False),
        Row("rss_idle_mb", f"idle RSS after start, process tree sum (MB, {low})", False),
        Row("rss_peak_mb", f"peak RSS during the rows above, tree sum (MB, {low})", False, "max"),
        Row("pss_peak_mb", f"peak PSS during the rows above, tree sum (MB, {low})", False, "max"),
        Row("hwm_peak_mb", f"peak VmHWM, largest single process (MB, {low})", False, "max"),
        Row("stream_put_mbps", f"blob upload {big}, curl (MB/s)", True),
        Row("stream_put_rss_mb", f"peak RSS during {big} upload, tree sum (MB, {low})", False,
            "max"),
        Row("stream_get_mbps", f"blob GET {big}, curl (MB/s)", True),
        Row("stream_get_rss_mb", f"peak RSS during {big} GET, tree sum (MB, {low}; "
            f"target < {RSS_TARGET_MB:.0f})", False, "max"),
        Row("stream_get_rss_process_mb", f"peak RSS during {big} GET, largest process "
            f"(MB, {low})", False, "max"),
        Row("stream_get_pss_mb", f"peak PSS during {big} GET, tree sum (MB, {low})", False,
            "max"),
    ]


def fmt(value: float | None) -> str:
    """A number with about three significant digits."""
    if value is None or value != value:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    """Portside / Distribution."""
    if ours is None or theirs is None or not theirs:
        return "n/a"
    return f"{ours / theirs:.2f}"


def markdown_table(rows: list[Row], portside: Outcome, portside_label: str,
                   distribution: Outcome) -> str:
    """One table: metric | Portside | Distribution | ratio."""
    lines = [f"| metric | {portside_label} | Distribution | ratio (Portside/Distribution) |",
             "| --- | ---: | ---: | ---: |"]
    for row in rows:
        ours, theirs = row.value(portside), row.value(distribution)
        lines.append(f"| {row.label} | {cell(row, portside)} | {cell(row, distribution)} | "
                     f"{ratio(ours, theirs)} |")
    return "\n".join(lines)


def cell(row: Row, out: Outcome) -> str:
    """The row's value, with the range of the samples when there are several medians."""
    value = row.value(out)
    samples = out.samples.get(row.key, [])
    if row.aggregate != "median" or len(samples) < 2:
        return fmt(value)
    return f"{fmt(value)} ({fmt(min(samples))}-{fmt(max(samples))})"


def aggregated(rows: list[Row], out: Outcome) -> dict[str, float | None]:
    """The table's values of one registry (for the JSON file)."""
    return {row.key: row.value(out) for row in rows}


def render_markdown(meta: dict[str, Any], rows: list[Row], outcomes: dict[str, Outcome],
                    registries: list[Registry], profiles: dict[str, dict[str, Any]]) -> str:
    """The whole report."""
    distribution = outcomes["distribution"]
    parts = [f"# Portside vs. CNCF Distribution ({meta['mode']} run, {meta['date']})", "",
             f"Command: `{meta['command']}` ({meta.get('elapsed_s', '?')} s)", ""]
    if meta.get("incomplete"):
        parts += [f"**INCOMPLETE: {meta['incomplete']}**", ""]
    if meta["source_fingerprint_start"] != meta.get("source_fingerprint_end"):
        parts += ["**WARNING: Portside's source files changed during this run; rows may mix "
                  "code versions. Run again on a quiet tree.**", ""]
    for reg in registries:
        if isinstance(reg, PortsideRegistry):
            out = outcomes[reg.key]
            parts += [f"## {reg.label}", "", markdown_table(rows, out, reg.label, distribution),
                      "", rss_verdict(out), ""]
    parts += ["## Notes", "", *[f"- {note}" for note in notes(meta, outcomes)], ""]
    for key, profile in profiles.items():
        parts += profile_markdown(key, profile)
    return "\n".join(parts)


def rss_verdict(out: Outcome) -> str:
    """Pass/fail line for the streaming-memory target."""
    tree = Row("stream_get_rss_mb", "", False, "max").value(out)
    largest = Row("stream_get_rss_process_mb", "", False, "max").value(out)
    if tree is None:
        return "Streaming RSS target: not measured."
    verdict = "PASS" if tree < RSS_TARGET_MB else "FAIL"
    return (f"Streaming RSS target (< {RSS_TARGET_MB:.0f} MB for the whole process tree): "
            f"**{verdict}** ({tree:.0f} MB; largest single process {fmt(largest)} MB).")


def load_runs(outcomes: dict[str, Outcome]) -> list[dict[str, Any]]:
    """Every load run's record, all registries."""
    return [run for out in outcomes.values() for key in ("manifest_load", "head_load")
            for run in out.details.get(key, [])]


def span(values: list[float]) -> str:
    """``min to max``."""
    return f"{fmt(min(values, default=None))} to {fmt(max(values, default=None))}"


def notes(meta: dict[str, Any], outcomes: dict[str, Outcome]) -> list[str]:
    """Caveats printed under the tables."""
    runs = load_runs(outcomes)
    loadavg = [r[k] for r in runs for k in ("loadavg_before", "loadavg_after")]
    others = [r["other_cores"] for r in runs]
    tools = {f"{name}: {r['tool']}" for out in outcomes.values()
             for name, key in (("manifest GET", "manifest_load"), ("blob HEAD", "head_load"))
             for r in out.details.get(key, [])}
    return [
        "**Auth asymmetry:** Portside runs WITH token auth (skopeo gets a token from "
        "`/v2/auth` with Basic credentials; curl, wrk and hey send `Authorization: Bearer`); "
        "Distribution runs WITHOUT auth (token auth would need a separate token server), so "
        "it checks nothing per request while Portside verifies a token and looks up "
        "permissions on every request.",
        "Ratio = Portside / Distribution: above 1 is better for throughput and req/s; below 1 "
        "is better for latency, CPU per request and memory. MB = 10^6 bytes. Medians are "
        "followed by the range of their samples (min-max).",
        f"Machine: {meta['cpus']} cores shared by the load generator and the server. The "
        "registries run one after the other, never both at once: each metric group is "
        "measured for every registry before the next group, each against a freshly started "
        "server on the same data. Load runs: "
        f"{meta['load_rounds']} round(s) of {meta['load_seconds']} s per metric and registry, "
        f"{meta['connections']} connections; 1-minute load average {span(loadavg)}; CPU "
        f"used by other processes on the machine meanwhile: {span(others)} cores (noise).",
        f"Load generators: {', '.join(sorted(tools)) or 'n/a'} (wrk with 2 threads and a Lua "
        "script for the headers; hey for HEAD because wrk 4.1 waits for a body after a HEAD "
        "response with a Content-Length and never completes a request). Server CPU per "
        "request = CPU time of the server's process tree / requests. Distribution runs with "
        "Go's default GOGC=100.",
        "Transfers run in rounds too (one push, pull, upload and GET per registry and "
        "round). Push: every round goes to a new repository (`bench/push-N`) with a fresh "
        "skopeo blob-info cache, so all layer bytes are sent each time (no cross-repository "
        "mounts); pull: from `bench/push-1` into a fresh `oci:` directory. Timings are "
        "skopeo's wall clock (start-up and digest verification included). Portside's "
        "Basic-auth logins are done (and timed) before the transfers of each round: a cold "
        "one verifies the Argon2id password hash, later ones hit the login cache.",
        "Memory: `VmRSS` summed over the server's process tree (Portside: granian main process "
        "+ worker processes, so pages shared after fork count once per process; "
        "Distribution: one process), sampled every 50 ms; PSS (shared pages split between "
        "processes) every 250 ms. VmHWM: the largest lifetime peak of one process. The peaks "
        "\"during the rows above\" include the Basic-auth logins behind Portside's tokens "
        "(the password hash needs 64 MiB while it runs); the big-blob windows do not.",
        f"Tools: {meta['versions']}.",
    ]


def profile_markdown(key: str, profile: dict[str, Any]) -> list[str]:
    """A short section per py-spy profile."""
    if "skipped" in profile:
        return [f"## Profile {key}: skipped ({profile['skipped']})", ""]
    lines = [f"## Profile: manifest GET under load, {key} (py-spy --gil, 200 Hz)", "",
             f"{profile['samples']} samples; the GIL was held "
             f"{100 * profile['gil_busy_share']:.0f}% of the time per worker; "
             f"{profile['rps_while_profiling']:.0f} req/s while profiling. "
             f"Raw stacks: `{profile['raw_file']}`.", ""]
    for title, entries in (("Self time by package", profile["self_by_package"]),
                           ("Self time by function", profile["self_top"]),
                           ("Inclusive time, Portside functions", profile["inclusive_portside"])):
        lines += [f"**{title}** (% of GIL-holding samples)", "", "| % | where |", "| ---: | --- |"]
        lines += [f"| {share} | `{name}` |" for name, share in entries]
        lines.append("")
    return lines


def write_results(settings: Settings, markdown: str, data: dict[str, Any]) -> None:
    """``latest.md`` and ``latest.json`` in the results folder."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    (settings.results_dir / "latest.md").write_text(markdown)
    (settings.results_dir / "latest.json").write_text(json.dumps(data, indent=2, default=str))
    log(f"results written to {settings.results_dir}/latest.md and latest.json")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def check_prerequisites(settings: Settings) -> None:
    """Fail early, with a clear message, when a required tool or input is missing."""
    missing = [tool for tool in ("skopeo", "curl", "head") if shutil.which(tool) is None]
    if not Path(DISTRIBUTION_BIN).exists():
        missing.append(f"{DISTRIBUTION_BIN} (apt-get install docker-registry)")
    if not settings.portside_bin.exists():
        missing.append(str(settings.portside_bin))
    if not (settings.image / "index.json").exists():
        missing.append(f"{settings.image} (make test-images)")
    if missing:
        raise SystemExit("missing: " + ", ".join(missing))


def collect_meta(settings: Settings) -> dict[str, Any]:
    """Run conditions recorded with the results."""
    granian = tool_version([str(settings.portside_bin.with_name("python")), "-c",
                            "import granian; print('granian', granian.__version__)"])
    versions = "; ".join([
        tool_version(["skopeo", "--version"]),
        tool_version(["wrk", "-v"]) if shutil.which("wrk") else "wrk missing",
        "hey " + ("(Debian package)" if shutil.which("hey") else "missing"),
        tool_version(["curl", "--version"]).split(" (")[0],
        tool_version([DISTRIBUTION_BIN, "--version"]),
        granian,
        f"Python {platform.python_version()} (runner)",
    ])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if settings.quick else "full",
        "cpus": os.cpu_count(),
        "loadavg_start": load_average(),
        "connections": settings.connections,
        "load_seconds": settings.load_seconds,
        "load_rounds": settings.load_rounds,
        "versions": versions,
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "source_fingerprint_start": source_fingerprint(),
    }


def source_fingerprint() -> str:
    """A digest of Portside's source files (path, size, mtime): edits show as a change."""
    hasher = hashlib.sha256()
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            st = path.stat()
            hasher.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return hasher.hexdigest()[:16]


def build_registries(settings: Settings, workdir: Path, procs: ProcessGroup) -> list[Registry]:
    """One Portside per worker count, then Distribution."""
    registries: list[Registry] = [
        PortsideRegistry(workdir / f"portside-w{n}", procs, settings.portside_bin, n)
        for n in settings.workers
    ]
    registries.append(DistributionRegistry(workdir / "distribution", procs))
    return registries


def prepare_inputs(settings: Settings, scratch: Path,
                   deadline: Deadline) -> tuple[ImageInfo, BlobFile, BlobFile]:
    """Read the image layout and write the two random blobs."""
    image = read_image(settings.image)
    log(f"image: {image.total_bytes / MIB:.0f} MiB in {image.layers} layers; writing random "
        f"blobs of {settings.blob_size // MIB} and {settings.stream_size // MIB} MiB")
    blob = make_random_blob(scratch / "blob.bin", settings.blob_size, deadline.cap(120))
    stream = make_random_blob(scratch / "stream.bin", settings.stream_size, deadline.cap(180))
    return image, blob, stream


def measure_all(ctx: Context, registries: list[Registry],
                outcomes: dict[str, Outcome]) -> None:
    """Each phase (round by round) for every registry in turn, one server at a time."""
    for spec in PHASES:
        for round_no in range(spec.rounds(ctx.settings)):
            for reg in registries:
                run_phase(spec, round_no, reg, ctx, outcomes[reg.key])


@contextlib.contextmanager
def workspace(settings: Settings) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless ``--keep``."""
    path = Path(tempfile.mkdtemp(prefix="portside-bench-"))
    try:
        yield path
    finally:
        if settings.keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _raise_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything; return the exit status."""
    settings = parse_args(argv)
    check_prerequisites(settings)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    procs = ProcessGroup()
    atexit.register(procs.end_all)
    deadline = Deadline(settings.budget_s)
    meta = collect_meta(settings)
    status = 0
    with workspace(settings) as workdir:
        scratch = workdir / "scratch"
        scratch.mkdir()
        registries = build_registries(settings, workdir, procs)
        outcomes = {reg.key: Outcome() for reg in registries}
        image, blob, stream = prepare_inputs(settings, scratch, deadline)
        ctx = Context(settings, deadline, procs, image, scratch, blob, stream)
        try:
            measure_all(ctx, registries, outcomes)
        except (BudgetExceeded, CommandFailed, RuntimeError) as exc:
            meta["incomplete"] = f"{type(exc).__name__}: {exc}"
            log(f"stopped early: {meta['incomplete']}")
            status = 1
        finally:
            procs.end_all()
        meta["elapsed_s"] = round(settings.budget_s - deadline.remaining(), 1)
        report(ctx, meta, registries, outcomes)
    return status


def report(ctx: Context, meta: dict[str, Any], registries: list[Registry],
           outcomes: dict[str, Outcome]) -> None:
    """Print the Markdown report and write it, with the JSON data, to the results folder."""
    meta["loadavg_end"] = load_average()
    meta["source_fingerprint_end"] = source_fingerprint()
    rows = rows_for(ctx.settings, ctx.image)
    markdown = render_markdown(meta, rows, outcomes, registries, ctx.profiles)
    data = {"meta": meta, "settings": {k: str(v) for k, v in asdict(ctx.settings).items()},
            "image": asdict(ctx.image) | {"layout": str(ctx.image.layout)},
            "rows": [asdict(r) for r in rows],
            "results": {k: {"table": aggregated(rows, v), **asdict(v)}
                        for k, v in outcomes.items()},
            "profiles": ctx.profiles}
    print(markdown)
    write_results(ctx.settings, markdown, data)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
