"""Structured logging with a correlation id that follows a request into the worker.

Each log record is one JSON object. `request_id` comes from a context variable
that the HTTP middleware sets per request and the worker sets per task (from
the id the API passed along when it enqueued the task).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
log_context_var: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "color_message"}
)

# Last line of defence: anything shaped like a secret is masked even if a
# caller logs it by mistake. Keys are also passed to `register_secrets`.
_SECRET_PATTERNS = re.compile(r"(?<![A-Za-z0-9])(whsec_[A-Za-z0-9+/=_-]{8,}|sk-[A-Za-z0-9_-]{8,})")


class _Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def register(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= 6:
                self._secrets.add(value)

    def scrub(self, text: str) -> str:
        text = _SECRET_PATTERNS.sub("[redacted]", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


redactor = _Redactor()


def register_secrets(*values: str | None) -> None:
    """Values that must never appear in a log line."""
    redactor.register(*values)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        context = log_context_var.get()
        if context:
            payload.update(context)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redactor.scrub(json.dumps(payload, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        return redactor.scrub(prefix + super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access lines come from our own middleware, with the request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block."""
    merged = {**(log_context_var.get() or {}), **values}
    token = log_context_var.set(merged)
    try:
        yield
    finally:
        log_context_var.reset(token)


def register_settings_secrets(settings: Settings) -> None:
    """Every secret in the settings, masked in all log lines from here on."""
    register_secrets(
        *(key for key in settings.api_keys),
        settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        settings.webhook_signing_secret.get_secret_value()
        if settings.webhook_signing_secret
        else None,
        settings.openai_webhook_secret.get_secret_value()
        if settings.openai_webhook_secret
        else None,
    )
