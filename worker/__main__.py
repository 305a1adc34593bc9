"""`python -m worker`: run one worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from service.app import register_settings_secrets
from service.logs import configure_logging
from service.settings import Settings, settings_or_exit
from worker.main import build_worker, close_worker

logger = logging.getLogger("worker")


# arq's polling loop ends when Redis becomes unreachable. Rather than exit (and
# rely on a supervisor), start a fresh worker after a pause: queued work is in
# Redis, so nothing is lost, and /ready reports the gap meanwhile.
RESTART_PAUSE_SECONDS = 2.0


async def _run(settings: Settings) -> None:
    while True:
        worker = build_worker(settings)
        lost_redis = False
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            pass  # arq cancels its main task when a signal arrives; shut down below
        except (RedisError, OSError) as exc:
            lost_redis = True
            logger.warning("lost Redis; restarting the worker", extra={"error": repr(exc)})
        finally:
            await close_worker(worker)
        if not lost_redis:
            return
        await asyncio.sleep(RESTART_PAUSE_SECONDS)


def main() -> None:
    settings = settings_or_exit(require_provider=True)
    configure_logging(settings.log_level, settings.log_format)
    register_settings_secrets(settings)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
