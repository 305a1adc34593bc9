"""Dataset ingestion: read an upload, convert it to chat JSONL, validate, count and price it.

This is the orchestration half: it opens files, cuts them into chunks, fans
the chunks out to an executor and writes the normalized lines in order. The
per-example logic is pure and lives in `service.domain.datasets`.

Concurrency: pass the application's `ProcessPoolExecutor` as `executor` and
files of at least `parallel_threshold_bytes` are processed chunk by chunk in
the pool (at most two chunks per worker in flight, so memory stays flat as
files grow); without an executor, or for small files, everything runs in the
calling thread. These functions block: call them from a thread (for example
`anyio.to_thread.run_sync`) when the caller is async.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from service.datasets.spreadsheet import (
    UnreadableWorkbook,
    WorkbookLimits,
    extract_rows,
    inspect_workbook,
    read_rows,
)
from service.domain.catalog import Counting, ModelSpec
from service.domain.datasets import issues as codes
from service.domain.datasets.chunks import (
    ChunkContext,
    ChunkOutcome,
    LinesChunk,
    RecordsChunk,
    process_chunk,
)
from service.domain.datasets.decoding import UTF8_BOM, UndecodableInput, decode_utf8_stream
from service.domain.datasets.examples import ConversionSettings, ExampleKind, prepare_example
from service.domain.datasets.formats import (
    SNIFF_BYTES,
    RequestedFormat,
    SourceFormat,
    detect_format,
)
from service.domain.datasets.issues import Issue, IssueList
from service.domain.datasets.json_array import JsonArrayError, iter_json_array
from service.domain.datasets.split import choose_validation, split_key
from service.domain.datasets.stats import TokenStats, summarize_tokens
from service.domain.datasets.tables import (
    MissingColumns,
    TableSyntaxError,
    iter_delimited_rows,
    iter_table_examples,
)
from service.domain.pricing import Estimate, estimate_training
from service.domain.tokens import compact_json, encoded_lengths, example_texts

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"


def default_spec() -> ModelSpec:
    """The packaged catalog's default model (for callers that name none, like tests)."""
    from service.providers.registry import packaged_catalog

    return packaged_catalog().spec(DEFAULT_MODEL)


