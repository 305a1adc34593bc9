"""`python -m worker`: run one worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from service.logs import configure_logging
from service.settings import Settings, settings_or_exit
from worker.main import build_worker, close_worker


async def _run(settings: Settings) -> None:
    worker = build_worker(settings)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass  # arq cancels its main task when a signal arrives; shut down below
    finally:
        await close_worker(worker)


def main() -> None:
    settings = settings_or_exit(require_provider=True)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
