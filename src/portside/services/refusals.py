"""The refusals services raise for ``/api/v1``: each carries a message for API clients,
and the API maps the kind to Quay's status code (404, 403, 400)."""

from __future__ import annotations

__all__ = ["Forbidden", "Invalid", "NotFound", "Refusal"]


class Refusal(Exception):
    """Base class of service refusals; ``message`` is shown to API clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(Refusal):
    """No such thing, or not visible to the caller (404)."""


class Forbidden(Refusal):
    """The caller is authenticated but may not do this (403)."""


class Invalid(Refusal):
    """The request is malformed or would break a rule (400)."""
