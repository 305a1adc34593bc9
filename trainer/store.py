"""Everything the trainer keeps, as files under `--data-dir`, so it survives a restart.

    DATA_DIR/
      trainer.lock                 held by the running server (one server per folder)
      files/<file-id>.json         a file's metadata (the OpenAI file object's fields)
      files/<file-id>.data         its bytes
      jobs/<job-id>/job.json       the job record (jobs.Job)
      jobs/<job-id>/events.jsonl   its events, oldest first, appended
      jobs/<job-id>/spec.json      the training spec given to `python -m trainer.train`
      jobs/<job-id>/train.log      the training process's stdout and stderr
      jobs/<job-id>/run/           the run folder the training writes (see trainer/spec.py)

Every JSON record is replaced atomically (write, fsync, rename). The server is the
only writer of `files/` and of a job's `job.json` and `events.jsonl`; the training
process only writes inside `run/`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainer import ids
from trainer.jobs import Job
from trainer.spec import CHECKPOINTS_FILE, write_json_atomic

logger = logging.getLogger("trainer.store")


class DataDirLocked(RuntimeError):
    pass


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the folder for the life of the server (released on exit)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "trainer.lock").open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirLocked(
            f"another trainer is already using {data_dir}; give each server its own --data-dir"
        ) from None
    return handle


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": self.bytes,
            "created_at": self.created_at,
            # Deprecated fields the real API still sends; every file here is processed.
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, StoredFile] = {}
        for meta in root.glob("*.json"):
            try:
                stored = StoredFile(**json.loads(meta.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                logger.error("ignoring unreadable file record %s: %s", meta, exc)
                continue
            if self.content_path(stored.id).is_file():
                self._files[stored.id] = stored
        # Uploads that never finished (the server stopped mid-way) are not files.
        for partial in root.glob("*.partial"):
            partial.unlink(missing_ok=True)

    def content_path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.data"

    def staging_path(self) -> Path:
        """A fresh place to stream an upload to before `adopt` makes it a file."""
        return self.root / f"upload-{ids.base62(16)}.partial"

    def adopt(self, staged: Path, filename: str, purpose: str) -> StoredFile:
        stored = StoredFile(
            id=ids.file_id(),
            filename=filename,
            purpose=purpose,
            bytes=staged.stat().st_size,
            created_at=int(time.time()),
        )
        os.replace(staged, self.content_path(stored.id))
        write_json_atomic(self.root / f"{stored.id}.json", _file_record(stored))
        self._files[stored.id] = stored
        return stored

    def add_bytes(self, content: bytes, filename: str, purpose: str) -> StoredFile:
        staged = self.staging_path()
        staged.write_bytes(content)
        return self.adopt(staged, filename, purpose)

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        stored = self._files.pop(file_id, None)
        if stored is None:
            return False
        (self.root / f"{file_id}.json").unlink(missing_ok=True)
        self.content_path(file_id).unlink(missing_ok=True)
        return True

    def newest_first(self, purpose: str | None = None) -> list[StoredFile]:
        found = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        return sorted(found, key=lambda f: (f.created_at, f.id), reverse=True)


def _file_record(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "bytes": stored.bytes,
        "created_at": stored.created_at,
    }


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON-object lines of a file (a half-written last line is skipped)."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._event_ids: dict[str, set[str]] = {}
        for record in root.glob("*/job.json"):
            try:
                job = Job.from_record(json.loads(record.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError) as exc:
                logger.error("ignoring unreadable job record %s: %s", record, exc)
                continue
            self._jobs[job.id] = job
            events = list(read_jsonl(self.folder(job.id) / "events.jsonl"))
            self._events[job.id] = events
            self._event_ids[job.id] = {str(event.get("id")) for event in events}

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def run_dir(self, job_id: str) -> Path:
        return self.folder(job_id) / "run"

    def spec_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "spec.json"

    def log_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "train.log"

    def add(self, job: Job) -> None:
        self.folder(job.id).mkdir(parents=True, exist_ok=True)
        self._jobs[job.id] = job
        self._events[job.id] = []
        self._event_ids[job.id] = set()
        self.save(job)

    def save(self, job: Job) -> None:
        write_json_atomic(self.folder(job.id) / "job.json", job.to_record())

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def newest_first(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: (job.created_at, job.id), reverse=True)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's events, oldest first."""
        return self._events.get(job_id, [])

    def add_event(
        self,
        job: Job,
        message: str,
        *,
        level: str = "info",
        type_: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.append_event(
            job,
            {
                "id": ids.event_id(),
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": type_,
                "data": data or {},
            },
        )

    def append_event(self, job: Job, event: dict[str, Any]) -> bool:
        """Record an event once (by id); False when it was already there."""
        seen = self._event_ids.setdefault(job.id, set())
        if event["id"] in seen:
            return False
        with (self.folder(job.id) / "events.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
        seen.add(event["id"])
        self._events.setdefault(job.id, []).append(event)
        return True

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The job's kept checkpoints, oldest first, as OpenAI's checkpoint objects."""
        return list(read_jsonl(self.run_dir(job_id) / CHECKPOINTS_FILE))


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event["id"],
        "created_at": event["created_at"],
        "level": event.get("level", "info"),
        "message": event.get("message", ""),
        "data": event.get("data") or {},
        "type": event.get("type", "message"),
    }


def checkpoint_view(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in checkpoint.items() if key != "adapter_dir"}
