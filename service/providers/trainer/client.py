"""The trainer as a provider: the OpenAI client plus the trainer's own extensions.

- `describe_model`: `GET /v1/models/{id}` (context length), `/tokenizer` (the
  model's `tokenizer.json`, for counting without torch) and `/chat_template`;
- `deploy`: `POST /v1/load_lora_adapter {"lora_name": model}` (vLLM's name and
  body), ready when it answers 2xx;
- `start_job`: the job's `provider_options` (`{"lora": {...}}`) go as extra
  body fields, which the trainer reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from service.providers.base import (
    Capabilities,
    JobSpec,
    ModelFacts,
    ProviderError,
    ProviderJob,
)
from service.providers.openai.client import OpenAICompatibleProvider

# Options a trainer job takes beside OpenAI's fields.
OPTIONS = frozenset({"lora"})


class TrainerProvider(OpenAICompatibleProvider):
    kind = "trainer"

    def __init__(self, *, name: str, api_key: str, base_url: str, timeout: float) -> None:
        super().__init__(name=name, api_key=api_key, base_url=base_url, timeout=timeout)
        # The trainer sends no webhooks and cannot pause a training.
        self.capabilities = Capabilities(pause_resume=False, webhooks=False, options=OPTIONS)
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key != "unused" else {}

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> httpx2.Response:
        try:
            response = await self._http.request(
                method, self._base + path, headers=self._headers, json=body
            )
        except httpx2.TimeoutException:
            raise ProviderError(
                "The trainer did not answer in time", status=None, timeout=True
            ) from None
        except httpx2.HTTPError as exc:
            raise ProviderError(f"Could not reach the trainer: {exc}", status=None) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    async def start_job(self, spec: JobSpec) -> ProviderJob:
        return await self._start(spec, extra_body=dict(spec.options))

    async def deploy(self, fine_tuned_model: str) -> bool:
        await self._request("POST", "/load_lora_adapter", {"lora_name": fine_tuned_model})
        return True

    async def describe_model(self, model: str) -> ModelFacts | None:
        described = (await self._request("GET", f"/models/{model}")).json()
        tokenizer = (await self._request("GET", f"/models/{model}/tokenizer")).content
        template = (await self._request("GET", f"/models/{model}/chat_template")).json()
        special = {
            key: str(value)
            for key, value in template.items()
            if key.endswith("_token") and isinstance(value, str)
        }
        return ModelFacts(
            tokenizer_json=tokenizer,
            chat_template=template.get("chat_template"),
            example_token_limit=int(described.get("context_length") or 2048),
            special_tokens=special,
        )


def _error(response: httpx2.Response) -> ProviderError:
    error: Mapping[str, Any] = {}
    try:
        parsed = json.loads(response.content)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass
    return ProviderError(
        str(error.get("message") or f"HTTP {response.status_code}"),
        status=response.status_code,
        code=error.get("code") if isinstance(error.get("code"), str) else None,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
    )
