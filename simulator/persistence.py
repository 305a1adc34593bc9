"""The simulator's state directory: files, uploads, jobs, tuned models and owed webhooks
kept on disk so they survive a restart (`--state-dir DIR`).

Layout of DIR:

    state.sqlite3    one SQLite database (with -wal and -shm beside it while open)
    blobs/<id>       contents larger than INLINE_MAX_BYTES (files and upload parts)
    lock             held (flock) by the one simulator process using DIR

Memory stays the source of truth while the process runs; the database mirrors
every change as it happens. Each change of one object (a file, an upload, a job's
step, a webhook attempt) is written completely or not at all, and changes made
together (a job finishing: its events, results file, tuned models and webhook) are
committed in one transaction, so a `kill -9` at any moment leaves a state that
existed. SQLite runs in WAL mode with `synchronous=NORMAL`: a killed process loses
nothing that was committed; a power cut can lose the last moments but never
corrupts the database.

Large contents go to their own files, written under a temporary name, flushed to
disk and renamed into place before the row naming them is committed; loading
removes leftover temporary files and any blob no row names.

What moves continuously (a job's position between milestones) is written when a
milestone is passed, at least every PROGRESS_SAVE_SECONDS for every running job, and
on a clean stop; after a `kill -9` a job resumes from the last of those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.lifecycle import Checkpoint, Job, JobEvent
from simulator.records import (
    AnalysisKey,
    StoredFile,
    TunedModel,
    Upload,
    UploadPart,
    WebhookRecord,
)
from simulator.training_data import TrainingAnalysis, TrainingPair

logger = logging.getLogger("simulator.persistence")

SCHEMA_VERSION = 1
DATABASE_NAME = "state.sqlite3"
BLOBS_DIR = "blobs"
LOCK_NAME = "lock"
TEMP_MARK = ".tmp-"
# Contents up to this size live in the database row, bigger ones in blobs/.
INLINE_MAX_BYTES = 1024 * 1024
# How often the position of every running job is written even without a milestone.
PROGRESS_SAVE_SECONDS = 1.0
# Webhook deliveries kept on disk (and in memory), newest first.
MAX_WEBHOOK_RECORDS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    content BLOB  -- NULL: the content is blobs/<id>
);
CREATE TABLE IF NOT EXISTS uploads (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    upload_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    content BLOB  -- NULL: the content is blobs/<id>
);
CREATE INDEX IF NOT EXISTS upload_parts_by_upload ON upload_parts (upload_id);
CREATE TABLE IF NOT EXISTS analyses (
    file_id TEXT NOT NULL,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (file_id, method, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    fixed TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_checkpoints (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tuned_models (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
"""

_TABLES = (
    "files",
    "uploads",
    "upload_parts",
    "analyses",
    "jobs",
    "job_events",
    "job_checkpoints",
    "tuned_models",
    "webhooks",
)


