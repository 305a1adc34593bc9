"""`python -m service`: run the API (HOST, PORT; default 127.0.0.1:8000).

Served by uvicorn on uvloop and httptools (the C event loop and HTTP parser)
when they are installed, as they are with this project's dependencies. With
`API_PROCESSES=N` uvicorn runs N processes accepting on the one port; each
builds its own app (and Redis pool) from the same environment.
"""

from __future__ import annotations

import importlib.util

import uvicorn
from litestar import Litestar

from service.app import create_app
from service.logs import configure_logging
from service.providers.registry import providers_or_exit
from service.settings import Settings, settings_or_exit


def event_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def http_protocol() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def serve_app() -> Litestar:
    """The app factory each of several API processes calls (uvicorn `factory=True`)."""
    settings = _prepare()
    return create_app(settings)


def _prepare() -> Settings:
    settings = settings_or_exit()
    providers_or_exit(settings)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def main() -> None:
    settings = _prepare()
    several = settings.api_processes > 1
    uvicorn.run(
        "service.__main__:serve_app" if several else create_app(settings),
        factory=several,
        workers=settings.api_processes if several else None,
        host=settings.host,
        port=settings.port,
        loop=event_loop(),
        http=http_protocol(),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
