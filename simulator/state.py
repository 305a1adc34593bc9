"""Everything one simulator instance holds in memory, and the rules for changing it.

Files, uploads, jobs and tuned models live here. Handlers and the background ticker
both go through `SimulatorState`, which keeps the side effects of a job finishing
(results file, tuned model, webhook) in one place whoever noticed it first.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from simulator import catalog, identifiers, training_data
from simulator.api_errors import OpenAIError
from simulator.config import FaultConfig, SimulatorConfig
from simulator.lifecycle import Job, JobRequest, Terminal
from simulator.recall import AnswerIndex
from simulator.training_data import TrainingAnalysis, TrainingPair

UPLOAD_LIFETIME_SECONDS = 3600


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
    pairs: tuple[TrainingPair, ...]
    answers: AnswerIndex

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_T = TypeVar("_T", bound=_HasId)


def page_after(newest_first: Sequence[_T], after: str | None, limit: int) -> tuple[list[_T], bool]:
    """The page of items that follow `after` (an id), and whether more follow it."""
    start = 0
    if after is not None:
        for index, item in enumerate(newest_first):
            if item.id == after:
                start = index + 1
                break
    page = list(newest_first[start : start + limit])
    return page, start + limit < len(newest_first)


@dataclass(slots=True)
class WebhookRecord:
    event_id: str
    type: str
    job_id: str
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


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.organization_id = identifiers.organization_id(config.org)
        # Called with (webhook event type, job id) when a job reaches a final state.
        self.on_job_finished: Callable[[str, str], None] = lambda _type, _job_id: None
        self.reset()

    def reset(self) -> None:
        self.job_seconds = self.config.job_seconds
        self.faults: FaultConfig = self.config.faults
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.active_jobs: dict[str, Job] = {}
        self.tuned_models: dict[str, TunedModel] = {}
        self.webhooks: list[WebhookRecord] = []
        self.requests_total = 0
        self.faults_injected: Counter[str] = Counter()
        self._analyses: dict[tuple[str, str, str], TrainingAnalysis] = {}
        # Jobs trained on the same file share one index of their answers.
        self._answer_indexes: dict[tuple[TrainingPair, ...], AnswerIndex] = {}

    # -- files -------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(identifiers.file_id(), filename, purpose, int(time.time()), content)
        self.files[stored.id] = stored
        return stored

    def file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise OpenAIError(404, f"No such File object: {file_id}", param="id")
        return stored

    def delete_file(self, file_id: str) -> None:
        self.file(file_id)
        del self.files[file_id]

    def files_newest_first(self, purpose: str | None) -> list[StoredFile]:
        chosen = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        return chosen[::-1]

    # -- uploads -----------------------------------------------------------------

    def upload(self, upload_id: str) -> Upload:
        found = self.uploads.get(upload_id)
        if found is None:
            raise OpenAIError(404, f"No such Upload object: {upload_id}", param="upload_id")
        return found

    # -- jobs --------------------------------------------------------------------

    def analysis(self, stored: StoredFile, method: str, model: str) -> TrainingAnalysis:
        """A file's analysis for one kind of job; files never change, so it is kept."""
        info = catalog.resolve(model)
        encoding = info.encoding if info else "o200k_base"
        key = (stored.id, method, model)
        found = self._analyses.get(key)
        if found is None:
            found = training_data.analyze(stored.content, method, model, encoding)
            self._analyses[key] = found
        return found

    def create_job(self, request: JobRequest) -> Job:
        training = self.analysis(
            self.file(request.training_file), request.method, request.base_snapshot
        )
        validation = (
            self.analysis(self.file(request.validation_file), request.method, request.base_snapshot)
            if request.validation_file
            else None
        )
        job = Job(
            request=request,
            organization_id=self.organization_id,
            org_slug=self.config.org,
            training=training,
            validation=validation,
            now_wall=time.time(),
            now_mono=time.monotonic(),
        )
        self.jobs[job.id] = job
        self.active_jobs[job.id] = job
        return job

    def job(self, job_id: str) -> Job:
        found = self.jobs.get(job_id)
        if found is None:
            raise OpenAIError(404, f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id")
        self.touch(found)
        return found

    def jobs_newest_first(
        self, metadata_filter: dict[str, str] | None, null_metadata: bool
    ) -> list[Job]:
        chosen: list[Job] = []
        for job in reversed(self.jobs.values()):
            metadata = job.metadata
            if null_metadata and metadata:
                continue
            if metadata_filter and not all(
                (metadata or {}).get(key) == value for key, value in metadata_filter.items()
            ):
                continue
            chosen.append(job)
        return chosen

    def touch(self, job: Job) -> None:
        """Bring a job up to date with the clock, and act on it finishing."""
        if job.terminal:
            return
        outcome = job.advance(
            now_wall=time.time(), now_mono=time.monotonic(), job_seconds=self.job_seconds
        )
        if outcome is not None:
            self.job_finished(job, outcome)

    def tick(self) -> None:
        """Advance every unfinished job; the background driver calls this."""
        for job in list(self.active_jobs.values()):
            self.touch(job)

    def cancel_job(self, job: Job) -> None:
        job.cancel(time.time())
        self.job_finished(job, "cancelled")

    def fail_job(self, job: Job, code: str, message: str) -> None:
        if job.fail_on_request(code, message, time.time()):
            self.job_finished(job, "failed")

    def job_finished(self, job: Job, outcome: Terminal) -> None:
        self.active_jobs.pop(job.id, None)
        if outcome == "succeeded":
            results = self.add_file(
                "step_metrics.csv", "fine-tune-results", job.results_csv_base64()
            )
            job.result_files = [results.id]
            self._register_tuned_models(job)
        self.on_job_finished(f"fine_tuning.job.{outcome}", job.id)

    def _register_tuned_models(self, job: Job) -> None:
        parent = self.tuned_models.get(job.request.model)
        # Tuning a tuned model further keeps what it had learned.
        pairs = (*(parent.pairs if parent else ()), *job.training.pairs)
        index = self._answer_indexes.get(pairs)
        if index is None:
            index = self._answer_indexes[pairs] = AnswerIndex(pairs)
        info = catalog.resolve(job.request.base_snapshot)
        encoding = info.encoding if info else "o200k_base"
        names = [checkpoint.model for checkpoint in job.checkpoints]
        if job.tuned_model_name not in names:
            names.append(job.tuned_model_name)
        for name in names:
            self.tuned_models[name] = TunedModel(
                id=name,
                base_snapshot=job.request.base_snapshot,
                encoding=encoding,
                created=job.finished_at or int(time.time()),
                owned_by=self.organization_id,
                job_id=job.id,
                pairs=pairs,
                answers=index,
            )

    # -- reporting -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter()
        by_metadata: dict[str, Counter[str]] = {}
        for job in self.jobs.values():
            by_status[job.status] += 1
            for key, value in (job.metadata or {}).items():
                by_metadata.setdefault(key, Counter())[value] += 1
        webhook_status = Counter(record.status for record in self.webhooks)
        return {
            "job_seconds": self.job_seconds,
            "files": len(self.files),
            "uploads": len(self.uploads),
            "jobs": {
                "total": len(self.jobs),
                "active": len(self.active_jobs),
                "by_status": dict(by_status),
                "by_metadata": {key: dict(values) for key, values in by_metadata.items()},
            },
            "tuned_models": len({model.job_id for model in self.tuned_models.values()}),
            "requests": {"total": self.requests_total, "faults": dict(self.faults_injected)},
            "faults": self.faults.model_dump(mode="json"),
            "webhooks": {
                "configured": self.config.webhook_url is not None,
                "by_status": dict(webhook_status),
                "recent": [record.to_dict() for record in self.webhooks[-50:]],
            },
        }