class StateDirError(RuntimeError):
    """The state directory cannot be used (held by another process, or from another version)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class SavedJob:
    """A job as read back: what `Job.restore` needs besides the training analyses."""

    fixed: dict[str, Any]
    state: dict[str, Any]
    events: list[JobEvent]
    checkpoints: list[Checkpoint]


@dataclass
class SavedModel:
    id: str
    base_snapshot: str
    encoding: str
    created: int
    owned_by: str
    job_id: str
    lineage: tuple[AnalysisKey, ...]


@dataclass
class Loaded:
    """Everything in a state directory, in the order it was created."""

    files: list[StoredFile] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    analyses: dict[AnalysisKey, TrainingAnalysis] = field(default_factory=dict)
    jobs: list[SavedJob] = field(default_factory=list)
    tuned_models: list[SavedModel] = field(default_factory=list)
    webhooks: list[WebhookRecord] = field(default_factory=list)


@dataclass
class _JobMark:
    """How much of a job the database already has."""

    marker: tuple[object, ...]
    events: int
    checkpoints: int


class StateStore:
    """One open state directory. Not thread-safe: the simulator's event loop is its only user."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._blobs = directory / BLOBS_DIR
        self._blobs.mkdir(exist_ok=True)
        self._lock_fd = _take_lock(directory / LOCK_NAME)
        try:
            self._db = sqlite3.connect(
                directory / DATABASE_NAME, isolation_level=None, check_same_thread=False
            )
            self._prepare()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._depth = 0
        self._unlink_after_commit: list[Path] = []
        self._jobs: dict[str, _JobMark] = {}

    def _prepare(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StateDirError(
                f"{self.directory} holds simulator state in format {version}, this simulator "
                f"writes format {SCHEMA_VERSION}; delete the directory to start afresh"
            )
        db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts; only a power cut can drop the last commits.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            # Fold the log into the database so the directory is one file at rest.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        os.close(self._lock_fd)

    # -- transactions ------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit. Nested uses join the outermost one.

        An exception inside does not undo writes already made: each write mirrors a
        change memory has already made, so the batch is committed and the
        exception passes on.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            self._commit()

    def _commit(self) -> None:
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._unlink_after_commit.clear()
            # What the database has of each job is unknown now; write them whole next time.
            self._jobs.clear()
            raise
        doomed, self._unlink_after_commit = self._unlink_after_commit, []
        for path in doomed:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One object's change: all of its statements land, or none of them."""
        with self.transaction():
            self._db.execute("SAVEPOINT write")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO write")
                self._db.execute("RELEASE write")
                raise
            self._db.execute("RELEASE write")

    # -- contents ------------------------------------------------------------------

    def _put_content(self, object_id: str, content: bytes) -> bytes | None:
        """The value for a `content` column: the bytes, or None once they are in blobs/."""
        if len(content) <= INLINE_MAX_BYTES:
            return content
        final = self._blobs / object_id
        temporary = self._blobs / f"{object_id}{TEMP_MARK}{secrets.token_hex(4)}"
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        _fsync_directory(self._blobs)
        return None

    def _read_content(self, object_id: str, inline: bytes | None, size: int) -> bytes | None:
        if inline is not None:
            return bytes(inline)
        try:
            content = (self._blobs / object_id).read_bytes()
        except FileNotFoundError:
            return None
        return content if len(content) == size else None

    def _drop_content(self, object_id: str) -> None:
        self._unlink_after_commit.append(self._blobs / object_id)

    # -- files -----------------------------------------------------------------------

    def put_file(self, stored: StoredFile) -> None:
        inline = self._put_content(stored.id, stored.content)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO files (id, filename, purpose, created_at, size, content)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        stored.id,
                        stored.filename,
                        stored.purpose,
                        stored.created_at,
                        len(stored.content),
                        inline,
                    ),
                )
        except BaseException:
            if inline is None:
                (self._blobs / stored.id).unlink(missing_ok=True)
            raise

    def delete_file(self, file_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self._drop_content(file_id)

    # -- uploads -----------------------------------------------------------------------

    def put_upload(self, upload: Upload) -> None:
        """Write an upload's own fields (its parts are written one by one)."""
        record = _dumps(
            {
                "filename": upload.filename,
                "purpose": upload.purpose,
                "declared_bytes": upload.declared_bytes,
                "mime_type": upload.mime_type,
                "created_at": upload.created_at,
                "status": upload.status,
                "file_id": upload.file.id if upload.file else None,
            }
        )
        with self._write() as db:
            db.execute(
                "INSERT INTO uploads (id, record) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (upload.id, record),
            )
            if upload.status != "pending":
                # A finished upload no longer needs its parts.
                for (part_id,) in db.execute(
                    "SELECT id FROM upload_parts WHERE upload_id = ? AND content IS NULL",
                    (upload.id,),
                ).fetchall():
                    self._drop_content(part_id)
                db.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload.id,))

    def put_upload_part(self, upload_id: str, part: UploadPart) -> None:
        inline = self._put_content(part.id, part.data)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO upload_parts (id, upload_id, created_at, size, content)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (part.id, upload_id, part.created_at, len(part.data), inline),
                )
        except BaseException:
            if inline is None:
                (self._blobs / part.id).unlink(missing_ok=True)
            raise

    # -- analyses ----------------------------------------------------------------------

    def put_analysis(self, key: AnalysisKey, analysis: TrainingAnalysis) -> None:
        body = _dumps(
            {
                "n_examples": analysis.n_examples,
                "example_tokens": analysis.example_tokens,
                "pairs": [[pair.prompt, pair.answer] for pair in analysis.pairs],
                "problem": analysis.problem,
            }
        )
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO analyses (file_id, method, model, body)"
                " VALUES (?, ?, ?, ?)",
                (*key, body),
            )

    # -- jobs ------------------------------------------------------------------------

    def put_job(self, job: Job, *, with_position: bool = False) -> None:
        """Write what changed in a job since it was last written.

        A job that only moved along its line between milestones is skipped unless
        `with_position` asks for its exact position.
        """
        mark = self._jobs.get(job.id)
        marker = job.change_marker()
        if mark is not None and mark.marker == marker and not with_position:
            return
        new_events = job.events[mark.events if mark else 0 :]
        new_checkpoints = job.checkpoints[mark.checkpoints if mark else 0 :]
        first_event = len(job.events) - len(new_events)
        first_checkpoint = len(job.checkpoints) - len(new_checkpoints)
        with self._write() as db:
            state = _dumps(job.state_json())
            if mark is None:
                db.execute(
                    "INSERT INTO jobs (id, fixed, state) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                    (job.id, _dumps(job.fixed_json()), state),
                )
            else:
                db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job.id))
            if new_events:
                db.executemany(
                    "INSERT OR IGNORE INTO job_events (job_id, n, body) VALUES (?, ?, ?)",
                    [
                        (job.id, first_event + offset, _dumps(event.to_json()))
                        for offset, event in enumerate(new_events)
                    ],
                )
            if new_checkpoints:
                db.executemany(
                    "INSERT OR IGNORE INTO job_checkpoints (job_id, n, body) VALUES (?, ?, ?)",
                    [
                        (job.id, first_checkpoint + offset, _dumps(checkpoint.to_json()))
                        for offset, checkpoint in enumerate(new_checkpoints)
                    ],
                )
        self._jobs[job.id] = _JobMark(marker, len(job.events), len(job.checkpoints))

    def mark_saved(self, job: Job) -> None:
        """Note that the database holds this job exactly as it is (it was just loaded)."""
        self._jobs[job.id] = _JobMark(job.change_marker(), len(job.events), len(job.checkpoints))

    # -- tuned models ------------------------------------------------------------------

    def put_tuned_model(self, model: TunedModel) -> None:
        record = _dumps(
            {
                "base_snapshot": model.base_snapshot,
                "encoding": model.encoding,
                "created": model.created,
                "owned_by": model.owned_by,
                "job_id": model.job_id,
                "lineage": [list(key) for key in model.lineage],
            }
        )
        with self._write() as db:
            db.execute(
                "INSERT INTO tuned_models (id, record) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (model.id, record),
            )

    def delete_tuned_model(self, model_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tuned_models WHERE id = ?", (model_id,))

    # -- webhooks ----------------------------------------------------------------------

    def put_webhook(self, record: WebhookRecord, *, new: bool) -> None:
        """Add a delivery (`new`), or update one still kept (a forgotten one stays gone)."""
        body = _dumps(
            {
                "type": record.type,
                "job_id": record.job_id,
                "created_at": record.created_at,
                "attempts": record.attempts,
                "status": record.status,
                "last_status_code": record.last_status_code,
                "last_error": record.last_error,
            }
        )
        with self._write() as db:
            if new:
                db.execute(
                    "INSERT INTO webhooks (id, record) VALUES (?, ?)", (record.event_id, body)
                )
                db.execute(
                    "DELETE FROM webhooks WHERE seq <= (SELECT seq FROM webhooks"
                    " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (MAX_WEBHOOK_RECORDS,),
                )
            else:
                db.execute("UPDATE webhooks SET record = ? WHERE id = ?", (body, record.event_id))

    # -- everything ----------------------------------------------------------------------

    def clear(self) -> None:
        """Forget everything (`/_sim/reset`)."""
        with self._write() as db:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            for path in self._blobs.iterdir():
                self._unlink_after_commit.append(path)
        self._jobs.clear()

    def load(self) -> Loaded:
        """Read the whole directory back, dropping what a crash left half-made."""
        db = self._db
        loaded = Loaded()
        keep: set[str] = set()
        for file_id, filename, purpose, created_at, size, inline in db.execute(
            "SELECT id, filename, purpose, created_at, size, content FROM files ORDER BY seq"
        ):
            content = self._read_content(file_id, inline, size)
            if content is None:
                logger.warning("file %s lost its content; leaving it out", file_id)
                continue
            keep.add(file_id)
            loaded.files.append(StoredFile(file_id, filename, purpose, created_at, content))
        files = {stored.id: stored for stored in loaded.files}

        parts: dict[str, dict[str, UploadPart]] = {}
        for part_id, upload_id, created_at, size, inline in db.execute(
            "SELECT id, upload_id, created_at, size, content FROM upload_parts ORDER BY seq"
        ):
            data = self._read_content(part_id, inline, size)
            if data is None:
                logger.warning("upload part %s lost its content; leaving it out", part_id)
                continue
            keep.add(part_id)
            parts.setdefault(upload_id, {})[part_id] = UploadPart(part_id, created_at, data)
        for upload_id, record in db.execute("SELECT id, record FROM uploads ORDER BY seq"):
            fields = json.loads(record)
            file_id = fields.pop("file_id")
            loaded.uploads.append(
                Upload(
                    id=upload_id,
                    parts=parts.get(upload_id, {}),
                    file=files.get(file_id) if file_id else None,
                    **fields,
                )
            )

        for file_id, method, model, body in db.execute(
            "SELECT file_id, method, model, body FROM analyses"
        ):
            fields = json.loads(body)
            loaded.analyses[(file_id, method, model)] = TrainingAnalysis(
                n_examples=fields["n_examples"],
                example_tokens=tuple(fields["example_tokens"]),
                pairs=tuple(TrainingPair(prompt, answer) for prompt, answer in fields["pairs"]),
                problem=fields["problem"],
            )

        events: dict[str, list[JobEvent]] = {}
        for job_id, body in db.execute("SELECT job_id, body FROM job_events ORDER BY job_id, n"):
            events.setdefault(job_id, []).append(JobEvent.from_json(json.loads(body)))
        checkpoints: dict[str, list[Checkpoint]] = {}
        for job_id, body in db.execute(
            "SELECT job_id, body FROM job_checkpoints ORDER BY job_id, n"
        ):
            checkpoints.setdefault(job_id, []).append(
                Checkpoint.from_json(json.loads(body), job_id)
            )
        for job_id, fixed, state in db.execute("SELECT id, fixed, state FROM jobs ORDER BY seq"):
            loaded.jobs.append(
                SavedJob(
                    fixed=json.loads(fixed),
                    state=json.loads(state),
                    events=events.get(job_id, []),
                    checkpoints=checkpoints.get(job_id, []),
                )
            )

        for model_id, record in db.execute("SELECT id, record FROM tuned_models ORDER BY seq"):
            fields = json.loads(record)
            loaded.tuned_models.append(
                SavedModel(
                    id=model_id,
                    base_snapshot=fields["base_snapshot"],
                    encoding=fields["encoding"],
                    created=fields["created"],
                    owned_by=fields["owned_by"],
                    job_id=fields["job_id"],
                    lineage=tuple((key[0], key[1], key[2]) for key in fields["lineage"]),
                )
            )

        for event_id, record in db.execute("SELECT id, record FROM webhooks ORDER BY seq"):
            loaded.webhooks.append(WebhookRecord(event_id=event_id, **json.loads(record)))

        self._sweep_blobs(keep)
        return loaded

    def _sweep_blobs(self, keep: set[str]) -> None:
        """Remove half-written temporaries and blobs whose row never committed or was deleted."""
        for path in self._blobs.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirError(
            f"{path.parent} is in use by another simulator process (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
