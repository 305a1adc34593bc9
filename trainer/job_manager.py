"""Jobs from creation to a final state: validate, queue, launch, watch, cancel, recover.

Each training is one run of the entry point (`python -m trainer.train SPEC.json`),
started by a runner (trainer/runners/): a subprocess of this server by default, or
a Ray job when RAY_ADDRESS is set. The manager only launches and watches: it asks
the runner for the run's state, copies the run's events into the job's log (from
the run folder's `events.jsonl`, and from event lines in the run's output, once
each by id), and reads the run folder when the run ends to decide the outcome.

At most `runner.slots` trainings run at once (one by default; one per GPU with
`--gpus`; with Ray, `--max-concurrent-trainings` jobs submitted at once); the rest
wait in `queued`, oldest first. A Ray job waiting for cluster resources is
`queued` too, and becomes `running` when Ray starts it.

Restart rule, local runs: a job that was `running` when the server died is failed
with code `trainer_stopped` (its process is stopped if it is still alive), unless
its run had already finished and written `result.json`, in which case it succeeds.
Graceful shutdown fails running local jobs the same way at once.

Restart rule, Ray runs: they outlive the server, which follows them again after a
restart (and leaves them running when it shuts down). A `queued` job is submitted
again, which attaches to its Ray job when the earlier submit had gone through.
Jobs that were validating or queued carry on under either runner.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import ids, training_data
from trainer.config import TrainerConfig
from trainer.errors import APIError
from trainer.job_requests import JobRequest
from trainer.jobs import Job
from trainer.model_catalog import ModelCatalog, auto_batch_size, auto_epochs
from trainer.runners import RunnerError, RunnerUnavailable, RunPhase, RunState, TrainingRunner
from trainer.spec import (
    ERROR_FILE,
    EVENT_LINE_PREFIX,
    EVENTS_FILE,
    RESULT_FILE,
    RESULTS_CSV,
    TrainingSpec,
    parse_lora,
)
from trainer.store import FileStore, JobStore

logger = logging.getLogger("trainer.jobs")

# A remote run's result may show up on the shared volume a moment after Ray says it ended.
RESULT_WAIT_SECONDS = 10.0
# After the runner could not be reached, queued jobs wait this long (doubling) before a retry.
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0


@dataclass(slots=True)
class Cursor:
    """How far the job's event sources have been read (byte offsets)."""

    events: int = 0
    log: int = 0


@dataclass(slots=True)
class Watch:
    job_id: str
    slot: str  # "" when the run holds no slot (re-attached beyond the configured count)
    task: asyncio.Task[None] | None = None
    cursor: Cursor = field(default_factory=Cursor)


