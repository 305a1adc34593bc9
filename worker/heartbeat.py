"""Worker liveness, read by the API's `/ready` (see `service.store.workers`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from service.resources import Resources

logger = logging.getLogger(__name__)


async def run_heartbeat(
    resources: Resources, worker_id: str, alive: Callable[[], bool] = lambda: True
) -> None:
    """Beat while `alive()` says the worker's polling loop still runs: a worker whose
    loop died must drop out of /ready rather than be counted forever."""
    settings = resources.settings
    while alive():
        try:
            await resources.workers.beat(worker_id, ttl=settings.worker_heartbeat_ttl_seconds)
        except (RedisError, OSError) as exc:
            # Redis may be restarting; readiness will say so. Keep trying.
            logger.warning("heartbeat failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(settings.worker_heartbeat_seconds)
