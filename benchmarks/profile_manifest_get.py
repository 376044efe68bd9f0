#!/usr/bin/env python3
"""Where does a manifest GET spend its CPU? An in-process cost breakdown.

Builds Portside's ASGI app against a temporary SQLite database and local storage, pushes
a tiny image through the app itself, then drives ``GET /v2/<repo>/manifests/latest``
(token auth, OCI + Docker ``Accept``) directly through ASGI -- no network, no server --
in four modes:

* ``inline``: ``anyio.to_thread.run_sync`` runs the function in the calling thread, so
  the time is the pure work of the request (routing, auth, SQL, response);
* ``threaded``: one request at a time, with the real thread-pool hops;
* ``concurrent``: 32 requests in flight, as under load;
* ``profiled``: ``inline`` under cProfile, for the breakdown by function and package.

Run: ``.venv/bin/python benchmarks/profile_manifest_get.py [--requests N]``. The report
goes to stdout and ``benchmarks/results/profile-manifest-get-inprocess.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import cProfile
import hashlib
import json
import os
import pstats
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "profile-manifest-get-inprocess.txt"
USER, PASSWORD, REPO = "bench", "bench-password-not-a-secret", "bench/app"
AUDIENCE = "127.0.0.1:5000"
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    """An ASGI response, collected."""

    status: int
    headers: dict[str, str]
    body: bytes


async def call(app: Asgi, method: str, target: str, headers: dict[str, str] | None = None,
               body: bytes = b"") -> Answer:
    """One request straight through the ASGI interface."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 5000), "extensions": {},
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    status, out_headers, chunks = 0, {}, []

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update({k.decode(): v.decode() for k, v in message["headers"]})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status, out_headers, b"".join(chunks))


def build_app(root: Path) -> Asgi:
    """A Portside app on a fresh database in ``root``, with user ``bench``."""
    (root / "config.yaml").write_text(json.dumps({
        "SERVER_HOSTNAME": AUDIENCE,
        "DB_URI": f"sqlite:///{root / 'portside.db'}",
        "DISTRIBUTED_STORAGE_CONFIG": {"default": ["LocalStorage",
                                                   {"storage_path": str(root / "storage")}]},
        "DISTRIBUTED_STORAGE_PREFERENCE": ["default"],
    }))
    os.environ["PORTSIDE_CONFIG"] = str(root / "config.yaml")
    from portside.app import build_services, create_app
    from portside.config import load_config

    config, _warnings = load_config()
    services = build_services(config, migrate=True)
    services.registry.users.create_user(USER, PASSWORD)
    services.close()
    app: Asgi = create_app(config, migrate=False)
    return app


async def token(app: Asgi, actions: str) -> str:
    """A bearer token for ``REPO`` from ``/v2/auth``."""
    query = urllib.parse.urlencode({"service": AUDIENCE, "scope": f"repository:{REPO}:{actions}"})
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    answer = await call(app, "GET", f"/v2/auth?{query}", {"Authorization": f"Basic {basic}"})
    assert answer.status == 200, answer
    return str(json.loads(answer.body)["token"])


