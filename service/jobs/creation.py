"""Starting a job: everything checked before anything is stored or spent.

The caller's datasets must be ready; the model must be in the catalog and
still taking new training (a closed model is refused naming the date and
the models still open); the dataset must hold the model's minimum number of
examples; a `webhook_url` must be a safe target and the tenant must have a
job webhook secret to sign it with. Then the job is stored `pending` and the
worker is asked to move it; the API never calls a provider's training
endpoints itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.domain.jobs import (
    JobStatus,
    check_metadata,
    check_suffix,
    service_event,
    training_method,
)
from service.domain.pricing import training_steps
from service.domain.records import Dataset, Job
from service.domain.stamps import new_id, now_iso
from service.errors import Conflict, InvalidContent
from service.resources import Resources
from service.store.records import read_together
from service.webhooks.outbound_guard import check_webhook_url


@dataclass(frozen=True, slots=True)
class NewJob:
    """A request to train, however it arrived (our API or the OpenAI-shaped one)."""

    dataset_id: str
    model: str
    validation_dataset_id: str | None = None
    method: Mapping[str, Any] | None = None
    hyperparameters: Mapping[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: Mapping[str, str] | None = None
    webhook_url: str | None = None
    # Provider-specific training options (the trainer's LoRA settings), passed through.
    provider_options: Mapping[str, Any] = field(default_factory=dict)


def _count(value: object) -> int | None:
    """A hyperparameter that is a whole positive number, or None ("auto", absent)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _ready(dataset: Dataset, what: str) -> None:
    if dataset.status != "ready":
        raise Conflict(
            f"{what} {dataset.id} is {dataset.status}, not ready for training",
            code="dataset_not_ready",
        )


async def create_job(resources: Resources, tenant: str, request: NewJob) -> Job:
    settings = resources.settings
    datasets = resources.datasets
    # Everything the checks below read, in one round trip.
    training_lookup = datasets.lookup(request.dataset_id)
    validation_lookup = (
        datasets.lookup(request.validation_dataset_id) if request.validation_dataset_id else None
    )
    secret_lookup = resources.webhooks.job_secret_lookup(tenant)
    found = await read_together(
        resources.redis,
        [
            training_lookup,
            *([validation_lookup] if validation_lookup else []),
            *([secret_lookup] if request.webhook_url else []),
        ],
    )
    dataset = datasets.owned(tenant, request.dataset_id, found[training_lookup])
    _ready(dataset, "Dataset")
    validation = None
    if request.validation_dataset_id and validation_lookup:
        validation = datasets.owned(tenant, request.validation_dataset_id, found[validation_lookup])
        _ready(validation, "Validation dataset")
        if validation.kind != dataset.kind:
            raise InvalidContent("The validation dataset is of another kind than the training one")
    entry, provider = resources.providers.training_provider(request.model, date.today())
    unknown = sorted(set(request.provider_options) - provider.capabilities.options)
    if unknown:
        raise InvalidContent(
            f"Provider {entry.provider} (which trains {entry.id}) does not take provider_options "
            f"{', '.join(unknown)}"
            + (
                f"; it takes: {', '.join(sorted(provider.capabilities.options))}"
                if provider.capabilities.options
                else ""
            ),
            code="invalid_provider_options",
            extra={
                "errors": [
                    {
                        "line": None,
                        "path": f"provider_options.{key}",
                        "code": "not_supported",
                        "message": f"{entry.provider} does not take {key}",
                    }
                    for key in unknown
                ]
            },
        )
    if (dataset.example_count or 0) < entry.min_examples:
        raise InvalidContent(
            f"Dataset {dataset.id} has {dataset.example_count} example(s); {entry.id} needs at "
            f"least {entry.min_examples}",
            code="too_few_examples",
            extra={
                "errors": [
                    {
                        "line": None,
                        "path": "dataset_id",
                        "code": "too_few_examples",
                        "message": f"at least {entry.min_examples} examples are needed",
                    }
                ],
                "min_examples": entry.min_examples,
            },
        )
    method = training_method(request.method, request.hyperparameters, dataset.kind or "chat")
    hyper = method[method["type"]]["hyperparameters"]
    metadata = check_metadata(request.metadata)
    suffix = check_suffix(request.suffix)
    webhook_url = None
    if request.webhook_url:
        webhook_url = await check_webhook_url(
            request.webhook_url, allow_private=settings.webhook_allow_private_networks
        )
        if not settings.auth_disabled and found[secret_lookup] is None:
            raise Conflict(
                "A job's webhook_url is signed with this tenant's job webhook secret, and "
                "there is none yet: create it with POST /webhooks/job-secret (shown once), "
                "then start the job",
                code="job_secret_missing",
            )
    now = now_iso()
    job = Job(
        id=new_id("job"),
        tenant=tenant,
        status=JobStatus.PENDING,
        dataset_id=dataset.id,
        validation_dataset_id=validation.id if validation else None,
        held_out_dataset_id=validation.id if validation else dataset.validation_dataset_id or "",
        # The snapshot the alias names today, as the provider itself would record it.
        model=entry.id,
        provider=entry.provider,
        method=method,
        suffix=suffix,
        seed=request.seed,
        metadata=metadata,
        provider_options=dict(request.provider_options),
        webhook_url=webhook_url,
        estimated_steps=training_steps(
            dataset.example_count or 0,
            _count(hyper.get("n_epochs")),
            _count(hyper.get("batch_size")),
        ),
        created_at=now,
        updated_at=now,
    )
    first = service_event(
        job.id, "Job accepted", kind="status", data={"from": None, "to": JobStatus.PENDING.value}
    )
    # The record, its indexes and its place in the follow schedule, in one write.
    await resources.jobs.create(job, first)
    return job
