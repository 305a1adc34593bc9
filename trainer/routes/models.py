"""`/v1/models`: base models and tuned models, their tokenizers, and adapter loading.

Extensions beyond OpenAI (for the service's provider and for vLLM parity):

    GET  /v1/models/{id}/tokenizer       the base model's tokenizer.json, byte for byte
    GET  /v1/models/{id}/chat_template   {"chat_template", "bos_token", "eos_token", ...}
    POST /v1/load_lora_adapter           {"lora_name": "<tuned model id>"}: load it now
    POST /v1/unload_lora_adapter         {"lora_name": "<tuned model id>"}: drop it from memory

With vLLM (VLLM_BASE_URL) loading means vLLM's own load_lora_adapter with the
adapter's folder, answered 200 only once the model answers through vLLM; unloading
and deleting a tuned model unload it there.

A tuned model's tokenizer and template are its base model's. Model ids may hold
colons (`ft:tiny-chat::AbCd1234`); they travel in the path as they are.
"""

from __future__ import annotations

from typing import Any

from litestar import delete, get, post
from litestar.params import FromPath
from litestar.response import File

from trainer.errors import APIError, invalid_type, missing_parameter, model_not_found
from trainer.registry import ServedModel
from trainer.routes.parsing import AnyRequest, Trainer, json_object, list_body


def _served(trainer: Trainer, model_id: str) -> ServedModel:
    served = trainer.registry.resolve(model_id)
    if served is None:
        raise model_not_found(model_id)
    return served


@get("/models", operation_id="ListModels")
async def list_models(trainer: Trainer) -> dict[str, Any]:
    models = trainer.registry.bases() + trainer.registry.tuned()
    body = list_body([model.view() for model in models], False)
    del body["has_more"]  # not paginated; OpenAI sends no has_more on this list
    return body


@get("/models/{model:str}", operation_id="RetrieveModel")
async def retrieve_model(model: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    return _served(trainer, model).view()


@delete("/models/{model:str}", status_code=200, operation_id="DeleteModel")
async def delete_model(model: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    served = _served(trainer, model)
    if served.kind != "fine-tuned" or served.job is None:
        raise APIError(
            403,
            "You have insufficient permissions for this operation. Only fine-tuned models "
            "you own can be deleted.",
            code="insufficient_permissions",
        )
    if trainer.vllm is not None:
        await trainer.vllm.undeploy_family(served.id)
    else:
        await trainer.server.unload(served.id)
    served.job.tuned_model_deleted = True
    trainer.jobs.save(served.job)
    return {"id": served.id, "object": "model", "deleted": True}


@get("/models/{model:str}/tokenizer", operation_id="GetModelTokenizer")
async def get_tokenizer(model: FromPath[str], trainer: Trainer) -> File:
    served = _served(trainer, model)
    return File(
        path=served.base.tokenizer_file,
        filename="tokenizer.json",
        media_type="application/json",
        content_disposition_type="inline",
    )


@get("/models/{model:str}/chat_template", operation_id="GetModelChatTemplate")
async def get_chat_template(model: FromPath[str], trainer: Trainer) -> dict[str, Any]:
    served = _served(trainer, model)
    return {
        "object": "model.chat_template",
        "model": served.id,
        "base_model": served.base.id,
        "chat_template": served.base.chat_template(),
        **served.base.special_tokens(),
    }


async def _lora_name(request: AnyRequest, trainer: Trainer) -> ServedModel:
    body = await json_object(request)
    name = body.get("lora_name")
    if name is None:
        raise missing_parameter("lora_name")
    if not isinstance(name, str):
        raise invalid_type("lora_name", "a string", name)
    if "lora_path" in body:
        raise APIError(
            400,
            "This trainer loads its own tuned models by id; 'lora_path' is not accepted.",
            param="lora_path",
            code="unsupported_parameter",
        )
    served = trainer.registry.resolve(name)
    if served is None or served.adapter_dir is None:
        raise APIError(
            404,
            f"The model `{name}` is not a tuned model of this trainer.",
            param="lora_name",
            code="model_not_found",
        )
    return served


@post("/load_lora_adapter", status_code=200, operation_id="LoadLoraAdapter")
async def load_lora_adapter(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    served = await _lora_name(request, trainer)
    if trainer.vllm is not None:
        await trainer.vllm.deploy(served)
        return {"object": "lora_adapter", "lora_name": served.id, "loaded": True, "by": "vllm"}
    await trainer.server.prepare(served.base, served.id, served.adapter_dir)
    return {"object": "lora_adapter", "lora_name": served.id, "loaded": True, "by": "built-in"}


@post("/unload_lora_adapter", status_code=200, operation_id="UnloadLoraAdapter")
async def unload_lora_adapter(request: AnyRequest, trainer: Trainer) -> dict[str, Any]:
    served = await _lora_name(request, trainer)
    if trainer.vllm is not None:
        was_loaded = await trainer.vllm.undeploy(served.id)
    else:
        was_loaded = await trainer.server.unload(served.id)
    return {
        "object": "lora_adapter",
        "lora_name": served.id,
        "loaded": False,
        "was_loaded": was_loaded,
    }


handlers = [
    list_models,
    retrieve_model,
    delete_model,
    get_tokenizer,
    get_chat_template,
    load_lora_adapter,
    unload_lora_adapter,
]
