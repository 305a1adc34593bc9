"""OpenAI's own signed webhooks (`fine_tuning.job.succeeded|failed|cancelled`).

Verified with the SDK's `webhooks.unwrap` (Standard Webhooks signature and a
300 s timestamp tolerance). Only a hint: the worker re-reads the job from
the provider rather than trusting the event's content.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai

from service.providers.base import ProviderWebhookRejected


class WebhookVerifier:
    def __init__(self, secret: str) -> None:
        self._client = openai.OpenAI(api_key="verification-only", webhook_secret=secret)

    def job_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """The provider job a verified event is about; None for other events."""
        try:
            event = self._client.webhooks.unwrap(body, dict(headers))
        except openai.InvalidWebhookSignatureError as exc:
            raise ProviderWebhookRejected(f"Webhook signature is not valid: {exc}") from None
        except ValueError as exc:
            raise ProviderWebhookRejected(
                f"Webhook body is not a valid event: {exc}", code="invalid_event"
            ) from None
        upstream_id = getattr(getattr(event, "data", None), "id", None)
        if not isinstance(upstream_id, str) or not getattr(event, "type", "").startswith(
            "fine_tuning.job."
        ):
            return None
        return upstream_id

    def close(self) -> None:
        self._client.close()
