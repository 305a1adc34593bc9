"""Which model an id names: a base model, a tuned model, or one of a job's checkpoints.

Model ids, as chat and `/v1/models` take them:

    tiny-chat                              a base model (its folder's name)
    ft:tiny-chat:hiroyuki:AbCd1234         the tuned model of a succeeded job
    ft:tiny-chat::AbCd1234                 the same without a suffix
    ft:tiny-chat:hiroyuki:AbCd1234:ckpt-step-30
                                           a kept checkpoint (also while the job runs)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.jobs import ORGANIZATION_ID, Job
from trainer.model_catalog import BaseModel, ModelCatalog
from trainer.store import JobStore

CHECKPOINT_ID = re.compile(r"^(?P<tuned>ft:.+):ckpt-step-(?P<step>\d+)$")


@dataclass(frozen=True, slots=True)
class ServedModel:
    id: str
    base: BaseModel
    kind: str  # base | fine-tuned | checkpoint
    adapter_dir: Path | None = None
    job: Job | None = None
    created: int = 0

    def view(self) -> dict[str, Any]:
        """OpenAI's model object, with extensions for what a caller of this trainer needs."""
        if self.kind == "base":
            return {
                "id": self.id,
                "object": "model",
                "created": self.base.created,
                "owned_by": "system",
                "kind": "base",
                "context_length": self.base.context_length,
                "architecture": self.base.architecture,
                "default_hyperparameters": self.base.defaults.to_dict(),
            }
        assert self.job is not None  # noqa: S101 - tuned models and checkpoints have a job
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": ORGANIZATION_ID,
            "kind": self.kind,
            "parent": self.base.id,
            "fine_tuning_job": self.job.id,
            "context_length": self.base.context_length,
        }


class ModelRegistry:
    def __init__(self, catalog: ModelCatalog, jobs: JobStore) -> None:
        self.catalog = catalog
        self.jobs = jobs

    def bases(self) -> list[ServedModel]:
        return [ServedModel(id=model.id, base=model, kind="base") for model in self.catalog.all()]

    def tuned(self) -> list[ServedModel]:
        """Every servable tuned model, oldest first."""
        found: list[ServedModel] = []
        for job in sorted(self.jobs.all(), key=lambda item: (item.finished_at or 0, item.id)):
            served = self._tuned_of(job)
            if served is not None:
                found.append(served)
        return found

    def _tuned_of(self, job: Job) -> ServedModel | None:
        if job.status != "succeeded" or job.fine_tuned_model is None or job.tuned_model_deleted:
            return None
        base = self.catalog.get(job.model)
        adapter = self.jobs.run_dir(job.id) / "adapter"
        if base is None or not adapter.is_dir():
            return None
        return ServedModel(
            id=job.fine_tuned_model,
            base=base,
            kind="fine-tuned",
            adapter_dir=adapter,
            job=job,
            created=job.finished_at or job.created_at,
        )

    def resolve(self, model_id: str) -> ServedModel | None:
        base = self.catalog.get(model_id)
        if base is not None:
            return ServedModel(id=model_id, base=base, kind="base")
        if not model_id.startswith("ft:"):
            return None
        for job in self.jobs.all():
            if job.fine_tuned_model == model_id:
                return self._tuned_of(job)
        match = CHECKPOINT_ID.match(model_id)
        if match is None:
            return None
        owner = next(
            (item for item in self.jobs.all() if item.tuned_model_name == match["tuned"]), None
        )
        if owner is None or owner.tuned_model_deleted:
            return None
        base = self.catalog.get(owner.model)
        if base is None:
            return None
        for checkpoint in self.jobs.checkpoints(owner.id):
            if checkpoint.get("fine_tuned_model_checkpoint") != model_id:
                continue
            adapter = self.jobs.run_dir(owner.id) / str(checkpoint.get("adapter_dir", ""))
            if adapter.is_dir():
                return ServedModel(
                    id=model_id,
                    base=base,
                    kind="checkpoint",
                    adapter_dir=adapter,
                    job=owner,
                    created=int(checkpoint.get("created_at", owner.created_at)),
                )
        return None
