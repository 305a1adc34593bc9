"""Fine-tuning providers behind one interface (see `base.Provider`)."""

from __future__ import annotations

import json

from service.providers.base import Provider, ProviderError
from service.providers.openai_compatible import OpenAICompatibleProvider
from service.settings import Settings


def build_provider(settings: Settings) -> Provider | None:
    """The configured provider, or None when no provider key is set (the API then
    refuses chat with 503; the worker refuses to start)."""
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        return None
    extra = json.loads(settings.openai_job_extra_body) if settings.openai_job_extra_body else None
    return OpenAICompatibleProvider(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        organization=settings.openai_organization,
        project=settings.openai_project,
        timeout=settings.provider_timeout_seconds,
        job_extra_body=extra,
    )


__all__ = ["Provider", "ProviderError", "build_provider"]
