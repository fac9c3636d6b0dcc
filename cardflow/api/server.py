"""Serving the API: aiohttp's server with JSON errors for the requests it refuses itself.

aiohttp answers a request it cannot parse (a request line or header over its
limit, a malformed message) from ``RequestHandler.handle_error``, before any
middleware runs: ``text/plain``, logged as an error with a traceback. The API
promises JSON errors, and a client's bad request is not a server error. So the
server's request handler is aiohttp's own with that one method replaced
(aiohttp is pinned exactly: this uses ``RequestHandler`` and ``Server.__call__``
of 3.14.5, and ``AppRunner._make_server``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from cardflow.config import Settings
from cardflow.errors import ConfigError

log = logging.getLogger(__name__)
CODES = {400: "bad_request", 408: "request_timeout", 413: "body_too_large", 414: "uri_too_long",
         431: "headers_too_large", 500: "internal", 504: "timeout"}


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering its own refusals as the API's JSON errors."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("error handling request from %s", request.remote, exc_info=exc)
        else:  # the client's mistake: one line, no traceback
            log.info("refused a malformed request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        text = message if status < 500 and message else phrase
        body = {"error": CODES.get(status, "bad_request" if status < 500 else "internal"),
                "message": f"{text}. Check the request line and headers (limits: "
                           "api_max_line_bytes, api_max_header_bytes)" if status == 400 else text}
        response = web.Response(status=status, text=json.dumps(body), content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``AppRunner`` whose connections are served by :class:`JsonErrorHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then stop cleanly (aiohttp's ``run_app``, with our runner)."""
    runner = ApiRunner(app, handle_signals=True, max_line_size=settings.api_max_line_bytes,
                       max_field_size=settings.api_max_header_bytes)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, settings.api_host, settings.api_port).start()
        except OSError as exc:
            raise ConfigError(f"the API cannot listen on {settings.api_host}:{settings.api_port} "
                              f"({exc.strerror}): set CARDFLOW_API_HOST / CARDFLOW_API_PORT") from exc
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()
