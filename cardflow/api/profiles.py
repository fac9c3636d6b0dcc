"""Profile lookup (``GET /v1/profiles/{uid}``) and read-your-writes waits.

The API holds no profiles: it asks a people worker, whose Faust
``table_route`` forwards the request to the worker that owns the uid's
partition. During a rebalance a worker may briefly not know the owner, so
a lookup retries across the configured workers for a short while.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from cardflow.config import Scope, Settings
from cardflow.errors import WorkerUnavailable

from .auth import SETTINGS_KEY, require
from .errors import error

SESSION_KEY = web.AppKey("worker_session", aiohttp.ClientSession)
RETRY_SECONDS = 8.0


async def fetch_profile(app: web.Application, uid: str,
                        retry_for: float = RETRY_SECONDS) -> dict[str, Any] | None:
    """The stored profile (with meta) or None when the uid is unknown."""
    settings = app[SETTINGS_KEY]
    session = app[SESSION_KEY]
    deadline = time.monotonic() + retry_for
    last = "no worker configured (CARDFLOW_WORKER_URLS)"
    attempt = 0
    while True:
        for base in await worker_bases(settings.worker_urls):
            url = f"{base.rstrip('/')}/profiles/{quote(uid, safe='')}/"
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        body: dict[str, Any] = await response.json()
                        return body
                    if response.status == 404:
                        return None
                    last = f"{base} answered {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{base}: {exc or type(exc).__name__}"
        attempt += 1
        if time.monotonic() > deadline:
            raise WorkerUnavailable(last)
        await asyncio.sleep(min(0.05 * 2**attempt, 1.0))


async def worker_bases(urls: tuple[str, ...]) -> list[str]:
    """``worker_urls`` with each ``dns+http://name:port`` entry resolved to every address the name
    has now (a headless Service lists one per ready worker pod)."""
    out: list[str] = []
    loop = asyncio.get_running_loop()
    for url in urls:
        if not url.startswith("dns+"):
            out.append(url)
            continue
        parsed = urlsplit(url[len("dns+"):])
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = await loop.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
        except OSError:
            continue  # no worker ready yet: the lookup retries, then answers 503
        for address in sorted({str(info[4][0]) for info in infos}):
            host = f"[{address}]" if ":" in address else address
            out.append(f"{parsed.scheme}://{host}:{port}")
    return out


async def wait_folded(app: web.Application, targets: dict[str, int], wait: float) -> bool:
    """True once every uid's profile has folded up to its offset; False after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    pending = dict(targets)
    limit = asyncio.Semaphore(16)

    async def done(uid: str, offset: int) -> bool:
        async with limit:
            try:
                found = await fetch_profile(app, uid, retry_for=0)
            except WorkerUnavailable:
                return False
        return found is not None and found["meta"]["offset"] >= offset

    while pending:
        checks = await asyncio.gather(*(done(u, o) for u, o in pending.items()))
        pending = {u: o for (u, o), ok in zip(list(pending.items()), checks, strict=True) if not ok}
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def known_profile(app: web.Application, uid: str) -> dict[str, Any]:
    """The stored profile; a 404 for an unknown uid, a 503 when no worker answers."""
    try:
        found = await fetch_profile(app, uid)
    except WorkerUnavailable as exc:
        raise error(503, "worker_unavailable", f"no people worker answered: {exc}",
                    headers={"Retry-After": "2"}) from None
    if found is None:
        raise error(404, "not_found", f"no profile for uid {uid!r}")
    return found


@require(Scope.READ)
async def get_profile(request: web.Request) -> web.Response:
    uid = request.match_info["uid"]
    return web.json_response(await known_profile(request.app, uid))


def add_profile_routes(app: web.Application, settings: Settings) -> None:
    async def open_session(app: web.Application) -> None:
        app[SESSION_KEY] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close_session(app: web.Application) -> None:
        await app[SESSION_KEY].close()

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/v1/profiles/{uid}", get_profile)
