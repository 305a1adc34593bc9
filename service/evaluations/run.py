"""Running an evaluation (the worker's `run_evaluation`), one bounded run at a time.

A run re-reads the evaluation, reads the dataset's examples, and asks every
model each example not scored yet, for about EVALUATION_RUN_SECONDS:

- examples go concurrently; each chat call first takes a slot of its
  provider's bound (EVALUATION_CONCURRENCY_PER_PROVIDER calls in flight per
  worker process), so a big evaluation cannot crowd out a provider;
- calls go through the provider seam (`Provider.chat`), the same one `/chat`
  uses; 429, 5xx, timeouts and dropped connections are retried with capped,
  jittered backoff that honours Retry-After; any other refusal is final and
  recorded on that answer;
- an example's row (prompt, reference, each answer and its scores) is written
  under its index once every answer is final, so a crash or a repeated run
  loses or repeats at most the examples in flight.

At the end of a run the summary is recomputed from every row and written with
the progress. The next run is scheduled at once while examples remain; a run
that scored nothing backs off, and after MAX_STALLED_RUNS such runs in a row
(a provider down for hours) the evaluation fails saying why. A finished
evaluation emits `evaluation.completed` (or `evaluation.failed`) once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from service import tasks
from service.domain.evaluations import (
    EvaluationStatus,
    GradeUnreadable,
    Question,
    TextScorer,
    UnusableExample,
    grader_request,
    is_finished,
    question_of,
    read_grade,
    summarize,
)
from service.domain.jobs import retry_delay
from service.domain.records import (
    Evaluation,
    EvaluationAnswer,
    EvaluationError,
    EvaluationModel,
    EvaluationRow,
)
from service.domain.stamps import now_iso
from service.providers.base import ProviderError
from service.resources import Resources
from service.store.records import RecordGone
from service.webhooks.events import emit_evaluation_event

logger = logging.getLogger(__name__)

# Runs in a row that scored nothing before the evaluation fails (hours, at the cap).
MAX_STALLED_RUNS = 40
STALLED_DELAY_CAP = 300.0
# The longest wait between two tries of one chat call inside a run.
CALL_RETRY_CAP = 10.0
# How often a run looks for a cancel.
CANCEL_LOOK_SECONDS = 0.5
# A run uses at most this share of the task's time limit, so it ends on its own.
TASK_TIME_SHARE = 0.5

Outcome = str | float
Example = Question | str  # a question, or why the example cannot be asked


class ProviderBounds:
    """At most `limit` chat calls in flight to each provider, in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}

    def of(self, provider: str) -> asyncio.Semaphore:
        slot = self._slots.get(provider)
        if slot is None:
            slot = self._slots[provider] = asyncio.Semaphore(self.limit)
        return slot


class _NotNow(Exception):
    """The run's time is up before this call got an answer: a later run asks again."""


@dataclass
class _Tally:
    scored: int = 0
    last_failure: ProviderError | None = None
    failures: int = 0
    stopped: bool = False


