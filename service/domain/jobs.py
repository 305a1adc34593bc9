"""The job lifecycle: statuses, transitions, and what one sync step changes. Pure logic.

`pending → uploading → validating_files → queued → running ⇄ paused →
deploying → succeeded | failed | cancelled`. `deploying` is ours: the provider
has finished training and the service is making the tuned model answer chat.
Every transition is an event on the timeline; terminal states are final.

The worker's sync step gathers what the provider says and hands it to
`observe`, which decides everything that changes (status, mirrored fields,
timeline entries, webhook announcements) in one place, without I/O; the step
then writes it all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from service.domain.stamps import iso_from_unix, new_id, now_iso
from service.errors import Conflict, InvalidContent

if TYPE_CHECKING:
    from service.domain.records import Job, JobEvent, JobProgress


class JobStatus(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DEPLOYING = "deploying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# What the provider's own statuses become here; "succeeded" upstream means the
# training is done, and the job deploys before it is ours to call succeeded.
MIRRORED = {
    "validating_files": JobStatus.VALIDATING_FILES,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "succeeded": JobStatus.DEPLOYING,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
TRANSITION_MESSAGES = {
    JobStatus.VALIDATING_FILES: "The provider is validating the files",
    JobStatus.QUEUED: "Queued at the provider",
    JobStatus.RUNNING: "Training started",
    JobStatus.PAUSED: "Paused",
    JobStatus.DEPLOYING: "Training finished; making the tuned model answer chat",
    JobStatus.CANCELLED: "Cancelled",
}
# The status each webhook event announces (once per job).
ANNOUNCED = {
    JobStatus.RUNNING: "job.running",
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}

SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA_PAIRS = 15  # OpenAI allows 16; one slot is the service's own tag
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
RESERVED_METADATA_KEY = "service_job_id"
# How many retriable failures in a row before a job that never reached the
# provider is failed (about 4 hours with the 300 s cap).
MAX_CONSECUTIVE_ERRORS = 60
# A deploy that keeps failing with retriable errors gives up after this many tries.
MAX_DEPLOY_ATTEMPTS = 40


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def can_move(current: str, new: str) -> bool:
    """Terminal states are final; everything else may move forward or pause/resume."""
    if current == new:
        return False
    return not is_terminal(current)


def check_action(status: str, action: str, *, has_upstream: bool) -> None:
    """Refuse cancel/pause/resume where it makes no sense, saying why."""
    if is_terminal(status):
        raise Conflict(f"The job is already {status}; it cannot be {action}d")
    if action == "pause":
        if status != JobStatus.RUNNING or not has_upstream:
            raise Conflict(f"Only a running job can be paused; this one is {status}")
    elif action == "resume":
        if status != JobStatus.PAUSED:
            raise Conflict(f"Only a paused job can be resumed; this one is {status}")
    elif action == "cancel" and status == JobStatus.DEPLOYING:
        raise Conflict("The job has finished training and is being deployed; it cannot stop now")


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidContent(
            f"metadata may hold at most {MAX_METADATA_PAIRS} pairs (got {len(metadata)})",
            extra={
                "errors": [{"path": "metadata", "code": "too_many", "message": "too many pairs"}]
            },
        )
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if key == RESERVED_METADATA_KEY:
            raise InvalidContent(
                f"metadata key {RESERVED_METADATA_KEY!r} is reserved for the service"
            )
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidContent(f"metadata keys must be 1-{MAX_METADATA_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise InvalidContent(
                f"metadata[{key}] must be a string of at most {MAX_METADATA_VALUE} characters"
            )
        clean[key] = value
    return clean


def check_suffix(suffix: str | None) -> str | None:
    if suffix is None:
        return None
    if not SUFFIX_PATTERN.match(suffix):
        raise InvalidContent(
            "suffix must be 1-64 characters of letters, digits, '-' or '_' "
            "(Azure refuses periods, so they are refused everywhere)"
        )
    return suffix


def training_method(
    method: Mapping[str, Any] | None, hyperparameters: Mapping[str, Any] | None, kind: str
) -> dict[str, Any]:
    """The request's `method` (or the older top-level `hyperparameters`) as the provider
    takes it: `{"type": t, t: {"hyperparameters": {...}}}`; "auto" values are left out."""
    if method is not None and hyperparameters is not None:
        raise InvalidContent("Give either method or hyperparameters, not both")
    chosen_type = (method or {}).get("type", "supervised")
    hyper = dict((method or {}).get("hyperparameters") or hyperparameters or {})
    wanted = "dpo" if kind == "preference" else "supervised"
    if chosen_type != wanted:
        raise InvalidContent(
            f"A {kind} dataset trains with method {wanted!r}, not {chosen_type!r}",
            code="method_mismatch",
        )
    clean = {k: v for k, v in hyper.items() if v is not None and v != "auto"}
    if chosen_type == "supervised" and "beta" in clean:
        raise InvalidContent("beta applies to DPO only", code="invalid_hyperparameters")
    return {"type": chosen_type, chosen_type: {"hyperparameters": clean}}


def poll_delay(quiet_seconds: float, *, minimum: float, maximum: float) -> float:
    """Poll quickly after a change, then back off while nothing moves.

    Each wait is the shortest plus 60 % of the time the job has been quiet: the
    waits grow by 1.6 times from one poll to the next (1, 1.6, 2.6, 4.1 s … from 1 s)
    without counting the polls, so a poll that found nothing new needs no write.
    """
    return float(min(maximum, minimum + 0.6 * max(0.0, quiet_seconds)))


def toward_finish(
    wait: float, *, now: float, estimated_finish: float | None, minimum: float, maximum: float
) -> float:
    """Poll a running job when its provider expects it to finish rather than up to a
    whole back-off later: at the estimate (never sooner than `minimum`), then backing
    off from it as from a change, so a late job is polled quickly at first and an
    estimate long past changes nothing (a provider that runs late is not polled
    harder for it)."""
    if estimated_finish is None:
        return wait
    until = estimated_finish - now
    if until > 0:
        return min(wait, max(until, minimum))
    return min(wait, poll_delay(-until, minimum=minimum, maximum=maximum))


def retry_delay(attempt: int, *, retry_after: float | None, cap: float = 300.0) -> float:
    """Capped exponential backoff for retriable provider errors, honouring Retry-After.

    Jitter is added by the caller (it needs a random source; this stays pure).
    """
    base = min(cap, 1.0 * (2 ** max(0, attempt - 1)))
    if retry_after is not None:
        return float(min(cap, max(base / 2, retry_after)))
    return float(base)


# The timeline -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One entry to add to a job's timeline (once per id); `metrics` for a training step.

    An entry without `event` only carries metrics (a results-file row)."""

    id: str
    event: JobEvent | None
    metrics: Mapping[str, float] | None = None


