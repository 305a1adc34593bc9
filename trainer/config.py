"""The trainer server's settings: command-line flags plus `TRAINER_API_KEY` from the environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Every environment variable the trainer reads (docker-compose is checked against it).
ENVIRONMENT_VARIABLES = frozenset(
    {
        "TRAINER_API_KEY",  # bearer key the server requires when set
        "CUDA_VISIBLE_DEVICES",  # which GPUs training and serving see
        "HF_HOME",  # Hugging Face cache folder (nothing is downloaded; libraries still look)
        "HF_HUB_OFFLINE",  # set to 1 by the trainer itself; accepted from compose too
    }
)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    models_dir: Path
    data_dir: Path
    api_key: str | None = None
    # Trainings that run at once. With `gpus`, one per GPU at a time, each seeing only its GPU.
    max_concurrent_trainings: int = 1
    gpus: tuple[str, ...] = ()
    # Serving: base models and LoRA adapters kept in memory (least recently used go first).
    max_loaded_models: int = 2
    max_loaded_adapters: int = 8
    default_max_tokens: int = 512
    max_upload_bytes: int = 512 * MiB
    # How often running trainings are looked at (their events copied, their exit noticed).
    poll_seconds: float = 0.5
    # After SIGTERM, how long a cancelled training may take before its group gets SIGKILL.
    cancel_grace_seconds: float = 5.0
    # The interpreter that runs `python -m trainer.train`; the server's own by default.
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def training_slots(self) -> int:
        return len(self.gpus) if self.gpus else max(1, self.max_concurrent_trainings)


def api_key_from_environment() -> str | None:
    key = os.environ.get("TRAINER_API_KEY", "").strip()
    return key or None
