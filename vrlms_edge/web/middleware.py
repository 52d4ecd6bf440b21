"""One place that turns failures into the JSON error body of PROTOCOL.md."""

from __future__ import annotations

import logging
from typing import Final

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from vrlms_edge.errors import AppError

log = logging.getLogger(__name__)

_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(err: AppError) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(err.body()),
        status=err.status,
        content_type="application/json",
        headers=err.headers,
    )


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400 or not _wants_json(request):
            raise
        code = _CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body too large"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(AppError(exc.status, code, message, headers=headers))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(AppError(500, "internal_error", "internal error"))
