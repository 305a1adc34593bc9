"""The one background task that moves every job along, so jobs finish (and webhooks
fire) even when nobody is polling them.

Reads bring a job up to date on their own; the ticker only has to be frequent
enough that webhooks go out close to the moment a job finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from simulator.state import SimulatorState

logger = logging.getLogger("simulator.jobs")


def tick_interval(job_seconds: float) -> float:
    """About 40 ticks per job life, never busier than 100 per second nor slower than 4."""
    return min(0.25, max(0.01, job_seconds / 40))


class JobDriver:
    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="simulator-jobs")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self._state.tick()
            except Exception:
                # One broken job must not stop every other job's clock.
                logger.exception("advancing jobs failed")
            await asyncio.sleep(tick_interval(self._state.job_seconds))
