"""An evaluation as callers see it: `GET /evaluations/{id}` answers it, webhook
payloads carry it as `data`, and a job shows the brief form of its own."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.domain.evaluations import EvaluationStatus
from service.domain.records import Evaluation as EvaluationRecord
from service.domain.records import EvaluationRow


class EvaluatedModel(BaseModel):
    model: str
    role: Literal["tuned", "base", "requested"]


class Grader(BaseModel):
    model: str
    rubric: str


class Estimate(BaseModel):
    mean: float
    ci_low: float = Field(description="Lower end of the 95% confidence interval")
    ci_high: float = Field(description="Upper end of the 95% confidence interval")
    n: int = Field(description="Answers scored on this metric")


class TokenUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelSummary(BaseModel):
    model: str
    answered: int
    errors: int = Field(description="Answers the provider refused for good (not 429/5xx)")
    scores: dict[str, Estimate | None] = Field(
        description="Per metric (exact_match 0-1, chrf 0-100, grader 1-5): mean and interval"
    )
    usage: TokenUsage


class WinRate(BaseModel):
    model: str
    over: str
    metric: str = Field(description="The score compared per example (grader, else chrf)")
    wins: int
    losses: int
    ties: int
    compared: int
    rate: float | None = Field(description="(wins + ties / 2) / compared")


class Cost(TokenUsage):
    grader_tokens: int


class Summary(BaseModel):
    models: list[ModelSummary]
    win_rate: WinRate | None = Field(description="The first model over the second")
    cost: Cost


class Progress(BaseModel):
    done: int
    total: int
    percent: float


class EvaluationError(BaseModel):
    code: str
    message: str


class Evaluation(BaseModel):
    """The contract's `Evaluation`."""

    id: str
    object: Literal["evaluation"] = "evaluation"
    status: EvaluationStatus
    dataset_id: str
    job_id: str | None
    origin: Literal["request", "job"]
    models: list[EvaluatedModel]
    metrics: list[str]
    grader: Grader | None
    max_examples: int | None
    temperature: float | None
    max_tokens: int | None
    progress: Progress
    summary: Summary | None
    error: EvaluationError | None
    cancel_requested: bool
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None


class JobEvaluation(BaseModel):
    """The evaluation a job started when it succeeded, in brief."""

    id: str
    status: EvaluationStatus
    progress: Progress
    summary: Summary | None


def progress(record: EvaluationRecord, done: int | None = None) -> Progress:
    count = min(record.total, record.done if done is None else done)
    percent = round(100 * count / record.total, 1) if record.total else 100.0
    return Progress(done=count, total=record.total, percent=percent)


def public_evaluation(record: EvaluationRecord, *, done: int | None = None) -> Evaluation:
    """`done`: rows scored right now (the record's count is updated once per run)."""
    return Evaluation(
        id=record.id,
        status=record.status,
        dataset_id=record.dataset_id,
        job_id=record.job_id,
        origin=record.origin,
        models=[EvaluatedModel(model=m.model, role=m.role) for m in record.models],
        metrics=record.metrics,
        grader=Grader(model=record.grader.model, rubric=record.grader.rubric)
        if record.grader
        else None,
        max_examples=record.max_examples,
        temperature=record.temperature,
        max_tokens=record.max_tokens,
        progress=progress(record, done),
        summary=Summary.model_validate(record.summary) if record.summary else None,
        error=EvaluationError(**record.error.model_dump()) if record.error else None,
        cancel_requested=record.cancel_requested,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )


def job_evaluation(record: EvaluationRecord, *, done: int | None = None) -> JobEvaluation:
    return JobEvaluation(
        id=record.id,
        status=record.status,
        progress=progress(record, done),
        summary=Summary.model_validate(record.summary) if record.summary else None,
    )


class Answer(BaseModel):
    model: str
    content: str | None
    scores: dict[str, float | None]
    grader_reason: str | None
    grader_error: str | None
    error: dict[str, Any] | None
    usage: TokenUsage | None
    latency_ms: float | None


class ResultRow(BaseModel):
    """One example: the prompt, the reference answer, and every model's answer and scores."""

    index: int = Field(description="The example's position in the dataset, from 0")
    prompt: list[dict[str, Any]]
    reference: str | None
    skipped: str | None = Field(description="Why the example could not be asked, if it was not")
    answers: list[Answer]


def public_row(row: EvaluationRow) -> ResultRow:
    return ResultRow(
        index=row.index,
        prompt=row.prompt,
        reference=row.reference,
        skipped=row.skipped,
        answers=[
            Answer(
                model=a.model,
                content=a.content,
                scores=a.scores,
                grader_reason=a.grader_reason,
                grader_error=a.grader_error,
                error=a.error,
                usage=TokenUsage(**a.usage) if a.usage else None,
                latency_ms=a.latency_ms,
            )
            for a in row.answers
        ],
    )
