"""Liveness and readiness."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, get
from redis.exceptions import RedisError

from service.api.auth import Injected
from service.api.problems import problems
from service.errors import Unavailable


@dataclass
class Health:
    status: str


@dataclass
class Readiness:
    status: str
    redis: str
    workers: int
    detail: str


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
    async def ready(self, resources: Injected) -> Readiness:
        try:
            workers = await resources.workers.live(
                ttl=resources.settings.worker_heartbeat_ttl_seconds
            )
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
