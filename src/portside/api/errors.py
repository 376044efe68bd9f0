"""Errors in Quay's API JSON shape (``status``, ``error_message``, ``title``, ...)."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An API failure with its HTTP status and Quay error type."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def error_json(status: int, error_type: str, message: str) -> JSONResponse:
    """Quay's error body."""
    return JSONResponse(
        {
            "status": status,
            "error_message": message,
            "title": error_type,
            "error_type": error_type,
            "detail": message,
            "type": f"/api/v1/error/{error_type}",
        },
        status_code=status,
    )