def _usage(completion: dict[str, Any]) -> dict[str, int] | None:
    usage = completion.get("usage")
    if not isinstance(usage, dict):
        return None
    return {
        key: int(usage.get(key) or 0)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


def _content(completion: dict[str, Any]) -> str | None:
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def read_examples(path: str, count: int) -> list[Example]:
    """The first `count` examples of a normalized JSONL file, split into questions."""
    found: list[Example] = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if len(found) >= count:
                break
            if not line.strip():
                continue
            try:
                found.append(question_of(json.loads(line)))
            except UnusableExample as exc:
                found.append(str(exc))
    return found


class EvaluationRun:
    def __init__(self, resources: Resources, bounds: ProviderBounds) -> None:
        self.resources = resources
        self.store = resources.evaluations
        self.settings = resources.settings
        self.bounds = bounds

    async def step(self, evaluation_id: str) -> Outcome:
        """One run; "finished", "gone", or the seconds to wait before the next run."""
        evaluation = await self.store.get(evaluation_id)
        if evaluation is None:
            return "gone"
        if is_finished(evaluation.status):
            await self._announce(evaluation)
            return "finished"
        try:
            if evaluation.cancel_requested:
                await self._settle(evaluation_id, _Tally(stopped=True))
                return "finished"
            if evaluation.status == EvaluationStatus.QUEUED:
                evaluation = await self.store.update(evaluation_id, _start)
                if is_finished(evaluation.status):
                    return await self.step(evaluation_id)
            if not self.resources.blobs.exists(evaluation.dataset_id):
                await self._fail(
                    evaluation_id,
                    "dataset_missing",
                    f"Dataset {evaluation.dataset_id} was deleted before it was evaluated",
                )
                return "finished"
            examples = await anyio.to_thread.run_sync(
                read_examples,
                str(self.resources.blobs.path(evaluation.dataset_id)),
                evaluation.total,
            )
            done = await self.store.row_indexes(evaluation_id)
            todo = [i for i in range(len(examples)) if i not in done]
            tally = await self._score(evaluation, examples, todo)
            return await self._settle(evaluation_id, tally, total=len(examples))
        except RecordGone:
            return "gone"

    # Scoring -------------------------------------------------------------------

    async def _score(
        self, evaluation: Evaluation, examples: Sequence[Example], todo: list[int]
    ) -> _Tally:
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = min(
            self.settings.evaluation_run_seconds,
            self.settings.task_timeout_seconds * TASK_TIME_SHARE,
        )
        soft_deadline = started + budget
        # In-flight calls are cut here at the latest, well inside the task's time limit.
        hard_deadline = started + self.settings.task_timeout_seconds * 0.8
        tally = _Tally()
        scorer = TextScorer(evaluation.metrics)
        pending = iter(todo)
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(CANCEL_LOOK_SECONDS)
                current = await self.store.get(evaluation.id)
                if current is None or current.cancel_requested or is_finished(current.status):
                    tally.stopped = True
                    stop.set()

        async def lane() -> None:
            for index in pending:
                if stop.is_set() or loop.time() >= soft_deadline:
                    return
                try:
                    row = await self._example(
                        evaluation,
                        index,
                        examples[index],
                        scorer,
                        tally,
                        soft_deadline,
                        hard_deadline,
                    )
                except _NotNow:
                    continue
                await self.store.save_rows(evaluation.id, [row])
                tally.scored += 1

        lanes = self.bounds.limit * max(1, len(evaluation.models))
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(lane() for _ in range(min(lanes, len(todo)))))
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        return tally

    async def _example(
        self,
        evaluation: Evaluation,
        index: int,
        example: Example,
        scorer: TextScorer,
        tally: _Tally,
        soft_deadline: float,
        hard_deadline: float,
    ) -> EvaluationRow:
        if isinstance(example, str):
            return EvaluationRow(index=index, prompt=[], reference=None, skipped=example)
        answers = await asyncio.gather(
            *(
                self._answer(
                    evaluation, model, example, scorer, tally, soft_deadline, hard_deadline
                )
                for model in evaluation.models
            )
        )
        return EvaluationRow(
            index=index, prompt=example.prompt, reference=example.reference, answers=list(answers)
        )

    async def _answer(
        self,
        evaluation: Evaluation,
        model: EvaluationModel,
        question: Question,
        scorer: TextScorer,
        tally: _Tally,
        soft_deadline: float,
        hard_deadline: float,
    ) -> EvaluationAnswer:
        body: dict[str, Any] = {"model": model.model, "messages": question.prompt}
        if evaluation.temperature is not None:
            body["temperature"] = evaluation.temperature
        if evaluation.max_tokens is not None:
            body["max_tokens"] = evaluation.max_tokens
        started = time.perf_counter()
        try:
            completion = await self._call(model.provider, body, tally, soft_deadline, hard_deadline)
        except ProviderError as exc:
            return EvaluationAnswer(
                model=model.model,
                content=None,
                error={"status": exc.status, "code": exc.code, "message": exc.message},
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        latency = round((time.perf_counter() - started) * 1000, 1)
        content = _content(completion)
        answer = EvaluationAnswer(
            model=model.model,
            content=content,
            usage=_usage(completion),
            latency_ms=latency,
            scores=dict(scorer.score(content or "", question.reference)),
        )
        grader = evaluation.grader
        if grader is not None:
            request = grader_request(
                question.prompt, question.reference, content or "", grader.rubric
            )
            try:
                graded = await self._call(
                    grader.provider,
                    {"model": grader.model, **request},
                    tally,
                    soft_deadline,
                    hard_deadline,
                )
            except ProviderError as exc:
                answer.scores["grader"] = None
                answer.grader_error = f"the grader refused: {exc.message}"
                return answer
            answer.grader_usage = _usage(graded)
            try:
                score, reason = read_grade(_content(graded))
            except GradeUnreadable as exc:
                answer.scores["grader"] = None
                answer.grader_error = str(exc)
            else:
                answer.scores["grader"] = float(score)
                answer.grader_reason = reason
        return answer

    async def _call(
        self,
        provider_name: str,
        body: dict[str, Any],
        tally: _Tally,
        soft_deadline: float,
        hard_deadline: float,
    ) -> dict[str, Any]:
        """One chat completion, retried while the failure is worth retrying and the run
        has time; a final refusal raises ProviderError, running out of time _NotNow."""
        loop = asyncio.get_running_loop()
        provider = self.resources.providers.get(provider_name)
        attempt = 0
        while True:
            attempt += 1
            async with self.bounds.of(provider_name):
                left = hard_deadline - loop.time()
                if left <= 0:
                    raise _NotNow
                try:
                    async with asyncio.timeout(left):
                        return await provider.chat(body)
                except TimeoutError:
                    raise _NotNow from None
                except ProviderError as exc:
                    if not exc.retriable:
                        raise
                    tally.failures += 1
                    tally.last_failure = exc
                    failure = exc
            delay = retry_delay(attempt, retry_after=failure.retry_after, cap=CALL_RETRY_CAP)
            delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            if loop.time() + delay >= soft_deadline:
                raise _NotNow
            await asyncio.sleep(delay)

    # Writing ------------------------------------------------------------------------

    async def _settle(
        self, evaluation_id: str, tally: _Tally, *, total: int | None = None
    ) -> Outcome:
        """Write progress and the summary of every row; finish when all are scored."""
        rows = await self.store.all_rows(evaluation_id)
        plain = [row.model_dump() for row in rows]

        def change(current: Evaluation) -> Evaluation:
            now = now_iso()
            current.updated_at = now
            current.done = len(rows)
            current.summary = summarize(plain, [m.model for m in current.models], current.metrics)
            if total is not None and total < current.total:
                current.total = total  # the file holds fewer examples than recorded
            if is_finished(current.status):
                return current
            if current.cancel_requested:
                current.status = EvaluationStatus.CANCELLED
                current.finished_at = now
                current.announced = True  # the caller asked; nothing to announce
            elif current.done >= current.total:
                current.status = EvaluationStatus.SUCCEEDED
                current.finished_at = now
            elif tally.scored:
                current.stalled_runs = 0
            else:
                current.stalled_runs += 1
                if tally.last_failure is not None:
                    current.last_failure = tally.last_failure.message
                if current.stalled_runs >= MAX_STALLED_RUNS:
                    current.status = EvaluationStatus.FAILED
                    current.finished_at = now
                    current.error = EvaluationError(
                        code="provider_unavailable",
                        message=f"No answer could be scored in {current.stalled_runs} runs in a "
                        f"row; last failure: {current.last_failure or 'none recorded'}",
                    )
            return current

        evaluation = await self.store.update(evaluation_id, change)
        if is_finished(evaluation.status):
            await self._announce(evaluation)
            logger.info(
                "evaluation finished",
                extra={"evaluation_id": evaluation_id, "status": evaluation.status},
            )
            return "finished"
        if tally.scored:
            return 0.0
        delay = retry_delay(
            evaluation.stalled_runs,
            retry_after=tally.last_failure.retry_after if tally.last_failure else None,
            cap=STALLED_DELAY_CAP,
        )
        return float(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter

    async def _fail(self, evaluation_id: str, code: str, message: str) -> None:
        def change(current: Evaluation) -> Evaluation | None:
            if is_finished(current.status):
                return None
            current.status = EvaluationStatus.FAILED
            current.error = EvaluationError(code=code, message=message)
            current.updated_at = current.finished_at = now_iso()
            return current

        await self._announce(await self.store.update(evaluation_id, change))

    async def _announce(self, evaluation: Evaluation) -> None:
        """Emit the final event once (deliveries dedupe by event id if this repeats)."""
        if evaluation.announced:
            return
        if evaluation.status == EvaluationStatus.SUCCEEDED:
            await emit_evaluation_event(self.resources, evaluation, "evaluation.completed")
        elif evaluation.status == EvaluationStatus.FAILED:
            await emit_evaluation_event(self.resources, evaluation, "evaluation.failed")

        def mark(current: Evaluation) -> Evaluation | None:
            if current.announced:
                return None
            current.announced = True
            return current

        await self.store.update(evaluation.id, mark)

    async def requeue(self) -> int:
        """For the reconciler: every unfinished (or unannounced) evaluation has a run
        scheduled."""
        queue = self.resources.queue
        scheduled = 0
        for evaluation_id in sorted(await self.store.active_ids()):
            if await tasks.is_scheduled(queue, tasks.evaluation_job_id(evaluation_id)):
                continue
            if await tasks.enqueue_evaluation(queue, evaluation_id):
                scheduled += 1
        return scheduled


def _start(current: Evaluation) -> Evaluation | None:
    if current.status != EvaluationStatus.QUEUED:
        return None
    current.status = EvaluationStatus.RUNNING
    current.started_at = current.updated_at = now_iso()
    return current
