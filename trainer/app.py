"""`create_app(config)`: the trainer server as an ASGI application (a Litestar app).

Building the app reads nothing and starts nothing. The lifespan locks the data
folder, loads the stored files and jobs, starts the job runner (which recovers
jobs a previous server left behind) and, on the way out, stops running trainings.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException

from trainer.config import TrainerConfig
from trainer.errors import MISSING_API_KEY, SERVER_ERROR, APIError, error_body, invalid_api_key
from trainer.model_catalog import ModelCatalog
from trainer.registry import ModelRegistry
from trainer.routes import chat, files, fine_tuning, health, models
from trainer.runner import Runner
from trainer.serving import ModelServer
from trainer.state import TrainerState
from trainer.store import FileStore, JobStore, lock_data_dir

logger = logging.getLogger("trainer")

MULTIPART_SLACK = 1024 * 1024


def _api_error(_: Request[Any, Any, Any], exc: APIError) -> Response[dict[str, Any]]:
    return Response(exc.body(), status_code=exc.status)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, NotFoundException) or exc.status_code == 405:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif exc.status_code == 413:
        message = "Request body too large."
    else:
        message = str(exc.detail)
    return Response(
        error_body(message, "invalid_request_error", None, None), status_code=exc.status_code
    )


def _unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.error("unhandled error", exc_info=exc)
    return Response(error_body(SERVER_ERROR, "server_error", None, None), status_code=500)


def create_app(config: TrainerConfig) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        lock = lock_data_dir(config.data_dir)
        try:
            catalog = ModelCatalog(config.models_dir)
            file_store = FileStore(config.data_dir / "files")
            job_store = JobStore(config.data_dir / "jobs")
            runner = Runner(config, file_store, job_store, catalog)
            server = ModelServer(
                config.max_loaded_models, config.max_loaded_adapters, config.default_max_tokens
            )
            app.state.trainer = TrainerState(
                config=config,
                files=file_store,
                jobs=job_store,
                catalog=catalog,
                registry=ModelRegistry(catalog, job_store),
                runner=runner,
                server=server,
            )
            await runner.start()
            try:
                yield
            finally:
                await runner.stop()
                server.close()
        finally:
            lock.close()

    async def require_key(request: Request[Any, Any, Any]) -> None:
        if config.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise APIError(401, MISSING_API_KEY)
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise invalid_api_key(given)

    def provide_trainer(state: State) -> TrainerState:
        found: TrainerState = state.trainer
        return found

    api = Router(
        path="/v1",
        route_handlers=[
            *files.handlers,
            *fine_tuning.handlers,
            *models.handlers,
            *chat.handlers,
        ],
        before_request=require_key,
    )
    return Litestar(
        route_handlers=[api, *health.handlers],
        dependencies={"trainer": Provide(provide_trainer, sync_to_thread=False)},
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=[lifespan],
        request_max_body_size=config.max_upload_bytes + MULTIPART_SLACK,
        openapi_config=None,
        debug=False,
    )


__all__ = ["create_app"]
