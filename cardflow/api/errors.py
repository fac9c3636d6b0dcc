"""Every API error is JSON: {"error": code, "message": text}; never a stack trace."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(web.HTTPException):
    """An HTTP error of any status with a JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(text=json.dumps(body), content_type="application/json", headers=headers)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          **extra: Any) -> ApiError:
    """An HTTP error with body {"error": code, "message": message, **extra}, to ``raise``."""
    return ApiError(status, {"error": code, "message": message, **extra}, headers)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        raise error(exc.status, code, message, headers=kept) from None
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        raise error(500, "internal", "internal error; the server log has the details") from None
