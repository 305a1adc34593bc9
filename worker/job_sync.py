"""`sync_job`: move one of our jobs one step closer to its end.

The task is the whole lifecycle as a state machine that re-reads the job each
time, so running it twice, late, or after a crash is harmless:

1. upload the dataset file(s) unless their upstream ids are already recorded;
2. create the upstream job unless its id is recorded, after first asking the
   provider for a job tagged with our id (a crash between "created" and
   "recorded" must not make a second one);
3. carry out a requested cancel/pause/resume;
4. poll: mirror the status, pull new events and checkpoints, and on the final
   state record the tuned model, tokens, results and errors.

While the job runs, the task re-schedules itself with arq's `Retry(defer=…)`
(same job id, so it never doubles up). Retriable provider errors back off with
jitter and honour Retry-After; other 4xx end the job with the provider's
own code and message.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import random
from typing import Any

from arq.worker import Retry

from service.domain.jobs import (
    METADATA_JOB_KEY,
    JobStatus,
    is_terminal,
    mirror,
    poll_delay,
    retry_delay,
)
from service.notifications import emit_job_event
from service.providers.base import JobSpec, Provider, ProviderError, UpstreamJob
from service.resources import Resources
from service.store.datasets import DatasetStore
from service.store.jobs import JobStore, TimelineEntry, service_event
from service.store.records import dumps, iso_from_unix, now_iso
from worker.context import WorkerContext

logger = logging.getLogger(__name__)

# How many retriable failures in a row before a job that never reached the
# provider is failed (about 4 hours with the 300 s cap).
MAX_CONSECUTIVE_ERRORS = 60
SYNC_MAX_TRIES = 1_000_000  # polling reuses arq's retry counter; our own counter bounds errors


class JobGone(Exception):
    """The job no longer exists (deleted, or Redis was wiped); nothing to do."""


def _jitter(delay: float) -> float:
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


async def sync_job(ctx: WorkerContext, job_id: str) -> str:
    resources = ctx["resources"]
    jobs = JobStore(resources.redis, resources.keys)
    job = await jobs.get(job_id)
    if job is None:
        logger.warning("job vanished before it could be synced", extra={"job_id": job_id})
        return "gone"
    provider = resources.require_provider()
    try:
        outcome = await _advance(resources, jobs, provider, job)
    except ProviderError as exc:
        outcome = await _provider_failed(resources, jobs, job_id, exc)
    if isinstance(outcome, float):
        raise Retry(defer=outcome)
    return outcome


async def _advance(
    resources: Resources, jobs: JobStore, provider: Provider, job: dict[str, Any]
) -> str | float:
    job_id = job["id"]
    upstream = job.get("upstream") or {}
    if is_terminal(job["status"]):
        await _announce(resources, jobs, job)
        # Cancelled here while the worker was creating upstream: cancel that too.
        if job["status"] == JobStatus.CANCELLED and upstream.get("job_id"):
            remote = await provider.get_job(upstream["job_id"])
            if not is_terminal(remote.status):
                await provider.cancel_job(upstream["job_id"])
                await jobs.update(job_id, lambda j: _set_upstream(j, status="cancelled"))
        return "terminal"

    if not upstream.get("job_id"):
        if job["status"] == JobStatus.PENDING:
            job, _ = await jobs.transition(job_id, JobStatus.UPLOADING, "Uploading training data")
        job = await _upload(resources, jobs, provider, job)
        if job["status"] == JobStatus.CANCELLED:
            return "terminal"
        job = await _create_upstream(jobs, provider, job)
        if is_terminal(job["status"]):
            return await _advance(resources, jobs, provider, job)
        await _reset_errors(jobs, job_id)

    job = await _carry_out_request(jobs, provider, job)
    return await _poll(resources, jobs, provider, job)


async def _upload(
    resources: Resources, jobs: JobStore, provider: Provider, job: dict[str, Any]
) -> dict[str, Any]:
    datasets = DatasetStore(resources.redis, resources.keys)
    for role, field in (
        ("dataset_id", "training_file_id"),
        ("validation_dataset_id", "validation_file_id"),
    ):
        dataset_id = job.get(role)
        if not dataset_id or (job.get("upstream") or {}).get(field):
            continue
        dataset = await datasets.get(dataset_id)
        if dataset is None or not resources.blobs.exists(dataset_id):
            missing = {
                "code": "dataset_missing",
                "message": f"Dataset {dataset_id} was deleted before it was uploaded",
                "param": role,
            }
            failed, _ = await jobs.transition(
                job["id"],
                JobStatus.FAILED,
                f"Dataset {dataset_id} no longer exists",
                also=lambda j, e=missing: j.update(error=e),
            )
            return failed
        # Re-read just before the upload: a cancel may have landed meanwhile.
        current = await jobs.get(job["id"])
        if current is None or is_terminal(current["status"]):
            return current or job
        uploaded = await provider.upload_file(
            resources.blobs.path(dataset_id), filename=f"{dataset_id}.jsonl"
        )
        # Record the upstream id the moment it exists.
        job = await jobs.update(
            job["id"], lambda j, f=field, u=uploaded.id: _set_upstream(j, **{f: u})
        )
        logger.info("uploaded dataset", extra={"job_id": job["id"], "file_id": uploaded.id})
    return job


def _set_upstream(job: dict[str, Any], **values: Any) -> dict[str, Any]:
    upstream = dict(job.get("upstream") or {})
    upstream.update(values)
    job["upstream"] = upstream
    job["updated_at"] = now_iso()
    return job


async def _create_upstream(
    jobs: JobStore, provider: Provider, job: dict[str, Any]
) -> dict[str, Any]:
    current = await jobs.get(job["id"])
    if current is None or is_terminal(current["status"]):
        return current or job
    job = current
    remote = await provider.find_job(METADATA_JOB_KEY, job["id"])
    if remote is None:
        upstream = job["upstream"]
        remote = await provider.create_job(
            JobSpec(
                model=job["model"],
                training_file=upstream["training_file_id"],
                validation_file=upstream.get("validation_file_id"),
                method=job["method"],
                suffix=job.get("suffix"),
                seed=job.get("seed"),
                metadata={**(job.get("metadata") or {}), METADATA_JOB_KEY: job["id"]},
            )
        )
        logger.info("created upstream job", extra={"job_id": job["id"], "upstream_job": remote.id})
    else:
        logger.info(
            "found existing upstream job", extra={"job_id": job["id"], "upstream_job": remote.id}
        )
    job = await jobs.update(
        job["id"], lambda j: _set_upstream(j, job_id=remote.id, status=remote.status)
    )
    return await _mirror(jobs, job, remote)


async def _carry_out_request(
    jobs: JobStore, provider: Provider, job: dict[str, Any]
) -> dict[str, Any]:
    action = job.get("requested_action")
    if not action:
        return job
    upstream_id = job["upstream"]["job_id"]
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
        # The provider refused (for example the job finished meanwhile): say so on
        # the timeline and carry on following the job.
        await jobs.append_events(
            job["id"],
            [service_event(job["id"], f"Provider refused {action}: {exc.message}", level="warn")],
        )
        remote = None

    def clear(j: dict[str, Any]) -> dict[str, Any]:
        j.pop("requested_action", None)
        return j

    job = await jobs.update(job["id"], clear)
    if remote is not None:
        job = await _mirror(jobs, job, remote)
    return job


async def _poll(
    resources: Resources, jobs: JobStore, provider: Provider, job: dict[str, Any]
) -> str | float:
    job_id = job["id"]
    upstream_id = job["upstream"]["job_id"]
    await resources.redis.delete(resources.keys.job_poke(job_id))
    remote = await provider.get_job(upstream_id)
    new_events = await provider.events_since(upstream_id, job.get("last_event_id"))
    entries = [
        _provider_event(job_id, e.id, e.created_at, e.level, e.message, e.type, dict(e.data))
        for e in new_events
    ]
    await jobs.append_events(job_id, entries)
    checkpoint_created = any(e.message.startswith("Checkpoint created") for e in new_events)
    if new_events:
        job = await jobs.update(job_id, lambda j: {**j, "last_event_id": new_events[-1].id})
    if checkpoint_created or is_terminal(remote.status):
        fresh = await jobs.put_checkpoints(
            job_id,
            [
                {
                    "id": c.id,
                    "object": "job.checkpoint",
                    "created_at": iso_from_unix(c.created_at),
                    "step_number": c.step_number,
                    "fine_tuned_model_checkpoint": c.fine_tuned_model_checkpoint,
                    "metrics": dict(c.metrics),
                }
                for c in await provider.checkpoints(upstream_id)
            ],
        )
        if fresh:
            await emit_job_event(resources, await jobs.get(job_id) or job, "job.checkpoint.created")
    before = job["status"]
    if is_terminal(remote.status):
        await _record_results(jobs, provider, job, remote)
    job = await _mirror(jobs, job, remote)
    await _announce(resources, jobs, job)
    await _reset_errors(jobs, job_id)
    if is_terminal(job["status"]):
        return "terminal"
    changed = bool(new_events) or before != job["status"]
    unchanged = 0 if changed else int(job.get("unchanged_polls", 0)) + 1
    job = await jobs.update(job_id, lambda j: {**j, "unchanged_polls": unchanged})
    if await resources.redis.exists(resources.keys.job_poke(job_id)):
        return 0.05  # poked (provider webhook or an action) while we were polling
    settings = resources.settings
    return _jitter(
        poll_delay(unchanged, minimum=settings.poll_min_seconds, maximum=settings.poll_max_seconds)
    )


def _provider_event(
    job_id: str,
    event_id: str,
    created_at: int,
    level: str,
    message: str,
    kind: str,
    data: dict[str, Any],
) -> TimelineEntry:
    metrics = None
    if kind == "metrics" and "step" in data:
        metrics = {k: v for k, v in data.items() if isinstance(v, int | float)}
    return TimelineEntry(
        id=event_id,
        record={
            "id": event_id,
            "object": "job.event",
            "job_id": job_id,
            "created_at": iso_from_unix(created_at),
            "source": "provider",
            "type": kind,
            "level": level,
            "message": message,
            "data": data or None,
        },
        metrics=metrics,
    )


async def _record_results(
    jobs: JobStore, provider: Provider, job: dict[str, Any], remote: UpstreamJob
) -> None:
    """On success, fold the provider's results CSV into metrics (steps the events missed)."""
    if remote.status != "succeeded" or not remote.result_files:
        return
    try:
        raw = await provider.file_content(remote.result_files[0])
    except ProviderError as exc:
        if exc.retriable:
            raise
        logger.warning(
            "results file unavailable", extra={"job_id": job["id"], "error": exc.message}
        )
        return
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except ValueError:
        text = raw.decode(errors="replace")  # some providers send plain CSV
    entries: list[TimelineEntry] = []
    for row in csv.DictReader(io.StringIO(text)):
        point: dict[str, Any] = {}
        for key, value in row.items():
            if key and value not in (None, ""):
                try:
                    point[key] = float(value)
                except ValueError:
                    continue
        if "step" not in point:
            continue
        step = int(point.pop("step"))
        metrics = {"step": step}
        if "train_loss" in point:
            metrics["train_loss"] = point["train_loss"]
        if "train_accuracy" in point:
            metrics["train_mean_token_accuracy"] = point["train_accuracy"]
        if "valid_loss" in point:
            metrics["valid_loss"] = point["valid_loss"]
        if "valid_mean_token_accuracy" in point:
            metrics["valid_mean_token_accuracy"] = point["valid_mean_token_accuracy"]
        # Keyed by step so it never duplicates a metrics event already stored.
        entries.append(TimelineEntry(id=f"results-step-{step}", record={}, metrics=metrics))
    await _append_results(jobs, job["id"], entries)


