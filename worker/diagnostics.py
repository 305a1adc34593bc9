"""A no-op task that proves the queue works end to end.

It records which request enqueued it, so an operator (or a test) can check
that the serializer, the queue and request-id propagation all work.
"""

from __future__ import annotations

from service.logs import request_id_var
from worker.context import WorkerContext

PING_TTL_SECONDS = 300


async def ping(ctx: WorkerContext, token: str) -> str:
    resources = ctx["resources"]
    request_id = request_id_var.get() or ""
    await resources.redis.set(resources.keys.ping(token), request_id, ex=PING_TTL_SECONDS)
    return token
