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

from service.providers.base import (
    Capabilities,
    JobSpec,
    ModelFacts,
    ProviderJob,
)
from service.providers.openai.client import OpenAICompatibleProvider, status_error
from service.providers.wire import Answer, WireError

# Options a trainer job takes beside OpenAI's fields.
OPTIONS = frozenset({"lora"})


class TrainerProvider(OpenAICompatibleProvider):
    kind = "trainer"

    def __init__(self, *, name: str, api_key: str, base_url: str, timeout: float) -> None:
        super().__init__(name=name, api_key=api_key, base_url=base_url, timeout=timeout)
        # The trainer sends no webhooks and cannot pause a training.
        self.capabilities = Capabilities(pause_resume=False, webhooks=False, options=OPTIONS)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key != "unused" else {}

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> Answer:
        headers = dict(self._headers)
        sent = None
        if body is not None:
            sent = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            answer = await self._wire.send(method, path, body=sent, headers=headers)
        except WireError as exc:
            raise exc.provider_error("trainer") from None
        if answer.status >= 400:
            raise status_error(answer.status, answer.body, answer.headers)
        return answer

    async def start_job(self, spec: JobSpec) -> ProviderJob:
        return await self._start(spec, extra_body=dict(spec.options))

    async def deploy(self, fine_tuned_model: str) -> bool:
        await self._request("POST", "/load_lora_adapter", {"lora_name": fine_tuned_model})
        return True

    async def describe_model(self, model: str) -> ModelFacts | None:
        described = json.loads((await self._request("GET", f"/models/{model}")).body)
        tokenizer = (await self._request("GET", f"/models/{model}/tokenizer")).body
        template = json.loads((await self._request("GET", f"/models/{model}/chat_template")).body)
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
