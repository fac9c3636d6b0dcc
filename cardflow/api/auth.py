"""Bearer-token auth with scopes (ingest, read, admin). No configured tokens: no auth."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from cardflow.config import Scope, Settings

from .errors import error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SETTINGS_KEY = web.AppKey("settings", Settings)


def _scopes_of(request: web.Request) -> frozenset[Scope] | None:
    tokens = request.app[SETTINGS_KEY].api_tokens
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.method == "GET":
        # Browsers' EventSource cannot send headers: reads may pass the token as ?token=.
        scheme, token = "bearer", request.query.get("token", "")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    for known, scopes in tokens.items():
        if hmac.compare_digest(known.encode(), token.strip().encode()):
            return scopes
    return None


def require(scope: Scope) -> Callable[[Handler], Handler]:
    """Handler decorator: 401 without a valid token, 403 when the token lacks ``scope``."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if request.app[SETTINGS_KEY].api_tokens:
                scopes = _scopes_of(request)
                if scopes is None:
                    raise error(401, "unauthorized",
                                "send a valid token as 'Authorization: Bearer <token>' (or ?token= on GET)",
                                headers={"WWW-Authenticate": 'Bearer realm="cardflow"'})
                if scope not in scopes and Scope.ADMIN not in scopes:
                    raise error(403, "forbidden", f"this token lacks the '{scope.value}' scope")
            return await handler(request)

        return guarded

    return wrap
