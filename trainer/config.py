"""The trainer server's settings: command-line flags plus a few environment variables.

`TRAINER_API_KEY` is the bearer key the server requires. Two variables switch the
trainer to its scale-out backends (DESIGN.md's run contract keeps their names):
`RAY_ADDRESS` submits every training as a Ray job instead of a local subprocess,
and `VLLM_BASE_URL` serves tuned models through a vLLM server instead of the
built-in transformers + PEFT serving.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every environment variable the trainer reads (docker-compose is checked against it).
ENVIRONMENT_VARIABLES = frozenset(
    {
        "TRAINER_API_KEY",  # bearer key the server requires when set
        "CUDA_VISIBLE_DEVICES",  # which GPUs training and serving see
        "HF_HOME",  # Hugging Face cache folder (nothing is downloaded; libraries still look)
        "HF_HUB_OFFLINE",  # set to 1 by the trainer itself; accepted from compose too
        "RAY_ADDRESS",  # the Ray cluster's dashboard (jobs API) address: trainings run there
        "VLLM_BASE_URL",  # a vLLM server (started with --enable-lora): tuned models served there
        "VLLM_API_KEY",  # the key that vLLM server was started with (--api-key), if any
    }
)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RaySettings:
    """How trainings are submitted as Ray jobs (`RAY_ADDRESS` and the `--ray-*` flags)."""

    address: str
    # Reserved for each training's entry point on the cluster (Ray's entrypoint_num_*).
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # Merged under the runner's own: its env_vars are added to the ones the trainer sets.
    runtime_env: dict[str, Any] = field(default_factory=dict)
    # The interpreter the entry point runs with on the Ray nodes (a command on their PATH).
    python: str = "python"
    # A call to the Ray head that takes longer than this counts as failed.
    request_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class VLLMSettings:
    """Serving through vLLM (`VLLM_BASE_URL`, `VLLM_API_KEY`, `--vllm-*` flags)."""

    base_url: str
    api_key: str | None = None
    # How often vLLM's /v1/models is compared with the adapters the trainer deployed
    # there (a vLLM restart forgets them; they are loaded again).
    check_seconds: float = 10.0
    # Loading, unloading and listing (admin calls).
    admin_timeout_seconds: float = 120.0
    # The longest wait for the next bytes of a chat answer.
    chat_timeout_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    models_dir: Path
    data_dir: Path
    api_key: str | None = None
    # Trainings that run at once. With `gpus`, one per GPU at a time, each seeing only its GPU.
    # With Ray, how many Ray jobs are submitted at once (the rest wait in `queued` here).
    max_concurrent_trainings: int = 1
    gpus: tuple[str, ...] = ()
    # Serving: base models and LoRA adapters kept in memory (least recently used go first).
    max_loaded_models: int = 2
    max_loaded_adapters: int = 8
    default_max_tokens: int = 512
    max_upload_bytes: int = 512 * MiB
    # How often running trainings are looked at (their events copied, their end noticed).
    poll_seconds: float = 0.5
    # After SIGTERM, how long a cancelled training may take before its group gets SIGKILL.
    cancel_grace_seconds: float = 5.0
    # The interpreter that runs `python -m trainer.train`; the server's own by default.
    python: str = field(default_factory=lambda: sys.executable)
    # Set: trainings are Ray jobs. Unset: local subprocesses.
    ray: RaySettings | None = None
    # Set: tuned models are served by vLLM. Unset: built-in serving.
    vllm: VLLMSettings | None = None

    @property
    def training_slots(self) -> int:
        return len(self.gpus) if self.gpus else max(1, self.max_concurrent_trainings)


def api_key_from_environment() -> str | None:
    key = os.environ.get("TRAINER_API_KEY", "").strip()
    return key or None


def ray_address_from_environment() -> str | None:
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return address or None


def vllm_from_environment() -> tuple[str | None, str | None]:
    """(VLLM_BASE_URL without a trailing slash or /v1, VLLM_API_KEY), each None when unset."""
    url = os.environ.get("VLLM_BASE_URL", "").strip().rstrip("/")
    if url.endswith("/v1"):  # accept the OpenAI-client style too; calls add /v1 themselves
        url = url[: -len("/v1")]
    key = os.environ.get("VLLM_API_KEY", "").strip()
    return url or None, key or None


def parse_runtime_env(text: str) -> dict[str, Any]:
    """`--ray-runtime-env`: a JSON object, or `@path` to a JSON file; ValueError when not."""
    if not text.strip():
        return {}
    raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("the Ray runtime_env must be a JSON object")
    env_vars = value.get("env_vars", {})
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise ValueError("runtime_env.env_vars must map names to strings")
    return value
