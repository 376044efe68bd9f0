"""Entries of ``SSRF_ALLOWED_HOSTS``: host names, IP addresses and CIDR ranges."""

from __future__ import annotations

import ipaddress

__all__ = ["IPNetwork", "parse_allowed_entry"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowed_entry(entry: str) -> str | IPNetwork:
    """One ``SSRF_ALLOWED_HOSTS`` entry: a network for an address or CIDR range, else a
    lower-cased host name. Raises :class:`ValueError` for an entry that is neither."""
    text = entry.strip()
    if not text:
        raise ValueError("empty SSRF_ALLOWED_HOSTS entry")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        and not label.startswith("-") and not label.endswith("-")
        for label in labels
    ):
        raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR range")
    return name
