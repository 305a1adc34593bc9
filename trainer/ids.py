"""Random identifiers in the shapes OpenAI uses (`file-…`, `ftjob-…`, `ftckpt_…`, …)."""

from __future__ import annotations

import secrets
import string

BASE62 = string.ascii_letters + string.digits


def base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def file_id() -> str:
    return f"file-{base62(24)}"


def job_id() -> str:
    return f"ftjob-{base62(24)}"


def event_id() -> str:
    return f"ftevent-{base62(24)}"


def checkpoint_id() -> str:
    return f"ftckpt_{base62(24)}"


def completion_id() -> str:
    return f"chatcmpl-{base62(29)}"


def model_tag() -> str:
    """The 8 characters that end a tuned model's name."""
    return base62(8)


def tuned_model_name(base: str, suffix: str | None) -> str:
    """`ft:<base>:<suffix>:<tag>`, with an empty suffix slot when there is none."""
    return f"ft:{base}:{suffix or ''}:{model_tag()}"


def checkpoint_model_name(tuned: str, step: int) -> str:
    return f"{tuned}:ckpt-step-{step}"