class JobManager:
    def __init__(
        self,
        config: TrainerConfig,
        files: FileStore,
        jobs: JobStore,
        catalog: ModelCatalog,
        runner: TrainingRunner,
    ) -> None:
        self.config = config
        self.files = files
        self.jobs = jobs
        self.catalog = catalog
        self.runner = runner
        self._queue: list[str] = []
        self._watches: dict[str, Watch] = {}
        self._free_slots: list[str] = list(runner.slots)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        # While the runner cannot be reached, submissions wait until then (monotonic time).
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_SECONDS
        self._warned_unreachable: set[str] = set()
        # Called with each job that succeeds (serving through vLLM loads its adapter).
        self.on_success: Callable[[Job], None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self.runner.start()
        await self._recover()
        self._scheduler = asyncio.create_task(self._schedule(), name="trainer-scheduler")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for watch in list(self._watches.values()):
            job = self.jobs.get(watch.job_id)
            if not self.runner.survives_restart and job is not None:
                if not job.terminal:
                    self._fail(job, "trainer_stopped", self._stopped_message(job))
                await self._stop_run(job)
            elif watch.task is not None:
                # The run goes on without us (Ray); the next start follows it again.
                watch.task.cancel()
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runner.close()

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def queued(self) -> int:
        return sum(1 for job in self.jobs.all() if job.status == "queued")

    @property
    def running(self) -> int:
        return sum(1 for job in self.jobs.all() if job.status == "running")

    def describe_runner(self) -> dict[str, Any]:
        return self.runner.describe()

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
        watch = self._watches.get(job.id)
        if watch is not None:
            await self._stop_run(job)
            # The watcher copies the run's last events before it lets go, so the
            # cancellation is the last word in the job's log.
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
        self.jobs.add_event(job, "Fine-tuning job cancelled")
        self.jobs.save(job)
        return job

    async def _stop_run(self, job: Job) -> None:
        try:
            await self.runner.stop(job)
        except RunnerError as exc:
            # The job stays cancelled here; the run may go on until its runner stops it.
            logger.error("could not stop the run of %s: %s", job.id, exc)
            watch = self._watches.get(job.id)
            if watch is not None and watch.task is not None:
                watch.task.cancel()

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
            while self._queue and self._free_slots and time.monotonic() >= self._retry_at:
                job = self.jobs.get(self._queue.pop(0))
                if job is None or job.status != "queued":
                    continue
                slot = self._free_slots.pop(0)
                launched = False
                try:
                    launched = await self._launch(job, slot)
                except RunnerUnavailable as exc:
                    self._postpone(job, exc)
                except (RunnerError, OSError) as exc:
                    logger.exception("could not start the training of %s", job.id)
                    self._fail(job, "training_error", f"The training could not start: {exc}")
                if not launched:
                    self._free_slots.append(slot)

    def _postpone(self, job: Job, exc: RunnerUnavailable) -> None:
        """The runner is out of reach: the job keeps its place and is submitted later."""
        logger.warning("%s; submitting %s again in %.0f s", exc, job.id, self._retry_delay)
        if not job.terminal:
            self._queue.insert(0, job.id)
            if job.id not in self._warned_unreachable:
                self._warned_unreachable.add(job.id)
                self.jobs.add_event(
                    job,
                    f"The training could not be submitted yet ({exc}); it stays queued and "
                    "is submitted again shortly.",
                    level="warn",
                )
        self._retry_at = time.monotonic() + self._retry_delay
        asyncio.get_running_loop().call_later(self._retry_delay, self._wake.set)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

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
        """Hand the job's training to the runner; False when it was cancelled meanwhile."""
        spec = self._spec(job)
        # A run this job may already have (a Ray job submitted just before a crash) keeps
        # its folder; otherwise whatever an earlier attempt left there goes.
        if not (self.runner.survives_restart and job.runner == self.runner.kind):
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        spec_path = self.jobs.spec_path(job.id)
        staging = spec_path.with_name(f".{spec_path.name}.tmp")
        staging.write_text(spec.to_json(), encoding="utf-8")
        os.replace(staging, spec_path)
        # Recorded before the submit, so a restart knows a run may exist under this id.
        job.runner = self.runner.kind
        self.jobs.save(job)
        await self.runner.submit(job, spec_path, self.jobs.log_path(job.id), slot)
        self._retry_delay = RETRY_FIRST_SECONDS
        self._warned_unreachable.discard(job.id)
        self.jobs.save(job)
        if job.terminal:  # cancelled while the run was being started
            await self._stop_run(job)
            with contextlib.suppress(RunnerError):
                await self.runner.state(job)  # lets the runner settle the stopped run
            job.pid = job.pid_started = None
            self.jobs.save(job)
            return False
        self._follow(job, slot)
        return True

    def _follow(self, job: Job, slot: str) -> None:
        watch = Watch(job_id=job.id, slot=slot)
        self._watches[job.id] = watch
        watch.task = asyncio.create_task(self._watch(job, watch), name=f"watch-{job.id}")

    def _mark_running(self, job: Job) -> None:
        job.status = "running"
        job.started_at = int(time.time())
        job.last_step, job.last_step_at = 0, time.time()
        self.jobs.add_event(job, "Fine-tuning job started")
        self.jobs.save(job)

    async def _watch(self, job: Job, watch: Watch) -> None:
        state: RunState | None = None
        failing_since: float | None = None
        try:
            while True:
                try:
                    state = await self.runner.state(job)
                    failing_since = None
                except Exception as exc:  # the run goes on; ask again at the next poll
                    if failing_since is None:
                        failing_since = time.monotonic()
                        logger.warning(
                            "cannot follow %s for now: %s",
                            job.id,
                            exc,
                            exc_info=not isinstance(exc, RunnerUnavailable),
                        )
                    state = None
                if state is not None and state.phase is RunPhase.RUNNING:
                    if job.status == "queued":
                        self._mark_running(job)
                self._ingest(job, watch.cursor)
                if state is not None and state.finished:
                    break
                await asyncio.sleep(self.config.poll_seconds)
            await self._conclude(job, state)
        finally:
            self._watches.pop(job.id, None)
            if watch.slot:
                self._free_slots.append(watch.slot)
            self._wake.set()

    def _ingest(self, job: Job, cursor: Cursor) -> None:
        """Copy the run's new events into the job's log, from the run folder and the output."""
        run_events = self.jobs.run_dir(job.id) / EVENTS_FILE
        cursor.events = self._read_events(job, run_events, cursor.events, prefix=b"")
        log = self.jobs.log_path(job.id)
        with contextlib.suppress(OSError):
            if log.stat().st_size < cursor.log:  # rewritten from its start (a log re-fetched)
                cursor.log = 0
        cursor.log = self._read_events(job, log, cursor.log, prefix=EVENT_LINE_PREFIX.encode())

    def _read_events(self, job: Job, path: Path, offset: int, *, prefix: bytes) -> int:
        """Record the complete event lines of `path` after `offset`; answers the new offset."""
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
            if prefix:
                if not line.startswith(prefix):
                    continue
                line = line[len(prefix) :]
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(event, dict) or "id" not in event:
                continue
            self.jobs.append_event(job, event)
            if event.get("type") == "metrics":
                step = (event.get("data") or {}).get("step")
                if isinstance(step, int) and step > job.last_step:
                    job.last_step, job.last_step_at = step, time.time()
        return offset + end + 1

    async def _conclude(self, job: Job, state: RunState | None) -> None:
        """Settle the job from the run's end and its folder."""
        job.pid = job.pid_started = None
        if job.terminal:  # cancelled, or failed by a shutdown, while the run went on
            self.jobs.save(job)
            return
        phase = state.phase if state is not None else RunPhase.UNKNOWN
        if phase is RunPhase.UNKNOWN:
            self._fail(job, "training_error", self._lost_message(job))
            return
        ran = phase is RunPhase.SUCCEEDED or (state is not None and state.exit_code is not None)
        if job.status == "queued" and ran:  # it ran and ended before a poll saw it running
            self._mark_running(job)
        run_dir = self.jobs.run_dir(job.id)
        result = _read_json(run_dir / RESULT_FILE)
        if phase is RunPhase.SUCCEEDED and result is None and self.runner.survives_restart:
            result = await _wait_for_json(run_dir / RESULT_FILE, RESULT_WAIT_SECONDS)
        if phase is RunPhase.SUCCEEDED and result is not None:
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
        if phase is RunPhase.SUCCEEDED and self.runner.survives_restart:
            self._fail(
                job,
                "training_error",
                f"The training finished on the {self.runner.kind} runner, but its run folder "
                f"({run_dir}) shows no result on the trainer's side. Every Ray node must "
                "mount the trainer's data folder at the same path.",
            )
            return
        if phase is RunPhase.STOPPED:
            self._fail(
                job,
                "training_error",
                f"The training's {self.runner.kind} run was stopped outside the trainer.",
            )
            return
        self._fail(job, "training_error", self._exit_message(job, state))

    def _exit_message(self, job: Job, state: RunState | None) -> str:
        code = state.exit_code if state is not None else None
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            message = f"The training process was killed by {name}"
            if -code == signal.SIGKILL:
                message += " (the machine may have run out of memory)"
            return message + "."
        last = _last_line(self.jobs.log_path(job.id))
        if code is not None:
            message = f"The training process exited with code {code}"
            return message + (f": {last}" if last else ".")
        told = _first_line(state.message if state is not None else None)
        message = f"The training's {self.runner.kind} run failed"
        message += f": {told}" if told else "."
        if last and last not in message:
            message += f" Last output: {last}"
        return message

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
        if self.on_success is not None:
            try:
                self.on_success(job)
            except Exception:  # the job has succeeded whatever a listener does
                logger.exception("after the success of %s", job.id)

    def _fail(self, job: Job, code: str, message: str, param: str | None = None) -> None:
        job.status = "failed"
        job.finished_at = int(time.time())
        job.error = {"code": code, "message": message, "param": param}
        self.jobs.add_event(job, message, level="error")
        self.jobs.save(job)
        if job.id in self._queue:
            self._queue.remove(job.id)

    def _where(self, job: Job) -> str:
        return f" (at step {job.last_step} of {job.total_steps})" if job.total_steps else ""

    def _stopped_message(self, job: Job) -> str:
        return (
            f"The trainer stopped while this job was running{self._where(job)}, so its "
            "training was stopped. Create a new job to train again."
        )

    def _lost_message(self, job: Job) -> str:
        return (
            f"The {self.runner.kind} runner no longer knows this job's training"
            f"{self._where(job)} (its cluster may have been restarted), so the training was "
            "lost. Create a new job to train again."
        )

    # -- restart -----------------------------------------------------------------

    async def _recover(self) -> None:
        for job in sorted(self.jobs.all(), key=lambda item: (item.created_at, item.id)):
            ours = self.runner.survives_restart and job.runner == self.runner.kind
            if job.status == "validating_files":
                self._spawn(self._validate(job), f"validate-{job.id}")
            elif job.status == "queued":
                # Submitted again; a Ray job that exists under its id is attached to.
                self._queue.append(job.id)
            elif job.status == "running" and ours:
                await self._reattach(job)
            elif job.status == "running":
                await self._settle_stopped(job)
            elif job.pid is not None:
                await self.runner.recover(job, self.jobs.log_path(job.id))
                self.jobs.save(job)
        if self._queue:
            self._wake.set()

    async def _reattach(self, job: Job) -> None:
        """Follow a run that outlived the previous server (a Ray job)."""
        slot = self._free_slots.pop(0) if self._free_slots else ""
        watch = Watch(job_id=job.id, slot=slot)
        try:
            state = await self.runner.recover(job, self.jobs.log_path(job.id))
        except RunnerUnavailable as exc:
            # Followed anyway: the watcher keeps asking until the runner answers.
            logger.warning("cannot reach the runner for %s yet: %s", job.id, exc)
        else:
            if state.phase is RunPhase.UNKNOWN:
                self._ingest(job, watch.cursor)
                if slot:
                    self._free_slots.append(slot)
                await self._conclude(job, state)
                return
        logger.info("following the %s run of %s again", self.runner.kind, job.id)
        self._watches[job.id] = watch
        watch.task = asyncio.create_task(self._watch(job, watch), name=f"watch-{job.id}")

    async def _settle_stopped(self, job: Job) -> None:
        """A run that did not survive the previous server: its folder decides."""
        await self.runner.recover(job, self.jobs.log_path(job.id))
        self._ingest(job, Cursor())
        result = _read_json(self.jobs.run_dir(job.id) / RESULT_FILE)
        job.pid = job.pid_started = None
        if result is not None:
            self._succeed(job, result)
        else:
            self._fail(job, "trainer_stopped", self._stopped_message(job))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


async def _wait_for_json(path: Path, seconds: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        found = _read_json(path)
        if found is not None:
            return found
    return None


def _first_line(text: str | None, limit: int = 400) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def _last_line(path: Path, limit: int = 400) -> str:
    """The run's last line of output that is not an event line."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 16384))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [
        line.strip()
        for line in tail.splitlines()
        if line.strip() and not line.startswith(EVENT_LINE_PREFIX)
    ]
    return lines[-1][:limit] if lines else ""
