"""`/v1/models`: the base models and every tuned model this instance has produced."""

from __future__ import annotations

from typing import Any

from litestar import delete, get
from litestar.params import FromPath

from simulator import catalog
from simulator.api_errors import OpenAIError
from simulator.routes.injection import Sim
from simulator.routes.parsing import list_body


def _base_model(model_id: str) -> dict[str, Any] | None:
    info = catalog.resolve(model_id)
    if info is None:
        return None
    created = catalog.alias_created(model_id) if model_id in catalog.ALIASES else info.created
    return {"id": model_id, "object": "model", "created": created, "owned_by": info.owned_by}


def _not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404, f"The model '{model}' does not exist", param="model", code="model_not_found"
    )


@get("/models", operation_id="listModels")
async def list_models(sim: Sim) -> dict[str, Any]:
    base = [_base_model(model_id) for model_id in catalog.listed_ids()]
    tuned = [model.to_dict() for model in sim.tuned_models.values()]
    data = [item for item in base if item is not None] + tuned
    body = list_body(data, False)
    # This list is not paginated; OpenAI sends no has_more on it.
    del body["has_more"]
    return body


@get("/models/{model:str}", operation_id="retrieveModel")
async def retrieve_model(model: FromPath[str], sim: Sim) -> dict[str, Any]:
    tuned = sim.tuned_models.get(model)
    if tuned is not None:
        return tuned.to_dict()
    found = _base_model(model)
    if found is None:
        raise _not_found(model)
    return found


@delete("/models/{model:str}", status_code=200, operation_id="deleteModel")
async def delete_model(model: FromPath[str], sim: Sim) -> dict[str, Any]:
    if not sim.delete_tuned_model(model):
        if catalog.resolve(model) is not None:
            raise OpenAIError(
                403,
                "You have insufficient permissions for this operation. Only fine-tuned models "
                "you own can be deleted.",
                code="insufficient_permissions",
            )
        raise _not_found(model)
    return {"id": model, "object": "model", "deleted": True}


handlers = [list_models, retrieve_model, delete_model]
