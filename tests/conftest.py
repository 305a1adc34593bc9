"""Shared fixtures: a real redis-server per session, clean state per test.

The session starts its own `redis-server` on a free port (never the machine's
6379), so tests can stop and restart it. Each test starts from an empty Redis
and its own DATA_DIR.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    import openai

# Keeps every log line of the session for the secret scan (tests/contract/test_log_secrets.py).
pytest_plugins = ["tests.log_capture"]

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN = REPO.parent / "shared" / "tiktoken"
if SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN))

API_KEYS = {"tenant-a": "key-a-0123456789", "tenant-b": "key-b-0123456789"}
WEBHOOK_SECRET = "whsec_dGVzdC1zaWduaW5nLXNlY3JldC1mb3ItdGVzdHM="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process this test session owns."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed (Debian: apt-get install redis-server)", 2)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_redis(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that touches Redis starts from an empty one."""
    if "redis_server" not in request.fixturenames:
        yield
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    if server.process is None:
        server.start()
    with server.client() as client:
        client.flushall()
    yield
    if server.process is None:  # a test stopped it; leave it running for the next
        server.start()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def env(redis_server: RedisServer, data_dir: Path) -> dict[str, str]:
    """The environment a real deployment would set, for settings and subprocesses."""
    return {
        "REDIS_URL": redis_server.url,
        "DATA_DIR": str(data_dir),
        "SERVICE_API_KEYS": ",".join(f"{t}:{k}" for t, k in API_KEYS.items()),
        "WEBHOOK_SIGNING_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "LOG_FORMAT": "json",
        "WORKER_HEARTBEAT_SECONDS": "0.5",
        "WORKER_HEARTBEAT_TTL_SECONDS": "3",
        "POLL_MIN_SECONDS": "0.2",
        "POLL_MAX_SECONDS": "1",
        "RECONCILE_EVERY_SECONDS": "2",
        # A killed worker's task stays locked for this + 10 s; keep crash tests short.
        "TASK_TIMEOUT_SECONDS": "10",
    }


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from service.settings import load_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def auth(tenant: str = "tenant-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[tenant]}"}


@contextmanager
def running_api(settings) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """The app from create_app served by uvicorn on a free port in a thread: real HTTP."""
    import threading

    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
async def client(settings) -> AsyncIterator:  # type: ignore[no-untyped-def]
    """An HTTP client for the real app, served over loopback in its own thread."""
    import httpx

    with running_api(settings) as (base_url, app):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


@pytest.fixture
async def worker(settings) -> AsyncIterator:  # type: ignore[no-untyped-def]
    """The real arq worker, running in this event loop for the length of the test."""
    import asyncio
    import contextlib

    from worker.main import build_worker, close_worker

    running = build_worker(
        settings, handle_signals=False, poll_delay=0.05, follow_idle_seconds=0.05
    )
    task = asyncio.create_task(running.async_run())
    # Wait for start-up to finish: a test that then builds a large body in this loop
    # would otherwise stall the worker's first Redis calls past their timeout.
    deadline = asyncio.get_running_loop().time() + 60
    while "resources" not in running.ctx:
        if task.done():
            task.result()  # start-up failed: raise its error here
        assert asyncio.get_running_loop().time() < deadline, "the worker did not start"
        await asyncio.sleep(0.01)
    yield running
    # Bounded, so a shutdown bug fails the run instead of hanging it.
    await asyncio.wait_for(close_worker(running), timeout=30)
    # The loop ends with a Redis error when a test stopped Redis under it.
    with contextlib.suppress(asyncio.CancelledError, redis.RedisError):
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def sdk(client) -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:  # type: ignore[no-untyped-def]
    """Official SDK clients pointed at the service's /v1, one per tenant (or key)."""
    import openai

    made: list[openai.AsyncOpenAI] = []

    def for_tenant(tenant: str = "tenant-a", *, api_key: str | None = None) -> openai.AsyncOpenAI:
        api = openai.AsyncOpenAI(
            base_url=f"{client.base_url}/v1", api_key=api_key or API_KEYS[tenant], max_retries=0
        )
        made.append(api)
        return api

    yield for_tenant
    for api in made:
        await api.close()
