"""Cancel, pause and resume: recorded here, carried out upstream by the worker.

A job nothing was sent upstream for yet is cancelled at once (the worker
re-reads the job before every upstream call, so it will not create one).
Otherwise the wish is stored on the job and its sync is pulled forward.
"""

from __future__ import annotations

from typing import Literal

from service import tasks
from service.domain.jobs import JobStatus, TimelineEntry, check_action, is_terminal, transition
from service.domain.records import Job
from service.domain.stamps import now_iso
from service.errors import Conflict
from service.resources import Resources
from service.store.jobs import Changes

Action = Literal["cancel", "pause", "resume"]


async def act(resources: Resources, tenant: str, job_id: str, action: Action) -> Job:
    jobs = resources.jobs
    job = await jobs.get_for_tenant(tenant, job_id)
    has_upstream = bool(job.upstream.job_id)
    if action == "pause" and has_upstream:
        provider = resources.providers.get(job.provider)
        if not provider.capabilities.pause_resume:
            raise Conflict(f"Provider {job.provider} cannot pause jobs", code="not_supported")
    check_action(job.status, action, has_upstream=has_upstream)
    if action == "cancel" and not has_upstream and job.status == JobStatus.PENDING:
        entries: list[TimelineEntry] = []

        def cancel_now(current: Job) -> Job | None:
            entries.clear()
            entry = transition(
                current,
                JobStatus.CANCELLED,
                "Cancelled before anything was sent to the provider",
            )
            if entry is None:
                return None
            current.cancel_requested = True
            entries.append(entry)
            return current

        job = await jobs.update(job_id, cancel_now)
        if entries:
            await jobs.apply(job_id, None, Changes(entries=entries))
        await tasks.follow_job(resources.following, job_id)  # to announce it
        return job

    def request(current: Job) -> Job | None:
        if is_terminal(current.status):
            return None
        if action == "cancel":
            current.cancel_requested = True
        current.requested_action = action
        current.updated_at = now_iso()
        return current

    job = await jobs.update(job_id, request)
    if is_terminal(job.status):
        raise Conflict(f"The job is already {job.status}")
    await tasks.sync_job_now(resources.following, job_id)
    return job