async def _append_results(jobs: JobStore, job_id: str, entries: list[TimelineEntry]) -> None:
    known = {int(p["step"]) for p in await jobs.metrics(job_id)}
    missing = [e for e in entries if e.metrics and int(e.metrics["step"]) not in known]
    if missing:
        async with jobs.redis.pipeline(transaction=True) as pipe:
            for entry in missing:
                pipe.rpush(jobs.keys.job_metrics(job_id), dumps(entry.metrics or {}))
            await pipe.execute()


async def _mirror(jobs: JobStore, job: dict[str, Any], remote: UpstreamJob) -> dict[str, Any]:
    """Copy the provider's view onto ours and record the transition if the status moved."""

    def apply(j: dict[str, Any]) -> None:
        _set_upstream(j, status=remote.status, job_id=remote.id)
        j["fine_tuned_model"] = remote.fine_tuned_model or j.get("fine_tuned_model")
        j["trained_tokens"] = (
            remote.trained_tokens if remote.trained_tokens is not None else j.get("trained_tokens")
        )
        j["estimated_finish"] = (
            iso_from_unix(remote.estimated_finish) if remote.status == "running" else None
        )
        if remote.error is not None:
            j["error"] = {
                "code": remote.error.code,
                "message": remote.error.message,
                "param": remote.error.param,
            }
        if is_terminal(remote.status) and remote.finished_at:
            j["finished_at"] = iso_from_unix(remote.finished_at)

    target = mirror(remote.status)
    if target is None:

        def apply_only(j: dict[str, Any]) -> dict[str, Any]:
            apply(j)
            return j

        return await jobs.update(job["id"], apply_only)
    message = {
        JobStatus.VALIDATING_FILES: "The provider is validating the files",
        JobStatus.QUEUED: "Queued at the provider",
        JobStatus.RUNNING: "Training started",
        JobStatus.PAUSED: "Paused",
        JobStatus.SUCCEEDED: f"Fine-tuned model ready: {remote.fine_tuned_model}",
        JobStatus.FAILED: f"Failed: {remote.error.message if remote.error else 'no reason given'}",
        JobStatus.CANCELLED: "Cancelled",
    }[target]
    updated, _ = await jobs.transition(job["id"], target, message, also=apply)
    return updated