PROVIDER_MAX_FILE_BYTES = 512 * 1024 * 1024
MIN_CHUNK_BYTES = 1024
# JSON arrays are decoded in blocks of this size before they are parsed.
TEXT_BLOCK_BYTES = 1024 * 1024
KIND_NAMES: dict[str, ExampleKind] = {"c": "chat", "p": "preference"}


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How to read, convert and judge one upload.

    `system_prompt` opens every example converted from a table, a
    prompt/completion line or a question/answer object; chat and preference
    examples are taken as written (adding a system message to them would
    change what the caller's data teaches).
    """

    format: RequestedFormat = "auto"
    # The target model's counting rule, limits and price (from the catalog).
    spec: ModelSpec = field(default_factory=lambda: default_spec())
    system_prompt: str | None = None
    user_column: str = "user"
    assistant_column: str = "assistant"
    system_column: str | None = None
    max_errors: int = 100
    max_warnings: int = 100
    max_file_bytes: int = PROVIDER_MAX_FILE_BYTES
    # None: the model's own minimum.
    min_examples: int | None = None
    n_epochs: int | None = None
    batch_size: int | None = None
    chunk_bytes: int = 4 * 1024 * 1024
    parallel_threshold_bytes: int = 1024 * 1024
    workbook_limits: WorkbookLimits = field(default_factory=WorkbookLimits)
    # time.monotonic() after which validation gives up with a `validation_timeout` error.
    deadline: float | None = None
    # Told how far reading has come: (bytes read, bytes in all, examples so far), at
    # most every PROGRESS_EVERY_SECONDS; called from the thread that ingests.
    progress: Callable[[int, int, int], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.format not in ("auto", "jsonl", "csv", "tsv", "json", "xlsx"):
            raise ValueError(f"unknown format {self.format!r}")
        if self.max_errors < 1 or self.max_warnings < 0:
            raise ValueError("max_errors must be at least 1 and max_warnings at least 0")
        if (self.min_examples is not None and self.min_examples < 0) or self.max_file_bytes < 1:
            raise ValueError("min_examples and max_file_bytes must not be negative")
        if self.chunk_bytes < MIN_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be at least {MIN_CHUNK_BYTES}")

    @property
    def conversion(self) -> ConversionSettings:
        return ConversionSettings(
            system_prompt=self.system_prompt,
            user_column=self.user_column,
            assistant_column=self.assistant_column,
            system_column=self.system_column,
        )


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The verdict on one upload. Usable for training only when `error_total` is 0."""

    kind: ExampleKind
    format: SourceFormat
    model: str
    example_count: int
    valid_example_count: int
    errors: list[Issue]
    error_total: int
    error_totals: dict[str, int]
    warnings: list[Issue]
    warning_total: int
    warning_totals: dict[str, int]
    tokens: TokenStats
    estimate: Estimate | None
    source_bytes: int
    source_sha256: str | None
    normalized_bytes: int
    normalized_sha256: str
    # Per valid example, in output order: its tokens and its assistant tokens
    # (a train/validation split measures its parts from these, without re-reading).
    example_tokens: array[int] = field(default_factory=lambda: array("q"), repr=False)
    example_assistant_tokens: array[int] = field(default_factory=lambda: array("q"), repr=False)

    @property
    def ok(self) -> bool:
        return self.error_total == 0

    @property
    def token_count(self) -> int:
        return self.tokens.token_count

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (issues as {line, path, code, message})."""
        data = {
            name: value
            for name, value in asdict(self).items()
            if name not in ("example_tokens", "example_assistant_tokens")
        }
        data["ok"] = self.ok
        return data


@dataclass(frozen=True, slots=True)
class PartStats:
    example_count: int
    token_count: int
    bytes: int
    sha256: str
    # Per example of the part, and the part's assistant tokens.
    example_tokens: list[int]
    assistant_token_count: int


@dataclass(frozen=True, slots=True)
class SplitReport:
    train: PartStats
    validation: PartStats
    seed: int
    validation_fraction: float


def _line_order(issue: Issue) -> int:
    return issue.line or 0


@dataclass
class _Assembler:
    """Merges chunk outcomes in file order and writes the normalized lines."""

    out: IO[bytes]
    spec: ModelSpec
    errors: IssueList
    warnings: IssueList
    example_count: int = 0
    unparsed_count: int = 0
    tokens: array[int] = field(default_factory=lambda: array("q"))
    assistant: array[int] = field(default_factory=lambda: array("q"))
    assistant_tokens: int = 0
    kind: str | None = None
    kind_line: int = 0
    seen: dict[bytes, int] = field(default_factory=dict)
    out_hash: Any = field(default_factory=hashlib.sha256)
    out_bytes: int = 0
    stopped: bool = False

    def add(self, outcome: ChunkOutcome) -> None:
        self.example_count += outcome.example_count
        self.unparsed_count += outcome.unparsed_count
        self.errors.merge(outcome.errors, outcome.error_totals)
        if outcome.fatal is not None:
            self.fail(outcome.fatal)
            return
        self.warnings.merge(outcome.warnings, outcome.warning_totals)
        self.tokens.extend(outcome.tokens)
        self.assistant.extend(outcome.assistant_per_example)
        self.assistant_tokens += outcome.assistant_tokens
        for line, kind, digest in zip(outcome.lines, outcome.kinds, outcome.digests, strict=True):
            if self.kind is None:
                self.kind, self.kind_line = kind, line
            elif kind != self.kind:
                self.errors.add(
                    Issue(
                        line,
                        None,
                        codes.INCONSISTENT_EXAMPLE_KIND,
                        f"Line {line} is a {KIND_NAMES[kind]} example, but line "
                        f"{self.kind_line} is a {KIND_NAMES[self.kind]} example; "
                        "a file holds one kind.",
                    )
                )
            first = self.seen.setdefault(digest, line)
            if first != line:
                self.warnings.add(
                    Issue(
                        line,
                        None,
                        codes.DUPLICATE_EXAMPLE,
                        f"Line {line} is an exact duplicate of line {first}.",
                    )
                )
        self.out.write(outcome.normalized)
        self.out_hash.update(outcome.normalized)
        self.out_bytes += len(outcome.normalized)

    def fail(self, issue: Issue) -> None:
        """A problem that stops reading the file (encoding, broken syntax)."""
        self.errors.add(issue)
        self.stopped = True


def _pool_width(executor: Executor) -> int:
    if isinstance(executor, ProcessPoolExecutor):
        return max(1, int(getattr(executor, "_max_workers", 1)))
    return max(1, os.cpu_count() or 1)


# Chunks a pool process takes from one file, at least: with five 4 MiB chunks of
# a 20 MiB file on two processes, one did three while the other waited.
CHUNKS_PER_PROCESS = 8
# Below this, a chunk's fixed costs (a task, a read, its result) start to show.
MIN_BALANCED_CHUNK_BYTES = 256 * 1024


def _balanced_chunk_bytes(chunk_bytes: int, total_bytes: int, executor: Executor | None) -> int:
    """`chunk_bytes`, made smaller for a file that would give the pool few chunks."""
    if executor is None:
        return chunk_bytes
    share = total_bytes // (_pool_width(executor) * CHUNKS_PER_PROCESS)
    return min(chunk_bytes, max(MIN_BALANCED_CHUNK_BYTES, share))


class _PastDeadline(Exception):
    pass


PROGRESS_EVERY_SECONDS = 0.5


class _Meter:
    """Counts the bytes read from a source and reports progress, throttled."""

    def __init__(
        self,
        raw: IO[bytes],
        total: int,
        report: Callable[[int, int, int], None] | None,
    ) -> None:
        self._raw = raw
        self.total = total
        self.done = 0
        self._report = report
        self._last = 0.0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.done += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = next(self._raw)
        self.done += len(line)
        return line

    def tick(self, examples: int, *, final: bool = False) -> None:
        if self._report is None:
            return
        now = time.monotonic()
        if final or now - self._last >= PROGRESS_EVERY_SECONDS:
            self._last = now
            self._report(min(self.done, self.total), self.total, examples)


def _run_chunks(
    works: Iterator[LinesChunk | RecordsChunk],
    context: ChunkContext,
    assembler: _Assembler,
    executor: Executor | None,
    deadline: float | None = None,
    meter: _Meter | None = None,
) -> None:
    """Process every chunk, in the executor when given, merging results in order.

    Past `deadline` (a time.monotonic() value) it stops with a validation_timeout
    error, checked before each chunk and while waiting for the pool.
    """
    in_flight: deque[Future[ChunkOutcome]] = deque()
    limit = 2 * _pool_width(executor) if executor is not None else 0

    def remaining() -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise _PastDeadline
        return left

    def collect() -> None:
        try:
            assembler.add(in_flight.popleft().result(timeout=remaining()))
        except FutureTimeout:
            raise _PastDeadline from None
        if meter is not None:
            meter.tick(assembler.example_count)

    try:
        try:
            for work in works:
                remaining()
                if executor is None:
                    assembler.add(process_chunk(work, context))
                    if meter is not None:
                        meter.tick(assembler.example_count)
                else:
                    in_flight.append(executor.submit(process_chunk, work, context))
                    while len(in_flight) >= limit and not assembler.stopped:
                        collect()
                if assembler.stopped:
                    return
        except (
            UndecodableInput,
            TableSyntaxError,
            JsonArrayError,
            MissingColumns,
            UnreadableWorkbook,
        ) as exc:
            # Chunks already read come first, so their issues keep file order.
            while in_flight and not assembler.stopped:
                collect()
            if not assembler.stopped:
                for issue in exc.issues if isinstance(exc, MissingColumns) else [exc.issue]:
                    assembler.fail(issue)
            return
        while in_flight and not assembler.stopped:
            collect()
    except _PastDeadline:
        assembler.fail(
            Issue(
                None,
                None,
                codes.VALIDATION_TIMEOUT,
                "Validating the file took longer than this service allows; "
                "split it into smaller files and upload each.",
            )
        )
    finally:
        for future in in_flight:
            future.cancel()


def _jsonl_chunks(
    handle: _Meter, chunk_bytes: int, hasher: Any | None, shared: Path | None = None
) -> Iterator[LinesChunk]:
    """Whole lines, about chunk_bytes at a time; a longer line makes a longer chunk.

    With `shared` (a path to the same bytes that `handle` reads), a chunk names
    its byte range instead of carrying the bytes.
    """
    line = 1
    carry = b""
    offset = 0  # where `carry` starts in the file
    first = True

    def chunk(data: bytes, end: int) -> LinesChunk:
        if shared is None:
            return LinesChunk(line, data[:end] if end < len(data) else data)
        return LinesChunk(line, path=str(shared), offset=offset, size=end)

    while block := handle.read(chunk_bytes):
        if hasher is not None:
            hasher.update(block)
        if first:
            if block.startswith(UTF8_BOM):
                block, offset = block[len(UTF8_BOM) :], len(UTF8_BOM)
            first = False
        data = carry + block if carry else block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        yield chunk(data, cut)
        line += data.count(b"\n", 0, cut)
        offset += cut
        carry = data[cut:]
    if carry:
        yield chunk(carry, len(carry))


@contextmanager
def _linked_source(source: Path, beside: Path) -> Iterator[Path | None]:
    """A hard link to `source` next to `beside`, for pool processes to read chunks
    from, removed on exit; None where the file system refuses one (the chunks then
    carry their bytes). The link keeps the bytes readable if `source` is deleted
    meanwhile (a dataset deleted while the worker validates it)."""
    link = beside.with_name(beside.name + ".source")
    try:
        os.link(source, link)
    except OSError:
        yield None
        return
    try:
        yield link
    finally:
        link.unlink(missing_ok=True)


def _hashed_blocks(handle: _Meter, size: int, hasher: Any | None) -> Iterator[bytes]:
    while block := handle.read(size):
        if hasher is not None:
            hasher.update(block)
        yield block


def _json_array_chunks(
    handle: _Meter, chunk_bytes: int, hasher: Any | None
) -> Iterator[RecordsChunk]:
    records: list[tuple[int, object]] = []
    size = 0
    text = decode_utf8_stream(_hashed_blocks(handle, TEXT_BLOCK_BYTES, hasher))
    for element, value, chars in iter_json_array(text):
        records.append((element, value))
        size += chars
        if size >= chunk_bytes:
            yield RecordsChunk(records)
            records, size = [], 0
    if records:
        yield RecordsChunk(records)


def _table_chunks(
    rows: Iterator[tuple[int, Sequence[object]]],
    conversion: ConversionSettings,
    chunk_bytes: int,
) -> Iterator[RecordsChunk]:
    """Rows converted to chat examples here; empty cells become errors carried with the chunk."""
    records: list[tuple[int, object]] = []
    rejected: list[Issue] = []
    rejected_count = 0
    size = 0
    for line, example, problems in iter_table_examples(rows, conversion):
        if example is None:
            rejected.extend(problems)
            rejected_count += 1
        else:
            records.append((line, example))
            size += sum(len(message["content"]) for message in example["messages"])
        if size >= chunk_bytes:
            yield RecordsChunk(records, rejected, rejected_count)
            records, rejected, rejected_count, size = [], [], 0, 0
    if records or rejected:
        yield RecordsChunk(records, rejected, rejected_count)


def _ingest_workbook(
    source: Path,
    dest: Path,
    options: IngestOptions,
    context: ChunkContext,
    assembler: _Assembler,
    executor: Executor | None,
) -> None:
    """Check the archive, read its rows in a memory-capped child, then convert them."""
    rows_file = dest.with_name(dest.name + ".rows")
    try:
        try:
            inspect_workbook(source, options.workbook_limits)
            extract_rows(source, rows_file, options.workbook_limits, deadline=options.deadline)
        except UnreadableWorkbook as exc:
            assembler.fail(exc.issue)
            return
        with rows_file.open("rb") as handle:
            meter = _Meter(handle, rows_file.stat().st_size, options.progress)
            rows = _table_chunks(read_rows(meter), options.conversion, options.chunk_bytes)
            _run_chunks(rows, context, assembler, executor, options.deadline, meter)
            meter.tick(assembler.example_count, final=True)
    finally:
        rows_file.unlink(missing_ok=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _chunk_context(options: IngestOptions, spec: ModelSpec, parallel: bool) -> ChunkContext:
    return ChunkContext(
        conversion=options.conversion,
        counting=spec.counting,
        example_token_limit=spec.example_token_limit,
        max_issues=max(options.max_errors, options.max_warnings),
        # Inside pool workers every core is already busy; inline, threads
        # let tiktoken (which releases the GIL) use the idle ones.
        tokenizer_threads=1 if parallel else (os.cpu_count() or 1),
    )


def _finish(
    assembler: _Assembler,
    options: IngestOptions,
    source_format: SourceFormat,
    source_bytes: int,
    source_sha256: str | None,
) -> IngestReport:
    spec = assembler.spec
    minimum = spec.min_examples if options.min_examples is None else options.min_examples
    # Broken lines are not examples, but a file of them is not "too small" either.
    lines_seen = assembler.example_count + assembler.unparsed_count
    if not assembler.stopped and lines_seen == 0 and not assembler.errors.total:
        assembler.errors.add(
            Issue(
                None,
                None,
                codes.EMPTY_FILE,
                "The file is empty (0 bytes)."
                if source_bytes == 0
                else "The file holds no examples: it has only blank lines, or a table "
                "has only its header row.",
            )
        )
    elif not assembler.stopped and lines_seen < minimum:
        assembler.errors.add(
            Issue(
                None,
                None,
                codes.TOO_FEW_EXAMPLES,
                f"The file has {assembler.example_count} example(s), but fine-tuning needs "
                f"at least {minimum}.",
            )
        )
    if assembler.out_bytes > options.max_file_bytes:
        assembler.errors.add(
            Issue(
                None,
                None,
                codes.FILE_TOO_LARGE,
                f"The converted file is {assembler.out_bytes} bytes; the provider accepts at "
                f"most {options.max_file_bytes}.",
            )
        )
    stats = summarize_tokens(
        assembler.tokens,
        assistant_token_count=assembler.assistant_tokens,
        example_token_limit=spec.example_token_limit,
        encoding=spec.counting.label,
    )
    valid = len(assembler.tokens)
    estimate = (
        estimate_training(
            spec=spec,
            example_count=valid,
            billed_tokens_per_epoch=stats.billed_tokens_per_epoch,
            n_epochs=options.n_epochs,
            batch_size=options.batch_size,
        )
        if valid
        else None
    )
    errors = sorted(assembler.errors.items, key=_line_order)
    warnings = sorted(assembler.warnings.items, key=_line_order)[: options.max_warnings]
    return IngestReport(
        kind=KIND_NAMES[assembler.kind] if assembler.kind else "chat",
        format=source_format,
        model=spec.base_model,
        example_count=assembler.example_count,
        valid_example_count=valid,
        errors=errors,
        error_total=assembler.errors.total,
        error_totals=dict(assembler.errors.totals),
        warnings=warnings,
        warning_total=assembler.warnings.total,
        warning_totals=dict(assembler.warnings.totals),
        tokens=stats,
        estimate=estimate,
        source_bytes=source_bytes,
        source_sha256=source_sha256,
        normalized_bytes=assembler.out_bytes,
        normalized_sha256=assembler.out_hash.hexdigest(),
        example_tokens=assembler.tokens,
        example_assistant_tokens=assembler.assistant,
    )


def ingest_file(
    source: Path,
    dest: Path,
    options: IngestOptions,
    *,
    executor: Executor | None = None,
    source_sha256: str | None = None,
) -> IngestReport:
    """Convert `source` (the original upload) to normalized chat JSONL at `dest`, and judge it.

    `dest` is always written (possibly empty or
    partial) and is the only file this creates; discard it when the report
    has errors. On an unexpected exception `dest` is removed. `source_sha256`
    is the SHA-256 of `source` when the caller already has it (the API hashes
    an upload as it arrives); without it the file is hashed as it is read.
    """
    spec = options.spec
    source_bytes = source.stat().st_size
    with source.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    source_format: SourceFormat = (
        detect_format(head) if options.format == "auto" else options.format
    )
    parallel = executor is not None and source_bytes >= options.parallel_threshold_bytes
    context = _chunk_context(options, spec, parallel)
    hasher = None if source_sha256 is not None else hashlib.sha256()
    try:
        with dest.open("wb") as out:
            assembler = _Assembler(
                out=out,
                spec=spec,
                errors=IssueList(options.max_errors),
                warnings=IssueList(options.max_warnings),
            )
            if source_bytes > options.max_file_bytes:
                assembler.fail(
                    Issue(
                        None,
                        None,
                        codes.FILE_TOO_LARGE,
                        f"The file is {source_bytes} bytes; the provider accepts at most "
                        f"{options.max_file_bytes}.",
                    )
                )
                return _finish(assembler, options, source_format, source_bytes, None)
            run_in = executor if parallel else None
            chunk_bytes = _balanced_chunk_bytes(options.chunk_bytes, source_bytes, run_in)
            if source_format == "xlsx":
                _ingest_workbook(source, dest, options, context, assembler, run_in)
                return _finish(
                    assembler,
                    options,
                    source_format,
                    source_bytes,
                    source_sha256 or _file_sha256(source),
                )
            with contextlib.ExitStack() as scope:
                raw = scope.enter_context(source.open("rb"))
                meter = _Meter(raw, source_bytes, options.progress)
                works: Iterator[LinesChunk | RecordsChunk]
                if source_format == "jsonl":
                    shared = (
                        scope.enter_context(_linked_source(source, dest))
                        if isinstance(run_in, ProcessPoolExecutor)
                        else None
                    )
                    works = _jsonl_chunks(meter, chunk_bytes, hasher, shared)
                elif source_format == "json":
                    works = _json_array_chunks(meter, chunk_bytes, hasher)
                else:
                    delimiter = "\t" if source_format == "tsv" else ","
                    rows = iter_delimited_rows(meter, delimiter)
                    works = _table_chunks(rows, options.conversion, chunk_bytes)
                _run_chunks(works, context, assembler, run_in, options.deadline, meter)
                meter.tick(assembler.example_count, final=True)
            if source_sha256 is not None:
                digest = source_sha256
            elif source_format in ("csv", "tsv") or assembler.stopped or hasher is None:
                digest = _file_sha256(source)
            else:
                digest = hasher.hexdigest()
            return _finish(assembler, options, source_format, source_bytes, digest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def ingest_examples(
    examples: Sequence[object],
    dest: Path,
    options: IngestOptions,
    *,
    executor: Executor | None = None,
) -> IngestReport:
    """Like ingest_file, for examples posted as a JSON list.

    Each element may be any shape a JSONL line may take (chat, preference,
    prompt/completion, question/answer object); element N is reported as
    line N. `source_sha256` is the SHA-256 of the list's compact JSON.
    """
    spec = options.spec
    source = compact_json(list(examples)).encode("utf-8", errors="surrogatepass")
    parallel = executor is not None and len(source) >= options.parallel_threshold_bytes
    context = _chunk_context(options, spec, parallel)
    records = list(enumerate(examples, start=1))
    per_chunk = max(1, len(records) * options.chunk_bytes // max(1, len(source)))
    works = (
        RecordsChunk(records[start : start + per_chunk])
        for start in range(0, len(records), per_chunk)
    )
    try:
        with dest.open("wb") as out:
            assembler = _Assembler(
                out=out,
                spec=spec,
                errors=IssueList(options.max_errors),
                warnings=IssueList(options.max_warnings),
            )
            _run_chunks(
                iter(works), context, assembler, executor if parallel else None, options.deadline
            )
            return _finish(
                assembler, options, "json", len(source), hashlib.sha256(source).hexdigest()
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


@dataclass
class _PartCounter:
    tokens: list[int] = field(default_factory=list)
    assistant_tokens: int = 0
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, line: bytes, tokens: int, assistant: int) -> None:
        self.tokens.append(tokens)
        self.assistant_tokens += assistant
        self.size += len(line)
        self.digest.update(line)

    def stats(self) -> PartStats:
        return PartStats(
            example_count=len(self.tokens),
            token_count=sum(self.tokens),
            bytes=self.size,
            sha256=self.digest.hexdigest(),
            example_tokens=self.tokens,
            assistant_token_count=self.assistant_tokens,
        )


def _line_tokens(line: bytes, counting: Counting) -> int:
    """The count of one normalized line (0 if it is not a valid example)."""
    prepared, _ = prepare_example(json.loads(line), 0, ConversionSettings())
    if prepared is None:
        return 0
    texts, _, overhead = example_texts(prepared.messages, prepared.extras, counting)
    return overhead + sum(encoded_lengths(texts, counting.tokenizer))


def split_dataset(
    normalized: Path,
    train_dest: Path,
    valid_dest: Path,
    *,
    validation_fraction: float,
    seed: int,
    spec: ModelSpec | None = None,
    report: IngestReport | None = None,
) -> SplitReport:
    """Split a normalized (already validated) JSONL into training and validation files.

    Deterministic for a given file and seed; see service.domain.datasets.split.
    Reads the file twice (keys, then copy) and keeps 8 bytes per example. With
    the `report` of the ingestion that wrote the file, each part is measured from
    the per-example counts it kept; without one, lines are counted again.
    """
    counting = (spec or default_spec()).counting
    keys: array[int] = array("Q")
    with normalized.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                keys.append(split_key(seed, raw.rstrip(b"\r\n")))
    chosen = choose_validation(keys, validation_fraction)
    train, validation = _PartCounter(), _PartCounter()
    try:
        with (
            normalized.open("rb") as handle,
            train_dest.open("wb") as train_out,
            valid_dest.open("wb") as valid_out,
        ):
            index = 0
            for raw in handle:
                if not raw.strip():
                    continue
                line = raw.rstrip(b"\r\n") + b"\n"
                in_validation = index in chosen
                (valid_out if in_validation else train_out).write(line)
                if report is not None:
                    tokens = report.example_tokens[index]
                    assistant = report.example_assistant_tokens[index]
                else:
                    tokens, assistant = _line_tokens(line, counting), 0
                (validation if in_validation else train).add(line, tokens, assistant)
                index += 1
    except BaseException:
        train_dest.unlink(missing_ok=True)
        valid_dest.unlink(missing_ok=True)
        raise
    return SplitReport(
        train=train.stats(),
        validation=validation.stats(),
        seed=seed,
        validation_fraction=validation_fraction,
    )
