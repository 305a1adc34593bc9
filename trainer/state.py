"""What one running trainer server holds, built in the app's lifespan and handed to routes."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import TrainerConfig
from trainer.model_catalog import ModelCatalog
from trainer.registry import ModelRegistry
from trainer.runner import Runner
from trainer.serving import ModelServer
from trainer.store import FileStore, JobStore


@dataclass(slots=True)
class TrainerState:
    config: TrainerConfig
    files: FileStore
    jobs: JobStore
    catalog: ModelCatalog
    registry: ModelRegistry
    runner: Runner
    server: ModelServer
