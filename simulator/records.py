"""The plain records the simulator keeps besides jobs: files, uploads, tuned models, webhooks.

They live apart from `state` so that both the state and its on-disk store
(`persistence`) can build them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.recall import AnswerIndex
from simulator.training_data import TrainingPair

UPLOAD_LIFETIME_SECONDS = 3600

# Which analysis of which file a model learned from: (file id, method, base snapshot).
AnalysisKey = tuple[str, str, str]


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    content: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": len(self.content),
            "created_at": self.created_at,
            # Deprecated fields the real API still sends; fine-tune files come back processed.
            "status": "processed",
            "status_details": None,
        }


@dataclass(slots=True)
class UploadPart:
    id: str
    created_at: int
    data: bytes


@dataclass(slots=True)
class Upload:
    id: str
    filename: str
    purpose: str
    declared_bytes: int
    mime_type: str
    created_at: int
    status: str = "pending"
    parts: dict[str, UploadPart] = field(default_factory=dict)
    file: StoredFile | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "upload",
            "id": self.id,
            "filename": self.filename,
            "purpose": self.purpose,
            "bytes": self.declared_bytes,
            "created_at": self.created_at,
            "expires_at": self.created_at + UPLOAD_LIFETIME_SECONDS,
            "status": self.status,
            "file": self.file.to_dict() if self.file else None,
        }


@dataclass(slots=True)
class TunedModel:
    id: str
    base_snapshot: str
    encoding: str
    created: int
    owned_by: str
    job_id: str
    # The training analyses behind the model, oldest first: a model tuned from a tuned
    # model keeps its parent's lineage and adds its own file.
    lineage: tuple[AnalysisKey, ...]
    pairs: tuple[TrainingPair, ...]
    answers: AnswerIndex

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }


@dataclass(slots=True)
class WebhookRecord:
    event_id: str
    type: str
    job_id: str
    # When the event happened: the body's `created_at`, the same on every attempt.
    created_at: int = 0
    attempts: int = 0
    status: str = "pending"  # pending | delivered | failed
    last_status_code: int | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "type": self.type,
            "job_id": self.job_id,
            "attempts": self.attempts,
            "status": self.status,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
        }
