"""The evaluation a job gets when it succeeds: its tuned model against its base model
on held-out examples, the seeds' final comparison done with numbers.

The examples are the job's `validation_dataset_id`, else the validation part of
its dataset's split (`validation_fraction` at upload). Neither: no evaluation.
The id derives from the job's, so a sync step that runs twice starts one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from service import tasks
from service.chat.targets import base_target
from service.domain.evaluations import TEXT_METRICS, EvaluationStatus
from service.domain.records import Dataset, Evaluation, EvaluationModel, Job
from service.domain.stamps import now_iso
from service.errors import ServiceError
from service.evaluations.view import JobEvaluation, job_evaluation
from service.resources import Resources
from service.store.records import WriteConflict

logger = logging.getLogger(__name__)


def automatic_evaluation_id(job_id: str) -> str:
    digest = hashlib.blake2b(f"evaluation|{job_id}".encode(), digest_size=15)
    return "eval_" + digest.hexdigest()


async def held_out_dataset(resources: Resources, job: Job) -> Dataset | None:
    """The ready validation examples of the job's own tenant, if it has any."""
    candidate = job.held_out_dataset_id
    if candidate is None:  # a job stored before its creation recorded them
        candidate = job.validation_dataset_id
        if candidate is None:
            training = await resources.datasets.get(job.dataset_id)
            candidate = training.validation_dataset_id if training is not None else None
    if not candidate:
        return None
    dataset = await resources.datasets.get(candidate)
    if (
        dataset is None
        or dataset.tenant != job.tenant
        or dataset.status != "ready"
        or dataset.kind == "preference"
        or not dataset.example_count
    ):
        return None
    return dataset


async def start_job_evaluation(resources: Resources, job: Job) -> str | None:
    """Store and enqueue the job's evaluation (once); its id, or None when there is
    nothing to evaluate on. Called once the tuned model answers chat."""
    settings = resources.settings
    if not settings.evaluation_auto or not job.fine_tuned_model:
        return None
    dataset = await held_out_dataset(resources, job)
    if dataset is None:
        return None
    try:
        base = base_target(resources, job.model)
    except ServiceError as exc:  # no provider serves the base model here
        logger.warning(
            "cannot evaluate a job: its base model has no provider",
            extra={"job_id": job.id, "error": exc.detail},
        )
        return None
    now = now_iso()
    evaluation = Evaluation(
        id=automatic_evaluation_id(job.id),
        tenant=job.tenant,
        status=EvaluationStatus.QUEUED,
        dataset_id=dataset.id,
        job_id=job.id,
        origin="job",
        models=[
            EvaluationModel(model=job.fine_tuned_model, provider=job.provider, role="tuned"),
            EvaluationModel(model=base.model, provider=base.provider.name, role="base"),
        ],
        metrics=list(TEXT_METRICS),
        temperature=0.0,
        max_examples=settings.evaluation_auto_max_examples,
        total=min(dataset.example_count or 0, settings.evaluation_auto_max_examples),
        created_at=now,
        updated_at=now,
    )
    try:
        await resources.evaluations.create(evaluation)
    except WriteConflict:
        pass  # an earlier run of this step made it
    await tasks.enqueue_evaluation(resources.queue, evaluation.id)
    return evaluation.id


async def job_evaluation_of(resources: Resources, job: Job) -> JobEvaluation | None:
    """The brief of the evaluation the job started, if it started one."""
    if job.evaluation_id is None:
        return None
    found = await resources.evaluations.get(job.evaluation_id)
    return job_evaluation(found) if found is not None else None


async def job_evaluations(resources: Resources, jobs: Sequence[Job]) -> dict[str, JobEvaluation]:
    """Briefs of many jobs' evaluations in one read, by job id."""
    wanted = {job.evaluation_id: job.id for job in jobs if job.evaluation_id}
    found = await resources.evaluations.many(wanted)
    return {wanted[e.id]: job_evaluation(e) for e in found}
