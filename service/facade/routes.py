"""The `/v1` router: every OpenAI-shaped route, under one tag in the contract."""

from __future__ import annotations

from litestar import Router

from service.facade.chat import ChatCompletionsController
from service.facade.files import FilesController
from service.facade.jobs import FineTuningController
from service.facade.models import ModelsController

PREFIX = "/v1"
TAG = "OpenAI-compatible"


def facade_router() -> Router:
    return Router(
        path=PREFIX,
        route_handlers=[
            FilesController,
            FineTuningController,
            ModelsController,
            ChatCompletionsController,
        ],
        tags=[TAG],
    )
