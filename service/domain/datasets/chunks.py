"""The unit of parallel work: parse, validate, normalize and count one chunk.

A chunk is either a run of whole JSONL lines (raw bytes, so decoding happens
in the worker too) or a batch of already-parsed records (JSON array elements,
table rows, posted examples). `process_chunk` is a module-level function with
small frozen-dataclass arguments so it pickles into a `ProcessPoolExecutor`;
it touches no files and no shared state, and returns only compact
per-example numbers plus the normalized bytes, which the parent writes in
order.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field

from service.domain.catalog import Counting
from service.domain.datasets import issues as codes
from service.domain.datasets.decoding import undecodable_issue
from service.domain.datasets.examples import (
    ConversionSettings,
    plain_chat_messages,
    prepare_example,
)
from service.domain.datasets.issues import Issue, IssueList
from service.domain.tokens import (
    compact_json,
    encoded_lengths,
    example_texts,
    token_counter,
)

DIGEST_SIZE = 16
KIND_CODES = {"chat": "c", "preference": "p"}


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity are accepted by Python's json but not by the provider's parser.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


# Texts that recur in nearly every example of a file (role names, the system
# prompt) are counted once per process. Bounded: emptied when full.
_REPEATED_TEXT_LIMIT = 4096
_repeated_text_tokens: dict[tuple[str, str], int] = {}


def _repeated_text_tokens_of(text: str, tokenizer: str) -> int:
    key = (tokenizer, text)
    tokens = _repeated_text_tokens.get(key)
    if tokens is None:
        if len(_repeated_text_tokens) >= _REPEATED_TEXT_LIMIT:
            _repeated_text_tokens.clear()
        tokens = _repeated_text_tokens[key] = token_counter(tokenizer)(text)
    return tokens


def too_deeply_nested(line: int) -> Issue:
    return Issue(
        line,
        None,
        codes.TOO_DEEPLY_NESTED,
        f"Line {line} nests objects or arrays too deeply to be read; "
        "a training example is a few levels deep.",
    )


@dataclass(frozen=True, slots=True)
class ChunkContext:
    """Everything a worker needs besides the data; identical for every chunk of a file."""

    conversion: ConversionSettings
    counting: Counting
    example_token_limit: int
    max_issues: int
    tokenizer_threads: int = 1


@dataclass(frozen=True, slots=True)
class LinesChunk:
    """Whole JSONL lines; `first_line` is the original line number of the first one."""

    first_line: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RecordsChunk:
    """Parsed values, each with the line number reported for it."""

    records: list[tuple[int, object]]
    # Examples the parent already rejected (empty table cells): their issues
    # travel with the chunk so that issues stay in file order.
    rejected: list[Issue] = field(default_factory=list)
    rejected_count: int = 0


@dataclass(slots=True)
class ChunkOutcome:
    """Per-example facts of the valid examples of one chunk, in order."""

    example_count: int = 0
    # Non-blank lines that are not JSON at all: not examples, but not nothing either.
    unparsed_count: int = 0
    lines: array[int] = field(default_factory=lambda: array("q"))
    tokens: array[int] = field(default_factory=lambda: array("q"))
    # Per valid example: the tokens of what the assistant writes (trained on).
    assistant_per_example: array[int] = field(default_factory=lambda: array("q"))
    kinds: str = ""
    digests: list[bytes] = field(default_factory=list)
    normalized: bytes = b""
    assistant_tokens: int = 0
    billed_tokens: int = 0
    over_limit: int = 0
    errors: list[Issue] = field(default_factory=list)
    error_totals: Counter[str] = field(default_factory=Counter)
    warnings: list[Issue] = field(default_factory=list)
    warning_totals: Counter[str] = field(default_factory=Counter)
    # An undecodable byte stops the whole file: one clear error beats one per line.
    fatal: Issue | None = None


@dataclass(slots=True)
class _Pending:
    line: int
    kind: str
    raw: bytes
    overhead: int
    text_count: int
    has_system: bool
    has_user: bool


def process_chunk(work: LinesChunk | RecordsChunk, context: ChunkContext) -> ChunkOutcome:
    outcome = ChunkOutcome()
    errors = IssueList(context.max_issues)
    warnings = IssueList(context.max_issues)
    pending: list[_Pending] = []
    texts: list[str] = []
    trained: list[bool] = []

    def take_plain(value: object, messages: list[dict[str, str]], line: int) -> bool:
        """The fast path for plain system/user/assistant examples (see plain_chat_messages)."""
        try:
            raw = (compact_json(value) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            return False  # the full path reports it
        counting = context.counting
        overhead = counting.per_conversation
        has_system = has_user = False
        for message in messages:
            role = message["role"]
            overhead += counting.per_message + _repeated_text_tokens_of(role, counting.tokenizer)
            if role == "system":
                has_system = True
                overhead += _repeated_text_tokens_of(message["content"], counting.tokenizer)
                continue
            has_user = has_user or role == "user"
            texts.append(message["content"])
            trained.append(role == "assistant")
        pending.append(
            _Pending(
                line=line,
                kind="c",
                raw=raw,
                overhead=overhead,
                text_count=sum(1 for message in messages if message["role"] != "system"),
                has_system=has_system,
                has_user=has_user,
            )
        )
        return True

    def take(value: object, line: int) -> None:
        outcome.example_count += 1
        messages = plain_chat_messages(value)
        if messages is not None and take_plain(value, messages, line):
            return
        prepared, problems = prepare_example(value, line, context.conversion)
        if prepared is None:
            for problem in problems:
                errors.add(problem)
            return
        try:
            raw = (compact_json(prepared.document) + "\n").encode("utf-8")
        except UnicodeEncodeError as exc:
            errors.add(
                Issue(
                    line,
                    None,
                    codes.ENCODING,
                    f"Line {line} contains an unpaired surrogate escape "
                    f"(\\u{ord(exc.object[exc.start]):04x}), which is not valid Unicode.",
                )
            )
            return
        example_text, example_trained, overhead = example_texts(
            prepared.messages, prepared.extras, context.counting
        )
        texts.extend(example_text)
        trained.extend(example_trained)
        pending.append(
            _Pending(
                line=line,
                kind=KIND_CODES[prepared.kind],
                raw=raw,
                overhead=overhead,
                text_count=len(example_text),
                has_system=prepared.has_system,
                has_user=prepared.has_user,
            )
        )

    def take_guarded(value: object, line: int) -> None:
        """`take`, turning a structure too deep to walk into an issue on its line."""
        count, size, text_size = outcome.example_count, len(pending), len(texts)
        try:
            take(value, line)
        except RecursionError:
            del pending[size:], texts[text_size:], trained[text_size:]
            outcome.example_count = count + 1
            errors.add(too_deeply_nested(line))

    if isinstance(work, LinesChunk):
        try:
            text = work.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            outcome.fatal = undecodable_issue(work.data, exc, work.first_line)
            return outcome
        for offset, line_text in enumerate(text.split("\n")):
            if not line_text.strip():
                continue
            line = work.first_line + offset
            # Lines that do not parse are not examples: `example_count` counts the rest.
            try:
                value = _DECODER.decode(line_text)
            except json.JSONDecodeError as exc:
                outcome.unparsed_count += 1
                errors.add(
                    Issue(
                        line,
                        None,
                        codes.INVALID_JSON,
                        f"Line {line} is not valid JSON: {exc.msg} "
                        f"(line {line}, column {exc.colno}).",
                    )
                )
                continue
            except RecursionError:
                outcome.unparsed_count += 1
                errors.add(too_deeply_nested(line))
                continue
            except ValueError as exc:
                outcome.unparsed_count += 1
                errors.add(Issue(line, None, codes.INVALID_JSON, f"Line {line}: {exc}."))
                continue
            take_guarded(value, line)
    else:
        outcome.example_count += work.rejected_count
        for issue in work.rejected:
            errors.add(issue)
        for line, value in work.records:
            take_guarded(value, line)
        errors.items.sort(key=lambda issue: issue.line or 0)

    lengths = encoded_lengths(texts, context.counting.tokenizer, context.tokenizer_threads)
    limit = context.example_token_limit
    position = 0
    raws: list[bytes] = []
    for example in pending:
        end = position + example.text_count
        total = example.overhead + sum(lengths[position:end])
        assistant = sum(
            length
            for length, learns in zip(lengths[position:end], trained[position:end], strict=True)
            if learns
        )
        outcome.assistant_tokens += assistant
        outcome.assistant_per_example.append(assistant)
        position = end
        outcome.lines.append(example.line)
        outcome.tokens.append(total)
        outcome.billed_tokens += min(total, limit)
        outcome.digests.append(hashlib.blake2b(example.raw, digest_size=DIGEST_SIZE).digest())
        raws.append(example.raw)
        if not example.has_system:
            warnings.add(
                Issue(
                    example.line,
                    None,
                    codes.MISSING_SYSTEM_MESSAGE,
                    "The example has no system message.",
                )
            )
        if not example.has_user:
            warnings.add(
                Issue(
                    example.line,
                    None,
                    codes.MISSING_USER_MESSAGE,
                    "The example has no user message.",
                )
            )
        if total > limit:
            outcome.over_limit += 1
            warnings.add(
                Issue(
                    example.line,
                    None,
                    codes.EXAMPLE_OVER_TOKEN_LIMIT,
                    f"The example has {total} tokens; the model keeps {limit} per example "
                    "and truncates the rest.",
                )
            )
    outcome.kinds = "".join(example.kind for example in pending)
    outcome.normalized = b"".join(raws)
    outcome.errors, outcome.error_totals = errors.items, errors.totals
    outcome.warnings, outcome.warning_totals = warnings.items, warnings.totals
    return outcome
