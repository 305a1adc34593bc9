"""Running the simulator inside a test process: `with running_simulator(config) as base_url`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from simulator.app import SimulatorApp, create_app
from simulator.config import SimulatorConfig

START_TIMEOUT_SECONDS = 10.0


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1"
) -> Iterator[str]:
    """Serve the simulator on a free port in a background thread; yields `http://…/v1`.

    The socket is bound before the thread starts, so the port cannot be taken by
    someone else between choosing and serving it.
    """
    app = create_app(config or SimulatorConfig())
    # Naming IPPROTO_TCP matters: asyncio only turns Nagle off (TCP_NODELAY) on
    # accepted sockets whose listener says so, and without it every response
    # waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        with _serving(app, sock) as port:
            yield f"http://{host}:{port}/v1"
    finally:
        sock.close()


@contextmanager
def _serving(app: SimulatorApp, sock: socket.socket) -> Iterator[int]:
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"simulator-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_SECONDS)
