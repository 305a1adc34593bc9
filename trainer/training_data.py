"""Training files checked the way OpenAI checks them, and read for training.

Two moments, as on OpenAI: an upload is refused only when it is not JSONL of
objects (`upload_problem`); everything else (missing roles, unknown keys, too few
examples) is found while the job validates its files (`analyze`) and becomes the
job's `error`, with OpenAI's codes and wording. Examples are counted from 1.

Nothing here imports torch: the server and the training process both use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_EXAMPLES = 10

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MESSAGE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "weight", "tool_calls", "function_call", "refusal"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
_EXAMPLE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
UNEXPECTED_FORMAT = (
    "Unexpected file format, expected either prompt/completion pairs or chat messages."
)


@dataclass(frozen=True, slots=True)
class Analysis:
    n_examples: int
    # What is wrong, worded as OpenAI words it after "The job failed due to an invalid ... file."
    problem: str | None


@dataclass(frozen=True, slots=True)
class JobFileError:
    """Why a job's files were refused: the job's `error` object."""

    code: str
    message: str
    param: str


def upload_problem(lines: Iterator[bytes]) -> str | None:
    """Why OpenAI would refuse this fine-tune upload, or None when it is JSONL of objects."""
    for number, raw_line in enumerate(lines, start=1):
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


def _non_blank_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for line in handle:
            if line.strip():
                yield line


def analyze(path: Path) -> Analysis:
    """Count the examples of a chat JSONL file and find the first thing wrong with it."""
    count = 0
    problem: str | None = None
    for number, line in enumerate(_non_blank_lines(path), start=1):
        count = number
        if problem is None:
            problem = example_problem(number, line)
    return Analysis(n_examples=count, problem=problem)


def check_job_files(training: Path, validation: Path | None) -> tuple[int, JobFileError | None]:
    """(examples in the training file, the job's error or None), OpenAI's order of checks."""
    analysis = analyze(training)
    if analysis.problem is not None:
        return analysis.n_examples, JobFileError(
            "invalid_training_file",
            f"The job failed due to an invalid training file. {analysis.problem}",
            "training_file",
        )
    if validation is not None:
        checked = analyze(validation)
        problem = checked.problem
        if problem is None and checked.n_examples == 0:
            problem = "The validation file has no examples."
        if problem is not None:
            return analysis.n_examples, JobFileError(
                "invalid_validation_file",
                f"The job failed due to an invalid validation file. {problem}",
                "validation_file",
            )
    if analysis.n_examples < MIN_EXAMPLES:
        return analysis.n_examples, JobFileError(
            "invalid_n_examples",
            f"Training file has {analysis.n_examples} example(s), but must have at least "
            f"{MIN_EXAMPLES} examples",
            "training_file",
        )
    return analysis.n_examples, None


def example_problem(number: int, line: str) -> str | None:
    try:
        example = json.loads(line)
    except json.JSONDecodeError:
        return f"Invalid file format. Example {number} is not valid JSON."
    if not isinstance(example, dict):
        return f"Invalid file format. Example {number} is not a JSON object."
    messages = example.get("messages")
    if messages is None:
        return UNEXPECTED_FORMAT
    if not isinstance(messages, list) or not messages:
        return f"Invalid file format. Example {number} 'messages' must be a non-empty list."
    extra = sorted(set(example) - _EXAMPLE_KEYS)
    if extra:
        return f"Invalid file format. Example {number} Extra inputs are not permitted: '{extra[0]}'"
    return _messages_problem(number, messages)


def _messages_problem(number: int, messages: list[Any]) -> str | None:
    has_assistant = False
    for position, message in enumerate(messages, start=1):
        where = f"Invalid file format. Example {number}, message {position}"
        if not isinstance(message, dict):
            return f"{where} Input should be a valid dictionary"
        if "role" not in message:
            return f"{where} Discriminator 'role' is missing in value"
        role = message["role"]
        if role not in ROLES:
            expected = ", ".join(f"'{name}'" for name in ROLES)
            return (
                f"{where} Input tag '{role}' found using 'role' does not match any of the "
                f"expected tags: {expected}"
            )
        extra = sorted(set(message) - _MESSAGE_KEYS[role])
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
        if isinstance(content, list) and not all(_is_text_part(part) for part in content):
            return f"{where} Only text content parts are supported: 'content'"
    if not has_assistant:
        return f"Invalid file format. Example {number} is missing an assistant message."
    return None


def _is_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def message_text(content: Any) -> str:
    """A message's content as one string (text parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def load_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Every example as plain `{role, content}` messages, ready for a chat template.

    Files reach the training process already validated; a line that is not an
    example raises ValueError naming it, in OpenAI's words.
    """
    conversations: list[list[dict[str, str]]] = []
    for number, line in enumerate(_non_blank_lines(path), start=1):
        problem = example_problem(number, line)
        if problem is not None:
            raise ValueError(problem)
        example = json.loads(line)
        conversations.append(
            [
                {"role": str(message["role"]), "content": message_text(message.get("content"))}
                for message in example["messages"]
            ]
        )
    return conversations
