"""Users: per-user views (``GET /v1/users/{uid}/views[/{name}]``), a sample of profiles
(``GET /v1/profiles?sample=N``), a user's recent events from the warehouse
(``GET /v1/users/{uid}/events``), and the dashboard's user page (``/users/{uid}``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from cardflow.config import Scope, Settings
from cardflow.views import View, load_views

from .auth import SETTINGS_KEY, require
from .cards import STATIC, STORE_KEY, _dumps
from .errors import error
from .profiles import SESSION_KEY, known_profile, worker_bases

log = logging.getLogger(__name__)
VIEWS_KEY = web.AppKey("views", dict)
VIEW_TIMEOUT_S = 5.0
MAX_SAMPLE = 200


async def _draw(request: web.Request, v: View, uid: str, profile: dict[str, Any]) -> dict[str, Any]:
    """One view's answer: its widgets, or its error (a view is user code: its failure is its own)."""
    cards = {card_id: {k: card[k] for k in ("title", "summary", "widgets")}
             for card_id, card in request.app[STORE_KEY].results.items()}
    params = {k: v for k, v in request.query.items() if k != "token"}
    loop = asyncio.get_running_loop()
    answer: dict[str, Any] = {"name": v.name, "title": v.title, "widgets": [], "error": None}
    try:
        answer["widgets"] = await asyncio.wait_for(
            loop.run_in_executor(None, v.widgets, profile, uid, params, cards), VIEW_TIMEOUT_S)
    except TimeoutError:
        answer["error"] = f"view {v.name!r} took over {VIEW_TIMEOUT_S:.0f} s"
    except Exception as exc:  # noqa: BLE001 - user code: reported in the answer
        answer["error"] = f"view {v.name!r} raised {type(exc).__name__}: {exc}"
    return answer


@require(Scope.READ)
async def get_views(request: web.Request) -> web.Response:
    uid = request.match_info["uid"]
    found = await known_profile(request.app, uid)
    views = request.app[VIEWS_KEY]
    drawn = [await _draw(request, v, uid, found["profile"]) for v in views.values()]
    return web.json_response({"uid": uid, "views": drawn}, dumps=_dumps)


@require(Scope.READ)
async def get_view(request: web.Request) -> web.Response:
    uid, name = request.match_info["uid"], request.match_info["name"]
    views = request.app[VIEWS_KEY]
    if name not in views:
        raise error(404, "not_found", f"no view {name!r}; views: {sorted(views)}")
    found = await known_profile(request.app, uid)
    drawn = await _draw(request, views[name], uid, found["profile"])
    return web.json_response({"uid": uid, **drawn}, status=500 if drawn["error"] else 200, dumps=_dumps)


@require(Scope.READ)
async def get_sample(request: web.Request) -> web.Response:
    """``?sample=N`` uids (at most 200), from every people worker's own partitions."""
    try:
        wanted = int(request.query.get("sample", "20"))
    except ValueError:
        wanted = -1
    if not 1 <= wanted <= MAX_SAMPLE:
        raise error(400, "bad_sample", f"sample must be an integer from 1 to {MAX_SAMPLE}")
    settings, session = request.app[SETTINGS_KEY], request.app[SESSION_KEY]
    uids: set[str] = set()
    for base in await worker_bases(settings.worker_urls):
        try:
            async with session.get(f"{base.rstrip('/')}/profiles/?limit={wanted}") as got:
                if got.status == 200:
                    uids.update((await got.json())["uids"])
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            continue  # a worker that does not answer adds nothing to a sample
    return web.json_response({"uids": sorted(uids)[:wanted]})


@require(Scope.READ)
async def get_events(request: web.Request) -> web.Response:
    """The user's latest events in the warehouse (``?limit=``, at most 100), newest first."""
    settings = request.app[SETTINGS_KEY]
    if not settings.warehouse_worker_url:
        raise error(503, "no_warehouse", "this API has no warehouse (CARDFLOW_WAREHOUSE_WORKER_URL)")
    uid = request.match_info["uid"]
    limit = request.query.get("limit", "20")
    url = (f"{settings.warehouse_worker_url.rstrip('/')}/warehouse/user-events/?uid={quote(uid, safe='')}"
           f"&limit={quote(limit, safe='')}")
    try:
        async with request.app[SESSION_KEY].get(url) as got:
            return web.Response(status=got.status if got.status in (200, 400) else 503, body=await got.read(),
                                content_type="application/json")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise error(503, "warehouse_unavailable", f"the warehouse worker did not answer: {exc}") from None


async def user_page(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "user.html")


def add_user_routes(app: web.Application, settings: Settings) -> None:
    app[VIEWS_KEY] = load_views(settings.views)
    app.router.add_get("/v1/users/{uid}/views", get_views)
    app.router.add_get("/v1/users/{uid}/views/{name}", get_view)
    app.router.add_get("/v1/users/{uid}/events", get_events)
    app.router.add_get("/v1/profiles", get_sample)
    app.router.add_get("/users", user_page)
    app.router.add_get("/users/{uid}", user_page)
