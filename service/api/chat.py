"""`/chat`: talk to a tuned model (or an allowed base model), streaming or not,
and compare several models side by side.

A tenant may call its own tuned models and the configured base models, nothing
else: the service must not become an open proxy to the provider.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from litestar import Controller, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Stream
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.auth import Injected, Tenant
from service.api.openapi_docs import ChatCompletionOperation, example_body
from service.api.problems import problems, status_of
from service.chat.relay import complete_bytes, open_stream
from service.chat.targets import Target, job_targets, model_target
from service.errors import (
    MalformedRequest,
    NotFound,
    RateLimited,
    ServiceError,
    UpstreamFailed,
    UpstreamTimedOut,
)
from service.providers.base import ProviderError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


# OpenAI's chat `seed` is a signed 64-bit integer; a larger one is refused here, by name,
# rather than by the provider.
ChatSeed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class ChatOptions(BaseModel):
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=128_000)] | None = None
    stop: str | list[str] | None = None
    seed: ChatSeed | None = None
    response_format: dict[str, Any] | None = None


class ChatRequest(ChatOptions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "job_id": "job_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "messages": [{"role": "user", "content": "自己肯定感の高めかた"}],
                }
            ]
        },
    )

    job_id: str | None = None
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ChatRequest:
        if (self.job_id is None) == (self.model is None):
            raise ValueError("give exactly one of job_id or model")
        return self


class CompareRequest(ChatOptions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "job_id": "job_4Q2nXkP0aZc1t9Lw8Yb3Hs7R",
                    "include_base_model": True,
                    "messages": [{"role": "user", "content": "自己肯定感の高めかた"}],
                }
            ]
        },
    )

    models: list[str] | None = Field(default=None, min_length=1, max_length=8)
    job_id: str | None = None
    include_base_model: bool = True
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _targets(self) -> CompareRequest:
        if not self.models and not self.job_id:
            raise ValueError("give models, or job_id (with include_base_model)")
        return self


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: ChatChoiceMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    """The provider's chat completion, passed through (OpenAI's shape)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompareResult(BaseModel):
    model: str
    role: Literal["tuned", "base", "requested"]
    content: str | None
    usage: Usage | None
    latency_ms: float
    finish_reason: str | None
    error: dict[str, Any] | None


class CompareResponse(BaseModel):
    results: list[CompareResult]


def upstream_to_service_error(exc: ProviderError) -> ServiceError:
    """Provider failures as the caller should see them."""
    if exc.timeout:
        return UpstreamTimedOut("The provider did not answer in time")
    if exc.status == 429:
        return RateLimited(
            f"The provider is rate limiting: {exc.message}",
            retry_after=max(1, round(exc.retry_after or 1)),
            code="upstream_rate_limited",
        )
    if exc.status == 404:
        return NotFound(
            f"The provider does not know this model: {exc.message}", code="model_not_found"
        )
    if exc.status is None or exc.status >= 500:
        return UpstreamFailed(f"The provider failed: {exc.message}")
    return MalformedRequest(
        f"The provider refused the request: {exc.message}",
        code="upstream_rejected",
        extra={"upstream_code": exc.code, "param": exc.param},
    )


def _upstream_body(options: ChatOptions, model: str, messages: list[ChatMessage]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump(exclude_none=True) for m in messages],
    }
    body.update(options.model_dump(exclude_none=True, include=set(ChatOptions.model_fields)))
    return body


class ChatController(Controller):
    path = "/chat"
    tags = ["Chat"]

    @post(
        "/",
        operation_id="CreateChatCompletion",
        operation_class=ChatCompletionOperation,
        summary="Chat with a tuned model (by job_id) or an allowed model; stream with SSE",
        status_code=200,
        responses={
            200: ResponseSpec(
                data_container=ChatCompletion,
                description="A chat completion in OpenAI's shape (an event stream if stream=true)",
                generate_examples=False,
            ),
            **problems(400, 401, 404, 409, 413, 429, 502, 503, 504),
        },
    )
    async def chat(
        self,
        resources: Injected,
        tenant: Tenant,
        data: Annotated[ChatRequest, example_body(ChatRequest)],
    ) -> Response[Any]:
        if data.job_id is not None:
            target, _ = await job_targets(resources, tenant, data.job_id)
        else:
            target = await model_target(resources, tenant, data.model or "")
        provider, model = target.provider, target.model
        body = _upstream_body(data, model, data.messages)
        if data.stream:
            try:
                usage = {"stream_options": {"include_usage": True}}
                relay = await open_stream(provider, body | usage)
            except ProviderError as exc:
                raise upstream_to_service_error(exc) from None
            return Stream(
                relay,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            completion = await complete_bytes(provider, body)
        except ProviderError as exc:
            raise upstream_to_service_error(exc) from None
        return Response(completion, status_code=200, media_type="application/json")

    @post(
        "/compare",
        operation_id="CompareChatModels",
        summary="Ask several models the same thing at once; one failing does not fail the rest",
        status_code=200,
        responses=problems(400, 401, 404, 409, 413, 429, 503),
    )
    async def compare(
        self,
        resources: Injected,
        tenant: Tenant,
        data: Annotated[CompareRequest, example_body(CompareRequest)],
    ) -> CompareResponse:
        targets: list[tuple[Target, Literal["tuned", "base", "requested"]]] = []
        if data.job_id is not None:
            tuned, base = await job_targets(resources, tenant, data.job_id)
            targets.append((tuned, "tuned"))
            if data.include_base_model:
                targets.append((base, "base"))
        for model in data.models or []:
            targets.append((await model_target(resources, tenant, model), "requested"))

        async def ask(target: Target, role: Literal["tuned", "base", "requested"]) -> CompareResult:
            model = target.model
            started = time.perf_counter()
            try:
                completion = await target.provider.chat(_upstream_body(data, model, data.messages))
            except ProviderError as exc:
                mapped = upstream_to_service_error(exc)
                return CompareResult(
                    model=model,
                    role=role,
                    content=None,
                    usage=None,
                    latency_ms=round((time.perf_counter() - started) * 1000, 1),
                    finish_reason=None,
                    error={
                        "status": status_of(mapped)[0],
                        "code": mapped.code,
                        "message": mapped.detail,
                    },
                )
            choice = (completion.get("choices") or [{}])[0]
            usage = completion.get("usage")
            return CompareResult(
                model=completion.get("model", model),
                role=role,
                content=(choice.get("message") or {}).get("content"),
                usage=Usage(**usage) if usage else None,
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
                finish_reason=choice.get("finish_reason"),
                error=None,
            )

        results = await asyncio.gather(*(ask(target, role) for target, role in targets))
        return CompareResponse(results=list(results))
