"""How one training is run: the small interface the job manager drives.

Two implementations run the same entry point, `python -m trainer.train SPEC.json`:

    LocalRunner   a subprocess of this server, in its own process group (the default)
    RayRunner     a Ray job on the cluster at RAY_ADDRESS (submission id = our job id)

Either way the run writes its folder (events, checkpoints, adapters, result) under
the job's folder in `--data-dir`, and its output (stdout and stderr) lands in the
job's `train.log`; the job manager reads both the same way whichever runner ran it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from trainer.jobs import Job


class RunPhase(StrEnum):
    PENDING = "pending"  # accepted, waiting for resources (Ray's PENDING)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the entry point exited with 0
    FAILED = "failed"  # it exited otherwise, was killed, or never started
    STOPPED = "stopped"  # stopped on request (a cancel, or `ray job stop`)
    UNKNOWN = "unknown"  # the runner has no run under this job's id (never started, or lost)


FINISHED = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED, RunPhase.UNKNOWN})


@dataclass(frozen=True, slots=True)
class RunState:
    phase: RunPhase
    # The entry point's exit status when known; negative: the signal that killed it.
    exit_code: int | None = None
    # The runner's own account of the run (Ray's job message), for failures it explains.
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


class RunnerError(Exception):
    """The runner refused the run for good (a bad request); the job fails with this message."""


class RunnerUnavailable(RunnerError):
    """The runner could not be reached just now (Ray's head down, a timeout); try again later."""


class TrainingRunner(Protocol):
    # Recorded on the job ("local" or "ray"), so a restart knows who ran it.
    kind: str
    # True when runs outlive this server and are followed again after a restart (Ray);
    # False when a run stops with the server (local subprocesses).
    survives_restart: bool
    # One name per training that may run at once; the manager hands one to `submit`
    # (the local runner's GPU ids, so each run sees only its GPU).
    slots: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        """What `/ready` shows about the runner."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Let go of this server's handles; runs that survive restarts keep running."""
        ...

    async def submit(self, job: Job, spec_path: Path, log_path: Path, slot: str) -> None:
        """Start the training of `job` from its spec, its output going to `log_path`.

        When a run of this job already exists (a submit repeated after a crash), attach
        to it instead of starting a second one. Raises RunnerUnavailable or RunnerError.
        """
        ...

    async def recover(self, job: Job, log_path: Path) -> RunState:
        """After a restart: follow the job's run again when this runner can (answers its
        state); UNKNOWN when it cannot (the local runner stops a stray process first)."""
        ...

    async def state(self, job: Job) -> RunState:
        """The run's state. A finished state is answered only once `train.log` holds the
        run's whole output. Raises RunnerUnavailable while the runner cannot be asked."""
        ...

    async def stop(self, job: Job) -> None:
        """Stop the run (a cancel) and return once it has stopped."""
        ...
