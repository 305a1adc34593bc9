"""Jobs from creation to a final state: validate, queue, launch, watch, cancel, recover.

Each training is its own OS process (`python -m trainer.train SPEC.json`) in its
own process group, so a crash or an out-of-memory kill fails that job and not the
server, and cancelling stops the whole group. The server only launches and
watches: it copies the run's events into the job's log, notices the exit, and
reads the run folder to decide the outcome.

At most `training_slots` trainings run at once (one by default; one per GPU with
`--gpus`); the rest wait in `queued`, oldest first.

Restart rule: a job that was `running` when the server died is failed with code
`trainer_stopped` (its process is stopped if it is still alive), unless its run
had already finished and written `result.json`, in which case it succeeds. Jobs
that were validating or queued carry on. Graceful shutdown fails running jobs the
same way at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trainer
from trainer import ids, training_data
from trainer.config import TrainerConfig
from trainer.errors import APIError
from trainer.job_requests import JobRequest
from trainer.jobs import Job
from trainer.model_catalog import ModelCatalog, auto_batch_size, auto_epochs
from trainer.spec import (
    ERROR_FILE,
    EVENTS_FILE,
    PARENT_PID_ENV,
    RESULT_FILE,
    RESULTS_CSV,
    TrainingSpec,
    parse_lora,
)
from trainer.store import FileStore, JobStore

logger = logging.getLogger("trainer.runner")

PACKAGE_ROOT = Path(trainer.__file__).resolve().parent.parent


@dataclass(slots=True)
class Running:
    job_id: str
    process: asyncio.subprocess.Process
    slot: str
    watcher: asyncio.Task[None] | None = None


class Runner:
    def __init__(
        self, config: TrainerConfig, files: FileStore, jobs: JobStore, catalog: ModelCatalog
    ) -> None:
        self.config = config
        self.files = files
        self.jobs = jobs
        self.catalog = catalog
        self._queue: list[str] = []
        self._running: dict[str, Running] = {}
        slots = config.gpus or tuple(f"cpu{i}" for i in range(config.training_slots))
        self._free_slots: list[str] = list(slots)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self._recover()
        self._scheduler = asyncio.create_task(self._schedule(), name="trainer-scheduler")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for running in list(self._running.values()):
            job = self.jobs.get(running.job_id)
            if job is not None and not job.terminal:
                self._fail(job, "trainer_stopped", self._stopped_message(job))
            await self._terminate(running)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    # -- commands --------------------------------------------------------------

    def create(self, request: JobRequest) -> Job:
        job = Job(
            id=ids.job_id(),
            created_at=int(time.time()),
            model=request.model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            suffix=request.suffix,
            seed=request.seed,
            metadata=request.metadata,
            requested=request.requested,
            lora_request=request.lora,
            tuned_model_name=ids.tuned_model_name(request.model, request.suffix),
        )
        self.jobs.add(job)
        self.jobs.add_event(job, f"Created fine-tuning job: {job.id}")
        if job.validation_file:
            self.jobs.add_event(
                job,
                f"Validating training file: {job.training_file} and validation file: "
                f"{job.validation_file}",
            )
        else:
            self.jobs.add_event(job, f"Validating training file: {job.training_file}")
        self._spawn(self._validate(job), f"validate-{job.id}")
        return job

    async def cancel(self, job: Job) -> Job:
        if job.terminal:
            raise APIError(
                400,
                f"Job {job.id} has already finished ({job.status}) and cannot be cancelled.",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            )
        job.status = "cancelled"
        job.finished_at = int(time.time())
        self.jobs.save(job)
        if job.id in self._queue:
            self._queue.remove(job.id)
        running = self._running.get(job.id)
        if running is not None:
            # Its last events are copied in before the process is let go, so the
            # cancellation is the last word in the job's log.
            await self._terminate(running)
        self.jobs.add_event(job, "Fine-tuning job cancelled")
        self.jobs.save(job)
        return job

    # -- validation ------------------------------------------------------------

    def _job_file(self, job: Job, file_id: str, name: str) -> Path:
        """The job's own link to an uploaded file, so deleting the upload cannot pull it away."""
        target = self.jobs.folder(job.id) / name
        if not target.exists():
            source = self.files.content_path(file_id)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return target

    async def _validate(self, job: Job) -> None:
        try:
            training = self._job_file(job, job.training_file, "training.jsonl")
            validation = (
                self._job_file(job, job.validation_file, "validation.jsonl")
                if job.validation_file
                else None
            )
        except OSError:
            self._fail(
                job,
                "invalid_training_file",
                "The job failed due to an invalid training file. The file was deleted before "
                "the job could read it.",
                "training_file",
            )
            return
        n_examples, problem = await asyncio.to_thread(
            training_data.check_job_files, training, validation
        )
        if job.terminal:  # cancelled while the files were read
            return
        if problem is not None:
            self._fail(job, problem.code, problem.message, problem.param)
            return
        base = self.catalog.get(job.model)
        if base is None:
            self._fail(
                job,
                "model_not_available",
                f"Model {job.model} is no longer in the trainer's models folder.",
                "model",
            )
            return
        defaults = base.defaults
        requested = job.requested
        n_epochs = (
            requested.n_epochs
            if requested.n_epochs != "auto"
            else defaults.n_epochs or auto_epochs(n_examples)
        )
        batch_size = (
            requested.batch_size
            if requested.batch_size != "auto"
            else defaults.batch_size or auto_batch_size(n_examples)
        )
        multiplier = (
            1.0
            if requested.learning_rate_multiplier == "auto"
            else requested.learning_rate_multiplier
        )
        try:
            lora = parse_lora(job.lora_request, "lora", defaults.lora)
        except APIError as exc:  # checked at creation; only a changed defaults file gets here
            self._fail(job, "invalid_lora_settings", exc.message, "lora")
            return
        job.n_examples = n_examples
        job.hyperparameters = {
            "batch_size": batch_size,
            "learning_rate_multiplier": multiplier,
            "n_epochs": n_epochs,
        }
        job.learning_rate = defaults.learning_rate * multiplier
        job.lora = lora.to_dict()
        job.total_steps = math.ceil(n_examples / batch_size) * n_epochs
        job.status = "queued"
        self.jobs.add_event(job, "Files validated, moving job to queued state")
        self.jobs.save(job)
        self._queue.append(job.id)
        self._wake.set()

    # -- running -----------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._free_slots:
                job = self.jobs.get(self._queue.pop(0))
                if job is None or job.status != "queued":
                    continue
                slot = self._free_slots.pop(0)
                try:
                    launched = await self._launch(job, slot)
                except OSError as exc:
                    logger.exception("could not start the training of %s", job.id)
                    self._fail(job, "training_error", f"The training could not start: {exc}")
                    launched = False
                if not launched:
                    self._free_slots.append(slot)

    def _spec(self, job: Job) -> TrainingSpec:
        base = self.catalog.get(job.model)
        if base is None:
            raise OSError(f"model {job.model} is no longer in the models folder")
        if job.hyperparameters is None or job.lora is None or job.learning_rate is None:
            raise OSError(f"job {job.id} was queued without resolved hyperparameters")
        folder = self.jobs.folder(job.id)
        defaults = base.defaults
        return TrainingSpec(
            job_id=job.id,
            model=job.model,
            model_path=str(base.path.resolve()),
            training_file=str((folder / "training.jsonl").resolve()),
            validation_file=str((folder / "validation.jsonl").resolve())
            if job.validation_file
            else None,
            output_dir=str(self.jobs.run_dir(job.id).resolve()),
            fine_tuned_model=job.tuned_model_name,
            n_epochs=int(job.hyperparameters["n_epochs"]),
            batch_size=int(job.hyperparameters["batch_size"]),
            learning_rate=job.learning_rate,
            seed=job.seed,
            max_length=defaults.max_length,
            lr_scheduler=defaults.lr_scheduler,
            warmup_ratio=defaults.warmup_ratio,
            weight_decay=defaults.weight_decay,
            gradient_checkpointing=defaults.gradient_checkpointing,
            lora=parse_lora(job.lora, "lora", defaults.lora),
        )

    async def _launch(self, job: Job, slot: str) -> bool:
        """Start the job's training; False when it was cancelled while starting."""
        spec = self._spec(job)
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        spec_path = self.jobs.spec_path(job.id)
        spec_path.write_text(spec.to_json(), encoding="utf-8")
        env = dict(os.environ)
        env[PARENT_PID_ENV] = str(os.getpid())
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if part
        )
        env["PYTHONUNBUFFERED"] = "1"
        env["HF_HUB_OFFLINE"] = "1"
        if self.config.gpus:
            env["CUDA_VISIBLE_DEVICES"] = slot
        with self.jobs.log_path(job.id).open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                self.config.python,
                "-m",
                "trainer.train",
                str(spec_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=self.jobs.folder(job.id),
                start_new_session=True,  # its own process group: cancel stops all of it
            )
        if job.terminal:  # cancelled while the process was being started
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            return False
        job.status = "running"
        job.started_at = int(time.time())
        job.pid = process.pid
        job.pid_started = _process_start_time(process.pid)
        job.last_step, job.last_step_at = 0, time.time()
        self.jobs.add_event(job, "Fine-tuning job started")
        self.jobs.save(job)
        running = Running(job_id=job.id, process=process, slot=slot)
        self._running[job.id] = running
        running.watcher = asyncio.create_task(self._watch(job, running), name=f"watch-{job.id}")
        return True

    async def _watch(self, job: Job, running: Running) -> None:
        offset = 0
        waiter = asyncio.ensure_future(running.process.wait())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self.config.poll_seconds)
                offset = self._ingest(job, offset)
                if done:
                    break
            self._finish(job, running.process.returncode)
        finally:
            if not waiter.done():
                waiter.cancel()
            self._running.pop(job.id, None)
            self._free_slots.append(running.slot)
            self._wake.set()

    def _ingest(self, job: Job, offset: int) -> int:
        """Copy the run's new events into the job's log; answers the new byte offset."""
        path = self.jobs.run_dir(job.id) / EVENTS_FILE
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return offset
        end = chunk.rfind(b"\n")
        if end < 0:
            return offset
        for line in chunk[: end + 1].splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(event, dict) or "id" not in event:
                continue
            self.jobs.append_event(job, event)
            if event.get("type") == "metrics":
                step = (event.get("data") or {}).get("step")
                if isinstance(step, int):
                    job.last_step, job.last_step_at = step, time.time()
        return offset + end + 1

    def _finish(self, job: Job, returncode: int | None) -> None:
        job.pid = job.pid_started = None
        if job.terminal:  # cancelled, or failed by a shutdown, while the process ran
            self.jobs.save(job)
            return
        run_dir = self.jobs.run_dir(job.id)
        result = _read_json(run_dir / RESULT_FILE)
        if returncode == 0 and result is not None:
            self._succeed(job, result)
            return
        error = _read_json(run_dir / ERROR_FILE)
        if error is not None and isinstance(error.get("message"), str):
            self._fail(
                job,
                str(error.get("code") or "training_error"),
                error["message"],
                error.get("param") if isinstance(error.get("param"), str) else None,
            )
            return
        self._fail(job, "training_error", self._exit_message(job, returncode))

    def _exit_message(self, job: Job, returncode: int | None) -> str:
        if returncode is not None and returncode < 0:
            name = signal.Signals(-returncode).name
            message = f"The training process was killed by {name}"
            if -returncode == signal.SIGKILL:
                message += " (the machine may have run out of memory)"
            return message + "."
        last = _last_line(self.jobs.log_path(job.id))
        message = f"The training process exited with code {returncode}"
        return message + (f": {last}" if last else ".")

    def _succeed(self, job: Job, result: dict[str, Any]) -> None:
        csv = self.jobs.run_dir(job.id) / RESULTS_CSV
        if csv.is_file():
            # OpenAI serves the results file base64-encoded; so is it stored here.
            stored = self.files.add_bytes(
                base64.b64encode(csv.read_bytes()), "step_metrics.csv", "fine-tune-results"
            )
            job.result_files = [stored.id]
        tokens = result.get("trained_tokens")
        job.trained_tokens = tokens if isinstance(tokens, int) else None
        job.fine_tuned_model = job.tuned_model_name
        job.status = "succeeded"
        job.finished_at = int(time.time())
        self.jobs.add_event(job, f"New fine-tuned model created: {job.tuned_model_name}")
        self.jobs.add_event(job, "The job has successfully completed")
        self.jobs.save(job)

    def _fail(self, job: Job, code: str, message: str, param: str | None = None) -> None:
        job.status = "failed"
        job.finished_at = int(time.time())
        job.error = {"code": code, "message": message, "param": param}
        self.jobs.add_event(job, message, level="error")
        self.jobs.save(job)
        if job.id in self._queue:
            self._queue.remove(job.id)

    def _stopped_message(self, job: Job) -> str:
        where = f" (at step {job.last_step} of {job.total_steps})" if job.total_steps else ""
        return (
            f"The trainer stopped while this job was running{where}, so its training was "
            "stopped. Create a new job to train again."
        )

    async def _terminate(self, running: Running) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        process = running.process
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.shield(process.wait()), timeout=self.config.cancel_grace_seconds
            )
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        # Anything the run started in its group goes too.
        _signal_group(process.pid, signal.SIGKILL)
        if running.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await running.watcher

    # -- restart -----------------------------------------------------------------

    async def _recover(self) -> None:
        for job in sorted(self.jobs.all(), key=lambda item: (item.created_at, item.id)):
            if job.pid is not None and _is_our_process(job.pid, job.pid_started):
                await asyncio.to_thread(_stop_orphan, job.pid, self.config.cancel_grace_seconds)
            if job.status == "validating_files":
                self._spawn(self._validate(job), f"validate-{job.id}")
            elif job.status == "queued":
                self._queue.append(job.id)
            elif job.status == "running":
                self._ingest(job, 0)
                result = _read_json(self.jobs.run_dir(job.id) / RESULT_FILE)
                job.pid = job.pid_started = None
                if result is not None:
                    self._succeed(job, result)
                else:
                    self._fail(job, "trainer_stopped", self._stopped_message(job))
            elif job.pid is not None:
                job.pid = job.pid_started = None
                self.jobs.save(job)
        if self._queue:
            self._wake.set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), to tell it apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it follow the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _is_our_process(pid: int, started: str | None) -> bool:
    if started is None or _process_start_time(pid) != started:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"trainer.train" in command


def _stop_orphan(pid: int, grace: float) -> None:
    """Stop a training left behind by a server that died (it is not our child, so poll)."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _last_line(path: Path, limit: int = 400) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""
