"""Evaluations, the pure part: what an example asks, how an answer is scored, and
what the scores add up to. No I/O.

- An example's **reference** is its last assistant message; its **prompt** is
  every message before that one.
- **exact_match** is 1 when answer and reference are equal once runs of
  whitespace are collapsed and the ends trimmed, else 0.
- **chrf** is sacrebleu's chrF (character n-gram F-score, 0-100), the
  reference implementation; it needs no word segmentation, so it means the
  same for Japanese as for English.
- **grader** is a 1-5 score a grader model gives with a rubric, as structured
  JSON `{"score", "reason"}`.

A summary gives each model's mean and 95% confidence interval per metric
(Wilson's interval for exact match, a proportion; the normal approximation
for the others), its token usage, and the win rate of the first model over
the second: per example, the one with the higher primary score (the
grader's when there is one, else chrF) wins; a tie counts half.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist
from typing import Any, Final, Literal

from sacrebleu.metrics.chrf import CHRF

Metric = Literal["exact_match", "chrf", "grader"]
TEXT_METRICS: Final[tuple[Metric, ...]] = ("exact_match", "chrf")
# Bounds of each metric's scale, so an interval never leaves it.
SCALES: Final[Mapping[str, tuple[float, float]]] = {
    "exact_match": (0.0, 1.0),
    "chrf": (0.0, 100.0),
    "grader": (1.0, 5.0),
}
CONFIDENCE = 0.95
_Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
REASON_MAX_CHARS = 300

DEFAULT_RUBRIC = (
    "5: says what the reference answer says (wording may differ); "
    "4: mostly the same, a small detail missing or added; "
    "3: partly right; "
    "2: touches the topic but misses the point; "
    "1: wrong, unrelated or empty."
)


class EvaluationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset(
    {EvaluationStatus.SUCCEEDED, EvaluationStatus.FAILED, EvaluationStatus.CANCELLED}
)


def is_finished(status: str) -> bool:
    return status in TERMINAL


# Examples -------------------------------------------------------------------------


class UnusableExample(ValueError):
    """The example has no assistant message with text to compare against."""


@dataclass(frozen=True, slots=True)
class Question:
    prompt: list[dict[str, Any]]
    reference: str


def text_of(content: object) -> str | None:
    """A message's text: the string, or its text parts joined; None when it has none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "".join(parts) if parts else None
    return None


# What the model is shown of each prompt message (weights and ids are training matters).
_PROMPT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def question_of(example: Mapping[str, Any]) -> Question:
    """Split a chat example into the prompt and the reference answer."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        raise UnusableExample("the example has no messages")
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if isinstance(message, dict) and message.get("role") == "assistant":
            reference = text_of(message.get("content"))
            if reference is None:
                raise UnusableExample("the last assistant message has no text")
            if position == 0:
                raise UnusableExample("nothing comes before the assistant message")
            prompt = [
                {key: m[key] for key in _PROMPT_KEYS if key in m}
                for m in messages[:position]
                if isinstance(m, dict)
            ]
            return Question(prompt=prompt, reference=reference)
    raise UnusableExample("the example has no assistant message")


# Scores ---------------------------------------------------------------------------


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def exact_match(answer: str, reference: str) -> float:
    return 1.0 if normalize_whitespace(answer) == normalize_whitespace(reference) else 0.0


class TextScorer:
    """Scores one answer against its reference with the text metrics asked for."""

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = [m for m in metrics if m in TEXT_METRICS]
        self._chrf = CHRF()

    def score(self, answer: str, reference: str) -> dict[str, float]:
        scores: dict[str, float] = {}
        if "exact_match" in self.metrics:
            scores["exact_match"] = exact_match(answer, reference)
        if "chrf" in self.metrics:
            scores["chrf"] = round(self._chrf.sentence_score(answer, [reference]).score, 4)
        return scores


# The grader -------------------------------------------------------------------------

GRADE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


def _transcript(prompt: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for message in prompt:
        text = text_of(message.get("content"))
        if text:
            lines.append(f"[{message.get('role', 'user')}] {text}")
    return "\n".join(lines)


def grader_request(
    prompt: Sequence[Mapping[str, Any]], reference: str, answer: str, rubric: str
) -> dict[str, Any]:
    """The chat body asking a grader model for `{"score": 1-5, "reason": "..."}`."""
    instructions = (
        "You grade an answer against a reference answer. Use this rubric:\n"
        f"{rubric}\n"
        'Reply with JSON only: {"score": <integer 1-5>, "reason": "<one line>"}.'
    )
    case = (
        f"Conversation:\n{_transcript(prompt)}\n\n"
        f"Reference answer:\n{reference}\n\n"
        f"Answer to grade:\n{answer}"
    )
    return {
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": case},
        ],
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "grade", "strict": True, "schema": GRADE_SCHEMA},
        },
    }


class GradeUnreadable(ValueError):
    """The grader's reply is not the JSON the rubric asked for."""


