"""The provider seam: what the service needs from a fine-tuning backend.

Not a wire protocol: the service asks a provider to stage training data,
start a job (idempotently, keyed by our job id), report its status in our
own words, its events, checkpoints and final metrics in our shapes, cancel
(pause and resume where its capabilities say so), make a tuned model
servable (`deploy`), and chat (OpenAI-shaped bytes, streamed or not).

Everything a backend does its own way lives in its folder: OpenAI's results
CSV and signed webhooks under `openai/`, the trainer's adapter loading under
`trainer/`. Values crossing the seam are small frozen dataclasses of plain
data, never SDK objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

# The statuses a provider reports, already in our words (service.domain.jobs).
ProviderStatus = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]


class ProviderError(Exception):
    """The provider refused or failed a call.

    `retriable` is the classification DESIGN.md section 5 asks for: 408, 409,
    429, 5xx and connection errors are worth retrying with backoff; any other
    4xx is final and its message is what the caller sees.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.timeout = timeout

    @property
    def retriable(self) -> bool:
        if self.status is None:  # connection error or timeout
            return True
        return self.status in (408, 409, 429) or self.status >= 500

    def __repr__(self) -> str:
        return f"ProviderError(status={self.status}, code={self.code!r}, message={self.message!r})"


@dataclass(frozen=True, slots=True)
class Capabilities:
    pause_resume: bool = False
    # The provider's own signed webhooks can wake a job's sync (see verify_webhook).
    webhooks: bool = False
    # Keys of a job's `provider_options` this provider understands (the trainer's `lora`).
    options: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderJob:
    id: str
    status: ProviderStatus
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None
    error: ProviderFailure | None = None
    # The provider's own words for its status, kept beside ours.
    raw_status: str = ""
    # Whatever the provider needs later to read its final results (file ids...).
    result_refs: tuple[str, ...] = ()
    # The hyperparameters the provider settled on (numbers only; "auto" not yet resolved).
    hyperparameters: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    # The training step's numbers when the event reports one (`step` always set).
    metrics: Mapping[str, float] | None = None
    # The event says a checkpoint was saved (worth reading checkpoints again).
    checkpoint_saved: bool = False


@dataclass(frozen=True, slots=True)
class ProviderCheckpoint:
    id: str
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to train: provider-neutral, built from our job record."""

    key: str  # our job id: one upstream job per key, whatever happens
    model: str
    training_file: str
    validation_file: str | None
    method: Mapping[str, Any]
    suffix: str | None
    seed: int | None
    metadata: Mapping[str, str]
    # Options only this provider understands (checked against its capabilities).
    options: Mapping[str, Any] = field(default_factory=dict)
    # True when an earlier attempt may have created it already (look before creating).
    maybe_created: bool = False
    created_after: float | None = None


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the catalog cannot know in advance about a provider's own model
    (an open-weight model on the trainer): its tokenizer and limits."""

    tokenizer_json: bytes
    chat_template: str | None
    example_token_limit: int
    special_tokens: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    kind: str
    capabilities: Capabilities

    async def stage_file(self, path: Path, *, filename: str) -> str:
        """Upload training data; returns the provider's file id."""
        ...

    async def start_job(self, spec: JobSpec) -> ProviderJob:
        """Create the upstream job, or find the one an earlier attempt created."""
        ...

    async def get_job(self, job_id: str) -> ProviderJob: ...

    async def cancel_job(self, job_id: str) -> ProviderJob: ...

    async def pause_job(self, job_id: str) -> ProviderJob: ...

    async def resume_job(self, job_id: str) -> ProviderJob: ...

    async def events_since(self, job_id: str, cursor: str | None) -> list[ProviderEvent]:
        """Events newer than `cursor` (the last event id seen), oldest first."""
        ...

    async def checkpoints(self, job_id: str) -> list[ProviderCheckpoint]: ...

    async def final_metrics(self, job: ProviderJob) -> list[dict[str, float]]:
        """Per-step metrics from the finished job's results (steps events may have missed)."""
        ...

    async def deploy(self, fine_tuned_model: str) -> bool:
        """Make a tuned model answer chat; True once it does. Idempotent."""
        ...

    async def describe_model(self, model: str) -> ModelFacts | None:
        """Tokenizer and limits of a model the packaged catalog does not know."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """The provider job id a signed webhook of this provider is about, or None when
        it concerns no job. Raises ProviderWebhookRejected for a bad signature."""
        ...

    async def chat_bytes(self, body: Mapping[str, Any]) -> bytes:
        """The completion as the provider's raw JSON (no parse and re-encode on the proxy path).

        Chat is a synchronous proxy: no retries here; the caller sees 429s and decides.
        """
        ...

    async def chat(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def chat_stream(self, body: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """Raw SSE bytes as the provider sends them (`data: {...}\\n\\n` … `data: [DONE]`)."""
        ...

    async def aclose(self) -> None: ...


class ProviderWebhookRejected(Exception):
    """A webhook claiming to come from a provider failed verification; `code` says how
    (`invalid_signature`, `invalid_event`)."""

    def __init__(self, message: str, *, code: str = "invalid_signature") -> None:
        super().__init__(message)
        self.code = code