ANNOUNCED_STATUSES = {
    JobStatus.RUNNING: "job.running",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


async def _announce(resources: Resources, jobs: JobStore, job: dict[str, Any]) -> dict[str, Any]:
    """Emit the event for the job's current status once, then remember that it was."""
    kind = ANNOUNCED_STATUSES.get(JobStatus(job["status"]))
    if kind is None or kind in job.get("announced", []):
        return job
    await emit_job_event(resources, job, kind)

    def remember(j: dict[str, Any]) -> dict[str, Any]:
        j["announced"] = sorted({*j.get("announced", []), kind})
        return j

    return await jobs.update(job["id"], remember)


async def _reset_errors(jobs: JobStore, job_id: str) -> None:
    def reset(j: dict[str, Any]) -> dict[str, Any] | None:
        if not j.get("sync_errors"):
            return None
        j["sync_errors"] = 0
        return j

    await jobs.update(job_id, reset)


async def _provider_failed(
    resources: Resources, jobs: JobStore, job_id: str, exc: ProviderError
) -> str | float:
    job = await jobs.get(job_id)
    if job is None:
        return "gone"
    reached_provider = bool((job.get("upstream") or {}).get("job_id"))
    if exc.retriable:
        attempts = int(job.get("sync_errors", 0)) + 1
        await jobs.update(job_id, lambda j: {**j, "sync_errors": attempts})
        logger.warning(
            "provider call failed; will retry",
            extra={
                "job_id": job_id,
                "status": exc.status,
                "attempt": attempts,
                "error": exc.message,
            },
        )
        if attempts < MAX_CONSECUTIVE_ERRORS or reached_provider:
            return _jitter(retry_delay(attempts, retry_after=exc.retry_after))
    logger.warning(
        "provider refused; failing the job",
        extra={"job_id": job_id, "status": exc.status, "code": exc.code, "error": exc.message},
    )
    error = {"code": exc.code or f"http_{exc.status}", "message": exc.message, "param": exc.param}
    job, _ = await jobs.transition(
        job_id, JobStatus.FAILED, f"Failed: {exc.message}", also=lambda j: j.update(error=error)
    )
    await _announce(resources, jobs, job)
    return "failed"
