"""One fine-tuning job and how it moves through its life in scaled time.

A job's progress is a number from 0 to 1; a job in full flow gains `elapsed /
job_seconds` of it per second, so the whole life takes about `job_seconds`. Fixed
points on that line are the milestones:

    0.00 created, validating_files
    0.15 files validated (or the job fails here), queued
    0.25 running; then every training step up to ...
    0.95 the last step
    1.00 succeeded

`advance` replays every milestone passed since the last call and dates each one at
the moment it was due, so a job read rarely looks the same as one watched closely.
Pauses stop the clock; a resume spends a short extra span back in `queued`.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from simulator import identifiers
from simulator.api_errors import OpenAIError
from simulator.training_data import MIN_EXAMPLES, TrainingAnalysis

VALIDATED_AT = 0.15
STARTED_AT = 0.25
LAST_STEP_AT = 0.95
REQUEUE_SPAN = 0.05

# Above this many steps, metrics events are thinned to an even stride (the results
# file still has every step); keeps 1,000 concurrent large jobs in bounded memory.
MAX_METRICS_EVENTS = 1000

AUTO_LEARNING_RATE_MULTIPLIER = 1.8
AUTO_DPO_BETA = 0.1

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
Terminal = Literal["succeeded", "failed", "cancelled"]
Auto = Literal["auto"]


def auto_epochs(n_examples: int) -> int:
    """The cookbook's default: 3, raised for small files and lowered for huge ones."""
    epochs = 3
    if n_examples * epochs < 100:
        epochs = min(25, 100 // max(1, n_examples))
    elif n_examples * epochs > 25_000:
        epochs = max(1, 25_000 // n_examples)
    return epochs


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples per batch, as OpenAI picks small batches for small data."""
    return max(1, min(256, math.ceil(n_examples * 0.002)))


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    beta: float | Auto | None = None  # DPO only

    def resolve(self, n_examples: int) -> Hyperparameters:
        return Hyperparameters(
            n_epochs=auto_epochs(n_examples) if self.n_epochs == "auto" else self.n_epochs,
            batch_size=(
                auto_batch_size(n_examples) if self.batch_size == "auto" else self.batch_size
            ),
            learning_rate_multiplier=(
                AUTO_LEARNING_RATE_MULTIPLIER
                if self.learning_rate_multiplier == "auto"
                else self.learning_rate_multiplier
            ),
            beta=AUTO_DPO_BETA if self.beta == "auto" else self.beta,
        )

    def common(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "n_epochs": self.n_epochs,
        }

    def for_method(self) -> dict[str, Any]:
        values = self.common()
        if self.beta is not None:
            values["beta"] = self.beta
        return values


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A create request that passed the request-level checks."""

    model: str  # the resolved snapshot, or the tuned model being tuned further
    base_snapshot: str  # the snapshot named in the tuned model's id
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]]
    method: str
    hyperparameters: Hyperparameters
    example_token_limit: int

    def to_json(self) -> dict[str, Any]:
        hyper = self.hyperparameters
        return {
            "model": self.model,
            "base_snapshot": self.base_snapshot,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "suffix": self.suffix,
            "seed": self.seed,
            "metadata": self.metadata,
            "integrations": self.integrations,
            "method": self.method,
            "hyperparameters": {
                "n_epochs": hyper.n_epochs,
                "batch_size": hyper.batch_size,
                "learning_rate_multiplier": hyper.learning_rate_multiplier,
                "beta": hyper.beta,
            },
            "example_token_limit": self.example_token_limit,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(
            model=data["model"],
            base_snapshot=data["base_snapshot"],
            training_file=data["training_file"],
            validation_file=data["validation_file"],
            suffix=data["suffix"],
            seed=data["seed"],
            metadata=data["metadata"],
            integrations=data["integrations"],
            method=data["method"],
            hyperparameters=Hyperparameters(**data["hyperparameters"]),
            example_token_limit=data["example_token_limit"],
        )


@dataclass(slots=True)
class JobEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.event",
            "id": self.id,
            "created_at": self.created_at,
            "level": self.level,
            "message": self.message,
            "data": self.data,
            "type": self.type,
        }

    def to_json(self) -> list[Any]:
        return [self.id, self.created_at, self.level, self.message, self.type, self.data]

    @classmethod
    def from_json(cls, data: list[Any]) -> JobEvent:
        event_id, created_at, level, message, type_, payload = data
        return cls(event_id, created_at, level, message, type_, payload)


