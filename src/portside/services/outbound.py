"""The policy for outbound calls to URLs that users set (SSRF protection).

Mirror sources, proxy-cache upstreams, webhooks, Slack hooks and log-export callbacks
are addresses chosen by users; without a policy they could make the registry reach
its own metadata service, database or admin ports. Every such call goes through
:class:`OutboundPolicy`:

- only ``http`` and ``https`` URLs with a host and without embedded credentials;
- the host name is resolved and *every* address it resolves to must be global (not
  private, loopback, link-local, multicast, reserved or unspecified; IPv4-mapped IPv6
  addresses are judged by their IPv4 address), unless the host name, the address or a
  range containing it is listed in ``SSRF_ALLOWED_HOSTS``;
- the check is repeated for every request an HTTP client built here sends, redirects
  included, so a public URL cannot redirect to a private one;
- connect and read timeouts always apply.

A host name could still resolve differently between the check and the connection (DNS
rebinding); the window is one resolver round trip, and the registry's own resolver
decides both times.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from portside.config.hosts import IPNetwork, parse_allowed_entry
from portside.services.refusals import Invalid

__all__ = ["OutboundPolicy", "OutboundRefused"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Invalid):
    """A URL the outbound policy does not allow (400 when it comes from a request)."""


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local
        or address.is_multicast or address.is_reserved or address.is_unspecified
    )


class OutboundPolicy:
    """Decides which user-set URLs the registry may call, and builds HTTP clients that
    enforce the decision on every request."""

    def __init__(self, allowed_hosts: Iterable[str] = (), connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 30.0) -> None:
        self._allowed_names: set[str] = set()
        self._allowed_networks: list[IPNetwork] = []
        for entry in allowed_hosts:
            parsed = parse_allowed_entry(entry)
            if isinstance(parsed, str):
                self._allowed_names.add(parsed)
            else:
                self._allowed_networks.append(parsed)
        #: Timeouts of every client built here (connect; read, write and pool).
        self.timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)

    # --- decisions ------------------------------------------------------------------
    def _host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self._allowed_names

    def _address_allowed(self, address: IPAddress) -> bool:
        if _is_public(address):
            return True
        mapped = (address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address)
                  else None)
        return any(address in network or (mapped is not None and mapped in network)
                   for network in self._allowed_networks)

    @staticmethod
    def split(url: str) -> tuple[str, str, int]:
        """``(scheme, host, port)`` of an acceptable URL; raises :class:`OutboundRefused`
        for one that is malformed, not http(s), without a host or with credentials."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise OutboundRefused(f"Invalid URL: {url[:200]!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused("The URL must be an absolute http or https URL.")
        if parts.username or parts.password:
            raise OutboundRefused("The URL must not contain credentials.")
        return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)

    def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is acceptable and its host resolves only to allowed
        addresses (blocking: resolves the name). Raises :class:`OutboundRefused`."""
        _scheme, host, port = self.split(url)
        self.check_host(host, port)

    def check_host(self, host: str, port: int) -> None:
        """The address part of :meth:`check_url` for a host and port."""
        if self._host_allowed(host):
            return
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise OutboundRefused(f"Cannot resolve host {host[:200]!r}: {exc}") from None
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                         for info in infos]
        for address in addresses:
            if not self._address_allowed(address):
                raise OutboundRefused(
                    f"Host {host[:200]!r} resolves to {address}, a private, loopback or "
                    "reserved address; add it to SSRF_ALLOWED_HOSTS to allow it."
                )

    async def check_url_async(self, url: str) -> None:
        """:meth:`check_url` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.check_url, url)

    # --- clients --------------------------------------------------------------------
    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` that checks every request (redirects included) and uses
        the policy's timeouts unless ``timeout`` is given."""

        def check(request: httpx.Request) -> None:
            self.check_host(request.url.host, request.url.port or _default_port(request.url))

        hooks = kwargs.pop("event_hooks", {})
        hooks = {**hooks, "request": [check, *hooks.get("request", [])]}
        kwargs.setdefault("timeout", self.timeout)
        return httpx.Client(event_hooks=hooks, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """:meth:`client` for asyncio code; the check runs in a worker thread."""

        async def check(request: httpx.Request) -> None:
            await anyio.to_thread.run_sync(
                self.check_host, request.url.host,
                request.url.port or _default_port(request.url))

        hooks = kwargs.pop("event_hooks", {})
        hooks = {**hooks, "request": [check, *hooks.get("request", [])]}
        kwargs.setdefault("timeout", self.timeout)
        return httpx.AsyncClient(event_hooks=hooks, **kwargs)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
