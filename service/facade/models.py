"""`/v1/models`: the base models this service trains or serves, and the tenant's tuned models.

`owned_by` is the provider that serves a base model, and `org-<tenant>` for a
tuned one. `created` is 0: the service does not learn when a provider made a
model.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromPath

from service.api.auth import Injected, Tenant
from service.domain.catalog import base_model_of
from service.facade.errors import OpenAIError, openai_errors
from service.facade.shapes import model_object


def _missing(model: str) -> OpenAIError:
    return OpenAIError(
        404, f"The model '{model}' does not exist", param="model", code="model_not_found"
    )


class ModelsController(Controller):
    path = "/models"

    @get("/", operation_id="OpenAIListModels", responses=openai_errors())
    async def list_models(self, resources: Injected, tenant: Tenant) -> dict[str, Any]:
        await resources.providers.learn_models()
        catalog = resources.providers.catalog
        data = [
            model_object(name, entry.provider)
            for entry in sorted(catalog.models.values(), key=lambda e: e.id)
            for name in (entry.id, *entry.aliases)
        ]
        tuned = await resources.jobs.tuned_models(tenant)
        data += [model_object(model, f"org-{tenant}") for model in sorted(tuned)]
        return {"object": "list", "data": data}

    @get("/{model:str}", operation_id="OpenAIRetrieveModel", responses=openai_errors())
    async def retrieve(
        self, resources: Injected, tenant: Tenant, model: FromPath[str]
    ) -> dict[str, Any]:
        if await resources.jobs.tuned_model_provider(tenant, model) is not None:
            return model_object(model, f"org-{tenant}")
        entry = resources.providers.catalog.find(model)
        if entry is None or base_model_of(model) != model:
            raise _missing(model)
        return model_object(model, entry.provider)