def read_grade(content: str | None) -> tuple[int, str]:
    """(score, one-line reason) from the grader's reply."""
    if not content:
        raise GradeUnreadable("the grader sent no content")
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        raise GradeUnreadable("the grader's reply is not JSON") from None
    if not isinstance(value, dict):
        raise GradeUnreadable("the grader's reply is not a JSON object")
    score = value.get("score")
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise GradeUnreadable(f"the grader's score is not an integer from 1 to 5: {score!r}")
    reason = value.get("reason")
    line = normalize_whitespace(reason) if isinstance(reason, str) else ""
    return score, line[:REASON_MAX_CHARS]


# Summaries --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


def _clip(value: float, metric: str) -> float:
    low, high = SCALES.get(metric, (-math.inf, math.inf))
    return min(high, max(low, value))


def estimate(metric: str, values: Sequence[float]) -> Estimate | None:
    """Mean and 95% interval of one model's scores on one metric; None without scores."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if metric == "exact_match":
        # Wilson's score interval: sensible at 0, 1 and for few examples.
        centre = (mean + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
        half = _Z * math.sqrt(mean * (1 - mean) / n + _Z**2 / (4 * n * n)) / (1 + _Z**2 / n)
        low, high = centre - half, centre + half
    elif n == 1:
        low = high = mean
    else:
        variance = sum((v - mean) ** 2 for v in values) / (n - 1)
        half = _Z * math.sqrt(variance / n)
        low, high = mean - half, mean + half
    return Estimate(
        mean=round(mean, 4),
        ci_low=round(_clip(low, metric), 4),
        ci_high=round(_clip(high, metric), 4),
        n=n,
    )


@dataclass(frozen=True, slots=True)
class WinRate:
    model: str
    over: str
    metric: str
    wins: int
    losses: int
    ties: int

    @property
    def compared(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float | None:
        if not self.compared:
            return None
        return round((self.wins + 0.5 * self.ties) / self.compared, 4)


def primary_metric(metrics: Sequence[str]) -> str:
    """The score examples are compared on: the grader's if asked for, else chrF, else exact."""
    for metric in ("grader", "chrf", "exact_match"):
        if metric in metrics:
            return metric
    raise ValueError("no metric to compare on")


def win_rate(rows: Sequence[Mapping[str, Any]], first: str, second: str, metric: str) -> WinRate:
    """Per example, does `first` score higher than `second` on `metric`?"""
    wins = losses = ties = 0
    for row in rows:
        scores = {
            answer["model"]: (answer.get("scores") or {}).get(metric)
            for answer in row.get("answers", [])
        }
        a, b = scores.get(first), scores.get(second)
        if a is None or b is None:
            continue
        if a > b:
            wins += 1
        elif a < b:
            losses += 1
        else:
            ties += 1
    return WinRate(model=first, over=second, metric=metric, wins=wins, losses=losses, ties=ties)


def summarize(
    rows: Sequence[Mapping[str, Any]], models: Sequence[str], metrics: Sequence[str]
) -> dict[str, Any]:
    """The evaluation's numbers from its scored rows (any order, any subset done so far)."""
    per_model: list[dict[str, Any]] = []
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    grader_usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for model in models:
        answers = [
            answer
            for row in rows
            for answer in row.get("answers", [])
            if answer.get("model") == model
        ]
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for answer in answers:
            for source, into in (("usage", usage), ("grader_usage", grader_usage)):
                for key in usage:
                    into[key] += int((answer.get(source) or {}).get(key) or 0)
        for key in totals:
            totals[key] += usage[key]
        scores: dict[str, Any] = {}
        for metric in metrics:
            values = [
                float(answer["scores"][metric])
                for answer in answers
                if (answer.get("scores") or {}).get(metric) is not None
            ]
            found = estimate(metric, values)
            scores[metric] = found.as_dict() if found else None
        per_model.append(
            {
                "model": model,
                "answered": sum(1 for a in answers if a.get("content") is not None),
                "errors": sum(1 for a in answers if a.get("error") is not None),
                "scores": scores,
                "usage": usage,
            }
        )
    comparison = None
    if len(models) >= 2:
        found_rate = win_rate(rows, models[0], models[1], primary_metric(metrics))
        comparison = {
            "model": found_rate.model,
            "over": found_rate.over,
            "metric": found_rate.metric,
            "wins": found_rate.wins,
            "losses": found_rate.losses,
            "ties": found_rate.ties,
            "compared": found_rate.compared,
            "rate": found_rate.rate,
        }
    for key in totals:
        totals[key] += grader_usage[key]
    return {
        "models": per_model,
        "win_rate": comparison,
        "cost": {**totals, "grader_tokens": grader_usage["total_tokens"]},
    }
