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
after it they queue it like any other. An attempt that finds the tenant's
slots taken, or that fails outside the HTTP exchange, is handed to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar

import httpx
from redis.exceptions import RedisError

from service import tasks
from service.resources import Resources
from service.webhooks.delivery import SLOT_SPARE_SECONDS, TIMEOUT_SECONDS, WebhookDelivery

logger = logging.getLogger(__name__)

# How long a delivery's first attempt is left to the process that stored it.
SEND_WINDOW_SECONDS = TIMEOUT_SECONDS + SLOT_SPARE_SECONDS
# First attempts in flight (or held) in one process at most; past it, the queue's.
LOCAL_LIMIT = 100
# After an attempt failed outside the HTTP exchange (Redis, a bug), queue it this late.
REQUEUE_SECONDS = 5.0

_held: ContextVar[list[str] | None] = ContextVar("held_sends", default=None)


class LocalSender:
    """First attempts of the deliveries this process emits (see the module docstring)."""

    def __init__(self, resources: Resources, client: httpx.AsyncClient) -> None:
        self.resources = resources
        self._delivery = WebhookDelivery(resources, client)
        self._running: set[asyncio.Task[None]] = set()
        self._held = 0

    @property
    def busy(self) -> int:
        """Attempts in flight now."""
        return len(self._running)

    def has_room(self) -> bool:
        return len(self._running) + self._held < LOCAL_LIMIT

    def window_end(self) -> float:
        """The `sending_until` of a delivery stored now to be sent here."""
        return time.time() + SEND_WINDOW_SECONDS

    def send(self, delivery_id: str) -> None:
        """Send attempt 1 now, or when the enclosing `held_sends` block ends."""
        held = _held.get()
        if held is None:
            self._start(delivery_id)
        else:
            held.append(delivery_id)
            self._held += 1

    @contextlib.contextmanager
    def held_sends(self) -> Iterator[None]:
        """Deliveries emitted inside the block are sent when it ends, however it ends
        (they are stored, so they are due either way)."""
        held: list[str] = []
        token = _held.set(held)
        try:
            yield
        finally:
            _held.reset(token)
            self._held -= len(held)
            for delivery_id in held:
                self._start(delivery_id)

    def _start(self, delivery_id: str) -> None:
        task = asyncio.create_task(self._send(delivery_id), name=f"deliver {delivery_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, delivery_id: str) -> None:
        try:
            outcome = await self._delivery.attempt(delivery_id, 1)
        except Exception:
            logger.exception(
                "first webhook attempt failed; queueing it", extra={"delivery_id": delivery_id}
            )
            outcome = REQUEUE_SECONDS
        if not isinstance(outcome, float):
            return
        # The tenant's slots were taken (or the attempt broke): the queue sends it.
        try:
            await tasks.enqueue_delivery(
                self.resources.queue, delivery_id, attempt=1, defer_by=outcome
            )
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not queue a webhook attempt; the reconciler will",
                extra={"delivery_id": delivery_id, "error": repr(exc)},
            )

    async def stop(self) -> None:
        """Cut off what is still in flight (the worker's shutdown waited its grace
        period first); those deliveries are queued once their window has passed."""
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
