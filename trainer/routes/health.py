"""`/health` (the process answers) and `/ready` (it can take jobs), outside `/v1` and its key."""

from __future__ import annotations

import os
from typing import Any

from litestar import Response, get

from trainer.routes.parsing import Trainer


@get("/health", operation_id="Health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="Ready")
async def ready(trainer: Trainer) -> Response[dict[str, Any]]:
    problems: list[str] = []
    if not os.access(trainer.config.data_dir, os.W_OK):
        problems.append(f"data dir {trainer.config.data_dir} is not writable")
    models = [model.id for model in trainer.catalog.all()]
    if not models:
        problems.append(f"no base models in {trainer.config.models_dir}")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not_ready",
        "problems": problems,
        "models": models,
        "jobs": {"running": trainer.manager.running, "queued": trainer.manager.queued},
        "training_slots": trainer.config.training_slots,
        "runner": trainer.manager.describe_runner(),
        "serving": "vllm" if trainer.vllm is not None else "built-in",
        # Built-in: base model -> the adapters attached to it. vLLM: its state as last seen.
        "loaded": trainer.vllm.describe() if trainer.vllm is not None else trainer.server.loaded(),
    }
    return Response(body, status_code=200 if not problems else 503)


handlers = [health, ready]
