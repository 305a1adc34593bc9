"""The worker command's processes: one arq worker per process until SIGINT/SIGTERM.

`python -m worker` calls `main`. With `WORKER_PROCESSES=N` (default 1) the
command runs N worker processes: this one and N-1 children it spawns (fresh
interpreters, no inherited event loop or connections). Each is a full arq
worker on the same queue, so they share the work the way separate replicas
would. SIGINT/SIGTERM to the parent is passed on to every child, and the
parent waits for them; a child that dies meanwhile is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import signal
from collections.abc import Coroutine
from multiprocessing.process import BaseProcess
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError

from service.logs import configure_logging, register_settings_secrets
from service.providers.registry import providers_or_exit
from service.settings import Settings, settings_or_exit
from worker.main import SHUTDOWN_GRACE_SECONDS, build_worker, close_worker

logger = logging.getLogger("worker")


# arq's polling loop ends when Redis becomes unreachable. Rather than exit (and
# rely on a supervisor), start a fresh worker after a pause: queued work is in
# Redis, so nothing is lost, and /ready reports the gap meanwhile.
RESTART_PAUSE_SECONDS = 2.0
# How often the parent looks at its children, and how long it waits for them to stop.
CHILD_CHECK_SECONDS = 1.0
CHILD_STOP_SECONDS = 30.0


class Children:
    """The extra worker processes of `WORKER_PROCESSES`, kept at their number."""

    def __init__(self, count: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = [self._start(n) for n in range(1, count)]

    def _start(self, number: int) -> BaseProcess:
        process = self._context.Process(target=_child_main, name=f"worker-{number}")
        process.start()
        return process

    def revive(self) -> None:
        for position, process in enumerate(self.processes):
            if not process.is_alive():
                logger.warning(
                    "a worker process exited; starting another",
                    extra={"exit_code": process.exitcode},
                )
                self.processes[position] = self._start(position + 1)

    def signal(self, sig: signal.Signals) -> None:
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def join(self) -> None:
        for process in self.processes:
            process.join(CHILD_STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()


async def _watch(children: Children, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), CHILD_CHECK_SECONDS)
        if not stopping.is_set():
            children.revive()


async def _run(settings: Settings, children: Children | None = None) -> None:
    # Signals are ours, not arq's: arq binds them to one Worker, and after a
    # restart they must reach the current one (or stop the restart pause).
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    current: list[Worker] = []

    def on_signal(sig: signal.Signals) -> None:
        stopping.set()
        if children is not None:
            children.signal(sig)
        if current:
            current[0].handle_sig_wait_for_completion(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    watcher = asyncio.create_task(_watch(children, stopping)) if children else None
    try:
        await _serve(settings, stopping, current)
    finally:
        stopping.set()
        if watcher is not None:
            await watcher
        if children is not None:
            children.signal(signal.SIGTERM)
            await asyncio.to_thread(children.join)


async def _serve(settings: Settings, stopping: asyncio.Event, current: list[Worker]) -> None:
    while not stopping.is_set():
        worker = build_worker(settings, handle_signals=False)
        current[:] = [worker]
        lost_redis = False
        run = asyncio.create_task(worker.async_run())
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                await _let_tasks_finish(worker, run)
            if run.done():
                run.result()
        except asyncio.CancelledError:
            pass  # our signal handler stops the worker this way; shut down below
        except (RedisError, OSError) as exc:
            lost_redis = True
            logger.warning("lost Redis; restarting the worker", extra={"error": repr(exc)})
        finally:
            stop.cancel()
            await close_worker(worker)
            if not run.done():
                run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        if not lost_redis:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), RESTART_PAUSE_SECONDS)


async def _let_tasks_finish(worker: Worker, run: asyncio.Task[None]) -> None:
    """After a signal, give running tasks their grace period, then stop.

    arq's own handling ends its loop once running tasks are done, but not when the
    signal lands while it is still starting up; `close_worker` (after this) ends
    the loop either way.
    """
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_SECONDS
    while not run.done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.wait({run}, timeout=0.2)
        started = worker.main_task is not None
        follower = worker.ctx.get("follower")
        sender = worker.ctx.get("local_sender")
        steps = follower.busy if follower is not None else 0
        sends = sender.busy if sender is not None else 0
        if started and steps == sends == 0 and all(t.done() for t in worker.tasks.values()):
            return


def _prepare() -> Settings:
    settings = settings_or_exit(require_provider=True)
    providers_or_exit(settings)
    configure_logging(settings.log_level, settings.log_format)
    register_settings_secrets(settings)
    return settings


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop (libuv: cheaper socket writes and callbacks) when it is installed."""
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def _child_main() -> None:
    """A spawned worker process: the same environment, so the same settings."""
    _run_loop(_run(_prepare()))


def main() -> None:
    settings = _prepare()
    children = Children(settings.worker_processes) if settings.worker_processes > 1 else None
    _run_loop(_run(settings, children))
