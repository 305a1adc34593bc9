"""What one running trainer server holds, built in the app's lifespan and handed to routes."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import TrainerConfig
from trainer.job_manager import JobManager
from trainer.model_catalog import ModelCatalog
from trainer.registry import ModelRegistry
from trainer.serving import ModelServer
from trainer.store import FileStore, JobStore
from trainer.vllm_serving import VLLMServing


@dataclass(slots=True)
class TrainerState:
    config: TrainerConfig
    files: FileStore
    jobs: JobStore
    catalog: ModelCatalog
    registry: ModelRegistry
    manager: JobManager
    # Built-in serving (transformers + PEFT); unused while `vllm` is set.
    server: ModelServer
    # Serving through vLLM, when VLLM_BASE_URL is set.
    vllm: VLLMServing | None = None
