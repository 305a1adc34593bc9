"""`python -m worker`: run one worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from arq.worker import Worker
from redis.exceptions import RedisError

from service.logs import configure_logging, register_settings_secrets
from service.providers.registry import providers_or_exit
from service.settings import Settings, settings_or_exit
from worker.main import build_worker, close_worker

logger = logging.getLogger("worker")


# arq's polling loop ends when Redis becomes unreachable. Rather than exit (and
# rely on a supervisor), start a fresh worker after a pause: queued work is in
# Redis, so nothing is lost, and /ready reports the gap meanwhile.
RESTART_PAUSE_SECONDS = 2.0


async def _run(settings: Settings) -> None:
    # Signals are ours, not arq's: arq binds them to one Worker, and after a
    # restart they must reach the current one (or stop the restart pause).
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    current: list[Worker] = []

    def on_signal(sig: signal.Signals) -> None:
        stopping.set()
        if current:
            current[0].handle_sig_wait_for_completion(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    while not stopping.is_set():
        worker = build_worker(settings, handle_signals=False)
        current[:] = [worker]
        lost_redis = False
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            pass  # our signal handler stops the worker this way; shut down below
        except (RedisError, OSError) as exc:
            lost_redis = True
            logger.warning("lost Redis; restarting the worker", extra={"error": repr(exc)})
        finally:
            await close_worker(worker)
        if not lost_redis:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), RESTART_PAUSE_SECONDS)


def main() -> None:
    settings = settings_or_exit(require_provider=True)
    providers_or_exit(settings)
    configure_logging(settings.log_level, settings.log_format)
    register_settings_secrets(settings)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