def service_event(
    job_id: str,
    message: str,
    *,
    kind: str = "message",
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    """An event the service itself writes on a job's timeline."""
    from service.domain.records import JobEvent

    event_id = new_id("evt")
    return TimelineEntry(
        id=event_id,
        event=JobEvent(
            id=event_id,
            job_id=job_id,
            created_at=now_iso(),
            source="service",
            type=kind,
            level=level,
            message=message,
            data=data,
        ),
    )


def transition(job: Job, new: JobStatus, message: str) -> TimelineEntry | None:
    """Move `job` to `new` if allowed (terminal is final); the event, or None if it stays."""
    if not can_move(job.status, new):
        return None
    old = job.status
    job.status = new
    job.updated_at = now_iso()
    if is_terminal(new):
        job.finished_at = job.finished_at or now_iso()
    return service_event(job.id, message, kind="status", data={"from": old, "to": new.value})


def announcements_due(job: Job) -> list[str]:
    """Webhook events the job's current state calls for that were not sent yet."""
    kind = ANNOUNCED.get(JobStatus(job.status))
    if kind is None or kind in job.announced:
        return []
    return [kind]


# What the provider says, and what it changes --------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """The provider's view of the job, in our words (see service.providers.base)."""

    id: str
    status: str
    raw_status: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_param: str | None = None
    hyperparameters: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class RemoteEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: Mapping[str, Any]
    metrics: Mapping[str, float] | None


@dataclass(slots=True)
class Step:
    """Everything one sync step decided to change."""

    entries: list[TimelineEntry] = field(default_factory=list)
    changed: bool = False


def provider_entry(job_id: str, event: RemoteEvent) -> TimelineEntry:
    from service.domain.records import JobEvent

    return TimelineEntry(
        id=event.id,
        event=JobEvent(
            id=event.id,
            job_id=job_id,
            created_at=iso_from_unix(event.created_at) or now_iso(),
            source="provider",
            type=event.type,
            level=event.level,
            message=event.message,
            data=dict(event.data) or None,
        ),
        metrics=event.metrics,
    )


def results_entries(points: Sequence[Mapping[str, float]]) -> list[TimelineEntry]:
    """Per-step metrics from a results file, keyed by step so they never repeat an event's."""
    return [
        TimelineEntry(id=f"results-step-{int(point['step'])}", event=None, metrics=point)
        for point in points
        if "step" in point
    ]


def observe(job: Job, remote: RemoteJob, events: Sequence[RemoteEvent], step: Step) -> None:
    """Mirror the provider's view onto `job` and record the transition it implies."""
    job.upstream.job_id = remote.id
    job.upstream.status = remote.raw_status
    if remote.fine_tuned_model:
        job.fine_tuned_model = remote.fine_tuned_model
    if remote.trained_tokens is not None:
        job.trained_tokens = remote.trained_tokens
    if remote.hyperparameters:
        job.upstream.hyperparameters = dict(remote.hyperparameters)
    job.estimated_finish = (
        iso_from_unix(remote.estimated_finish) if remote.status == "running" else None
    )
    if remote.error_code:
        from service.domain.records import JobError

        job.error = JobError(
            code=remote.error_code, message=remote.error_message or "", param=remote.error_param
        )
    if events:
        job.event_cursor = events[-1].id
        step.entries += [provider_entry(job.id, event) for event in events]
    follow_progress(job, remote, events)
    target = MIRRORED.get(remote.status)
    if target is None:
        return
    if target == JobStatus.FAILED:
        message = f"Failed: {remote.error_message or 'no reason given'}"
    else:
        message = TRANSITION_MESSAGES[target]
    entry = transition(job, target, message)
    if entry is not None:
        if is_terminal(target) and remote.finished_at:
            job.finished_at = iso_from_unix(remote.finished_at)
        step.entries.append(entry)
        step.changed = True


def follow_progress(job: Job, remote: RemoteJob, events: Sequence[RemoteEvent]) -> None:
    """Step, total steps, percent and finish estimate, from the latest metrics events.

    The total is the provider's when its events say it, else our own estimate.
    The finish is the provider's `estimated_finish` when it gives one, else the
    pace between the first step seen and the latest, carried to the total.
    """
    from service.domain.records import JobProgress

    steps = [e for e in events if e.type == "metrics" and _whole(e.data.get("step")) is not None]
    if job.progress is None and not steps and remote.status != "running":
        return
    progress = job.progress or JobProgress(step=0, total_steps=job.estimated_steps)
    for event in steps:
        number = int(event.data["step"])
        total = _whole(event.data.get("total_steps"))
        if total:
            progress.total_steps = total
        if progress.origin_at is None:
            progress.origin_step, progress.origin_at = number, event.created_at
        progress.step = number
        progress.estimated_finish = _paced_finish(progress, event.created_at)
    if progress.total_steps:
        if remote.status == "succeeded":
            progress.step = progress.total_steps
        progress.step = min(progress.step, progress.total_steps)
        progress.percent = round(100 * progress.step / progress.total_steps, 1)
    if remote.status != "running":
        progress.estimated_finish = None
    elif remote.estimated_finish:
        progress.estimated_finish = iso_from_unix(remote.estimated_finish)
    job.progress = progress


def _whole(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _paced_finish(progress: JobProgress, now: int) -> str | None:
    if not progress.total_steps or progress.origin_at is None or progress.origin_step is None:
        return None
    done = progress.step - progress.origin_step
    elapsed = now - progress.origin_at
    if done <= 0 or elapsed <= 0:
        return None
    return iso_from_unix(now + (progress.total_steps - progress.step) * elapsed / done)


def deployed(job: Job, step: Step) -> None:
    """The tuned model answers: the job has succeeded."""
    entry = transition(job, JobStatus.SUCCEEDED, f"Fine-tuned model ready: {job.fine_tuned_model}")
    if entry is not None:
        step.entries.append(entry)
        step.changed = True


def fail(job: Job, code: str, message: str, param: str | None, step: Step) -> None:
    from service.domain.records import JobError

    entry = transition(job, JobStatus.FAILED, f"Failed: {message}")
    if entry is not None:
        job.error = JobError(code=code, message=message, param=param)
        step.entries.append(entry)
        step.changed = True


def next_poll(job: Job, step: Step, *, now: float, minimum: float, maximum: float) -> float:
    """How long to wait before polling again; a change restarts the back-off.

    A change of status brings polls back to the quickest; new events alone do
    not. A training job reports progress steadily, and polling it at the
    quickest pace for that would cost a request per second per job for no
    change anyone waits on (progress is read at least every `maximum` seconds).
    """
    if step.changed or job.changed_at is None:
        job.changed_at = now
    return poll_delay(now - job.changed_at, minimum=minimum, maximum=maximum)
