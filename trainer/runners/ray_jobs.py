"""The Ray runner: each training a Ray job, submitted with Ray's JobSubmissionClient.

Used when `RAY_ADDRESS` is set (the address of the cluster's jobs API, the head's
dashboard port: `http://ray-head:8265`). Each job's entry point is the same command
the local runner starts, `python -m trainer.train SPEC.json`, with our job id as
Ray's `submission_id`: Ray refuses a second job under the same id, so a submit
repeated after a crash attaches to the run that exists instead of starting another.

Where the data lives: the spec, the training files and the run folder are paths
under the trainer's `--data-dir`, and Ray nodes read and write them directly, so
every Ray node must mount that folder (and `--models-dir`) at the same paths as the
trainer (one shared volume: NFS, a ReadWriteMany claim). Events, checkpoints and
adapters then reach the trainer exactly as from a local run, whichever node
trained, and vLLM can load the adapters from the same volume.

Ray's job logs are the run's output. They are followed while the job runs and
written whole into the job's `train.log` when it ends. The entry point also prints
each event into them (TRAINER_EVENTS_TO_STDOUT=1), and the job manager takes
events from both the run folder and the log, once each by id, so events still
arrive when the run folder is late to show up on the trainer's side.

Ray's status maps to ours: PENDING -> queued (waiting for resources), RUNNING ->
running, SUCCEEDED / FAILED / STOPPED -> the run's end, which the job manager
settles from the run folder. A cancel is `stop_job`. Runs outlive the trainer: a
restarted trainer follows the jobs Ray is still running.

JobSubmissionClient is synchronous (it uses requests, without timeouts); every call
runs in a worker thread under `request_timeout_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trainer.config import RaySettings
from trainer.jobs import Job
from trainer.runners.base import RunnerError, RunnerUnavailable, RunPhase, RunState
from trainer.runners.local import PACKAGE_ROOT
from trainer.spec import EVENTS_TO_STDOUT_ENV

logger = logging.getLogger("trainer.runners.ray")

_T = TypeVar("_T")

RAY_PHASES = {
    "PENDING": RunPhase.PENDING,
    "RUNNING": RunPhase.RUNNING,
    "SUCCEEDED": RunPhase.SUCCEEDED,
    "FAILED": RunPhase.FAILED,
    "STOPPED": RunPhase.STOPPED,
}
SUBMIT_ATTEMPTS = 3


class RayRunner:
    kind = "ray"
    survives_restart = True

    def __init__(self, settings: RaySettings, slots: int, cancel_grace_seconds: float) -> None:
        self.settings = settings
        # How many Ray jobs are submitted at once; the others wait in our queue, where a
        # wait has no deadline (Ray fails a job that stays PENDING for 15 minutes).
        self.slots = tuple(f"ray{i}" for i in range(max(1, slots)))
        self.cancel_grace_seconds = cancel_grace_seconds
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._logs: dict[str, Path] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.settings.address,
            "slots": len(self.slots),
            "entrypoint_num_cpus": self.settings.num_cpus,
            "entrypoint_num_gpus": self.settings.num_gpus,
            "connected": self._client is not None,
        }

    async def start(self) -> None:
        # Connect now when the cluster answers; when it does not, the first call retries.
        with contextlib.suppress(RunnerUnavailable):
            await self._connected()

    async def close(self) -> None:
        for task in self._followers.values():
            task.cancel()
        for task in list(self._followers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._followers.clear()

    # -- the interface -------------------------------------------------------------------

    async def submit(self, job: Job, spec_path: Path, log_path: Path, slot: str) -> None:  # noqa: ARG002
        client = await self._connected()
        entrypoint = (
            f"{shlex.quote(self.settings.python)} -m trainer.train {shlex.quote(str(spec_path))}"
        )
        options: dict[str, Any] = {
            "entrypoint": entrypoint,
            "submission_id": job.id,
            "runtime_env": self._runtime_env(),
            "entrypoint_num_cpus": self.settings.num_cpus,
            "entrypoint_num_gpus": self.settings.num_gpus,
            "metadata": {
                "trainer_job_id": job.id,
                "model": job.model,
                "fine_tuned_model": job.tuned_model_name,
            },
        }
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                await self._call(client.submit_job, **options)
                break
            except RunnerUnavailable:
                # The submit may have reached Ray before the answer was lost: the next
                # attempt then meets "already exists" and attaches.
                if attempt == SUBMIT_ATTEMPTS:
                    raise
                await asyncio.sleep(attempt)
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise RunnerError(f"Ray refused the training job: {_first_line(exc)}") from exc
                logger.info("Ray already has job %s; following it instead of a new one", job.id)
                break
        self._follow(job.id, log_path)

    async def recover(self, job: Job, log_path: Path) -> RunState:
        # Known before asking, so the log is fetched at the end even if Ray is down now.
        self._logs[job.id] = log_path
        state = await self._state(job.id)
        if state.finished:
            await self._write_whole_log(job.id)
        else:
            self._follow(job.id, log_path)
        return state

    async def state(self, job: Job) -> RunState:
        state = await self._state(job.id)
        if state.finished:
            await self._write_whole_log(job.id)
        return state

    async def stop(self, job: Job) -> None:
        client = await self._connected()
        try:
            await self._call(client.stop_job, job.id)
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                raise RunnerError(f"Ray could not stop job {job.id}: {_first_line(exc)}") from exc
            return
        # Ray sends SIGTERM to the entry point and its children, then SIGKILL after
        # RAY_JOB_STOP_WAIT_TIME_S (3 s by default); wait for it to say STOPPED.
        deadline = time.monotonic() + self.cancel_grace_seconds + 30
        while time.monotonic() < deadline:
            if (await self._state(job.id)).finished:
                return
            await asyncio.sleep(0.25)
        logger.warning("Ray job %s was asked to stop but still runs", job.id)

    # -- Ray calls --------------------------------------------------------------------------

    async def _connected(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                self._client = await self._in_thread(JobSubmissionClient, self.settings.address)
                logger.info("connected to Ray's jobs API at %s", self.settings.address)
        return self._client

    async def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await self._in_thread(function, *args, **kwargs)

    async def _in_thread(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(function, *args, **kwargs),
                timeout=self.settings.request_timeout_seconds,
            )
        except TimeoutError as exc:
            raise RunnerUnavailable(
                f"Ray at {self.settings.address} did not answer within "
                f"{self.settings.request_timeout_seconds:g} s"
            ) from exc
        except OSError as exc:  # requests' connection errors are OSErrors
            raise RunnerUnavailable(
                f"Ray at {self.settings.address} is unreachable: {_first_line(exc)}"
            ) from exc
        except RuntimeError as exc:
            # Ray answers a repeated submission_id with a 500 whose text says so: that one is
            # an answer, not an outage. Other server errors are worth another try.
            if "status code 5" in str(exc) and "already exists" not in str(exc):
                raise RunnerUnavailable(f"Ray answered: {_first_line(exc)}") from exc
            raise

    async def _state(self, job_id: str) -> RunState:
        client = await self._connected()
        try:
            info = await self._call(client.get_job_info, job_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return RunState(RunPhase.UNKNOWN, message=f"Ray has no job {job_id}.")
            raise RunnerUnavailable(f"Ray could not describe job {job_id}: {exc}") from exc
        status = str(getattr(info.status, "value", info.status))
        exit_code = getattr(info, "driver_exit_code", None)
        return RunState(
            RAY_PHASES.get(status, RunPhase.RUNNING),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            message=info.message if isinstance(info.message, str) else None,
        )

    def _runtime_env(self) -> dict[str, Any]:
        runtime_env = dict(self.settings.runtime_env)
        env_vars: dict[str, str] = {
            # The trainer's image carries the package where the trainer has it.
            "PYTHONPATH": str(PACKAGE_ROOT),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env_vars.update(runtime_env.get("env_vars") or {})
        env_vars[EVENTS_TO_STDOUT_ENV] = "1"  # the log fallback for events needs them
        runtime_env["env_vars"] = env_vars
        return runtime_env

    # -- logs ---------------------------------------------------------------------------------

    def _follow(self, job_id: str, log_path: Path) -> None:
        """Copy the job's log into `log_path` as Ray produces it (from its start)."""
        self._logs[job_id] = log_path
        previous = self._followers.pop(job_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._tail(job_id, log_path), name=f"ray-log-{job_id}")
        self._followers[job_id] = task
        task.add_done_callback(lambda done: self._forget_follower(job_id, done))

    def _forget_follower(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._followers.get(job_id) is task:
            del self._followers[job_id]

    async def _tail(self, job_id: str, log_path: Path) -> None:
        try:
            client = await self._connected()
            # Ray replays the log from its first line, so the copy starts empty.
            with log_path.open("wb") as log:
                async for chunk in client.tail_job_logs(job_id):
                    log.write(chunk.encode("utf-8", errors="replace"))
                    log.flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the whole log is fetched again when the job ends
            logger.warning("following the log of Ray job %s stopped: %s", job_id, exc)

    async def _write_whole_log(self, job_id: str) -> None:
        """Replace `train.log` with the job's whole log (once it has ended)."""
        follower = self._followers.pop(job_id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        log_path = self._logs.pop(job_id, None)
        if log_path is None:
            return
        client = await self._connected()
        try:
            text = await self._call(client.get_job_logs, job_id)
        except (RuntimeError, RunnerUnavailable) as exc:
            logger.warning("could not read the log of Ray job %s: %s", job_id, exc)
            return
        staging = log_path.with_name(f".{log_path.name}.tmp")
        staging.write_bytes(text.encode("utf-8", errors="replace"))
        os.replace(staging, log_path)


def _first_line(exc: BaseException, limit: int = 500) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
