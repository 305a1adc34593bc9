"""The local runner: each training a subprocess of this server, in its own process group.

A crash or an out-of-memory kill ends that process and nothing else; a cancel sends
SIGTERM to the whole group and SIGKILL after the grace period. The run is tied to
the server (Linux's parent-death signal, set by the entry point when
TRAINER_PARENT_PID is given), so it does not outlive a server that dies; after a
restart a stray run is stopped and the job manager settles the job from its folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import trainer
from trainer.config import TrainerConfig
from trainer.jobs import Job
from trainer.runners.base import RunnerError, RunPhase, RunState
from trainer.spec import PARENT_PID_ENV

PACKAGE_ROOT = Path(trainer.__file__).resolve().parent.parent


class LocalRunner:
    kind = "local"
    survives_restart = False

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.slots: tuple[str, ...] = config.gpus or tuple(
            f"cpu{i}" for i in range(config.training_slots)
        )
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        # Exit codes of runs that `stop` ended, until `state` reports them.
        self._stopped: dict[str, int | None] = {}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "slots": len(self.slots), "gpus": list(self.config.gpus)}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._processes.clear()
        self._stopped.clear()

    async def submit(self, job: Job, spec_path: Path, log_path: Path, slot: str) -> None:
        env = dict(os.environ)
        env[PARENT_PID_ENV] = str(os.getpid())
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if part
        )
        env["PYTHONUNBUFFERED"] = "1"
        env["HF_HUB_OFFLINE"] = "1"
        if self.config.gpus:
            env["CUDA_VISIBLE_DEVICES"] = slot
        try:
            with log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    self.config.python,
                    "-m",
                    "trainer.train",
                    str(spec_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=spec_path.parent,
                    start_new_session=True,  # its own process group: a cancel stops all of it
                )
        except OSError as exc:
            raise RunnerError(f"The training process could not start: {exc}") from exc
        self._processes[job.id] = process
        job.pid = process.pid
        job.pid_started = process_start_time(process.pid)

    async def recover(self, job: Job, log_path: Path) -> RunState:  # noqa: ARG002
        if job.pid is not None and is_training_process(job.pid, job.pid_started):
            await asyncio.to_thread(stop_orphan, job.pid, self.config.cancel_grace_seconds)
        job.pid = job.pid_started = None
        return RunState(RunPhase.UNKNOWN)

    async def state(self, job: Job) -> RunState:
        if job.id in self._stopped:
            return RunState(RunPhase.STOPPED, exit_code=self._stopped.pop(job.id))
        process = self._processes.get(job.id)
        if process is None:
            return RunState(RunPhase.UNKNOWN)
        code = process.returncode
        if code is None:
            return RunState(RunPhase.RUNNING)
        self._processes.pop(job.id, None)
        return RunState(RunPhase.SUCCEEDED if code == 0 else RunPhase.FAILED, exit_code=code)

    async def stop(self, job: Job) -> None:
        """SIGTERM to the whole process group, SIGKILL after the grace period."""
        process = self._processes.pop(job.id, None)
        if process is None:
            return
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.shield(process.wait()), timeout=self.config.cancel_grace_seconds
            )
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        # Anything the run started in its group goes too.
        signal_group(process.pid, signal.SIGKILL)
        self._stopped[job.id] = process.returncode


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), to tell it apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it follow the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def is_training_process(pid: int, started: str | None) -> bool:
    if started is None or process_start_time(pid) != started:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"trainer.train" in command


def stop_orphan(pid: int, grace: float) -> None:
    """Stop a training left behind by a server that died (it is not our child, so poll)."""
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    signal_group(pid, signal.SIGKILL)
