"""Who may chat with which model, and which provider serves it.

A tenant may call its own tuned models (served by the provider that trained
them) and the base models this service offers (the catalog's, and the
configured CHAT_BASE_MODELS), nothing else: the service must not become an
open proxy to a provider. Another tenant's model answers exactly like a
model that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.catalog import base_model_of
from service.domain.jobs import JobStatus
from service.errors import Conflict, NotFound
from service.providers.base import Provider
from service.resources import Resources


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    provider: Provider


async def job_targets(resources: Resources, tenant: str, job_id: str) -> tuple[Target, Target]:
    """(tuned model, its base model) of a tenant's job; 409 until the tuned model answers."""
    job = await resources.jobs.get_for_tenant(tenant, job_id)
    if job.status != JobStatus.SUCCEEDED or not job.fine_tuned_model:
        raise Conflict(
            f"Job {job_id} is {job.status}; its model is not ready",
            code="model_not_ready",
            extra={"job_status": job.status},
        )
    provider = resources.providers.get(job.provider)
    return Target(job.fine_tuned_model, provider), base_target(resources, job.model)


def base_target(resources: Resources, model: str) -> Target:
    entry = resources.providers.catalog.find(model)
    if entry is not None:
        return Target(model, resources.providers.get(entry.provider))
    return Target(model, resources.providers.default())


async def model_target(resources: Resources, tenant: str, model: str) -> Target:
    catalog = resources.providers.catalog
    if model in resources.settings.chat_base_models or (
        catalog.find(model) is not None and base_model_of(model) == model
    ):
        return base_target(resources, model)
    provider = await resources.jobs.tuned_model_provider(tenant, model)
    if provider is not None:
        return Target(model, resources.providers.get(provider))
    # Same answer whether the model exists for someone else or not at all.
    raise NotFound(f"Model {model!r} is not available to this tenant", code="model_not_found")
