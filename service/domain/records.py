"""The stored records, typed: Dataset, Job, Endpoint, Delivery, JobSecret.

These are the service's own data as Redis keeps it (see `service.store`),
not the API's schemas: a record carries internal fields (the tenant, the
provider's ids, bookkeeping of the worker) that responses never show.

Every record has a `schema_version`. A reader keeps fields it does not know
(`extra="allow"`), so a process of an older release rewriting a record never
drops what a newer one wrote; a newer release upgrades older records as it
reads them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.domain.evaluations import EvaluationStatus
from service.domain.jobs import JobStatus

SCHEMA_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    schema_version: int = SCHEMA_VERSION
    id: str
    tenant: str
    created_at: str


# Datasets --------------------------------------------------------------------

DatasetStatus = Literal["validating", "ready", "invalid"]


class DatasetIssueRecord(BaseModel):
    line: int | None
    path: str | None
    code: str
    message: str


class DatasetProgress(BaseModel):
    bytes_done: int
    bytes_total: int
    examples_done: int
    percent: float
    estimated_finish: str | None = None


class Dataset(Record):
    name: str
    status: DatasetStatus
    model: str
    filename: str | None = None
    # "files": uploaded through /v1/files, under OpenAI's rules for files (the example
    # minimum waits for the job, content problems are kept rather than refused, the
    # bytes as uploaded are kept: `source_bytes` of them).
    origin: Literal["datasets", "files"] = "datasets"
    source_bytes: int | None = None
    # The upload's options (name, format, columns, system prompt, split...).
    request: dict[str, Any] = Field(default_factory=dict)
    role: Literal["training", "validation"] = "training"
    kind: str | None = None
    format: str | None = None
    example_count: int | None = None
    token_count: int | None = None
    token_stats: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    warnings: list[DatasetIssueRecord] = Field(default_factory=list)
    warning_totals: dict[str, int] = Field(default_factory=dict)
    errors: list[DatasetIssueRecord] = Field(default_factory=list)
    error_total: int = 0
    sha256: str | None = None
    bytes: int | None = None
    normalized_sha256: str | None = None
    validation_dataset_id: str | None = None
    training_dataset_id: str | None = None
    invalid_reason: str | None = None
    validation_attempts: int = 0
    # While the worker validates: how far it has read.
    progress: DatasetProgress | None = None
    updated_at: str | None = None


# Jobs ------------------------------------------------------------------------


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Upstream(BaseModel):
    """What the provider calls this job: its ids and its own status, beside ours."""

    model_config = ConfigDict(extra="allow")

    job_id: str | None = None
    status: str | None = None
    training_file_id: str | None = None
    validation_file_id: str | None = None
    # Set just before the provider is asked to create the job: a later attempt
    # then looks for that job before creating one (a crash may have hidden it).
    create_attempted: bool = False
    # The numbers the provider settled on for "auto" hyperparameters.
    hyperparameters: dict[str, float] = Field(default_factory=dict)
    # What the last poll saw (status and the fields that move with it): a poll
    # that sees the same reads nothing more (service.jobs.sync).
    marker: str | None = None


class JobProgress(BaseModel):
    """How far training has come, from the provider's metrics events."""

    step: int
    total_steps: int | None = None
    percent: float | None = None
    estimated_finish: str | None = None
    # The first step seen and when (unix seconds): the pace that extrapolates the
    # finish when the provider gives no estimate of its own.
    origin_step: int | None = None
    origin_at: int | None = None


