"""Portside: an enterprise container registry (OCI Distribution + Quay-compatible API)."""

__version__ = "0.1.0"
