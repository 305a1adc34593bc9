"""A fine-tuning job as the trainer records it, and as OpenAI's API shows it.

The record is what `job.json` holds in the job's folder; `view()` is the
`fine_tuning.job` object. Status moves validating_files → queued → running →
succeeded | failed | cancelled; terminal states are final.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"validating_files", "queued", "running"})
ORGANIZATION_ID = "org-trainer"
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")

Auto = Literal["auto"]


@dataclass(slots=True)
class Requested:
    """The hyperparameters as the request gave them ("auto" where it did not)."""

    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "n_epochs": self.n_epochs,
        }


@dataclass(slots=True)
class Job:
    id: str
    created_at: int
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    requested: Requested
    # The `lora` extension as the request gave it (keys it set); resolved into `lora`.
    lora_request: dict[str, Any]
    # Fixed at creation so checkpoints can be named while the job runs.
    tuned_model_name: str
    status: str = "validating_files"
    # Resolved once the files are validated:
    hyperparameters: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None
    learning_rate: float | None = None
    n_examples: int | None = None
    total_steps: int | None = None
    # Progress and outcome:
    started_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    # Which runner was handed the training ("local" or "ray"), set just before it is.
    runner: str | None = None
    # The local training process while it runs (pid and its start time, to recognise it).
    pid: int | None = None
    pid_started: str | None = None
    tuned_model_deleted: bool = False
    # Not persisted: the latest metrics step seen and when, for estimated_finish.
    last_step: int = field(default=0, compare=False)
    last_step_at: float = field(default=0.0, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.pop("last_step")
        record.pop("last_step_at")
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        known = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        values["requested"] = Requested(**values.get("requested", {}))
        return cls(**values)

    def estimated_finish(self, now: float) -> int | None:
        if self.status != "running" or not self.total_steps or self.started_at is None:
            return None
        if self.last_step <= 0:
            return None
        per_step = max(0.0, self.last_step_at - self.started_at) / self.last_step
        remaining = (self.total_steps - self.last_step) * per_step
        return int(now + remaining) + 1

    def _lora_as_requested(self) -> dict[str, Any]:
        return {key: self.lora_request.get(key, "auto") for key in LORA_KEYS}

    def view(self, now: float | None = None) -> dict[str, Any]:
        """The job as OpenAI's `fine_tuning.job` object, plus the `lora` extension."""
        now = time.time() if now is None else now
        hyperparameters = self.hyperparameters or self.requested.to_dict()
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": ORGANIZATION_ID,
            "result_files": list(self.result_files),
            "status": self.status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": hyperparameters,
            "trained_tokens": self.trained_tokens,
            # The real API sends an empty object, not null, on a job that has not failed.
            "error": dict(self.error) if self.error else {},
            "user_provided_suffix": self.suffix,
            "seed": self.seed,
            "estimated_finish": self.estimated_finish(now),
            "integrations": [],
            "metadata": dict(self.metadata) if self.metadata else None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            # Extensions (not OpenAI's): the LoRA settings and the absolute learning rate.
            "lora": self.lora if self.lora is not None else self._lora_as_requested(),
            "learning_rate": self.learning_rate,
        }
