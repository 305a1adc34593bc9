"""The `openai` provider kind: OpenAI and OpenAI-compatible hosted APIs.

Files here: `client.py` (the provider over the official SDK), `results.py`
(OpenAI's base64 results CSV), `webhooks.py` (its signed webhooks in).
`build` is what the registry calls for `kind = "openai"`.
"""

from __future__ import annotations

from service.providers.base import Provider
from service.providers.config import ProviderConfig
from service.providers.openai.client import OpenAICompatibleProvider


def build(config: ProviderConfig) -> Provider:
    return OpenAICompatibleProvider(
        name=config.name,
        api_key=config.api_key(),
        base_url=config.base_url,
        organization=config.option_str("organization"),
        project=config.option_str("project"),
        timeout=config.timeout_seconds,
        job_extra_body=config.option_dict("job_extra_body"),
        webhook_secret=config.webhook_secret(),
    )
