"""Everything one simulator instance holds, and the rules for changing it.

Files, uploads, jobs and tuned models live here, in memory. Handlers and the
background ticker both go through `SimulatorState`, which keeps the side effects of
a job finishing (results file, tuned model, webhook) in one place whoever noticed it
first. With a state directory (`config.state_dir`) every change is also written
through to a `StateStore`, and `open()` reads back what an earlier process left.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from simulator import catalog, identifiers, training_data
from simulator.api_errors import OpenAIError
from simulator.config import FaultConfig, SimulatorConfig
from simulator.lifecycle import Job, JobRequest, Terminal
from simulator.persistence import MAX_WEBHOOK_RECORDS, PROGRESS_SAVE_SECONDS, StateStore
from simulator.recall import AnswerIndex
from simulator.records import (
    UPLOAD_LIFETIME_SECONDS,
    AnalysisKey,
    StoredFile,
    TunedModel,
    Upload,
    UploadPart,
    WebhookRecord,
)
from simulator.training_data import TrainingAnalysis, TrainingPair

__all__ = [
    "UPLOAD_LIFETIME_SECONDS",
    "SimulatorState",
    "StoredFile",
    "TunedModel",
    "Upload",
    "UploadPart",
    "WebhookRecord",
    "page_after",
]

logger = logging.getLogger("simulator.state")


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


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.organization_id = identifiers.organization_id(config.org)
        # Called with (webhook event type, job id) when a job reaches a final state.
        self.on_job_finished: Callable[[str, str], None] = lambda _type, _job_id: None
        self._store: StateStore | None = None
        self._position_saved_at = 0.0
        self._clear_memory()

    # -- resetting -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every file, job and model, on disk too; settings go back to the flags."""
        self._clear_memory()
        if self._store is not None:
            self._store.clear()

    def _clear_memory(self) -> None:
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
        self._analyses: dict[AnalysisKey, TrainingAnalysis] = {}
        # Jobs trained on the same file share one index of their answers.
        self._answer_indexes: dict[tuple[TrainingPair, ...], AnswerIndex] = {}

    # -- the state directory -------------------------------------------------------

    def open(self) -> None:
        """Take the state directory, if configured, and load what it holds.

        Jobs carry on from where they were when the last process stopped: time the
        simulator was not running does not count towards any job.
        """
        if self.config.state_dir is None or self._store is not None:
            return
        store = StateStore(self.config.state_dir)
        try:
            self._load(store)
        except BaseException:
            store.close()
            self._clear_memory()
            raise
        self._store = store

    def close(self) -> None:
        """Write every running job's exact position and let go of the state directory."""
        store, self._store = self._store, None
        if store is None:
            return
        try:
            with store.transaction():
                for job in self.active_jobs.values():
                    store.put_job(job, with_position=True)
        finally:
            store.close()

    def _load(self, store: StateStore) -> None:
        loaded = store.load()
        self._clear_memory()
        now_mono = time.monotonic()
        self._analyses = dict(loaded.analyses)
        self.files = {stored.id: stored for stored in loaded.files}
        self.uploads = {upload.id: upload for upload in loaded.uploads}
        for saved in loaded.jobs:
            request = saved.fixed["request"]
            method, snapshot = request["method"], request["base_snapshot"]
            training = self._saved_analysis((request["training_file"], method, snapshot))
            validation_file = request["validation_file"]
            validation = (
                self._saved_analysis((validation_file, method, snapshot))
                if validation_file
                else None
            )
            if training is None or (validation_file and validation is None):
                logger.warning("job %s lost its training data; leaving it out", saved.fixed["id"])
                continue
            job = Job.restore(
                fixed=saved.fixed,
                state=saved.state,
                training=training,
                validation=validation,
                events=saved.events,
                checkpoints=saved.checkpoints,
                now_mono=now_mono,
            )
            store.mark_saved(job)
            self.jobs[job.id] = job
            if not job.terminal:
                self.active_jobs[job.id] = job
        for model in loaded.tuned_models:
            lineage_analyses = [self._analyses.get(key) for key in model.lineage]
            if any(analysis is None for analysis in lineage_analyses):
                logger.warning("tuned model %s lost its training data; leaving it out", model.id)
                continue
            pairs = tuple(
                pair for analysis in lineage_analyses if analysis for pair in analysis.pairs
            )
            self.tuned_models[model.id] = TunedModel(
                id=model.id,
                base_snapshot=model.base_snapshot,
                encoding=model.encoding,
                created=model.created,
                owned_by=model.owned_by,
                job_id=model.job_id,
                lineage=model.lineage,
                pairs=pairs,
                answers=self._answer_index(pairs),
            )
        self.webhooks = list(loaded.webhooks)

    def _saved_analysis(self, key: AnalysisKey) -> TrainingAnalysis | None:
        """A job's analysis as saved, or made again from its file if the file is still here."""
        found = self._analyses.get(key)
        if found is None and key[0] in self.files:
            found = self._analysis_of(self.files[key[0]], key[1], key[2])
        return found

    @contextlib.contextmanager
    def _batch(self) -> Iterator[StateStore | None]:
        """Changes made inside reach the disk together (one commit), if there is a disk."""
        store = self._store
        if store is None:
            yield None
            return
        with store.transaction():
            yield store

    # -- files -------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(identifiers.file_id(), filename, purpose, int(time.time()), content)
        if self._store is not None:
            self._store.put_file(stored)
        self.files[stored.id] = stored
        return stored

    def file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise OpenAIError(404, f"No such File object: {file_id}", param="id")
        return stored

    def delete_file(self, file_id: str) -> None:
        self.file(file_id)
        if self._store is not None:
            self._store.delete_file(file_id)
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

    def add_upload(self, upload: Upload) -> None:
        if self._store is not None:
            self._store.put_upload(upload)
        self.uploads[upload.id] = upload

    def add_upload_part(self, upload: Upload, part: UploadPart) -> None:
        if self._store is not None:
            self._store.put_upload_part(upload.id, part)
        upload.parts[part.id] = part

    def end_upload(self, upload: Upload, status: str, file: StoredFile | None = None) -> None:
        """An upload completed (with its file), cancelled or expired; its parts are dropped."""
        upload.status = status
        upload.file = file
        upload.parts.clear()
        if self._store is not None:
            self._store.put_upload(upload)

    # -- jobs --------------------------------------------------------------------

    def analysis(self, stored: StoredFile, method: str, model: str) -> TrainingAnalysis:
        """A file's analysis for one kind of job; files never change, so it is kept."""
        found = self._analyses.get((stored.id, method, model))
        if found is None:
            found = self._analysis_of(stored, method, model)
            if self._store is not None:
                self._store.put_analysis((stored.id, method, model), found)
        return found

    def _analysis_of(self, stored: StoredFile, method: str, model: str) -> TrainingAnalysis:
        info = catalog.resolve(model)
        encoding = info.encoding if info else "o200k_base"
        found = training_data.analyze(stored.content, method, model, encoding)
        self._analyses[(stored.id, method, model)] = found
        return found

    def create_job(self, request: JobRequest) -> Job:
        with self._batch() as store:
            training = self.analysis(
                self.file(request.training_file), request.method, request.base_snapshot
            )
            validation = (
                self.analysis(
                    self.file(request.validation_file), request.method, request.base_snapshot
                )
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
            if store is not None:
                store.put_job(job)
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
        store = self._store
        if store is None:
            self._advance(job)
            return
        with store.transaction():
            self._advance(job)
            self._save_job(job)

    def _advance(self, job: Job) -> None:
        outcome = job.advance(
            now_wall=time.time(), now_mono=time.monotonic(), job_seconds=self.job_seconds
        )
        if outcome is not None:
            self.job_finished(job, outcome)

    def tick(self) -> None:
        """Advance every unfinished job; the background driver calls this."""
        with self._batch():
            for job in list(self.active_jobs.values()):
                self.touch(job)
            now = time.monotonic()
            if self._store is not None and now - self._position_saved_at >= PROGRESS_SAVE_SECONDS:
                self._position_saved_at = now
                for job in self.active_jobs.values():
                    self._save_job(job, with_position=True)

    def _save_job(self, job: Job, *, with_position: bool = False) -> None:
        # A job forgotten by a reset while a request held it must not come back.
        if self._store is not None and self.jobs.get(job.id) is job:
            self._store.put_job(job, with_position=with_position)

    def cancel_job(self, job: Job) -> None:
        with self._batch():
            job.cancel(time.time())
            self.job_finished(job, "cancelled")
            self._save_job(job)

    def pause_job(self, job: Job) -> None:
        job.pause(time.time())
        self._save_job(job, with_position=True)

    def resume_job(self, job: Job) -> None:
        job.resume(time.time())
        self._save_job(job, with_position=True)

    def fail_job(self, job: Job, code: str, message: str) -> None:
        with self._batch():
            if job.fail_on_request(code, message, time.time()):
                self.job_finished(job, "failed")
            self._save_job(job)

    def job_finished(self, job: Job, outcome: Terminal) -> None:
        self.active_jobs.pop(job.id, None)
        with self._batch():
            if outcome == "succeeded":
                results = self.add_file(
                    "step_metrics.csv", "fine-tune-results", job.results_csv_base64()
                )
                job.result_files = [results.id]
                self._register_tuned_models(job)
            self.on_job_finished(f"fine_tuning.job.{outcome}", job.id)

    def _answer_index(self, pairs: tuple[TrainingPair, ...]) -> AnswerIndex:
        index = self._answer_indexes.get(pairs)
        if index is None:
            index = self._answer_indexes[pairs] = AnswerIndex(pairs)
        return index

    def _register_tuned_models(self, job: Job) -> None:
        parent = self.tuned_models.get(job.request.model)
        # Tuning a tuned model further keeps what it had learned.
        pairs = (*(parent.pairs if parent else ()), *job.training.pairs)
        training_key = (job.request.training_file, job.request.method, job.request.base_snapshot)
        lineage = (*(parent.lineage if parent else ()), training_key)
        index = self._answer_index(pairs)
        info = catalog.resolve(job.request.base_snapshot)
        encoding = info.encoding if info else "o200k_base"
        names = [checkpoint.model for checkpoint in job.checkpoints]
        if job.tuned_model_name not in names:
            names.append(job.tuned_model_name)
        for name in names:
            model = TunedModel(
                id=name,
                base_snapshot=job.request.base_snapshot,
                encoding=encoding,
                created=job.finished_at or int(time.time()),
                owned_by=self.organization_id,
                job_id=job.id,
                lineage=lineage,
                pairs=pairs,
                answers=index,
            )
            if self._store is not None:
                self._store.put_tuned_model(model)
            self.tuned_models[name] = model

    def delete_tuned_model(self, model_id: str) -> bool:
        """Forget a tuned model's name; False if there is no such tuned model."""
        if model_id not in self.tuned_models:
            return False
        if self._store is not None:
            self._store.delete_tuned_model(model_id)
        del self.tuned_models[model_id]
        return True

    # -- webhooks --------------------------------------------------------------------

    def add_webhook(self, record: WebhookRecord) -> None:
        if self._store is not None:
            self._store.put_webhook(record, new=True)
        self.webhooks.append(record)
        del self.webhooks[:-MAX_WEBHOOK_RECORDS]

    def save_webhook(self, record: WebhookRecord) -> None:
        if self._store is not None:
            self._store.put_webhook(record, new=False)

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
            "state_dir": str(self.config.state_dir) if self._store is not None else None,
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
