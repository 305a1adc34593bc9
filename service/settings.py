"""One settings class for the API and the worker.

Every field reads the environment variable of the same name in upper case
(the run contract in DESIGN.md section 9). Secrets are `SecretStr` so they
never print by accident, and required secrets have no defaults: a missing one
stops start-up with one line naming the variable (see `load_settings`).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# What the default `openai` provider trains when PROVIDERS_FILE is unset: every
# snapshot of the packaged model table, open or closed for training (a closed
# one is refused with its date rather than as unknown).
DEFAULT_FINE_TUNABLE_MODELS = (
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-0613",
)
DEFAULT_CHAT_BASE_MODELS = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    *DEFAULT_FINE_TUNABLE_MODELS,
)


MIN_API_KEY_LENGTH = 16
MIN_WEBHOOK_KEY_BYTES = 16
# The slowest pace (bytes of upload per second) a background validation is given time for.
VALIDATION_FLOOR_BYTES_PER_SECOND = 1024 * 1024


class ConfigurationError(Exception):
    """Start-up configuration is unusable; the message names the variable."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        # `NAME=` means "not set": a copied .env.example with blanks must start.
        env_ignore_empty=True,
    )

    # Processes
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # `python -m service` serves with this many processes on one port (uvicorn's
    # workers); `python -m worker` runs this many arq workers under one parent.
    api_processes: int = Field(default=1, ge=1, le=64)
    worker_processes: int = Field(default=1, ge=1, le=64)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")

    # Storage
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: Path = Path(".var/data")
    key_prefix: str = "fts"

    # Provider (the SDK's own variable names)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_organization: str | None = None
    openai_project: str | None = None
    openai_webhook_secret: SecretStr | None = None
    provider_timeout_seconds: float = Field(default=60.0, gt=0)
    # Extra JSON merged into job creation, e.g. Azure's {"trainingType": "GlobalStandard"}.
    openai_job_extra_body: str | None = None
    # Several providers at once (TOML, see service/providers/config.py); unset: one,
    # `openai`, from the OPENAI_* variables above.
    providers_file: Path | None = None

    # Callers
    service_api_keys: SecretStr | None = None
    auth_disabled: bool = False

    # Webhooks out
    webhook_signing_secret: SecretStr | None = None
    webhook_allow_private_networks: bool = False

    # Product rules
    default_model: str = "gpt-4o-mini-2024-07-18"
    fine_tunable_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FINE_TUNABLE_MODELS)
    )
    chat_base_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CHAT_BASE_MODELS)
    )
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_json_body_bytes: int = Field(default=1024 * 1024, gt=0)
    sync_validation_max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    price_table_path: Path | None = None
    # Longest a background validation may take; unset: sized for MAX_UPLOAD_BYTES.
    dataset_validation_timeout_seconds: float | None = Field(default=None, gt=0)
    xlsx_max_inflated_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    xlsx_max_compression_ratio: float = Field(default=200.0, gt=1)
    xlsx_memory_limit_bytes: int = Field(default=1024 * 1024 * 1024, ge=128 * 1024 * 1024)

    # Slow and greedy callers
    upload_timeout_seconds: float = Field(default=900.0, gt=0)
    upload_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    upload_min_bytes_per_second: int = Field(default=32 * 1024, ge=0)
    upload_rate_grace_seconds: float = Field(default=10.0, ge=0)
    upload_concurrency_per_tenant: int = Field(default=4, ge=1)
    webhook_max_endpoints_per_tenant: int = Field(default=20, ge=1)
    webhook_concurrency_per_tenant: int = Field(default=16, ge=1)

    # Evaluations
    # Chat calls one worker process has in flight to one provider at a time.
    evaluation_concurrency_per_provider: int = Field(default=16, ge=1, le=1024)
    evaluation_max_examples: int = Field(default=5000, ge=1)
    # Evaluate a succeeded job's tuned model against its base on its validation examples.
    evaluation_auto: bool = True
    evaluation_auto_max_examples: int = Field(default=500, ge=1)
    # One worker run of an evaluation scores examples for about this long, then hands
    # over to the next run (so a crash loses at most this much work).
    evaluation_run_seconds: float = Field(default=30.0, gt=0)

    # Worker
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_heartbeat_ttl_seconds: float = Field(default=30.0, gt=0)
    worker_max_jobs: int = Field(default=50, gt=0)
    # Longest one task (or job sync step) may run. arq keeps a task locked, and the
    # follow schedule a job claimed, for this plus 10 s after a worker dies mid-task,
    # so it is also how long a crash delays that work.
    task_timeout_seconds: float = Field(default=300.0, gt=0)
    poll_min_seconds: float = Field(default=2.0, gt=0)
    poll_max_seconds: float = Field(default=60.0, gt=0)
    reconcile_every_seconds: int = Field(default=30, ge=1, le=3600)

    _split_lists = field_validator("fine_tunable_models", "chat_base_models", mode="before")(
        _split_csv
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                "must start with redis://, rediss:// or unix:// "
                f"(got {parts.scheme or 'no'} scheme)"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("has no host name")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"has an invalid port: {exc}") from None
        return value

    @field_validator("openai_job_extra_body")
    @classmethod
    def _check_extra_body(cls, value: str | None) -> str | None:
        if value:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc.msg})") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object")
        return value

    @field_validator("webhook_signing_secret", "openai_webhook_secret")
    @classmethod
    def _check_whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        secret = value.get_secret_value()
        if not secret.startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with whsec_")
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ValueError("is not valid base64 after whsec_") from None
        if len(key) < MIN_WEBHOOK_KEY_BYTES:
            raise ValueError(
                f"decodes to {len(key)} bytes; use at least {MIN_WEBHOOK_KEY_BYTES} random bytes"
            )
        return value

    @model_validator(mode="after")
    def _check_required(self) -> Self:
        if not self.auth_disabled and not self.api_keys:
            raise ValueError(
                "SERVICE_API_KEYS is required (tenant:key pairs separated by commas); "
                "set AUTH_DISABLED=true only for local development"
            )
        if self.poll_min_seconds > self.poll_max_seconds:
            raise ValueError("POLL_MIN_SECONDS must not exceed POLL_MAX_SECONDS")
        return self

    @cached_property
    def api_keys(self) -> dict[str, str]:
        """Caller key -> tenant id."""
        if self.service_api_keys is None:
            return {}
        keys: dict[str, str] = {}
        for position, pair in enumerate(self.service_api_keys.get_secret_value().split(","), 1):
            pair = pair.strip()
            if not pair:
                continue
            tenant, sep, key = pair.partition(":")
            tenant, key = tenant.strip(), key.strip()
            # Never echo the pair or the key: name the entry by position and tenant.
            if not sep or not tenant or not key:
                raise ValueError("SERVICE_API_KEYS entries must look like tenant:key")
            if len(key) < MIN_API_KEY_LENGTH:
                raise ValueError(
                    f"SERVICE_API_KEYS entry {position} (tenant {tenant!r}) has a key shorter "
                    f"than {MIN_API_KEY_LENGTH} characters"
                )
            if key in keys:
                raise ValueError(
                    f"SERVICE_API_KEYS gives tenants {keys[key]!r} and {tenant!r} the same key; "
                    "every tenant needs its own"
                )
            keys[key] = tenant
        return keys

    @property
    def validation_timeout_seconds(self) -> float:
        """The background validation's time limit: set, or enough for the largest upload
        at a slow machine's pace."""
        if self.dataset_validation_timeout_seconds is not None:
            return self.dataset_validation_timeout_seconds
        return max(120.0, self.max_upload_bytes / VALIDATION_FLOOR_BYTES_PER_SECOND + 60.0)

    @cached_property
    def signing_secret(self) -> str:
        """The local tenant's secret for jobs' own webhook_url deliveries, when auth is
        disabled (a development machine has one tenant). With auth on, every tenant
        signs with its own secret (POST /webhooks/job-secret) and this is unused:
        one secret shared by all tenants would let each forge the others' webhooks.

        Unset, a random one is made per process.
        """
        if self.webhook_signing_secret is not None:
            return self.webhook_signing_secret.get_secret_value()
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    def require_provider(self) -> None:
        if self.providers_file is not None:
            return
        if self.openai_api_key is None or not self.openai_api_key.get_secret_value():
            raise ConfigurationError(
                "OPENAI_API_KEY is required (for the simulator any value works, "
                "with OPENAI_BASE_URL pointing at it), or PROVIDERS_FILE"
            )


_FIELD_TO_ENV = {name: name.upper() for name in Settings.model_fields}


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the environment variable, never its value."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        variable = _FIELD_TO_ENV.get(field, field.upper() or "configuration")
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{variable}: {message}" if loc else message)
    return "; ".join(lines)


def load_settings(*, require_provider: bool = False, **overrides: object) -> Settings:
    """Read settings from the environment, turning validation failures into one line."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        _ = settings.api_keys
        if require_provider:
            settings.require_provider()
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return settings


# Read by libraries straight from the environment, where a blank value (a copied
# .env.example, compose's env_file) would mean "this empty path" instead of "unset".
LIBRARY_VARIABLES = ("TIKTOKEN_CACHE_DIR",)


def forget_blank_library_variables() -> None:
    for name in LIBRARY_VARIABLES:
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]


def settings_or_exit(*, require_provider: bool = False) -> Settings:
    """For process entry points: print one clear line and exit 2 on bad configuration."""
    forget_blank_library_variables()
    try:
        return load_settings(require_provider=require_provider)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
