"""`/v1/chat/completions`: OpenAI's chat call, to a tuned model of the tenant's or an
allowed base model, through the same targets and relay as `/chat`.

The request's options go to the provider as sent; a provider's refusal comes
back with its own status, message, `param` and `code`.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Stream
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import Injected, Tenant
from service.api.chat import ChatCompletion, ChatSeed
from service.api.openapi_docs import ChatCompletionOperation, example_body
from service.chat.relay import complete_bytes, open_stream
from service.chat.targets import model_target
from service.errors import NotFound
from service.facade.errors import OpenAIError, openai_errors
from service.providers.base import ProviderError


class ChatCompletionRequest(BaseModel):
    """The body of `client.chat.completions.create(...)`: OpenAI's parameters, passed on."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "ft:gpt-4o-mini-2024-07-18:org-tenant-a:hiroyuki:AbC123",
                    "messages": [
                        {"role": "system", "content": "西村ひろゆきBot"},
                        {"role": "user", "content": "自己肯定感の高めかた"},
                    ],
                    "temperature": 0.4,
                }
            ]
        },
    )

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=2048)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: ChatSeed | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None


def provider_refusal(exc: ProviderError) -> OpenAIError:
    """The provider's own error, as it said it."""
    if exc.timeout:
        return OpenAIError(504, "The model's provider did not answer in time", type="timeout")
    status = exc.status or 502
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    kind = "server_error" if status >= 500 else "invalid_request_error"
    if status == 429:
        kind = "requests"
    return OpenAIError(
        status, exc.message, param=exc.param, code=exc.code, type=kind, headers=headers
    )


class ChatCompletionsController(Controller):
    path = "/chat/completions"

    @post(
        "/",
        operation_id="OpenAICreateChatCompletion",
        operation_class=ChatCompletionOperation,
        status_code=200,
        responses={
            200: ResponseSpec(
                data_container=ChatCompletion,
                description="A chat completion (an event stream of chunks if stream=true)",
                generate_examples=False,
            ),
            **openai_errors(413, 502, 503, 504),
        },
    )
    async def create(
        self,
        resources: Injected,
        tenant: Tenant,
        data: Annotated[ChatCompletionRequest, example_body(ChatCompletionRequest)],
    ) -> Response[Any]:
        """A chat completion (`stream: true`: server-sent events ending with `data: [DONE]`)."""
        if data.stream_options is not None and not data.stream:
            raise OpenAIError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        try:
            target = await model_target(resources, tenant, data.model)
        except NotFound:
            raise OpenAIError(
                404,
                f"The model `{data.model}` does not exist or you do not have access to it.",
                code="model_not_found",
            ) from None
        body = data.model_dump(exclude_none=True) | {"model": target.model}
        try:
            if data.stream:
                relay = await open_stream(target.provider, body)
                return Stream(
                    relay,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            completion = await complete_bytes(target.provider, body)
        except ProviderError as exc:
            raise provider_refusal(exc) from None
        return Response(completion, status_code=200, media_type="application/json")
