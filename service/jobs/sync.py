"""Moving one of our jobs one step closer to its end (what the follower runs).

The step is a re-entrant state machine that re-reads the job each time, so
running it twice, late, or after a crash is harmless:

1. stage the dataset file(s) unless their provider ids are already recorded;
2. start the provider's job unless its id is recorded (keyed by our job id:
   a retry after a crash finds the job an earlier attempt made);
3. carry out a requested cancel, pause or resume;
4. poll: what the provider says is turned into changes by the pure
   `service.domain.jobs.observe` — status, mirrored fields, timeline entries,
   checkpoints, final metrics — and written in one atomic step;
5. deploy: once training succeeded the tuned model is made to answer chat,
   and only then is the job `succeeded` (and `job.succeeded` sent); with
   validation examples, its evaluation against the base model is started
   (and named on the job) just before, without waiting for it.

Upstream ids are recorded the moment they exist. Webhook announcements are
stored by the write that remembers them (their deliveries are created there
where new: ids derive from the event and target, so a repeat announces once)
and sent once it landed. The step returns "terminal", "gone", or the
seconds to wait before the next one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from service import tasks
from service.domain import jobs as rules
from service.domain.jobs import JobStatus, RemoteEvent, RemoteJob, Step, is_terminal
from service.domain.records import Delivery, Job, JobCheckpoint
from service.domain.stamps import iso_from_unix, now_iso, unix_from_iso
from service.evaluations.automatic import start_job_evaluation
from service.providers.base import (
    JobSpec,
    Provider,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderJob,
)
from service.resources import Resources
from service.store.jobs import Changes, JobSnapshot
from service.webhooks.events import dispatch, emit_job_event, job_event_deliveries
from service.webhooks.sending import held_sends

logger = logging.getLogger(__name__)

# Pause before re-running a step whose write lost a race (an action landed meanwhile).
RACE_PAUSE_SECONDS = 0.05
# Polls while deploying: a tuned model becomes servable within seconds to minutes.
DEPLOY_POLL_SECONDS = 2.0
MAX_WRITE_ATTEMPTS = 20
# A step poked while it ran is run again in the same task, this many times at most.
MAX_IMMEDIATE_ROUNDS = 4
AGAIN = "again"

Outcome = str | float


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


def remote_view(job: ProviderJob) -> RemoteJob:
    error = job.error
    return RemoteJob(
        id=job.id,
        status=job.status,
        raw_status=job.raw_status or job.status,
        fine_tuned_model=job.fine_tuned_model,
        trained_tokens=job.trained_tokens,
        finished_at=job.finished_at,
        estimated_finish=job.estimated_finish,
        error_code=error.code if error else None,
        error_message=error.message if error else None,
        error_param=error.param if error else None,
        hyperparameters=job.hyperparameters,
    )


def event_view(event: ProviderEvent) -> RemoteEvent:
    return RemoteEvent(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type=event.type,
        data=event.data,
        metrics=event.metrics,
    )


def checkpoint_record(checkpoint: ProviderCheckpoint) -> JobCheckpoint:
    return JobCheckpoint(
        id=checkpoint.id,
        created_at=iso_from_unix(checkpoint.created_at) or now_iso(),
        step_number=checkpoint.step_number,
        fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
        metrics=dict(checkpoint.metrics),
    )


class JobSync:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.jobs = resources.jobs
        self.settings = resources.settings
        # The job as the step last read or wrote it: the base of its next write, so
        # a step reads the record once (a stale base just loses the race and re-reads).
        self._base: JobSnapshot | None = None

    async def step(self, job_id: str, read: JobSnapshot | None = None) -> Outcome:
        """One sync step; again at once (up to a few times) while a provider webhook or an
        action arrives during it, rather than queueing behind other jobs' polls. `read`:
        the job as the caller just read it (the follower reads a batch at once)."""
        for _ in range(MAX_IMMEDIATE_ROUNDS):
            outcome = await self._step_once(job_id, read)
            if outcome != AGAIN:
                return outcome
            read = None
        return RACE_PAUSE_SECONDS

    async def _step_once(self, job_id: str, read: JobSnapshot | None) -> Outcome:
        snapshot = read or await self.jobs.read(job_id)
        if snapshot is None:
            logger.warning("job vanished before it could be synced", extra={"job_id": job_id})
            return "gone"
        self._base = snapshot
        job = snapshot.job.model_copy(deep=True)
        provider = self.resources.providers.get(job.provider)
        try:
            return await self._advance(job, provider)
        except ProviderError as exc:
            return await self._provider_failed(job_id, exc)

    # Writing -----------------------------------------------------------------

    async def _commit(
        self,
        job_id: str,
        decide: Callable[[Job, Step], None],
        checkpoints: list[JobCheckpoint] | None = None,
    ) -> tuple[Job, bool]:
        """Re-read, apply `decide`, announce what became due, and write it all at once;
        again on a lost race. Returns the job as written and whether a poke arrived.
        Announcements go out once the write landed (a receiver reads what it was told)."""
        with held_sends(self.resources):
            return await self._commit_held(job_id, decide, checkpoints)

    async def _commit_held(
        self,
        job_id: str,
        decide: Callable[[Job, Step], None],
        checkpoints: list[JobCheckpoint] | None,
    ) -> tuple[Job, bool]:
        webhooks = self.resources.webhooks
        for _ in range(MAX_WRITE_ATTEMPTS):
            snapshot, self._base = self._base, None
            if snapshot is None or snapshot.job.id != job_id:
                snapshot = await self.jobs.read(job_id)
            if snapshot is None:
                raise _Gone
            job, step = snapshot.job, Step()
            decide(job, step)
            due = rules.announcements_due(job)
            changes = Changes(job=job, entries=step.entries, checkpoints=checkpoints or [])
            deliveries: list[Delivery] = []
            known = None
            if due or checkpoints:
                # This process's copy of the tenant's endpoints; the write checks it is
                # still current (its guard) and is tried again with a fresh read if not.
                known = await webhooks.current_endpoints(job.tenant)
                changes.guard = known.guard
                for kind in due:
                    deliveries += await job_event_deliveries(
                        self.resources, job, kind, known.endpoints
                    )
                changes.creates = [webhooks.delivery_creation(d) for d in deliveries]
            job.announced = sorted({*job.announced, *due})
            result = await self.jobs.apply(job_id, snapshot, changes)
            if result.guard_moved:
                webhooks.forget_endpoints(job.tenant)
                continue
            if not result.written:
                continue
            self._base = result.snapshot
            # The announcements and the job that records them landed together.
            await dispatch(self.resources, deliveries, result.created)
            if result.checkpoints_added and checkpoints:
                newest = max(c.step_number for c in checkpoints)
                await emit_job_event(
                    self.resources,
                    job,
                    "job.checkpoint.created",
                    discriminator=str(newest),
                    endpoints=known.endpoints if known is not None else None,
                )
            return job, result.poked
        raise RuntimeError(f"could not write job {job_id}: too much contention")

    # The state machine ---------------------------------------------------------

    async def _advance(self, job: Job, provider: Provider) -> Outcome:
        try:
            if is_terminal(job.status):
                return await self._finish_terminal(job, provider)
            if not job.upstream.job_id:
                if job.status == JobStatus.PENDING:
                    job, _ = await self._commit(
                        job.id,
                        lambda j, s: _append(
                            s, rules.transition(j, JobStatus.UPLOADING, "Uploading training data")
                        ),
                    )
                job, marked = await self._stage_files(job, provider)
                if is_terminal(job.status):
                    return await self._finish_terminal(job, provider)
                job = await self._start(job, provider, marked=marked)
                if is_terminal(job.status):
                    return await self._finish_terminal(job, provider)
            if job.requested_action:
                job = await self._carry_out(job, provider)
            if job.status == JobStatus.DEPLOYING:
                return await self._deploy(job, provider)
            return await self._poll(job, provider)
        except _Gone:
            return "gone"

    async def _finish_terminal(self, job: Job, provider: Provider) -> Outcome:
        # Cancelled here while the worker was starting the upstream job: cancel that too.
        if job.status == JobStatus.CANCELLED and job.upstream.job_id:
            remote = await provider.get_job(job.upstream.job_id)
            if remote.status not in ("succeeded", "failed", "cancelled"):
                remote = await provider.cancel_job(job.upstream.job_id)

            def mirror_status(j: Job, _: Step) -> None:
                j.upstream.status = remote.raw_status

            await self._commit(job.id, mirror_status)
        else:
            await self._commit(job.id, _unchanged)  # announce, if still due
        return "terminal"

    async def _fail(self, job_id: str, code: str, message: str, param: str | None) -> Job:
        job, _ = await self._commit(job_id, lambda j, s: rules.fail(j, code, message, param, s))
        return job

    async def _stage_files(self, job: Job, provider: Provider) -> tuple[Job, bool]:
        """Upload what the job trains on; returns the job as last written and whether
        that write also marked the upstream job's creation as attempted.

        `job` is as fresh as this step's read or last write (a moment old), so a
        cancel that landed before is seen without reading the job again.
        """
        missing = [
            (dataset_id, field)
            for dataset_id, field in (
                (job.dataset_id, "training_file_id"),
                (job.validation_dataset_id, "validation_file_id"),
            )
            if dataset_id and not getattr(job.upstream, field)
        ]
        marked = False
        for position, (dataset_id, field) in enumerate(missing, start=1):
            if is_terminal(job.status):
                return job, False
            dataset = await self.resources.datasets.get(dataset_id)
            if dataset is None or not self.resources.blobs.exists(dataset_id):
                failed = await self._fail(
                    job.id,
                    "dataset_missing",
                    f"Dataset {dataset_id} was deleted before it was uploaded",
                    "validation_dataset_id" if field == "validation_file_id" else "dataset_id",
                )
                return failed, False
            file_id = await provider.stage_file(
                self.resources.blobs.path(dataset_id), filename=f"{dataset_id}.jsonl"
            )
            last = position == len(missing)

            # Record the provider's id the moment it exists. After the last upload
            # the same write says the upstream job is about to be created (see _start).
            def record(
                j: Job, step: Step, f: str = field, value: str = file_id, last: bool = last
            ) -> None:
                setattr(j.upstream, f, value)
                if last:
                    _mark_create_attempted(j, step)

            job, _ = await self._commit(job.id, record)
            marked = last and job.upstream.create_attempted
            logger.info("uploaded dataset", extra={"job_id": job.id, "file_id": file_id})
        return job, marked

    async def _start(self, job: Job, provider: Provider, *, marked: bool) -> Job:
        """Create the upstream job. `marked`: this step's last write already recorded
        the attempt (so no earlier attempt can have made one)."""
        if is_terminal(job.status):
            return job
        maybe_created = job.upstream.create_attempted and not marked
        if not job.upstream.create_attempted:
            # From here on a crash may hide a job the provider made: the next attempt
            # looks for it before creating one.
            job, _ = await self._commit(job.id, _mark_create_attempted)
            if is_terminal(job.status):
                return job
        if job.upstream.training_file_id is None:
            raise RuntimeError(f"job {job.id} has no staged training file")
        remote = await provider.start_job(
            JobSpec(
                key=job.id,
                model=job.model,
                training_file=job.upstream.training_file_id,
                validation_file=job.upstream.validation_file_id,
                method=job.method,
                suffix=job.suffix,
                seed=job.seed,
                metadata=job.metadata,
                options=job.provider_options,
                maybe_created=maybe_created,
                created_after=unix_from_iso(job.created_at),
            )
        )
        logger.info(
            "upstream job ready",
            extra={"job_id": job.id, "upstream_job": remote.id, "found": maybe_created},
        )
        view = remote_view(remote)
        job, _ = await self._commit(job.id, lambda j, s: rules.observe(j, view, [], s))
        return job

    async def _carry_out(self, job: Job, provider: Provider) -> Job:
        action = job.requested_action
        upstream_id = _upstream_id(job)
        remote: ProviderJob | None = None
        refusal: str | None = None
        try:
            if action == "cancel":
                remote = await provider.cancel_job(upstream_id)
            elif action == "pause":
                remote = await provider.pause_job(upstream_id)
            else:
                remote = await provider.resume_job(upstream_id)
        except ProviderError as exc:
            if exc.retriable:
                raise
            # The provider refused (say the job finished meanwhile): say so on the
            # timeline and carry on following the job.
            refusal = f"Provider refused {action}: {exc.message}"

        def settle(j: Job, s: Step) -> None:
            j.requested_action = None
            if refusal is not None:
                s.entries.append(rules.service_event(j.id, refusal, level="warn"))
            if remote is not None:
                rules.observe(j, remote_view(remote), [], s)

        job, _ = await self._commit(job.id, settle)
        return job

    async def _poll(self, job: Job, provider: Provider) -> Outcome:
        upstream_id = _upstream_id(job)
        remote = await provider.get_job(upstream_id)
        # Events, checkpoints and results are read only when the job moved: its status
        # or what it reports changed, or (while it trains, for progress) the events
        # were last read a longest poll interval ago. Most polls are one request.
        now = time.time()
        moved = _marker(remote) != job.upstream.marker
        stale = now - (job.events_read_at or 0.0) >= self.settings.poll_max_seconds
        read_events = moved or (remote.status == "running" and stale)
        events = await provider.events_since(upstream_id, job.event_cursor) if read_events else []
        checkpoints: list[JobCheckpoint] = []
        trained = remote.status == "succeeded"
        if (moved and is_terminal_upstream(remote)) or any(e.checkpoint_saved for e in events):
            checkpoints = [checkpoint_record(c) for c in await provider.checkpoints(upstream_id)]
        results = await provider.final_metrics(remote) if trained and moved else []
        ready = False
        evaluation_id = None
        if trained and remote.fine_tuned_model:
            # Providers that serve at once pass straight through `deploying`.
            ready = await provider.deploy(remote.fine_tuned_model)
            if ready and not is_terminal(job.status):
                evaluation_id = await start_job_evaluation(
                    self.resources,
                    job.model_copy(update={"fine_tuned_model": remote.fine_tuned_model}),
                )
        settings = self.settings
        if (
            not read_events
            and not checkpoints
            and not results
            and not ready
            and job.status != JobStatus.DEPLOYING
            and not job.sync_errors
            and not rules.announcements_due(job)
        ):
            # Nothing moved (the marker says so) and nothing is owed: the job as
            # stored is still true but for the moving finish estimate, which the
            # next read of events (at most a longest poll interval away) refreshes.
            # No write, so the back-off comes from the time since the last change.
            quiet = now - (job.changed_at or now)
            delay = rules.poll_delay(
                quiet, minimum=settings.poll_min_seconds, maximum=settings.poll_max_seconds
            )
            return self._wait(delay, remote, now)
        view = remote_view(remote)
        seen = [event_view(e) for e in events]
        delay = 0.0

        def decide(j: Job, s: Step) -> None:
            nonlocal delay
            rules.observe(j, view, seen, s)
            j.upstream.marker = _marker(remote)
            if read_events:
                j.events_read_at = now
            s.entries += rules.results_entries(results)
            if ready and j.status == JobStatus.DEPLOYING:
                rules.deployed(j, s)
                j.evaluation_id = j.evaluation_id or evaluation_id
            elif j.status == JobStatus.DEPLOYING:
                j.deploy_attempts += 1
            j.sync_errors = 0
            delay = rules.next_poll(
                j, s, now=now, minimum=settings.poll_min_seconds, maximum=settings.poll_max_seconds
            )

        job, poked = await self._commit(job.id, decide, checkpoints)
        if is_terminal(job.status):
            return "terminal"
        if job.status == JobStatus.DEPLOYING:
            return _jitter(min(DEPLOY_POLL_SECONDS, self.settings.poll_max_seconds))
        if poked:
            return AGAIN  # a provider webhook or an action arrived meanwhile
        return self._wait(delay, remote, now)

    def _wait(self, delay: float, remote: ProviderJob, now: float) -> float:
        """The wait before the next poll: jitter spreads polls out, never past the
        longest interval (a promise to users), and a job expected to finish sooner is
        polled then."""
        settings = self.settings
        return rules.toward_finish(
            min(_jitter(delay), settings.poll_max_seconds),
            now=now,
            estimated_finish=remote.estimated_finish if remote.status == "running" else None,
            minimum=settings.poll_min_seconds,
            maximum=settings.poll_max_seconds,
        )

    async def _deploy(self, job: Job, provider: Provider) -> Outcome:
        if job.fine_tuned_model is None:
            raise RuntimeError(f"job {job.id} is deploying without a tuned model")
        ready = await provider.deploy(job.fine_tuned_model)
        # Started before the job says succeeded, so job.succeeded names it; the tuned
        # model answers from here on.
        evaluation_id = await start_job_evaluation(self.resources, job) if ready else None

        def decide(j: Job, s: Step) -> None:
            j.sync_errors = 0
            if ready:
                rules.deployed(j, s)
                j.evaluation_id = j.evaluation_id or evaluation_id
            else:
                j.deploy_attempts += 1

        job, _ = await self._commit(job.id, decide)
        if is_terminal(job.status):
            return "terminal"
        if job.deploy_attempts >= rules.MAX_DEPLOY_ATTEMPTS:
            await self._fail(
                job.id,
                "deploy_failed",
                f"The tuned model did not become servable after {job.deploy_attempts} tries",
                None,
            )
            return "failed"
        return _jitter(DEPLOY_POLL_SECONDS)

    async def _provider_failed(self, job_id: str, exc: ProviderError) -> Outcome:
        job = await self.jobs.get(job_id)
        if job is None:
            return "gone"
        deploying = job.status == JobStatus.DEPLOYING
        reached_provider = bool(job.upstream.job_id)
        if exc.retriable:
            attempts = job.sync_errors + 1

            def count(j: Job, _: Step) -> None:
                j.sync_errors = attempts
                if deploying:
                    j.deploy_attempts += 1

            job, _ = await self._commit(job_id, count)
            logger.warning(
                "provider call failed; will retry",
                extra={
                    "job_id": job_id,
                    "status": exc.status,
                    "attempt": attempts,
                    "error": exc.message,
                },
            )
            gave_up = (deploying and job.deploy_attempts >= rules.MAX_DEPLOY_ATTEMPTS) or (
                not reached_provider and attempts >= rules.MAX_CONSECUTIVE_ERRORS
            )
            if not gave_up:
                return _jitter(rules.retry_delay(attempts, retry_after=exc.retry_after))
        logger.warning(
            "provider refused; failing the job",
            extra={"job_id": job_id, "status": exc.status, "code": exc.code, "error": exc.message},
        )
        if deploying:
            await self._fail(
                job_id,
                exc.code or "deploy_failed",
                f"The tuned model could not be deployed: {exc.message}",
                exc.param,
            )
        else:
            await self._fail(job_id, exc.code or f"http_{exc.status}", exc.message, exc.param)
        return "failed"

    async def requeue(self) -> int:
        """For the reconciler: every unfinished job (and every finished one not yet
        announced) is followed; returns how many were not."""
        active = sorted(await self.jobs.active_ids())
        return await self.resources.following.schedule(active, tasks.now_ms())


def is_terminal_upstream(remote: ProviderJob) -> bool:
    return remote.status in ("succeeded", "failed", "cancelled")


def _marker(remote: ProviderJob) -> str:
    """What a poll compares to learn whether the job moved since the last one: its
    status and the fields a provider changes on the way (not the moving estimate)."""
    error = remote.error.code if remote.error else ""
    resolved = ",".join(f"{k}={v}" for k, v in sorted((remote.hyperparameters or {}).items()))
    return (
        f"{remote.raw_status}|{remote.fine_tuned_model or ''}|{remote.trained_tokens or ''}|"
        f"{remote.finished_at or ''}|{error}|{len(remote.result_refs)}|{resolved}"
    )


def _mark_create_attempted(job: Job, _: Step) -> None:
    """Before the provider is asked to create the job (unless it was cancelled)."""
    if not is_terminal(job.status):
        job.upstream.create_attempted = True


def _unchanged(job: Job, step: Step) -> None:
    """Nothing to change: the write only announces what is due."""


def _upstream_id(job: Job) -> str:
    if job.upstream.job_id is None:
        raise RuntimeError(f"job {job.id} has no upstream job yet")
    return job.upstream.job_id


class _Gone(Exception):
    """The job was deleted under the step."""


def _append(step: Step, entry: rules.TimelineEntry | None) -> None:
    if entry is not None:
        step.entries.append(entry)
        step.changed = True
