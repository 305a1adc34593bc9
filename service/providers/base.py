"""The provider seam: everything the service needs from a fine-tuning backend.

OpenAI, Azure OpenAI's v1 API and the simulator all speak the same wire
protocol and share `OpenAICompatibleProvider`. A self-hosted backend (LoRA on
open-weight models) implements this same protocol; the API, the store and the
webhooks never see which one is behind it.

Values crossing the seam are small frozen dataclasses of plain data, not SDK
objects, so the rest of the code does not depend on the SDK's types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


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
class UpstreamFile:
    id: str
    bytes: int
    filename: str


@dataclass(frozen=True, slots=True)
class UpstreamError:
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamJob:
    id: str
    status: str
    model: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    created_at: int
    finished_at: int | None
    estimated_finish: int | None
    result_files: tuple[str, ...]
    error: UpstreamError | None
    hyperparameters: Mapping[str, Any]
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class UpstreamEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpstreamCheckpoint:
    id: str
    created_at: int
    step_number: int
    fine_tuned_model_checkpoint: str
    metrics: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to train: provider-neutral, built from our job record."""

    model: str
    training_file: str
    validation_file: str | None
    method: Mapping[str, Any]
    suffix: str | None
    seed: int | None
    metadata: Mapping[str, str]


class Provider(Protocol):
    name: str

    async def upload_file(self, path: Path, *, filename: str) -> UpstreamFile: ...

    async def find_job(self, metadata_key: str, metadata_value: str) -> UpstreamJob | None:
        """The upstream job we created earlier with this metadata tag, if any."""
        ...

    async def create_job(self, spec: JobSpec) -> UpstreamJob: ...

    async def get_job(self, job_id: str) -> UpstreamJob: ...

    async def cancel_job(self, job_id: str) -> UpstreamJob: ...

    async def pause_job(self, job_id: str) -> UpstreamJob: ...

    async def resume_job(self, job_id: str) -> UpstreamJob: ...

    async def events_since(self, job_id: str, last_seen: str | None) -> list[UpstreamEvent]:
        """Events newer than `last_seen`, oldest first."""
        ...

    async def checkpoints(self, job_id: str) -> list[UpstreamCheckpoint]: ...

    async def file_content(self, file_id: str) -> bytes: ...

    async def chat(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def chat_bytes(self, body: Mapping[str, Any]) -> bytes:
        """The completion as the provider's raw JSON (no parse and re-encode on the proxy path).

        Chat is a synchronous proxy: no retries here; the caller sees 429s and decides.
        """
        ...

    def chat_stream(self, body: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """Raw SSE bytes as the provider sends them (`data: {...}\\n\\n` … `data: [DONE]`)."""
        ...

    async def aclose(self) -> None: ...
