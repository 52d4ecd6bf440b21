"""The one error type of the domain; web/middleware.py maps it to the JSON error body."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """A refusal the client can act on: HTTP status, snake_case code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"error": error}


def not_found(what: str = "object") -> AppError:
    return AppError(404, "not_found", f"{what} not found")


def forbidden(message: str = "not allowed for your role", code: str = "forbidden") -> AppError:
    return AppError(403, code, message)


def conflict(code: str, message: str) -> AppError:
    return AppError(409, code, message)


def invalid(message: str, *, detail: Any = None) -> AppError:
    return AppError(422, "validation_error", message, detail=detail)
