"""`python -m service`: run the API (HOST, PORT; default 127.0.0.1:8000)."""

from __future__ import annotations

import uvicorn

from service.app import create_app
from service.logs import configure_logging
from service.providers.registry import providers_or_exit
from service.settings import settings_or_exit


def main() -> None:
    settings = settings_or_exit()
    providers_or_exit(settings)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
