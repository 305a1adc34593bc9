"""Following jobs: the loop in each worker process that steps every job when it is due.

A job moves forward in sync steps (`service.jobs.sync.JobSync`), one every
few seconds while it is followed. Running each step as its own arq task cost
about nine Redis round trips of arq's own per step, and several workers tried
to start the same due task. The follower instead takes due jobs in batches
from the follow schedule (`service.store.following`), and each turn of its
loop is three round trips however many jobs it covers:

1. release the steps that ended since the last turn, each job due again at the
   time its step asked for (or dropped, once it is final and announced);
2. claim as many due jobs as it has room for, urgent ones (a provider's
   webhook, a user's action) first, and any whose claim lapsed because the
   worker holding it died;
3. read the claimed jobs' records at once and start a step for each.

A claim lasts as long as arq's lock on a task would (`TASK_TIMEOUT_SECONDS`
plus 10 s) and a step is cut off at `TASK_TIMEOUT_SECONDS`, so a crash delays a
job the way it delayed an arq task, and two steps of one job never overlap
except after a lapse, which the steps' compare-and-set writes make harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from redis.exceptions import RedisError

from service import tasks
from service.jobs.sync import JobSync
from service.logs import log_context
from service.resources import Resources
from service.store.following import Claim, Release
from service.store.jobs import JobSnapshot

logger = logging.getLogger(__name__)

# The longest the loop waits before looking for due jobs again; a poke (urgent
# work) is picked up within this.
IDLE_SECONDS = 0.25
# The shortest time between two turns: steps that end and jobs that fall due
# meanwhile are released and claimed together (a turn per step would cost three
# round trips per step). Urgent work waits this long at most before its claim.
MIN_TURN_SECONDS = 0.05
# Jobs claimed per turn at most (one script, one MGET).
CLAIM_BATCH = 100
# Share of the follower's room kept for urgent work (a provider's webhook, a
# user's action): polls never fill it, so an urgent job is claimed at the next
# turn even while a backlog of polls keeps every other slot busy.
URGENT_SHARE = 0.2
# After Redis could not be reached, wait this long before the next turn.
REDIS_PAUSE_SECONDS = 1.0


class JobFollower:
    def __init__(
        self,
        resources: Resources,
        *,
        capacity: int,
        lease_seconds: float,
        step_timeout: float,
        may_claim: Callable[[], bool] = lambda: True,
        idle_seconds: float = IDLE_SECONDS,
        min_turn_seconds: float = MIN_TURN_SECONDS,
    ) -> None:
        self.resources = resources
        self.capacity = capacity
        self.reserved = max(1, int(capacity * URGENT_SHARE)) if capacity > 1 else 0
        self.lease_ms = int(lease_seconds * 1000)
        self.step_timeout = step_timeout
        self.may_claim = may_claim
        self.idle_seconds = idle_seconds
        self.min_turn = min(min_turn_seconds, idle_seconds)
        self._running: dict[Claim, asyncio.Task[None]] = {}
        self._ended: list[Release] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None

    @property
    def busy(self) -> int:
        """Steps running now."""
        return len(self._running)

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="job-follower")

    async def stop(self) -> None:
        """Stop claiming, cut off the steps still running and hand every job back to
        the schedule (a step cut off is due again at once). The worker's shutdown
        gives running steps their grace period before calling this."""
        self._stopping = True
        self._wake.set()
        if self._loop is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        try:
            await self._release_ended()
        except (RedisError, OSError) as exc:
            # Their claims lapse instead; another worker takes them up then.
            logger.warning("could not hand jobs back on the way out", extra={"error": repr(exc)})

    async def _run(self) -> None:
        clock = asyncio.get_running_loop().time
        while not self._stopping:
            started = clock()
            self._wake.clear()
            try:
                wait = await self._turn()
            except (RedisError, OSError) as exc:
                logger.warning("follower could not reach Redis", extra={"error": repr(exc)})
                wait = REDIS_PAUSE_SECONDS
            # A full batch (wait 0) turns again at once; otherwise not before min_turn.
            pause = (self.min_turn if wait > 0 else 0.0) - (clock() - started)
            if pause > 0:
                await asyncio.sleep(pause)
            rest = wait - (clock() - started)
            if rest > 0 and not self._wake.is_set() and not self._stopping:
                # A step that ends wakes the loop early (its slot is free again).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), rest)

    async def _turn(self) -> float:
        """One turn of the loop; returns how long to wait before the next."""
        await self._release_ended()
        room = self.capacity - len(self._running)
        if self._stopping or room <= 0 or not self.may_claim():
            return self.idle_seconds  # a step that ends wakes the loop sooner
        now = tasks.now_ms()
        limit = min(room, CLAIM_BATCH)
        claimed = await self.resources.following.claim(
            now,
            now + self.lease_ms,
            limit,
            ordinary_limit=min(limit, room - self.reserved),
            urgent_before_ms=now - tasks.PRIORITY_LEAD_MS // 2,
        )
        if claimed.claims:
            reads = await self.resources.jobs.read_many([c.job_id for c in claimed.claims])
            for claim in claimed.claims:
                self._running[claim] = asyncio.create_task(
                    self._step(claim, reads.get(claim.job_id)), name=f"sync {claim.job_id}"
                )
            if len(claimed.claims) == limit:
                return 0.0  # more may be due
        if claimed.earliest_due_ms is None:
            return self.idle_seconds
        until_due = (claimed.earliest_due_ms - now) / 1000
        if until_due <= 0:
            # Due jobs are left that this turn had no room for (the room kept for
            # urgent work excepted): wait for a step to end, which wakes the loop.
            return self.idle_seconds
        return min(self.idle_seconds, until_due)

    async def _release_ended(self) -> None:
        ended, self._ended = self._ended, []
        try:
            await self.resources.following.release(ended, urgent_ms=tasks.urgent_score())
        except BaseException:
            self._ended = ended + self._ended  # try again next turn
            raise

    async def _step(self, claim: Claim, read: JobSnapshot | None) -> None:
        due_ms: int | None = tasks.now_ms()  # if cut off: due again at once
        try:
            with log_context(task="sync_job", job_id=claim.job_id):
                async with asyncio.timeout(self.step_timeout):
                    outcome = await JobSync(self.resources).step(claim.job_id, read)
            if isinstance(outcome, str):
                due_ms = None  # final (and announced), failed or gone: no longer followed
            else:
                due_ms = tasks.now_ms() + int(outcome * 1000)
        except Exception:
            # A bug or an outage the step did not classify: try again later, as the
            # reconciler would have done for a failed task.
            delay = self.resources.settings.reconcile_every_seconds * random.uniform(0.8, 1.2)  # noqa: S311
            logger.exception(
                "job sync step failed; trying again later",
                extra={"job_id": claim.job_id, "retry_in": round(delay, 1)},
            )
            due_ms = tasks.now_ms() + int(delay * 1000)
        finally:
            self._running.pop(claim, None)
            self._ended.append(Release(claim.job_id, claim.token, due_ms))
            self._wake.set()
