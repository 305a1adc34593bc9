"""Every task the worker runs, by name (the names in `service.tasks`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.diagnostics import ping

TaskBody = Callable[..., Awaitable[Any]]


def task_functions() -> list[tuple[TaskBody, int | None]]:
    """(task body, max tries or None for the worker default)."""
    return [
        (ping, None),
    ]


def cron_jobs() -> list[TaskBody]:
    return []
