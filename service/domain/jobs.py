"""The job lifecycle: statuses, transitions and the rules around them. Pure logic."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from service.errors import Conflict, InvalidContent


class JobStatus(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# Provider statuses we mirror; anything else is kept in `provider_status` only.
MIRRORED = {
    "validating_files": JobStatus.VALIDATING_FILES,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

# Our tag on every upstream job, so a retried create finds the job it already made.
METADATA_JOB_KEY = "service_job_id"

SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA_PAIRS = 15  # OpenAI allows 16; one slot is ours
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def mirror(provider_status: str) -> JobStatus | None:
    return MIRRORED.get(provider_status)


def can_move(current: str, new: str) -> bool:
    """Terminal states are final; everything else may move forward or pause/resume."""
    if current == new:
        return False
    return not is_terminal(current)


def check_action(status: str, action: str, *, has_upstream: bool) -> None:
    """Refuse cancel/pause/resume where it makes no sense, saying why (409)."""
    if is_terminal(status):
        raise Conflict(f"The job is already {status}; it cannot be {action}d")
    if action == "pause":
        if status != JobStatus.RUNNING or not has_upstream:
            raise Conflict(f"Only a running job can be paused; this one is {status}")
    elif action == "resume":
        if status != JobStatus.PAUSED:
            raise Conflict(f"Only a paused job can be resumed; this one is {status}")


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidContent(
            f"metadata may hold at most {MAX_METADATA_PAIRS} pairs (got {len(metadata)})",
            extra={
                "errors": [{"path": "metadata", "code": "too_many", "message": "too many pairs"}]
            },
        )
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if key == METADATA_JOB_KEY:
            raise InvalidContent(f"metadata key {METADATA_JOB_KEY!r} is reserved for the service")
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidContent(f"metadata keys must be 1-{MAX_METADATA_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise InvalidContent(
                f"metadata[{key}] must be a string of at most {MAX_METADATA_VALUE} characters"
            )
        clean[key] = value
    return clean


def check_suffix(suffix: str | None) -> str | None:
    if suffix is None:
        return None
    if not SUFFIX_PATTERN.match(suffix):
        raise InvalidContent(
            "suffix must be 1-64 characters of letters, digits, '-' or '_' "
            "(Azure refuses periods, so they are refused everywhere)"
        )
    return suffix


def poll_delay(unchanged_polls: int, *, minimum: float, maximum: float) -> float:
    """Poll quickly after a change, then back off geometrically while nothing moves."""
    return float(min(maximum, minimum * (1.6 ** min(unchanged_polls, 30))))


def retry_delay(attempt: int, *, retry_after: float | None, cap: float = 300.0) -> float:
    """Capped exponential backoff for retriable provider errors, honouring Retry-After.

    Jitter is added by the caller (it needs a random source; this stays pure).
    """
    base = min(cap, 1.0 * (2 ** max(0, attempt - 1)))
    if retry_after is not None:
        return float(min(cap, max(base / 2, retry_after)))
    return float(base)
