"""The ``/v2`` HTTP API: OCI Distribution Specification v1.1 and Docker Registry v2."""
