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
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate

import orjson

from service.domain.catalog import Counting
from service.domain.datasets import issues as codes
from service.domain.datasets.decoding import undecodable_issue
from service.domain.datasets.examples import (
    ConversionSettings,
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
# This decoder is the reference: every line the fast path below does not take
# is parsed, judged and reported by it.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)

# The fast path stops trying a chunk's lines once it has missed this many more
# than it took (a file of prompt/completion lines would pay for two parsers).
_FAST_PATH_SLACK = 64


def _fast_value(raw_line: bytes) -> object:
    """A JSONL line parsed by orjson, or _REFUSED when orjson refuses it.

    Only plain chat values (dicts, lists and strings, see `take_plain` in
    process_chunk) are used from it, and for those orjson and the reference
    decoder agree: the JSON grammar, duplicate keys (the last wins) and escapes
    are the same, and orjson refuses what the reference refuses (control
    characters, NaN, bad UTF-8) as well as lone surrogate escapes, which the
    reference reports as an encoding error. Every other line is parsed again,
    and judged, by the reference.
    """
    try:
        return orjson.loads(raw_line)
    except orjson.JSONDecodeError:
        return _REFUSED


_REFUSED = object()


def _plain_line_bytes(value: object) -> bytes | None:
    """`compact_json(value) + "\n"` in UTF-8, by orjson, for the plain chat shape.

    For dicts, lists and strings the two give the same bytes (a test compares
    them over every code point). None when a string holds a lone surrogate,
    which orjson cannot encode; the full path then reports it.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return None


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
    """Whole JSONL lines; `first_line` is the original line number of the first one.

    The lines travel as `data`, or stay in the file at `path` (`size` bytes from
    `offset`) for the process that handles the chunk to read: sending 100 MiB of
    chunks through a process pool's pipe cost a tenth of a second of CPU on each
    side, reading them from the page cache a tenth of that.
    """

    first_line: int
    data: bytes = b""
    path: str | None = None
    offset: int = 0
    size: int = 0

    def read(self) -> bytes:
        if self.path is None:
            return self.data
        with open(self.path, "rb", buffering=0) as handle:
            data = os.pread(handle.fileno(), self.size, self.offset)
        if len(data) != self.size:
            raise OSError(f"{self.path} ended {self.size - len(data)} bytes early")
        return data


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

    counting = context.counting
    tokenizer = counting.tokenizer
    per_conversation = counting.per_conversation
    # What each plain role adds besides its content's tokens.
    role_overhead = {
        role: counting.per_message + _repeated_text_tokens_of(role, tokenizer)
        for role in ("system", "user", "assistant")
    }

    def take_plain(value: object, line: int) -> bool:
        """The fast path for the commonest shape, in one pass; False (having taken
        nothing) for anything else, which `prepare_example` then judges.

        The commonest shape is `{"messages": [...]}` whose messages have exactly a
        system/user/assistant role and non-blank string content, with at least one
        assistant message. False means "not sure", never "invalid".
        """
        if type(value) is not dict or len(value) != 1:
            return False
        messages = value.get("messages")
        if type(messages) is not list or not messages:
            return False
        start = len(texts)
        overhead = per_conversation
        has_system = has_user = has_assistant = False
        for message in messages:
            if type(message) is not dict or len(message) != 2:
                break
            role = message.get("role")
            content = message.get("content")
            if type(role) is not str or type(content) is not str or not content.strip():
                break
            added = role_overhead.get(role)
            if added is None:
                break
            overhead += added
            if role == "system":
                has_system = True
                overhead += _repeated_text_tokens_of(content, tokenizer)
                continue
            texts.append(content)
            learns = role == "assistant"
            trained.append(learns)
            has_assistant = has_assistant or learns
            has_user = has_user or not learns
        else:
            raw = _plain_line_bytes(value) if has_assistant else None
            if raw is not None:
                pending.append(
                    _Pending(line, "c", raw, overhead, len(texts) - start, has_system, has_user)
                )
                return True
        del texts[start:], trained[start:]
        return False

    def take(value: object, line: int) -> None:
        outcome.example_count += 1
        if take_plain(value, line):
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
        data = work.read()
        checked = False  # whether the whole chunk is known to be UTF-8
        taken = missed = 0
        for offset, raw_line in enumerate(data.split(b"\n")):
            if not raw_line.strip():
                continue
            line = work.first_line + offset
            if missed <= taken + _FAST_PATH_SLACK and take_plain(_fast_value(raw_line), line):
                outcome.example_count += 1
                taken += 1
                continue
            missed += 1
            if not checked:
                # An undecodable byte anywhere stops the chunk with that one issue.
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return ChunkOutcome(fatal=undecodable_issue(data, exc, work.first_line))
                checked = True
            line_text = raw_line.decode("utf-8")
            if not line_text.strip():
                continue
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

    lengths = encoded_lengths(texts, tokenizer, context.tokenizer_threads)
    # Running sums: an example's tokens are the difference at its two ends.
    upto = list(accumulate(lengths, initial=0))
    learned_upto = list(
        accumulate(
            (length if learns else 0 for length, learns in zip(lengths, trained, strict=True)),
            initial=0,
        )
    )
    limit = context.example_token_limit
    position = 0
    raws: list[bytes] = []
    for example in pending:
        end = position + example.text_count
        total = example.overhead + upto[end] - upto[position]
        assistant = learned_upto[end] - learned_upto[position]
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
