"""`create_app(config)`: the simulator as an ASGI application (a Litestar app).

Building the app has no side effects. The state directory (when configured), the job
ticker and the webhook client are taken in the app's lifespan and let go with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException

from simulator.api_errors import OpenAIError, error_body
from simulator.config import SimulatorConfig
from simulator.edge import Edge
from simulator.job_driver import JobDriver
from simulator.routes import admin, chat, files, fine_tuning, models, uploads
from simulator.state import SimulatorState
from simulator.webhooks import WebhookDispatcher

logger = logging.getLogger("simulator")

# Files may be 512 MB, upload parts 64 MB; multipart framing needs a little more.
MAX_REQUEST_BYTES = 512 * 1024 * 1024 + 1024 * 1024


class SimulatorApp(Litestar):
    """A Litestar app whose requests pass the edge (key check, faults) first.

    The edge sits in front of Litestar itself because dropping a connection needs
    the server's own `send`, which Litestar wraps before its middleware runs.
    """

    edge: Edge

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self.edge.handle(scope, receive, send, super().__call__)


def _openai_error(_: Request[Any, Any, Any], exc: OpenAIError) -> Response[dict[str, Any]]:
    return Response(exc.body(), status_code=exc.status, headers=exc.headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, NotFoundException) or exc.status_code == 405:
        # Unknown paths and methods, worded as OpenAI words them.
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    return Response(
        error_body(message, "invalid_request_error", None, None), status_code=exc.status_code
    )


def _unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.error("unhandled error", exc_info=exc)
    return Response(
        error_body(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
        status_code=500,
    )


def create_app(config: SimulatorConfig | None = None) -> SimulatorApp:
    config = config or SimulatorConfig()
    state = SimulatorState(config)
    edge = Edge(state)
    driver = JobDriver(state)
    dispatcher = WebhookDispatcher(state)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        state.open()
        try:
            await dispatcher.start()
            driver.start()
            try:
                yield
            finally:
                await driver.stop()
                await dispatcher.close()
        finally:
            state.close()

    def provide_state() -> SimulatorState:
        return state

    api = Router(
        path="/v1",
        route_handlers=[
            *files.handlers,
            *uploads.handlers,
            *fine_tuning.handlers,
            *models.handlers,
            *chat.handlers,
        ],
    )
    control = Router(path="/_sim", route_handlers=admin.handlers)
    app = SimulatorApp(
        route_handlers=[api, control],
        dependencies={"sim": Provide(provide_state, sync_to_thread=False)},
        exception_handlers={
            OpenAIError: _openai_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=[lifespan],
        state=State({"simulator": state, "edge": edge}),
        request_max_body_size=MAX_REQUEST_BYTES,
        openapi_config=None,
        debug=False,
    )
    app.edge = edge
    return app


__all__ = ["SimulatorApp", "create_app"]
