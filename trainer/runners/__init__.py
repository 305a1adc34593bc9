"""Runners: how each training is run (a local subprocess, or a Ray job). See base.py."""

from __future__ import annotations

from trainer.config import TrainerConfig
from trainer.runners.base import (
    RunnerError,
    RunnerUnavailable,
    RunPhase,
    RunState,
    TrainingRunner,
)
from trainer.runners.local import LocalRunner
from trainer.runners.ray_jobs import RayRunner


def make_runner(config: TrainerConfig) -> TrainingRunner:
    """The Ray runner when RAY_ADDRESS is configured, else local subprocesses."""
    if config.ray is not None:
        return RayRunner(config.ray, config.training_slots, config.cancel_grace_seconds)
    return LocalRunner(config)


__all__ = [
    "LocalRunner",
    "RayRunner",
    "RunPhase",
    "RunState",
    "RunnerError",
    "RunnerUnavailable",
    "TrainingRunner",
    "make_runner",
]
