"""Run a real S3-compatible server (moto in server mode) on loopback for tests.

Usage::

    from support.s3server import create_bucket, running_s3_server

    with running_s3_server() as endpoint:
        bucket = create_bucket(endpoint)
        ...  # talk to endpoint.endpoint_url over HTTP with any S3 client

The server is a separate process speaking the S3 REST API over HTTP, so the code under
test runs exactly as against AWS, Ceph RGW or MinIO (no in-process mocking). Its state is
in memory and disappears when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: moto accepts any credentials; these are what tests pass to clients.
ACCESS_KEY = "portside-test-access-key"
SECRET_KEY = "portside-test-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    """Where a running test S3 server listens and how to authenticate to it."""

    host: str
    port: int
    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (path-style addressing)."""
        import boto3
        import botocore.config

        return boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        ).client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> bool:
    """Poll ``url`` until the server answers; ``False`` if it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            # moto's management API answers without any bucket existing.
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_s3_server(host: str = "127.0.0.1", startup_timeout: float = 30.0,
                      attempts: int = 3) -> Iterator[S3Endpoint]:
    """Start ``python -m moto.server`` on a free loopback port and yield its endpoint.

    The free port is picked before the server binds it, so another process could grab it
    in between; startup is therefore retried ``attempts`` times. The server's output goes
    to a temporary log file whose tail is included in the error if it fails to start.
    """
    env = dict(os.environ)
    # Keep the server self-contained: no real AWS credentials or config leak into it.
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(name, None)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION)
    with tempfile.TemporaryFile(prefix="moto-server-") as log:
        last_error = "not started"
        for _ in range(attempts):
            port = _free_port(host)
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
            url = f"http://{host}:{port}"
            try:
                if _wait_until_ready(process, url, startup_timeout):
                    yield S3Endpoint(host=host, port=port, endpoint_url=url)
                    return
                log.seek(0)
                last_error = log.read().decode(errors="replace")[-2000:]
            finally:
                _stop(process)
        raise RuntimeError(f"moto S3 server did not start: {last_error}")


def create_bucket(endpoint: S3Endpoint, name: str | None = None) -> str:
    """Create a bucket (a fresh unique name by default) and return its name."""
    bucket = name or f"portside-test-{uuid.uuid4().hex[:16]}"
    endpoint.client().create_bucket(Bucket=bucket)
    return bucket
