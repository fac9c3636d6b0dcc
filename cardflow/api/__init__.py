"""The aiohttp API service: stateless, reads Kafka, serves cards, ingest and health."""

from .app import create_api, run_api

__all__ = ["create_api", "run_api"]
