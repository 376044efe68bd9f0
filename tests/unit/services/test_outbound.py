"""The SSRF policy for user-set outbound URLs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from portside.config.hosts import parse_allowed_entry
from portside.services.outbound import OutboundPolicy, OutboundRefused


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:5000/v2/",
    "http://localhost/",
    "http://10.1.2.3/",
    "http://192.168.0.1/",
    "http://172.16.5.5/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
])
def test_private_loopback_and_reserved_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="SSRF_ALLOWED_HOSTS"):
        OutboundPolicy().check_url(url)


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("/relative/path", "http or https"),
    ("http://user:secret@example.com/", "credentials"),
    ("http://example.com:99999/", "Invalid URL"),
])
def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        OutboundPolicy().check_url(url)


def test_public_addresses_pass() -> None:
    policy = OutboundPolicy()
    policy.check_url("https://93.184.216.34/hook")
    policy.check_url("http://[2606:4700::1111]/")


def test_allowed_entries_open_names_addresses_and_ranges() -> None:
    policy = OutboundPolicy(["127.0.0.0/8", "localhost", "10.0.0.7", "fd00::/8"])
    policy.check_url("http://127.0.0.1:5000/")
    policy.check_url("http://127.9.9.9/")
    policy.check_url("http://LOCALHOST:1/")
    policy.check_url("http://10.0.0.7/")
    policy.check_url("http://[fd00::5]/")
    with pytest.raises(OutboundRefused):
        policy.check_url("http://10.0.0.8/")


@pytest.mark.parametrize("entry", ["", "not a host", "-bad-.example", "a" * 300])
def test_bad_allowed_entries_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_allowed_entry(entry)


@pytest.fixture
def redirecting_server() -> Iterator[str]:
    """A loopback server whose every GET redirects to 169.254.169.254."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_clients_check_every_request_including_redirects(redirecting_server: str) -> None:
    # Loopback is allowed, so the first request goes out; the redirect target is not.
    policy = OutboundPolicy(["127.0.0.0/8"])
    with policy.client(follow_redirects=True) as client, \
            pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
        client.get(redirecting_server)
    with OutboundPolicy().client() as client, pytest.raises(OutboundRefused):
        client.get(redirecting_server)


async def _async_get(policy: OutboundPolicy, url: str) -> None:
    async with policy.async_client(follow_redirects=True) as client:
        await client.get(url)


def test_async_clients_check_redirects_too(redirecting_server: str) -> None:
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254"):
        asyncio.run(_async_get(OutboundPolicy(["127.0.0.0/8"]), redirecting_server))
