"""Sending a delivery's first attempt from the worker process that emitted it.

Queueing every first attempt through arq cost about 25 Redis round trips per
delivery (enqueue, pick-up, arq's lock and retry counter, its result), more
than the rest of a job's webhook work together. The process that emits an
event (its follower stepping a job, or an evaluation run) sends the first
attempt itself, in the background, once the write that announces the event
has landed (`held_sends`), so a receiver that reads the job on arrival sees
the state it was told of. Later attempts wait seconds to hours and go through
the queue as before.

A crash must not lose an attempt sent this way. Such a delivery is stored
with `sending_until` (the attempt's deadline plus a margin ahead); until then
the reconciler and a repeated emit leave its first attempt to this process,
after it they queue it like any other. A first attempt that waits here for
its tenant's turn so long that it could not end inside that window, or that
fails outside the HTTP exchange, is handed to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from service import tasks
from service.resources import Resources
from service.webhooks.client import WebhookClient
from service.webhooks.delivery import SLOT_SPARE_SECONDS, TIMEOUT_SECONDS, WebhookDelivery

logger = logging.getLogger(__name__)

# How long a delivery's first attempt is left to the process that stored it.
SEND_WINDOW_SECONDS = TIMEOUT_SECONDS + SLOT_SPARE_SECONDS
# First attempts in flight, waiting or held in one process at most; past it, the queue's.
LOCAL_LIMIT = 1000
# After an attempt failed outside the HTTP exchange (Redis, a bug), queue it this late.
REQUEUE_SECONDS = 5.0

_held: ContextVar[list[tuple[str, str, float]] | None] = ContextVar("held_sends", default=None)


@dataclass
class _Tenant:
    """One tenant's first attempts here: how many run, and those waiting their turn."""

    running: int = 0
    waiting: deque[tuple[str, float]] = field(default_factory=deque)


class LocalSender:
    """First attempts of the deliveries this process emits (see the module docstring).

    Each tenant has at most WEBHOOK_CONCURRENCY_PER_TENANT attempts running here;
    the rest wait in this process, in order, and start as those end. (The slots
    in Redis still bound the tenant across processes: an attempt that finds them
    taken by another process waits here and tries again.) A delivery that would
    not finish inside its send window is handed to the queue instead.
    """

    def __init__(self, resources: Resources, client: WebhookClient) -> None:
        self.resources = resources
        self._delivery = WebhookDelivery(resources, client)
        self._per_tenant = resources.settings.webhook_concurrency_per_tenant
        self._tenants: dict[str, _Tenant] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._pending = 0  # held, waiting or running

    @property
    def busy(self) -> int:
        """First attempts running or waiting their turn here."""
        return sum(t.running + len(t.waiting) for t in self._tenants.values())

    def has_room(self) -> bool:
        return self._pending < LOCAL_LIMIT

    def window_end(self) -> float:
        """The `sending_until` of a delivery stored now to be sent here."""
        return time.time() + SEND_WINDOW_SECONDS

    def send(self, delivery_id: str, tenant: str, window_end: float) -> None:
        """Send attempt 1 now (in its tenant's turn), or when the enclosing
        `held_sends` block ends."""
        self._pending += 1
        held = _held.get()
        if held is None:
            self._enqueue(delivery_id, tenant, window_end)
        else:
            held.append((delivery_id, tenant, window_end))

    @contextlib.contextmanager
    def held_sends(self) -> Iterator[None]:
        """Deliveries emitted inside the block are sent when it ends, however it ends
        (they are stored, so they are due either way)."""
        held: list[tuple[str, str, float]] = []
        token = _held.set(held)
        try:
            yield
        finally:
            _held.reset(token)
            for delivery_id, tenant, window_end in held:
                self._enqueue(delivery_id, tenant, window_end)

    def _enqueue(self, delivery_id: str, tenant: str, window_end: float) -> None:
        self._tenants.setdefault(tenant, _Tenant()).waiting.append((delivery_id, window_end))
        self._next(tenant)

    def _next(self, tenant: str) -> None:
        state = self._tenants[tenant]
        while state.waiting and state.running < self._per_tenant:
            delivery_id, window_end = state.waiting.popleft()
            state.running += 1
            task = asyncio.create_task(
                self._send(delivery_id, tenant, window_end), name=f"deliver {delivery_id}"
            )
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if not state.waiting and not state.running:
            del self._tenants[tenant]

    async def _send(self, delivery_id: str, tenant: str, window_end: float) -> None:
        try:
            await self._attempt(delivery_id, tenant, window_end)
        finally:
            self._pending -= 1
            self._tenants[tenant].running -= 1
            self._next(tenant)

    async def _attempt(self, delivery_id: str, tenant: str, window_end: float) -> None:
        while True:
            if time.time() + TIMEOUT_SECONDS > window_end:
                # It could not end inside the window: the queue sends it now, so the
                # reconciler has nothing to take over.
                await self._to_queue(delivery_id, 0.0)
                return
            try:
                outcome = await self._delivery.attempt(delivery_id, 1, tenant)
            except Exception:
                logger.exception(
                    "first webhook attempt failed; queueing it", extra={"delivery_id": delivery_id}
                )
                await self._to_queue(delivery_id, REQUEUE_SECONDS)
                return
            if not isinstance(outcome, float):
                return
            await asyncio.sleep(outcome)  # other processes hold the tenant's slots

    async def _to_queue(self, delivery_id: str, defer: float) -> None:
        try:
            await tasks.enqueue_delivery(
                self.resources.queue, delivery_id, attempt=1, defer_by=defer
            )
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not queue a webhook attempt; the reconciler will",
                extra={"delivery_id": delivery_id, "error": repr(exc)},
            )

    async def stop(self) -> None:
        """Cut off what is still in flight or waiting (the worker's shutdown waited its
        grace period first); those deliveries are queued once their window has passed."""
        for state in self._tenants.values():
            self._pending -= len(state.waiting)
            state.waiting.clear()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


@contextlib.contextmanager
def held_sends(resources: Resources) -> Iterator[None]:
    """`LocalSender.held_sends` where this process sends first attempts; else nothing."""
    sender = resources.local_sender
    if sender is None:
        yield
        return
    with sender.held_sends():
        yield
