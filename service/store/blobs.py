"""Dataset files on disk (DATA_DIR), behind a small interface.

Uploads are streamed into a temporary file in the same directory tree and
renamed into place only when a dataset is accepted, so a refused or broken
upload never leaves a half-written dataset behind. An S3-compatible store can
replace this class: the rest of the code only calls these methods.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

CHUNK_BYTES = 1024 * 1024


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.datasets = root / "datasets"
        self.scratch = root / "tmp"

    def ensure(self) -> None:
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def path(self, dataset_id: str) -> Path:
        if not dataset_id.replace("_", "").isalnum():
            raise ValueError("dataset ids are alphanumeric")
        return self.datasets / f"{dataset_id}.jsonl"

    @contextmanager
    def scratch_file(self, suffix: str = "") -> Iterator[Path]:
        """A temporary path that is removed on exit unless it was committed (moved)."""
        self.ensure()
        path = self.scratch / f"{secrets.token_hex(12)}{suffix}"
        try:
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit(self, scratch: Path, dataset_id: str) -> Path:
        """Atomically move a finished file into place."""
        self.ensure()
        target = self.path(dataset_id)
        os.replace(scratch, target)
        return target

    def original_path(self, dataset_id: str) -> Path:
        """Where a large upload waits for the worker to validate it."""
        self.ensure()
        (self.root / "originals").mkdir(parents=True, exist_ok=True)
        return self.root / "originals" / f"{self.path(dataset_id).stem}.upload"

    def delete_original(self, dataset_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.original_path(dataset_id).unlink()

    def source_path(self, dataset_id: str) -> Path:
        """The bytes as uploaded, kept for a file made through /v1/files."""
        self.ensure()
        (self.root / "sources").mkdir(parents=True, exist_ok=True)
        return self.root / "sources" / f"{self.path(dataset_id).stem}.upload"

    def keep_source(self, upload: Path, dataset_id: str) -> None:
        """Move an upload (a scratch file or a validated original) to its source place."""
        os.replace(upload, self.source_path(dataset_id))

    def retire_original(self, dataset_id: str, *, keep_source: bool) -> None:
        """A validated upload's original: kept as the source, or removed."""
        if not keep_source:
            self.delete_original(dataset_id)
            return
        with contextlib.suppress(FileNotFoundError):
            self.keep_source(self.original_path(dataset_id), dataset_id)

    def has_source(self, dataset_id: str) -> bool:
        return self.source_path(dataset_id).is_file()

    def delete(self, dataset_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(dataset_id).unlink()

    def delete_all(self, dataset_id: str) -> None:
        """The normalized file, the kept source and any upload waiting for validation."""
        self.delete(dataset_id)
        self.delete_original(dataset_id)
        with contextlib.suppress(FileNotFoundError):
            self.source_path(dataset_id).unlink()

    def scratch_files(self) -> list[Path]:
        return sorted(self.scratch.glob("*")) if self.scratch.is_dir() else []

    def original_ids(self) -> list[str]:
        folder = self.root / "originals"
        return sorted(p.stem for p in folder.glob("*.upload")) if folder.is_dir() else []

    def source_ids(self) -> list[str]:
        folder = self.root / "sources"
        return sorted(p.stem for p in folder.glob("*.upload")) if folder.is_dir() else []

    def dataset_ids(self) -> list[str]:
        return (
            sorted(p.stem for p in self.datasets.glob("*.jsonl")) if self.datasets.is_dir() else []
        )

    def exists(self, dataset_id: str) -> bool:
        return self.path(dataset_id).is_file()

    async def stream(self, dataset_id: str) -> AsyncIterator[bytes]:
        async for chunk in _read(self.path(dataset_id)):
            yield chunk

    async def stream_source(self, dataset_id: str) -> AsyncIterator[bytes]:
        async for chunk in _read(self.source_path(dataset_id)):
            yield chunk


async def _read(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(CHUNK_BYTES):
            yield chunk
