"""`create_app(config)`: the trainer server as an ASGI application (a Litestar app).

Building the app reads nothing and starts nothing. The lifespan locks the data
folder, loads the stored files and jobs, starts the job manager with its runner
(local subprocesses, or Ray jobs with RAY_ADDRESS; it recovers jobs a previous
server left behind), starts serving through vLLM when VLLM_BASE_URL is set and, on
the way out, stops local trainings (Ray jobs go on and are followed again on the
next start).
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
from trainer.job_manager import JobManager
from trainer.jobs import Job
from trainer.model_catalog import ModelCatalog
from trainer.registry import ModelRegistry
from trainer.routes import chat, files, fine_tuning, health, models
from trainer.runners import make_runner
from trainer.serving import ModelServer
from trainer.state import TrainerState
from trainer.store import FileStore, JobStore, lock_data_dir
from trainer.vllm_serving import VLLMServing

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


def _load_after_training(vllm: VLLMServing, registry: ModelRegistry, job: Job) -> None:
    served = registry.resolve(job.fine_tuned_model) if job.fine_tuned_model else None
    if served is not None and served.adapter_dir is not None:
        vllm.after_training(served)


def create_app(config: TrainerConfig) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        lock = lock_data_dir(config.data_dir)
        try:
            catalog = ModelCatalog(config.models_dir)
            file_store = FileStore(config.data_dir / "files")
            job_store = JobStore(config.data_dir / "jobs")
            manager = JobManager(config, file_store, job_store, catalog, make_runner(config))
            server = ModelServer(
                config.max_loaded_models, config.max_loaded_adapters, config.default_max_tokens
            )
            vllm = VLLMServing(config.vllm, config.data_dir) if config.vllm else None
            app.state.trainer = TrainerState(
                config=config,
                files=file_store,
                jobs=job_store,
                catalog=catalog,
                registry=ModelRegistry(catalog, job_store),
                manager=manager,
                server=server,
                vllm=vllm,
            )
            registry = app.state.trainer.registry
            if vllm is not None:
                await vllm.start()
                manager.on_success = lambda job: _load_after_training(vllm, registry, job)
            await manager.start()
            try:
                yield
            finally:
                await manager.stop()
                if vllm is not None:
                    await vllm.close()
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
