"""`python -m simulator --port 8100 [--job-seconds N] [--state-dir DIR]`: the simulator as
its own process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from simulator.app import create_app
from simulator.config import FaultConfig, SimulatorConfig
from simulator.persistence import StateDirError, StateStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local stand-in for OpenAI's files, fine-tuning and chat APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument(
        "--job-seconds", type=float, default=30.0, help="how long a job takes end to end"
    )
    parser.add_argument("--org", default="sim-org", help="organisation slug in tuned model ids")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep files, jobs and tuned models here so they survive a restart",
    )
    parser.add_argument("--webhook-url", default=os.environ.get("SIMULATOR_WEBHOOK_URL"))
    parser.add_argument("--webhook-secret", default=os.environ.get("SIMULATOR_WEBHOOK_SECRET"))
    parser.add_argument("--fault-rate-429", type=float, default=0.0)
    parser.add_argument("--fault-rate-5xx", type=float, default=0.0)
    parser.add_argument("--fault-latency-ms", type=int, default=0)
    parser.add_argument("--fault-drop-rate", type=float, default=0.0)
    parser.add_argument("--fault-retry-after", type=int, default=1, help="Retry-After seconds")
    parser.add_argument("--log-level", default="warning")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        job_seconds=args.job_seconds,
        org=args.org,
        state_dir=args.state_dir,
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret or None,
        faults=FaultConfig(
            rate_429=args.fault_rate_429,
            rate_5xx=args.fault_rate_5xx,
            latency_ms=args.fault_latency_ms,
            drop_rate=args.fault_drop_rate,
            retry_after=args.fault_retry_after,
        ),
    )


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGINT/SIGTERM and exiting with status 0.

    uvicorn re-raises a caught signal once it has shut down, so the process would
    end "killed by SIGTERM"; a stop that was asked for is a clean exit here.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        for stop_signal in stop_signals:
            loop.add_signal_handler(stop_signal, self._stop)
        try:
            yield
        finally:
            for stop_signal in stop_signals:
                loop.remove_signal_handler(stop_signal)

    # Printed once startup (loading the state directory included) has succeeded.
    announcement = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.announcement:
            sys.stdout.write(self.announcement)
            sys.stdout.flush()

    def _stop(self) -> None:
        # A second signal skips waiting for open connections.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


async def _serve(config: SimulatorConfig, host: str, port: int, log_level: str) -> None:
    # Bind first so the port is known and connections wait in the backlog meanwhile.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (see testing.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound_port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            create_app(config), log_level=log_level, lifespan="on", timeout_graceful_shutdown=5
        )
    )
    where = f", state_dir={config.state_dir}" if config.state_dir else ""
    server.announcement = (
        f"simulator listening on http://{host}:{bound_port}/v1 "
        f"(job_seconds={config.job_seconds:g}, org={config.org}{where})\n"
    )
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown; a failed startup exits with 3.
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        parser.error(str(exc))
    if config.state_dir is not None:
        # Say plainly why a state directory cannot be used, before anything starts.
        try:
            StateStore(config.state_dir).close()
        except (StateDirError, OSError, sqlite3.Error) as exc:
            parser.exit(1, f"{parser.prog}: cannot use --state-dir: {exc}\n")
    asyncio.run(_serve(config, args.host, args.port, args.log_level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
