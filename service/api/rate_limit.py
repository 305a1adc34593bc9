"""A per-tenant request budget shared by every API replica through Redis.

Fixed one-minute windows: one INCR per request on `fts:rate:{tenant}:{minute}`.
Litestar's own limiter counts per process, so N replicas would allow N times
the budget; this one does not.
"""

from __future__ import annotations

import math
import time

from service.errors import RateLimited
from service.resources import Resources

WINDOW_SECONDS = 60


async def spend(resources: Resources, tenant: str) -> None:
    limit = resources.settings.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    count = await resources.requests.spend(tenant, window, window_seconds=WINDOW_SECONDS)
    if count > limit:
        reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        raise RateLimited(
            f"This tenant may send {limit} requests per minute; retry in {reset} s",
            retry_after=reset,
            limit=limit,
        )
