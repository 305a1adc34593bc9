"""`/evaluations`: score models' answers against a dataset's reference answers.

The API checks and records; the worker asks the models and scores the answers
(`service.evaluations`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.auth import Injected, Tenant
from service.api.idempotency import Outcome, fingerprint, run_once
from service.api.links import location
from service.api.openapi_docs import example_body
from service.api.pagination import MAX_LIMIT, ListResponse, walk_newest_first
from service.api.problems import problems
from service.domain.charts import evaluation_svg
from service.domain.evaluations import TEXT_METRICS, EvaluationStatus, is_finished
from service.domain.records import Evaluation as EvaluationRecord
from service.errors import MalformedRequest
from service.evaluations.creation import NewEvaluation, cancel_evaluation, create_evaluation
from service.evaluations.view import Evaluation, ResultRow, public_evaluation, public_row

MetricName = Literal["exact_match", "chrf", "grader"]


class GraderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="Any chat model you may use")
    rubric: str | None = Field(
        default=None,
        min_length=1,
        max_length=4000,
        description="How to score 1-5; the service's default rubric compares with the reference",
    )


class EvaluationCreate(BaseModel):
    """Evaluate `models` (or a job's tuned model against its base) on a dataset."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_id": "ds_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "job_id": "job_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "metrics": ["exact_match", "chrf"],
                    "max_examples": 200,
                },
                {
                    "dataset_id": "ds_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "models": ["ft:gpt-4o-mini-2024-07-18:org:hiroyuki:abc123", "gpt-4o-mini"],
                    "grader": {"model": "gpt-4.1"},
                },
            ]
        },
    )

    dataset_id: str = Field(min_length=3, max_length=64)
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Models to compare, first against second for the win rate",
    )
    job_id: str | None = Field(
        default=None,
        min_length=3,
        max_length=64,
        description="Instead of models: the job's tuned model against its base model",
    )
    metrics: list[MetricName] = Field(
        default_factory=lambda: list(TEXT_METRICS),
        min_length=1,
        max_length=3,
        description="grader needs `grader`; giving `grader` adds it",
    )
    max_examples: int | None = Field(
        default=None, ge=1, description="Evaluate the dataset's first N examples"
    )
    grader: GraderSpec | None = None
    temperature: float | None = Field(default=0.0, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=128_000)

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> EvaluationCreate:
        if (self.models is None) == (self.job_id is None):
            raise ValueError("give models (a list) or job_id, not both")
        return self

    def new_evaluation(self) -> NewEvaluation:
        return NewEvaluation(
            dataset_id=self.dataset_id,
            models=list(self.models or []),
            job_id=self.job_id,
            metrics=list(self.metrics),
            max_examples=self.max_examples,
            grader_model=self.grader.model if self.grader else None,
            grader_rubric=self.grader.rubric if self.grader else None,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )


def _after_index(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isdigit():
        raise MalformedRequest(
            f"after: {after!r} is not a row index (a whole number)", code="invalid_cursor"
        )
    return int(after)


class EvaluationController(Controller):
    path = "/evaluations"
    tags = ["Evaluations"]

    @post(
        "/",
        operation_id="CreateEvaluation",
        summary="Score models' answers against a dataset's reference answers",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 413, 422, 429, 503),
    )
    async def create_evaluation(
        self,
        request: Request[Any, Any, Any],
        resources: Injected,
        tenant: Tenant,
        data: Annotated[EvaluationCreate, example_body(EvaluationCreate)],
    ) -> Response[Evaluation]:
        async def produce() -> Outcome:
            evaluation = await create_evaluation(resources, tenant, data.new_evaluation())
            return Outcome(
                HTTP_202_ACCEPTED,
                public_evaluation(evaluation).model_dump(mode="json"),
                {"Location": location(request, f"/evaluations/{evaluation.id}")},
            )

        return await run_once(
            request, resources, tenant, fingerprint(data.model_dump_json()), produce
        )

    @get(
        "/",
        operation_id="ListEvaluations",
        summary="List evaluations, newest first",
        responses=problems(400, 401, 429),
    )
    async def list_evaluations(
        self,
        resources: Injected,
        tenant: Tenant,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: FromQuery[str | None] = None,
        job_id: FromQuery[str | None] = None,
        status: FromQuery[EvaluationStatus | None] = None,
    ) -> ListResponse[Evaluation]:
        store = resources.evaluations

        def matches(record: EvaluationRecord) -> bool:
            if job_id is not None and record.job_id != job_id:
                return False
            return status is None or record.status == status

        found, has_more = await walk_newest_first(
            lambda size, cursor: store.page(tenant, limit=size, after=cursor),
            store.many,
            matches if job_id is not None or status is not None else None,
            limit=limit,
            after=after,
        )
        return ListResponse(data=[public_evaluation(e) for e in found], has_more=has_more)

    @get(
        "/{evaluation_id:str}",
        operation_id="GetEvaluation",
        summary="One evaluation: status, progress, per-model scores, win rate and cost",
        responses=problems(400, 401, 404, 429),
    )
    async def get_evaluation(
        self, resources: Injected, tenant: Tenant, evaluation_id: FromPath[str]
    ) -> Evaluation:
        record = await resources.evaluations.get_for_tenant(tenant, evaluation_id)
        done = await resources.evaluations.row_count(evaluation_id)
        return public_evaluation(record, done=done)

    @get(
        "/{evaluation_id:str}/results",
        operation_id="ListEvaluationResults",
        summary="Per-example rows in dataset order: prompt, reference, each answer and its scores",
        responses=problems(400, 401, 404, 429),
    )
    async def list_results(
        self,
        resources: Injected,
        tenant: Tenant,
        evaluation_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 20,
        after: Annotated[
            str | None, QueryParameter(description="The index of the last row of the last page")
        ] = None,
    ) -> ListResponse[ResultRow]:
        record = await resources.evaluations.get_for_tenant(tenant, evaluation_id)
        rows, has_more = await resources.evaluations.rows_page(
            evaluation_id, total=record.total, limit=limit, after=_after_index(after)
        )
        return ListResponse(data=[public_row(row) for row in rows], has_more=has_more)

    @get(
        "/{evaluation_id:str}/chart.svg",
        operation_id="GetEvaluationChart",
        summary="Each model's mean scores and intervals drawn as an SVG image",
        media_type="image/svg+xml",
        responses=problems(400, 401, 404, 429),
    )
    async def get_chart(
        self, resources: Injected, tenant: Tenant, evaluation_id: FromPath[str]
    ) -> Response[str]:
        record = await resources.evaluations.get_for_tenant(tenant, evaluation_id)
        title = f"{evaluation_id} ({record.status}, {record.done}/{record.total} examples)"
        return Response(
            evaluation_svg(record.summary, record.metrics, title=title),
            media_type="image/svg+xml",
            headers={"Cache-Control": "max-age=3600" if is_finished(record.status) else "no-store"},
        )

    @post(
        "/{evaluation_id:str}/cancel",
        operation_id="CancelEvaluation",
        summary="Stop an evaluation; the rows scored so far stay",
        status_code=HTTP_202_ACCEPTED,
        responses=problems(400, 401, 404, 409, 429),
    )
    async def cancel(
        self, resources: Injected, tenant: Tenant, evaluation_id: FromPath[str]
    ) -> Evaluation:
        record = await cancel_evaluation(resources, tenant, evaluation_id)
        return public_evaluation(record)
