"""The `trainer` provider kind: our own self-hosted fine-tuning server (`trainer/`).

It speaks OpenAI's files, fine-tuning and chat API, so the OpenAI client does
the talking; what differs lives here (`client.py`): open-weight models the
packaged catalog cannot know (their tokenizer and chat template come from the
trainer), LoRA settings passed through, and a `deploy` that loads the adapter
before a job is called succeeded (into vLLM, when the trainer serves through it).
"""

from __future__ import annotations

from service.providers.base import Provider
from service.providers.config import ProviderConfig
from service.providers.trainer.client import TrainerProvider


def build(config: ProviderConfig) -> Provider:
    if not config.base_url:
        raise ValueError(f"provider {config.name!r}: base_url is required for kind trainer")
    return TrainerProvider(
        name=config.name,
        api_key=config.api_key(),
        base_url=config.base_url,
        timeout=config.timeout_seconds,
    )
