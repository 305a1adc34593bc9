"""The application factory: `create_app(settings)` returns the Litestar app.

Nothing connects or reads files at import time. One lifespan owns the Redis
clients, the HTTP client, the provider and the process pool used for dataset
ingestion, and closes them on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag

from service import __version__
from service.api.auth import provide_resources, provide_tenant
from service.api.chat import ChatController
from service.api.datasets import DatasetController
from service.api.docs_assets import DOCS_ASSETS, DocsAssetsController
from service.api.evaluations import EvaluationController
from service.api.health import HealthController
from service.api.jobs import JobController
from service.api.middleware import BodyPace, body_pacing_middleware, request_id_middleware
from service.api.models import ModelController
from service.api.problems import exception_handlers
from service.api.webhooks import WebhookController
from service.console.routes import ConsoleController
from service.datasets.removal import sweep_at_start
from service.facade import errors as facade_errors
from service.facade.routes import PREFIX as FACADE_PREFIX
from service.facade.routes import TAG as FACADE_TAG
from service.facade.routes import facade_router
from service.logs import register_settings_secrets
from service.providers.base import ProviderError
from service.resources import ingest_pool, open_resources, startup_heap_frozen
from service.settings import Settings, load_settings

logger = logging.getLogger(__name__)

API_DESCRIPTION = """\
Fine-tune chat models on your own question/answer data and use them.

Upload a dataset (`/datasets`), start a job (`/jobs`), get a signed webhook
when the tuned model is ready, then talk to it (`/chat`) and measure it
against its base model (`/evaluations`). Every error is an RFC 9457 problem
document (`application/problem+json`).
"""


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Fine-tuning service",
        version=__version__,
        description=API_DESCRIPTION,
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A caller key from SERVICE_API_KEYS",
                )
            }
        ),
        security=[{"BearerAuth": []}],
        tags=[
            Tag(name="Datasets", description="Upload, validate, convert and price training data"),
            Tag(name="Jobs", description="Fine-tuning jobs and what happened to them"),
            Tag(name="Chat", description="Talk to tuned and base models"),
            Tag(
                name="Evaluations",
                description="Score tuned and base models against a dataset's reference answers",
            ),
            Tag(name="Models", description="What can be trained where, and your tuned models"),
            Tag(name="Webhooks", description="Signed notifications about jobs"),
            Tag(name="Health", description="Liveness and readiness"),
            Tag(
                name=FACADE_TAG,
                description="The same work in OpenAI's API shape: point the OpenAI SDK's "
                "base_url at <service>/v1 (files, fine_tuning.jobs, models, chat.completions)",
            ),
        ],
        # The UI's files come from the installed swagger-ui-py package, not a CDN, so
        # /docs works on a machine without internet.
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' href='{DOCS_ASSETS}/favicon-32x32.png'>",
            )
        ],
        path="/docs",
    )


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    register_settings_secrets(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            executor = stack.enter_context(ingest_pool())
            resources = await stack.enter_async_context(open_resources(settings, executor=executor))
            app.state.resources = resources
            await sweep_at_start(resources)
            try:
                await resources.providers.learn_models()
            except ProviderError as exc:  # a provider that is down is asked again later
                logger.warning(
                    "could not ask providers about their models", extra={"error": exc.message}
                )
            if settings.auth_disabled:
                logger.warning(
                    "AUTH IS DISABLED: every request is served as tenant 'local'; "
                    "never run like this outside a development machine"
                )
            stack.enter_context(startup_heap_frozen())
            yield

    app = Litestar(
        route_handlers=[
            HealthController,
            DatasetController,
            JobController,
            ChatController,
            EvaluationController,
            ModelController,
            WebhookController,
            ConsoleController,
            DocsAssetsController,
            facade_router(),
        ],
        lifespan=[lifespan],
        dependencies={
            "tenant": Provide(provide_tenant),
            "resources": Provide(provide_resources, sync_to_thread=False),
        },
        exception_handlers=exception_handlers(
            dialects={FACADE_PREFIX + "/": facade_errors.exception_handlers()}
        ),
        openapi_config=openapi_config(),
        request_max_body_size=settings.max_json_body_bytes,
        logging_config=None,
        debug=False,
    )
    # Outermost wrapper (outside routing), so 404/405 answers carry a request id too.
    app.asgi_handler = request_id_middleware(
        body_pacing_middleware(
            app.asgi_handler,
            BodyPace(
                total_seconds=settings.upload_timeout_seconds,
                idle_seconds=settings.upload_idle_timeout_seconds,
                min_bytes_per_second=settings.upload_min_bytes_per_second,
                grace_seconds=settings.upload_rate_grace_seconds,
            ),
        )
    )
    return app
