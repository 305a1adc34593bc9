"""Liveness and readiness."""

from __future__ import annotations

import time
from dataclasses import dataclass

from litestar import Controller, get
from litestar.datastructures import State
from redis.exceptions import RedisError

from service.api.problems import problems
from service.errors import Unavailable
from service.resources import Resources


@dataclass
class Health:
    status: str


@dataclass
class Readiness:
    status: str
    redis: str
    workers: int
    detail: str


async def live_workers(resources: Resources) -> int:
    """Workers whose heartbeat is newer than the TTL."""
    cutoff = time.time() - resources.settings.worker_heartbeat_ttl_seconds
    return int(await resources.redis.zcount(resources.keys.workers, cutoff, "+inf"))


class HealthController(Controller):
    tags = ["Health"]

    @get("/health", operation_id="GetHealth", summary="Process is alive", security=[{}])
    async def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="GetReadiness",
        summary="Redis is reachable and a worker heartbeat was seen recently",
        security=[{}],
        responses=problems(503),
    )
    async def ready(self, state: State) -> Readiness:
        resources: Resources = state.resources
        try:
            await resources.redis.ping()
            workers = await live_workers(resources)
        except (RedisError, OSError) as exc:
            raise Unavailable(
                f"Redis is unreachable ({type(exc).__name__})",
                code="redis_unavailable",
                extra={"redis": "down", "workers": None},
            ) from None
        if workers == 0:
            ttl = resources.settings.worker_heartbeat_ttl_seconds
            raise Unavailable(
                f"No worker heartbeat in the last {ttl:g} seconds",
                code="no_worker",
                extra={"redis": "ok", "workers": 0},
            )
        return Readiness(status="ok", redis="ok", workers=workers, detail="ready")
