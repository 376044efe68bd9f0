"""The ``/api/v1`` REST API, with Quay's paths and JSON shapes."""