class Job(Record):
    status: JobStatus
    dataset_id: str
    validation_dataset_id: str | None = None
    model: str
    provider: str
    method: dict[str, Any]
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # Options only the job's provider understands (the trainer's LoRA settings).
    provider_options: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    fine_tuned_model: str | None = None
    error: JobError | None = None
    trained_tokens: int | None = None
    estimated_finish: str | None = None
    # Steps the job should take by our own estimate (examples, epochs, batch size);
    # used when the provider does not say its total.
    estimated_steps: int | None = None
    progress: JobProgress | None = None
    cancel_requested: bool = False
    requested_action: Literal["cancel", "pause", "resume"] | None = None
    upstream: Upstream = Field(default_factory=Upstream)
    updated_at: str
    finished_at: str | None = None
    # Worker bookkeeping.
    event_cursor: str | None = None
    # When the provider's events were last read (unix seconds).
    events_read_at: float | None = None
    # When the job last changed in a way that brings polls back to the quickest
    # (unix seconds); polls back off with the time since.
    changed_at: float | None = None
    sync_errors: int = 0
    deploy_attempts: int = 0
    announced: list[str] = Field(default_factory=list)
    # The evaluation started when the job succeeded (its validation examples, tuned vs base).
    evaluation_id: str | None = None
    # The examples that evaluation uses, fixed when the job is created: the validation
    # dataset, else the training dataset's validation split; "" when there is neither.
    # None on a job stored before this was recorded (the datasets are read then).
    held_out_dataset_id: str | None = None


class JobEvent(BaseModel):
    """One entry of a job's timeline: our own transitions and the provider's events."""

    id: str
    object: Literal["job.event"] = "job.event"
    job_id: str
    created_at: str
    source: Literal["service", "provider"]
    type: str
    level: str
    message: str
    data: dict[str, Any] | None = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["job.checkpoint"] = "job.checkpoint"
    created_at: str
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any] = Field(default_factory=dict)


# Evaluations -----------------------------------------------------------------


class EvaluationModel(BaseModel):
    model: str
    provider: str
    role: Literal["tuned", "base", "requested"]


class EvaluationGrader(BaseModel):
    model: str
    provider: str
    rubric: str


class EvaluationError(BaseModel):
    code: str
    message: str


class Evaluation(Record):
    status: EvaluationStatus
    dataset_id: str
    job_id: str | None = None
    # "job": started by the service when the job succeeded; "request": asked for.
    origin: Literal["request", "job"] = "request"
    models: list[EvaluationModel]
    metrics: list[str]
    grader: EvaluationGrader | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_examples: int | None = None
    # Examples to evaluate: the dataset's, up to max_examples.
    total: int
    done: int = 0
    summary: dict[str, Any] | None = None
    error: EvaluationError | None = None
    cancel_requested: bool = False
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    # Worker bookkeeping: runs in a row that scored nothing (a provider that keeps failing).
    stalled_runs: int = 0
    last_failure: str | None = None
    # Its final state was announced (webhook emitted); only then it leaves the active set.
    announced: bool = False


class EvaluationAnswer(BaseModel):
    model: str
    content: str | None
    scores: dict[str, float | None] = Field(default_factory=dict)
    grader_reason: str | None = None
    # Why the grader gave no score (its reply was not the JSON asked for).
    grader_error: str | None = None
    # A refusal the provider gave for good (not a 429/5xx, which are retried).
    error: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    grader_usage: dict[str, int] | None = None
    latency_ms: float | None = None


class EvaluationRow(BaseModel):
    """One example of an evaluation: what was asked, expected, and each model's answer."""

    index: int
    prompt: list[dict[str, Any]]
    reference: str | None
    # Why the example could not be asked (no assistant message to compare with).
    skipped: str | None = None
    answers: list[EvaluationAnswer] = Field(default_factory=list)


# Webhooks --------------------------------------------------------------------


class SigningSecret(BaseModel):
    secret: str
    created_at: float
    expires_at: float | None = None


class Endpoint(Record):
    url: str
    event_types: list[str]
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    failing_since: float | None = None
    secrets: list[SigningSecret]
    updated_at: str


DeliveryState = Literal["pending", "succeeded", "failed"]


class Delivery(Record):
    endpoint_id: str | None
    url: str
    job_id: str | None
    event_id: str
    event_type: str
    payload: str
    state: DeliveryState = "pending"
    attempt_count: int = 0
    next_attempt_at: float | None = None
    # Until then the process that stored the delivery sends its first attempt itself
    # (service.webhooks.sending); the queue takes over after it.
    sending_until: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    updated_at: str
    finished_at: str | None = None


class DeliveryAttempt(BaseModel):
    attempt: int
    at: str
    url: str
    status: int | None
    latency_ms: float
    response: str | None
    error: str | None


class JobSecret(Record):
    """A tenant's signing secrets for its jobs' own `webhook_url` deliveries."""

    secrets: list[SigningSecret]
    rotated_at: str | None = None