@dataclass(slots=True)
class Checkpoint:
    id: str
    created_at: int
    model: str
    step: int
    metrics: dict[str, float]
    job_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": self.id,
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.model,
            "fine_tuning_job_id": self.job_id,
            "metrics": self.metrics,
            "step_number": self.step,
        }

    def to_json(self) -> list[Any]:
        return [self.id, self.created_at, self.model, self.step, self.metrics]

    @classmethod
    def from_json(cls, data: list[Any], job_id: str) -> Checkpoint:
        checkpoint_id, created_at, model, step, metrics = data
        return cls(checkpoint_id, created_at, model, step, metrics, job_id)


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    hyperparameters: Hyperparameters
    steps_per_epoch: int
    total_steps: int
    trained_tokens: int
    # Steps worth visiting, ascending: metrics events and epoch-end checkpoints.
    milestones: tuple[int, ...]
    metrics_steps: frozenset[int]
    checkpoint_epochs: dict[int, int]  # step -> epoch


class Job:
    """State of one job; all methods are synchronous and do no I/O."""

    def __init__(
        self,
        *,
        request: JobRequest,
        organization_id: str,
        org_slug: str,
        training: TrainingAnalysis,
        validation: TrainingAnalysis | None,
        now_wall: float,
        now_mono: float,
    ) -> None:
        self._setup(
            job_id=identifiers.job_id(),
            request=request,
            organization_id=organization_id,
            created_at=int(now_wall),
            # The tuned model's name is fixed now so checkpoints can carry it while running.
            tuned_model_name=(
                f"ft:{request.base_snapshot}:{org_slug}:{request.suffix or ''}:"
                f"{identifiers.model_tag()}"
            ),
            training=training,
            validation=validation,
            now_mono=now_mono,
        )
        self._event(self.created_at, f"Created fine-tuning job: {self.id}")
        if request.validation_file:
            self._event(
                self.created_at,
                f"Validating training file: {request.training_file} and validation file: "
                f"{request.validation_file}",
            )
        else:
            self._event(self.created_at, f"Validating training file: {request.training_file}")

    def _setup(
        self,
        *,
        job_id: str,
        request: JobRequest,
        organization_id: str,
        created_at: int,
        tuned_model_name: str,
        training: TrainingAnalysis,
        validation: TrainingAnalysis | None,
        now_mono: float,
    ) -> None:
        self.id = job_id
        self.request = request
        self.organization_id = organization_id
        self.created_at = created_at
        self.training = training
        self.validation = validation
        self.status = "validating_files"
        self.error: dict[str, Any] | None = None
        self.finished_at: int | None = None
        self.result_files: list[str] = []
        self.trained_tokens: int | None = None
        self.plan: TrainingPlan | None = None
        self.events: list[JobEvent] = []  # oldest first
        self.checkpoints: list[Checkpoint] = []  # oldest first
        self.tuned_model_name = tuned_model_name
        self.fine_tuned_model: str | None = None
        self._progress = 0.0
        self._last_mono = now_mono
        self._started = False
        self._requeue_left = 0.0
        self._next_milestone = 0
        self._pending_failure: tuple[str, str] | None = None
        self._curve_key = f"{self.id}:{request.seed}"
        start, floor = _unit(self._curve_key, -1), _unit(self._curve_key, -2)
        self._loss_start = 1.6 + 1.2 * start
        self._loss_floor = 0.05 + 0.25 * floor

    # -- saving and restoring ------------------------------------------------------

    def fixed_json(self) -> dict[str, Any]:
        """What never changes after creation."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "organization_id": self.organization_id,
            "tuned_model_name": self.tuned_model_name,
            "request": self.request.to_json(),
        }

    def state_json(self) -> dict[str, Any]:
        """Everything that moves, clock included (events and checkpoints are kept apart)."""
        return {
            "status": self.status,
            "error": self.error,
            "finished_at": self.finished_at,
            "result_files": self.result_files,
            "trained_tokens": self.trained_tokens,
            "fine_tuned_model": self.fine_tuned_model,
            "validated": self.plan is not None,
            "progress": self._progress,
            "started": self._started,
            "requeue_left": self._requeue_left,
            "next_milestone": self._next_milestone,
            "pending_failure": list(self._pending_failure) if self._pending_failure else None,
        }

    def change_marker(self) -> tuple[object, ...]:
        """Changes whenever anything but the clock's fine position does.

        Every milestone adds an event or a checkpoint or changes the status, and the
        only other discrete change (a failure asked for before training starts) is
        included, so a job whose marker is unchanged has only moved along its line.
        """
        return (
            self.status,
            len(self.events),
            len(self.checkpoints),
            self._pending_failure is not None,
            len(self.result_files),
        )

    @classmethod
    def restore(
        cls,
        *,
        fixed: dict[str, Any],
        state: dict[str, Any],
        training: TrainingAnalysis,
        validation: TrainingAnalysis | None,
        events: list[JobEvent],
        checkpoints: list[Checkpoint],
        now_mono: float,
    ) -> Job:
        """A saved job, its clock continuing from `now_mono` where it stopped."""
        job = cls.__new__(cls)
        job._setup(
            job_id=fixed["id"],
            request=JobRequest.from_json(fixed["request"]),
            organization_id=fixed["organization_id"],
            created_at=fixed["created_at"],
            tuned_model_name=fixed["tuned_model_name"],
            training=training,
            validation=validation,
            now_mono=now_mono,
        )
        job.status = state["status"]
        job.error = state["error"]
        job.finished_at = state["finished_at"]
        job.result_files = list(state["result_files"])
        job.trained_tokens = state["trained_tokens"]
        job.fine_tuned_model = state["fine_tuned_model"]
        # The plan is a pure function of the request and the training file's analysis.
        job.plan = job._make_plan() if state["validated"] else None
        job._progress = state["progress"]
        job._started = state["started"]
        job._requeue_left = state["requeue_left"]
        job._next_milestone = state["next_milestone"]
        pending = state["pending_failure"]
        job._pending_failure = (pending[0], pending[1]) if pending else None
        job.events = events
        job.checkpoints = checkpoints
        return job

    # -- reading ---------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def metadata(self) -> dict[str, str] | None:
        return self.request.metadata

    def to_dict(self, *, now_wall: float, job_seconds: float) -> dict[str, Any]:
        hyper = self.plan.hyperparameters if self.plan else self.request.hyperparameters
        method = self.request.method
        estimated_finish = None
        if self.status == "running":
            remaining = (1.0 - self._progress) + self._requeue_left
            estimated_finish = int(now_wall + remaining * job_seconds) + 1
        return {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.request.model,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "fine_tuned_model": self.fine_tuned_model,
            "organization_id": self.organization_id,
            "result_files": list(self.result_files),
            "status": self.status,
            "validation_file": self.request.validation_file,
            "training_file": self.request.training_file,
            "hyperparameters": hyper.common(),
            "trained_tokens": self.trained_tokens,
            # The real API sends an empty object, not null, while a job has not failed.
            "error": dict(self.error) if self.error else {},
            "user_provided_suffix": self.request.suffix,
            "seed": self.request.seed,
            "estimated_finish": estimated_finish,
            "integrations": list(self.request.integrations),
            "metadata": dict(self.request.metadata) if self.request.metadata else None,
            "method": {"type": method, method: {"hyperparameters": hyper.for_method()}},
            "usage_metrics": None,
            "shared_with_openai": False,
        }

    def results_csv_base64(self) -> bytes:
        """The results file's content: a CSV of every step, base64-encoded as OpenAI serves it."""
        assert self.plan is not None  # noqa: S101 - only succeeded jobs have results
        has_validation = self.validation is not None
        lines = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"]
        for step in range(1, self.plan.total_steps + 1):
            values = self._metrics(step, self.plan)
            valid = (
                f"{values['valid_loss']:.5f},{values['valid_mean_token_accuracy']:.5f}"
                if has_validation
                else ","
            )
            lines.append(
                f"{step},{values['train_loss']:.5f},"
                f"{values['train_mean_token_accuracy']:.5f},{valid}"
            )
        return base64.b64encode(("\n".join(lines) + "\n").encode())

    # -- commands ----------------------------------------------------------------

    def cancel(self, now_wall: float) -> None:
        if self.terminal:
            raise OpenAIError(400, f"Job {self.id} has already completed and cannot be cancelled.")
        self.status = "cancelled"
        self.finished_at = int(now_wall)
        self._event(int(now_wall), "Fine-tuning job cancelled")

    def pause(self, now_wall: float) -> None:
        if self.terminal:
            raise OpenAIError(400, f"Job {self.id} has already completed and cannot be paused.")
        if self.status == "paused":
            raise OpenAIError(400, f"Job {self.id} is already paused.")
        if self.status == "validating_files":
            raise OpenAIError(
                400, f"Job {self.id} is validating files and cannot be paused until it is queued."
            )
        self.status = "paused"
        self._event(int(now_wall), "Fine-tuning job paused")

    def resume(self, now_wall: float) -> None:
        if self.status != "paused":
            raise OpenAIError(400, f"Job {self.id} is not paused and cannot be resumed.")
        self.status = "queued"
        self._requeue_left = REQUEUE_SPAN
        self._event(int(now_wall), "Fine-tuning job resumed, moving job to queued state")

    def fail_on_request(self, code: str, message: str, now_wall: float) -> bool:
        """Fail now if training is under way, else as soon as it starts. True if failed now."""
        if self.terminal:
            raise OpenAIError(409, f"Job {self.id} has already completed.", code="job_terminal")
        if self._started:
            self._fail(code, message, None, int(now_wall))
            return True
        self._pending_failure = (code, message)
        return False

    # -- time ------------------------------------------------------------------

    def advance(self, *, now_wall: float, now_mono: float, job_seconds: float) -> Terminal | None:
        """Catch up with the clock; answers the final status if this call reached it."""
        elapsed = max(0.0, now_mono - self._last_mono)
        self._last_mono = now_mono
        if self.terminal or self.status == "paused":
            return None
        work = elapsed / job_seconds
        if self._requeue_left > 0:
            spent = min(work, self._requeue_left)
            self._requeue_left -= spent
            work -= spent
            if self._requeue_left > 0:
                return None
            if self._started:
                self.status = "running"
        target = min(1.0, self._progress + work)
        return self._move_to(target, now_wall, job_seconds)

    def _move_to(self, target: float, now_wall: float, job_seconds: float) -> Terminal | None:
        def due(point: float) -> int:
            return int(now_wall - max(0.0, target - point) * job_seconds)

        if self.plan is None:
            if target < VALIDATED_AT:
                self._progress = target
                return None
            self._progress = VALIDATED_AT
            if not self._validate(due(VALIDATED_AT)):
                return "failed"
        if not self._started:
            if target < STARTED_AT:
                self._progress = target
                return None
            self._progress = STARTED_AT
            self._started = True
            self.status = "running"
            self._event(due(STARTED_AT), "Fine-tuning job started")
            if self._pending_failure is not None:
                code, message = self._pending_failure
                self._fail(code, message, None, due(STARTED_AT))
                return "failed"
        plan = self.plan
        assert plan is not None  # noqa: S101 - set by _validate above
        while self._next_milestone < len(plan.milestones):
            step = plan.milestones[self._next_milestone]
            point = STARTED_AT + (LAST_STEP_AT - STARTED_AT) * step / plan.total_steps
            if point > target:
                self._progress = target
                return None
            self._reach_step(step, plan, due(point))
            self._next_milestone += 1
        if target < 1.0:
            self._progress = target
            return None
        self._progress = 1.0
        self._succeed(due(1.0))
        return "succeeded"

    # -- milestones ----------------------------------------------------------------

    def _validate(self, at: int) -> bool:
        problem = self.training.problem
        if problem is not None:
            self._fail(
                "invalid_training_file",
                f"The job failed due to an invalid training file. {problem}",
                "training_file",
                at,
            )
            return False
        if self.validation is not None and self.validation.problem is not None:
            self._fail(
                "invalid_validation_file",
                f"The job failed due to an invalid validation file. {self.validation.problem}",
                "validation_file",
                at,
            )
            return False
        n = self.training.n_examples
        if n < MIN_EXAMPLES:
            self._fail(
                "invalid_n_examples",
                f"Training file has {n} example(s), but must have at least {MIN_EXAMPLES} examples",
                "training_file",
                at,
            )
            return False
        self.plan = self._make_plan()
        self.status = "queued"
        self._event(at, "Files validated, moving job to queued state")
        return True

    def _make_plan(self) -> TrainingPlan:
        n = self.training.n_examples
        hyper = self.request.hyperparameters.resolve(n)
        assert isinstance(hyper.n_epochs, int)  # noqa: S101 - resolve() removes "auto"
        assert isinstance(hyper.batch_size, int)  # noqa: S101
        epochs, batch = hyper.n_epochs, hyper.batch_size
        steps_per_epoch = math.ceil(n / batch)
        total = steps_per_epoch * epochs
        limit = self.request.example_token_limit
        trained_tokens = epochs * sum(min(limit, count) for count in self.training.example_tokens)
        if total <= MAX_METRICS_EVENTS:
            metrics_steps = frozenset(range(1, total + 1))
        else:
            stride = total / MAX_METRICS_EVENTS
            metrics_steps = frozenset(
                {math.ceil(stride * (i + 1)) for i in range(MAX_METRICS_EVENTS)} | {total}
            )
        checkpoint_epochs = {
            epoch * steps_per_epoch: epoch for epoch in range(max(1, epochs - 2), epochs + 1)
        }
        return TrainingPlan(
            hyperparameters=hyper,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            trained_tokens=trained_tokens,
            milestones=tuple(sorted(metrics_steps | set(checkpoint_epochs))),
            metrics_steps=metrics_steps,
            checkpoint_epochs=checkpoint_epochs,
        )

    def _reach_step(self, step: int, plan: TrainingPlan, at: int) -> None:
        values = self._metrics(step, plan)
        if step in plan.metrics_steps:
            message = f"Step {step}/{plan.total_steps}: training loss={values['train_loss']:.2f}"
            if "valid_loss" in values:
                message += f", validation loss={values['valid_loss']:.2f}"
            data: dict[str, Any] = {"step": step, "total_steps": plan.total_steps, **values}
            self._event(at, message, type_="metrics", data=data)
        epoch = plan.checkpoint_epochs.get(step)
        if epoch is None:
            return
        final = epoch == plan.hyperparameters.n_epochs
        # The last epoch's checkpoint is the tuned model itself.
        name = self.tuned_model_name if final else f"{self.tuned_model_name}:ckpt-step-{step}"
        metrics: dict[str, float] = {"step": float(step), **values}
        self.checkpoints.append(
            Checkpoint(identifiers.checkpoint_id(), at, name, step, metrics, self.id)
        )
        if not final:
            self._event(at, f"Checkpoint created at step {step} with Snapshot ID: {name}")

    def _succeed(self, at: int) -> None:
        assert self.plan is not None  # noqa: S101
        self.fine_tuned_model = self.tuned_model_name
        self.trained_tokens = self.plan.trained_tokens
        self.status = "succeeded"
        self.finished_at = at
        self._event(at, f"New fine-tuned model created: {self.tuned_model_name}")
        self._event(at, "The job has successfully completed")

    def _fail(self, code: str, message: str, param: str | None, at: int) -> None:
        self.status = "failed"
        self.finished_at = at
        self.error = {"code": code, "message": message, "param": param}
        self._event(at, message, level="error")

    def _event(
        self,
        at: int,
        message: str,
        *,
        level: str = "info",
        type_: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(
            JobEvent(identifiers.job_event_id(), at, level, message, type_, data or {})
        )

    def _metrics(self, step: int, plan: TrainingPlan) -> dict[str, float]:
        """A falling, slightly noisy loss curve that depends only on the job and the step."""
        decay = math.exp(-4.0 * step / plan.total_steps)
        smooth_loss = self._loss_floor + (self._loss_start - self._loss_floor) * decay
        noise = _unit(self._curve_key, step) - 0.5
        train_loss = smooth_loss * (1 + 0.12 * noise)
        accuracy = min(1.0, max(0.0, 0.45 + 0.5 * (1 - decay) + 0.03 * noise))
        values = {
            "train_loss": round(train_loss, 5),
            "train_mean_token_accuracy": round(accuracy, 5),
        }
        if self.validation is not None:
            other = _unit(self._curve_key, -step) - 0.5
            values["valid_loss"] = round(smooth_loss * 1.08 + 0.02 + 0.05 * other, 5)
            values["valid_mean_token_accuracy"] = round(max(0.0, accuracy - 0.02), 5)
            if step % plan.steps_per_epoch == 0:
                values["full_valid_loss"] = round(smooth_loss * 1.08 + 0.02, 5)
                values["full_valid_mean_token_accuracy"] = round(
                    max(0.0, 0.43 + 0.5 * (1 - decay)), 5
                )
        return values


def _unit(key: str, index: int) -> float:
    """A number in [0, 1) fixed by key and index (random access, unlike a seeded RNG)."""
    digest = hashlib.blake2b(f"{key}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
