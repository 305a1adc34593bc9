"""Our records as OpenAI's objects: files, fine-tuning jobs, events, checkpoints, models.

Ids are ours (`ds_…` for a file, `job_…` for a job, `evt_…` for an event): the
SDK treats ids as opaque strings, and keeping one id per thing means
`/v1/files/ds_x` and `/datasets/ds_x` are visibly the same dataset. Timestamps
are unix seconds; statuses are OpenAI's (our `pending`/`uploading` read as
`validating_files`, `deploying` as `running`: the tuned model does not answer yet).
"""

from __future__ import annotations

from typing import Any

from service.domain.jobs import JobStatus
from service.domain.records import Dataset, Job, JobCheckpoint, JobEvent
from service.domain.stamps import unix_from_iso

FILE_STATUS = {"validating": "uploaded", "ready": "processed", "invalid": "error"}
JOB_STATUS = {
    JobStatus.PENDING: "validating_files",
    JobStatus.UPLOADING: "validating_files",
    JobStatus.VALIDATING_FILES: "validating_files",
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "running",
    JobStatus.PAUSED: "paused",
    JobStatus.DEPLOYING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
COMMON_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def unix(value: str | None) -> int | None:
    seconds = unix_from_iso(value)
    return None if seconds is None else int(seconds)


def first_problem(record: Dataset) -> str:
    """An invalid file's first problem as a sentence: "Line 4, messages.1.role: ..."."""
    first = record.errors[0] if record.errors else None
    if first is None:
        return record.invalid_reason or "The file is not valid training data"
    where = f"Line {first.line}" if first.line else "The file"
    return f"{where}{', ' + first.path if first.path else ''}: {first.message}"


def file_object(record: Dataset) -> dict[str, Any]:
    details = first_problem(record) if record.status == "invalid" else None
    shown: dict[str, Any] = {
        "id": record.id,
        "object": "file",
        "bytes": record.source_bytes if record.source_bytes is not None else record.bytes or 0,
        "created_at": unix(record.created_at) or 0,
        "filename": record.filename or record.name,
        "purpose": "fine-tune",
        "status": FILE_STATUS[record.status],
    }
    if details is not None:
        shown["status_details"] = details
    return shown


def _hyperparameters(job: Job) -> tuple[str, dict[str, Any]]:
    kind = str(job.method.get("type", "supervised"))
    asked = dict((job.method.get(kind) or {}).get("hyperparameters") or {})
    resolved = job.upstream.hyperparameters or {}
    names = COMMON_HYPERPARAMETERS + (("beta",) if kind == "dpo" else ())
    return kind, {name: resolved.get(name, asked.get(name, "auto")) for name in names}


def job_object(job: Job) -> dict[str, Any]:
    status = JobStatus(job.status)
    kind, hyper = _hyperparameters(job)
    succeeded = status == JobStatus.SUCCEEDED
    running = status == JobStatus.RUNNING
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": unix(job.created_at) or 0,
        "finished_at": unix(job.finished_at)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
        else None,
        "fine_tuned_model": job.fine_tuned_model if succeeded else None,
        "organization_id": f"org-{job.tenant}",
        "result_files": [],
        "status": JOB_STATUS[status],
        "validation_file": job.validation_dataset_id,
        "training_file": job.dataset_id,
        "hyperparameters": {k: v for k, v in hyper.items() if k in COMMON_HYPERPARAMETERS},
        "trained_tokens": job.trained_tokens if succeeded else None,
        "error": (
            {"code": job.error.code, "message": job.error.message, "param": job.error.param}
            if job.error and status == JobStatus.FAILED
            else None
        ),
        "user_provided_suffix": job.suffix,
        "seed": job.seed if job.seed is not None else 0,
        "estimated_finish": unix(job.estimated_finish) if running else None,
        "integrations": [],
        "metadata": dict(job.metadata) or None,
        "method": {"type": kind, kind: {"hyperparameters": hyper}},
    }


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": unix(event.created_at) or 0,
        "level": event.level if event.level in ("info", "warn", "error") else "info",
        "message": event.message,
        "type": "metrics" if event.type == "metrics" else "message",
        "data": event.data or {},
    }


def checkpoint_object(job_id: str, checkpoint: JobCheckpoint) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": unix(checkpoint.created_at) or 0,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": job_id,
        "step_number": checkpoint.step_number,
        "metrics": {"step": checkpoint.step_number, **checkpoint.metrics},
    }


def model_object(model: str, owned_by: str, created: int = 0) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": owned_by}
