"""The API's readiness: a replica is ready only once the broker answers and it has read the
results topic (so a rolling update never routes to a replica that would serve half the cards)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cardflow.api.app import create_api
from cardflow.api.cards import STORE_KEY
from cardflow.api.health import BrokerProbe
from cardflow.config import load_settings
from cardflow.local_kafka import free_port

pytestmark = pytest.mark.unit


def test_ready_only_after_the_results_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broker_up(self: BrokerProbe) -> tuple[bool, str]:
        return True, ""

    monkeypatch.setattr(BrokerProbe, "check", broker_up)  # the broker answers; results never load

    async def run() -> None:
        app = create_api(load_settings(env={}, broker=f"127.0.0.1:{free_port()}"))
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            assert response.status == 503
            assert "results" in await response.json()
            app[STORE_KEY].loaded.set()
            assert (await client.get("/readyz")).status == 200

    asyncio.run(run())


def test_dns_worker_urls_resolve_to_every_address() -> None:
    from cardflow.api.profiles import worker_bases

    got = asyncio.run(worker_bases(("dns+http://localhost:6066", "http://10.0.0.5:6066",
                                    "dns+http://no-such-host.invalid:6066")))
    assert "http://127.0.0.1:6066" in got and "http://10.0.0.5:6066" in got
    assert not any("invalid" in url for url in got)  # not resolvable (yet): skipped, not an error