async def push_blob(app: Asgi, auth: dict[str, str], data: bytes) -> dict[str, Any]:
    """Monolithic upload; return the descriptor."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    answer = await call(app, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}",
                        {**auth, "Content-Length": str(len(data))}, data)
    assert answer.status == 201, answer
    return {"digest": digest, "size": len(data)}


async def seed(app: Asgi) -> None:
    """Push a one-layer OCI image tagged ``latest``."""
    auth = {"Authorization": f"Bearer {await token(app, 'pull,push')}"}
    config = await push_blob(app, auth, b'{"architecture":"amd64","os":"linux"}')
    layer = await push_blob(app, auth, os.urandom(4096))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode()
    answer = await call(app, "PUT", f"/v2/{REPO}/manifests/latest",
                        {**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                        manifest)
    assert answer.status == 201, answer


@contextlib.contextmanager
def inline_threads() -> Iterator[None]:
    """Make ``anyio.to_thread.run_sync`` call its function in the current thread."""
    import anyio.to_thread

    original = anyio.to_thread.run_sync

    async def run_inline(func: Callable[..., Any], *args: Any, **_kw: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_inline  # type: ignore[assignment]
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original


@dataclass(frozen=True)
class Timing:
    """Cost of one mode."""

    mode: str
    requests: int
    wall_us: float
    cpu_us: float


async def drive(app: Asgi, headers: dict[str, str], requests: int, concurrency: int) -> None:
    """``requests`` manifest GETs, ``concurrency`` at a time."""
    url = f"/v2/{REPO}/manifests/latest"

    async def one() -> None:
        answer = await call(app, "GET", url, headers)
        assert answer.status == 200, answer

    for start in range(0, requests, concurrency):
        await asyncio.gather(*(one() for _ in range(min(concurrency, requests - start))))


async def measure(app: Asgi, headers: dict[str, str], mode: str, requests: int,
                  concurrency: int) -> Timing:
    """Wall and process CPU time (all threads) per request."""
    await drive(app, headers, min(200, requests), concurrency)  # warm caches and pools
    wall, cpu = time.perf_counter(), time.process_time()
    await drive(app, headers, requests, concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Timing(mode, requests, 1e6 * wall / requests, 1e6 * cpu / requests)


def package_of(filename: str) -> str:
    """``sqlalchemy`` for ``.../site-packages/sqlalchemy/orm/session.py``, etc."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/portside/" in filename:
        return "portside"
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    return "stdlib:" + Path(filename).name


def breakdown(profile: cProfile.Profile, requests: int, top: int = 20) -> str:
    """Self time per package and per function, inclusive time of Portside functions."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    per_package: collections.Counter[str] = collections.Counter()
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in raw.items():
        per_package[package_of(filename)] += tt
    lines = [f"profiled self time: {1e6 * total / requests:.0f} us per request", "",
             "self time by package (% of profiled time):"]
    lines += [f"  {100 * t / total:5.1f}%  {pkg}" for pkg, t in per_package.most_common(12)]
    lines += ["", "self time by function:"]
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    lines += [f"  {100 * v[2] / total:5.1f}%  {v[1] / requests:6.1f} calls/req  "
              f"{_where(k)}" for k, v in ranked]
    lines += ["", "inclusive time of Portside functions:"]
    ours = sorted(((k, v) for k, v in raw.items() if "/portside/" in k[0]),
                  key=lambda kv: -kv[1][3])[:top]
    lines += [f"  {100 * v[3] / total:5.1f}%  {1e6 * v[3] / requests:6.0f} us/req  {_where(k)}"
              for k, v in ours]
    return "\n".join(lines)


def _where(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    short = filename.split("site-packages/", 1)[-1].split("/src/", 1)[-1]
    return f"{name} ({short}:{line})"


async def run(requests: int) -> str:
    """All four modes; the report as text."""
    with tempfile.TemporaryDirectory(prefix="portside-profile-") as tmp:
        app = build_app(Path(tmp))
        await seed(app)
        headers = {"Authorization": f"Bearer {await token(app, 'pull')}", "Accept": ACCEPT}
        timings = [await measure(app, headers, "threaded (1 in flight)", requests, 1),
                   await measure(app, headers, "concurrent (32 in flight)", requests, 32)]
        with inline_threads():
            timings.insert(0, await measure(app, headers, "inline (no thread hops)",
                                            requests, 1))
            profile = cProfile.Profile()
            profile.enable()
            await drive(app, headers, requests, 1)
            profile.disable()
    lines = [f"manifest GET by tag, in-process ASGI, {requests} requests per mode", "",
             f"{'mode':28s} {'wall us/req':>12s} {'CPU us/req':>11s} {'max req/s/core':>15s}"]
    lines += [f"{t.mode:28s} {t.wall_us:12.0f} {t.cpu_us:11.0f} {1e6 / t.cpu_us:15.0f}"
              for t in timings]
    return "\n".join([*lines, "", breakdown(profile, requests)])


def main() -> None:
    """Parse arguments, run, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    report = asyncio.run(asyncio.wait_for(run(args.requests), timeout=300))
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n")


if __name__ == "__main__":
    main()
