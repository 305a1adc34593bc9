"""One provider's configuration: an entry of PROVIDERS_FILE, or the single
`openai` provider made from the SDK's own variables when that file is unset.

    [[provider]]
    name = "openai"                 # shown on jobs and in GET /models
    kind = "openai"                 # openai | trainer (a folder under service/providers/)
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"  # the variable that holds its key (never the key itself)
    models = ["gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125"]  # base models it trains
    webhook_secret_env = "OPENAI_WEBHOOK_SECRET"               # optional: its signed webhooks

Other keys are the kind's own options (`organization`, `project`,
`job_extra_body`, `timeout_seconds`); `[provider.model_overrides."<id>"]`
tables adjust a model's catalog entry (`training_until`, `example_token_limit`,
`min_examples`, `training_price_per_million`...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class ProviderConfigError(ValueError):
    """PROVIDERS_FILE (or the variables it names) is unusable; the message says where."""


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str | None
    api_key_env: str | None
    models: tuple[str, ...]
    webhook_secret_env: str | None = None
    timeout_seconds: float = 60.0
    options: Mapping[str, Any] = field(default_factory=dict)
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def api_key(self) -> str:
        if not self.api_key_env:
            return "unused"
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ProviderConfigError(
                f"provider {self.name!r}: {self.api_key_env} is not set "
                f"(api_key_env names the variable holding its key)"
            )
        return value

    def webhook_secret(self) -> str | None:
        if not self.webhook_secret_env:
            return None
        return os.environ.get(self.webhook_secret_env) or None

    def option_str(self, key: str) -> str | None:
        value = self.options.get(key)
        return str(value) if value is not None else None

    def option_dict(self, key: str) -> dict[str, Any] | None:
        value = self.options.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ProviderConfigError(f"provider {self.name!r}: {key} must be a table")
        return dict(value)


_KNOWN_KEYS = {
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "models",
    "webhook_secret_env",
    "timeout_seconds",
    "model_overrides",
}


def parse_provider(entry: Mapping[str, Any], position: int) -> ProviderConfig:
    where = f"provider #{position}"
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ProviderConfigError(f"{where}: name must be 1-40 lowercase letters, digits, - or _")
    where = f"provider {name!r}"
    kind = entry.get("kind")
    if not isinstance(kind, str) or not KIND.match(kind):
        raise ProviderConfigError(f"{where}: kind must name a provider kind (openai, trainer)")
    models = entry.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ProviderConfigError(f"{where}: models must be a non-empty list of model ids")
    base_url = entry.get("base_url")
    if base_url is not None and (not isinstance(base_url, str) or "://" not in base_url):
        raise ProviderConfigError(f"{where}: base_url must be a URL")
    for key in ("api_key_env", "webhook_secret_env"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value.isidentifier()):
            raise ProviderConfigError(f"{where}: {key} must name an environment variable")
    overrides = entry.get("model_overrides", {})
    if not isinstance(overrides, Mapping):
        raise ProviderConfigError(f"{where}: model_overrides must be a table")
    timeout = entry.get("timeout_seconds", 60.0)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ProviderConfigError(f"{where}: timeout_seconds must be a positive number")
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key_env=entry.get("api_key_env"),
        models=tuple(models),
        webhook_secret_env=entry.get("webhook_secret_env"),
        timeout_seconds=float(timeout),
        options={k: v for k, v in entry.items() if k not in _KNOWN_KEYS},
        model_overrides={str(k): dict(v) for k, v in overrides.items()},
    )
