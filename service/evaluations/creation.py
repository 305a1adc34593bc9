"""Starting an evaluation: everything checked before anything is stored.

The dataset must be the caller's, ready, and of chat examples. The models are
named outright, or by a succeeded job (its tuned model and the base model it
was trained from). Every model, and the grader, must be one the tenant may
chat with: another tenant's tuned model is a 404, exactly as for `/chat`.
Then the evaluation is stored `queued` and the worker is asked to run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service import tasks
from service.chat.targets import job_targets, model_target
from service.domain.evaluations import DEFAULT_RUBRIC, TEXT_METRICS, EvaluationStatus
from service.domain.records import (
    Dataset,
    Evaluation,
    EvaluationGrader,
    EvaluationModel,
)
from service.domain.stamps import new_id, now_iso
from service.errors import Conflict, InvalidContent, NotFound
from service.resources import Resources


@dataclass(frozen=True, slots=True)
class NewEvaluation:
    dataset_id: str
    models: Sequence[str] = ()
    job_id: str | None = None
    metrics: Sequence[str] = field(default_factory=lambda: list(TEXT_METRICS))
    max_examples: int | None = None
    grader_model: str | None = None
    grader_rubric: str | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None


def _field_error(path: str, code: str, message: str) -> dict[str, object]:
    return {"errors": [{"line": None, "path": path, "code": code, "message": message}]}


def check_dataset(dataset: Dataset) -> None:
    if dataset.status != "ready":
        raise Conflict(
            f"Dataset {dataset.id} is {dataset.status}, not ready to evaluate on",
            code="dataset_not_ready",
        )
    if dataset.kind == "preference":
        raise InvalidContent(
            f"Dataset {dataset.id} holds preference pairs; an evaluation needs chat examples "
            "whose last assistant message is the reference answer",
            code="dataset_kind_not_supported",
            extra=_field_error("dataset_id", "not_chat", "not a chat dataset"),
        )


async def create_evaluation(
    resources: Resources, tenant: str, request: NewEvaluation
) -> Evaluation:
    settings = resources.settings
    if bool(request.models) == bool(request.job_id):
        raise InvalidContent(
            "Give models (a list), or job_id (its tuned model against its base), not both",
            code="invalid_models",
            extra=_field_error("models", "one_of", "give models or job_id"),
        )
    dataset = await resources.datasets.get_for_tenant(tenant, request.dataset_id)
    check_dataset(dataset)
    cap = settings.evaluation_max_examples
    if request.max_examples is not None and request.max_examples > cap:
        raise InvalidContent(
            f"max_examples is {request.max_examples}; this service evaluates at most {cap}",
            code="too_many_examples",
            extra=_field_error("max_examples", "too_large", f"at most {cap}"),
        )
    models: list[EvaluationModel] = []
    if request.job_id:
        tuned, base = await job_targets(resources, tenant, request.job_id)
        models = [
            EvaluationModel(model=tuned.model, provider=tuned.provider.name, role="tuned"),
            EvaluationModel(model=base.model, provider=base.provider.name, role="base"),
        ]
    else:
        repeated = sorted({m for m in request.models if list(request.models).count(m) > 1})
        if repeated:
            raise InvalidContent(
                f"models lists {', '.join(repeated)} more than once",
                code="duplicate_models",
                extra=_field_error("models", "duplicate", "each model once"),
            )
        for name in request.models:
            target = await model_target(resources, tenant, name)
            models.append(
                EvaluationModel(model=target.model, provider=target.provider.name, role="requested")
            )
    metrics = [m for m in TEXT_METRICS if m in request.metrics]
    grader = None
    if "grader" in request.metrics and not request.grader_model:
        raise InvalidContent(
            'The grader metric needs a grader: {"model": ..., "rubric": ...}',
            code="grader_missing",
            extra=_field_error("grader", "missing", "name a grader model"),
        )
    if request.grader_model:
        try:
            target = await model_target(resources, tenant, request.grader_model)
        except NotFound as exc:
            raise NotFound(f"grader: {exc.detail}", code=exc.code) from None
        grader = EvaluationGrader(
            model=target.model,
            provider=target.provider.name,
            rubric=request.grader_rubric or DEFAULT_RUBRIC,
        )
        metrics.append("grader")
    if not metrics:
        raise InvalidContent(
            "metrics names nothing to score with (exact_match, chrf, grader)",
            code="no_metrics",
            extra=_field_error("metrics", "empty", "name at least one metric"),
        )
    limit = request.max_examples or cap
    total = min(dataset.example_count or 0, limit)
    if total == 0:
        raise InvalidContent(
            f"Dataset {dataset.id} has no examples to evaluate on",
            code="no_examples",
            extra=_field_error("dataset_id", "empty", "no examples"),
        )
    now = now_iso()
    evaluation = Evaluation(
        id=new_id("eval"),
        tenant=tenant,
        status=EvaluationStatus.QUEUED,
        dataset_id=dataset.id,
        job_id=request.job_id,
        origin="request",
        models=models,
        metrics=metrics,
        grader=grader,
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        max_examples=request.max_examples,
        total=total,
        created_at=now,
        updated_at=now,
    )
    await resources.evaluations.create(evaluation)
    # Enqueue once the record is durable; the reconciler covers a lost enqueue.
    await tasks.enqueue_evaluation(resources.queue, evaluation.id)
    return evaluation


async def cancel_evaluation(resources: Resources, tenant: str, evaluation_id: str) -> Evaluation:
    """A queued evaluation stops at once; a running one at the worker's next look (it
    keeps the rows scored so far). Finished ones cannot be cancelled (409)."""
    found = await resources.evaluations.get_for_tenant(tenant, evaluation_id)
    if found.status in (
        EvaluationStatus.SUCCEEDED,
        EvaluationStatus.FAILED,
        EvaluationStatus.CANCELLED,
    ):
        raise Conflict(
            f"The evaluation is already {found.status}; it cannot be cancelled",
            code="evaluation_finished",
        )

    def request(current: Evaluation) -> Evaluation | None:
        if current.status not in (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING):
            return None
        current.cancel_requested = True
        current.updated_at = now_iso()
        if current.status == EvaluationStatus.QUEUED:
            # No run has started scoring (one that read "queued" fails its write and
            # re-reads); a cancelled evaluation sends no webhook.
            current.status = EvaluationStatus.CANCELLED
            current.finished_at = current.updated_at
            current.announced = True
        return current

    updated = await resources.evaluations.update(evaluation_id, request)
    # The worker makes it final (and announces nothing: the caller asked for it).
    await tasks.run_evaluation_now(resources.queue, evaluation_id)
    return updated
