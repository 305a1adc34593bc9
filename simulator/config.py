"""Settings of one simulator instance: time scale, organisation, webhooks and faults."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FaultConfig(BaseModel):
    """Which requests the simulator answers badly, and how.

    Rates are probabilities per request in [0, 1]. They are checked in this order:
    dropped connection, 429, 5xx; latency is added to every matching request first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    rate_5xx: float = Field(default=0.0, ge=0.0, le=1.0)
    status_5xx: tuple[int, ...] = (500, 503)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # OpenAI sends whole seconds in `Retry-After`; `retry-after-ms` lets fast tests
    # ask the SDK for a shorter wait (the SDK prefers it when present).
    retry_after: int = Field(default=1, ge=0, le=3600)
    retry_after_ms: int | None = Field(default=None, ge=0, le=3_600_000)
    # Only requests whose path starts with one of these prefixes are touched.
    paths: tuple[str, ...] = ("/v1/",)
    # Stop injecting after this many faults (None: never stop). Makes retry tests exact.
    max_faults: int | None = Field(default=None, ge=0)
    # Seed for the dice, so a fault pattern can be replayed.
    seed: int | None = None

    @field_validator("status_5xx")
    @classmethod
    def _server_errors_only(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 500 <= code <= 599 for code in value):
            raise ValueError("status_5xx must list status codes between 500 and 599")
        return value

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not prefix.startswith("/") for prefix in value):
            raise ValueError("every path prefix must start with '/'")
        return value

    @property
    def active(self) -> bool:
        return bool(self.rate_429 or self.rate_5xx or self.latency_ms or self.drop_rate)


class SimulatorConfig(BaseModel):
    """Everything `create_app` needs. No field reads the environment by itself."""

    model_config = ConfigDict(extra="forbid")

    # A job takes about this long from creation to its final state.
    job_seconds: float = Field(default=30.0, gt=0.0, le=86_400.0)
    org: str = Field(default="sim-org", min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Attempts per webhook delivery (the first try included), with growing pauses between.
    webhook_attempts: int = Field(default=4, ge=1, le=20)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0.0)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    # Where files, uploads, jobs, tuned models and owed webhooks are kept so they
    # survive a restart (see `simulator.persistence`); None keeps everything in memory.
    state_dir: Path | None = None

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("whsec_"):
            raise ValueError("webhook_secret must look like whsec_<base64>")
        try:
            key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook_secret must be whsec_ followed by base64") from exc
        if len(key) < 16:
            raise ValueError("webhook_secret must carry at least 16 bytes of key")
        return value

    @model_validator(mode="after")
    def _url_and_secret_together(self) -> SimulatorConfig:
        if (self.webhook_url is None) != (self.webhook_secret is None):
            raise ValueError("webhook_url and webhook_secret must be given together")
        return self
