"""Reading training files the way OpenAI does: a JSONL check at upload, a full check on the job.

Upload only refuses files that are not JSONL of objects. Everything else (missing
roles, unknown keys, too few examples) surfaces later, as the job's `error`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator import tokens
from simulator.catalog import COMPLETIONS_MODELS

MIN_EXAMPLES = 10

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "weight", "tool_calls", "function_call", "refusal"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
UNEXPECTED_FORMAT = (
    "Unexpected file format, expected either prompt/completion pairs or chat messages."
)


@dataclass(frozen=True, slots=True)
class TrainingPair:
    """A question the model was trained on and the answer it was taught."""

    prompt: str
    answer: str


@dataclass(frozen=True, slots=True)
class TrainingAnalysis:
    n_examples: int
    # Token count of each example (cookbook rule), before truncation to the model's limit.
    example_tokens: tuple[int, ...]
    pairs: tuple[TrainingPair, ...]
    # What is wrong with the file, worded as OpenAI words it after "invalid training file.".
    problem: str | None


def jsonl_upload_problem(content: bytes) -> str | None:
    """Why OpenAI would refuse this fine-tune upload, or None when it is JSONL of objects."""
    for number, raw_line in enumerate(content.split(b"\n"), start=1):
        if not raw_line.strip():
            continue
        try:
            value = json.loads(raw_line.decode("utf-8-sig" if number == 1 else "utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if not isinstance(value, dict):
            return (
                "Expected file to have JSONL format, where every line is a valid JSON "
                f"dictionary. Line {number} is not a dictionary."
            )
    return None


def analyze(content: bytes, method: str, model: str, encoding_name: str) -> TrainingAnalysis:
    """Count, check and digest every example of a training file for one kind of job."""
    lines = [
        line for line in content.decode("utf-8-sig", errors="replace").split("\n") if line.strip()
    ]
    example_tokens: list[int] = []
    pairs: list[TrainingPair] = []
    problem: str | None = None
    for number, line in enumerate(lines, start=1):
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            example = None
        if not isinstance(example, dict):
            problem = problem or f"Invalid file format. Example {number} is not a JSON object."
            continue
        if method == "dpo":
            found = _check_preference(number, example)
            count, taught = _digest_preference(example, encoding_name) if found is None else (0, [])
        elif model in COMPLETIONS_MODELS and "messages" not in example:
            found = _check_prompt_completion(example)
            count, taught = (
                _digest_prompt_completion(example, encoding_name) if found is None else (0, [])
            )
        else:
            found = _check_chat(number, example)
            count, taught = _digest_chat(example, encoding_name) if found is None else (0, [])
        if found is not None:
            problem = problem or found
            continue
        example_tokens.append(count)
        pairs.extend(taught)
    return TrainingAnalysis(
        n_examples=len(lines),
        example_tokens=tuple(example_tokens),
        pairs=tuple(pairs),
        problem=problem,
    )


def _check_chat(number: int, example: Mapping[str, Any]) -> str | None:
    messages = example.get("messages")
    if messages is None:
        return UNEXPECTED_FORMAT
    if not isinstance(messages, list) or not messages:
        return f"Invalid file format. Example {number} 'messages' must be a non-empty list."
    unknown = sorted(set(example) - {"messages", "tools", "parallel_tool_calls", "functions"})
    if unknown:
        return (
            f"Invalid file format. Example {number} Extra inputs are not permitted: '{unknown[0]}'"
        )
    problem = _check_messages(number, messages, need_assistant=True)
    return problem


def _check_messages(number: int, messages: list[Any], *, need_assistant: bool) -> str | None:
    has_assistant = False
    for position, message in enumerate(messages, start=1):
        where = f"Invalid file format. Example {number}, message {position}"
        if not isinstance(message, dict):
            return f"{where} Input should be a valid dictionary"
        if "role" not in message:
            return f"{where} Discriminator 'role' is missing in value"
        role = message["role"]
        if role not in CHAT_ROLES:
            expected = ", ".join(f"'{name}'" for name in CHAT_ROLES)
            return (
                f"{where} Input tag '{role}' found using 'role' does not match any of the "
                f"expected tags: {expected}"
            )
        extra = sorted(set(message) - _ALLOWED_KEYS[role])
        if extra:
            return f"{where} Extra inputs are not permitted: '{extra[0]}'"
        content = message.get("content")
        if role == "assistant":
            has_assistant = True
            if content is None and not (message.get("tool_calls") or message.get("function_call")):
                return f"{where} Field required: 'content'"
            if "weight" in message and message["weight"] not in (0, 1):
                return f"{where} Input should be 0 or 1: 'weight'"
        elif content is None:
            return f"{where} Field required: 'content'"
        if content is not None and not isinstance(content, str | list):
            return f"{where} Input should be a valid string: 'content'"
    if need_assistant and not has_assistant:
        return f"Invalid file format. Example {number} is missing an assistant message."
    return None


def _check_preference(number: int, example: Mapping[str, Any]) -> str | None:
    for field in ("input", "preferred_output", "non_preferred_output"):
        if field not in example:
            return f"Invalid file format. Example {number} Field required: '{field}'"
    source = example["input"]
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        return f"Invalid file format. Example {number} Field required: 'input.messages'"
    problem = _check_messages(number, source["messages"], need_assistant=False)
    if problem:
        return problem
    for field in ("preferred_output", "non_preferred_output"):
        output = example[field]
        if not isinstance(output, list) or len(output) != 1:
            return f"Invalid file format. Example {number} '{field}' must hold one message."
        problem = _check_messages(number, output, need_assistant=True)
        if problem:
            return problem
    return None


def _check_prompt_completion(example: Mapping[str, Any]) -> str | None:
    if not isinstance(example.get("prompt"), str) or not isinstance(example.get("completion"), str):
        return UNEXPECTED_FORMAT
    return None


def _digest_chat(example: Mapping[str, Any], encoding_name: str) -> tuple[int, list[TrainingPair]]:
    messages: list[dict[str, Any]] = example["messages"]
    taught: list[TrainingPair] = []
    last_user: str | None = None
    for message in messages:
        if message["role"] == "user":
            last_user = tokens.message_text(message.get("content", ""))
        elif (
            message["role"] == "assistant"
            and last_user is not None
            and message.get("weight", 1) != 0
            and isinstance(message.get("content"), str)
        ):
            taught.append(TrainingPair(prompt=last_user, answer=message["content"]))
    return tokens.count_messages(encoding_name, messages), taught


def _digest_preference(
    example: Mapping[str, Any], encoding_name: str
) -> tuple[int, list[TrainingPair]]:
    source: list[dict[str, Any]] = example["input"]["messages"]
    preferred: list[dict[str, Any]] = example["preferred_output"]
    rejected: list[dict[str, Any]] = example["non_preferred_output"]
    count = tokens.count_messages(encoding_name, [*source, *preferred]) + tokens.count_messages(
        encoding_name, rejected
    )
    users = [m for m in source if m["role"] == "user"]
    answer = preferred[0].get("content")
    if users and isinstance(answer, str):
        prompt = tokens.message_text(users[-1].get("content", ""))
        return count, [TrainingPair(prompt=prompt, answer=answer)]
    return count, []


def _digest_prompt_completion(
    example: Mapping[str, Any], encoding_name: str
) -> tuple[int, list[TrainingPair]]:
    prompt, completion = str(example["prompt"]), str(example["completion"])
    count = tokens.count_text(encoding_name, prompt) + tokens.count_text(encoding_name, completion)
    return count, [TrainingPair(prompt=prompt, answer=completion.strip())]
