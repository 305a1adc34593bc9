"""Fixtures for the simulator's tests: one simulator served over real HTTP, official SDK
clients whose every response is checked against OpenAI's published schemas, and the
seed datasets.

The SDK-driven tests are a conformance suite with two targets: the simulator (which
stands in for OpenAI) and the service's own OpenAI-shaped `/v1` (a real API, a real
worker process and Redis, in front of a second simulator). A test takes `target` (or
`client`) and runs against both, unless it is marked `simulator_only` (it checks
something only OpenAI does: the Uploads API, result files, its own id formats...).
Where the service deliberately answers differently (earlier refusals, its own events
beside the provider's) the test says so with `target.is_service`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

_SHARED = Path(__file__).resolve().parents[3] / "shared"
if (_SHARED / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED / "tiktoken"))

from simulator.config import SimulatorConfig  # noqa: E402 - after TIKTOKEN_CACHE_DIR is set
from simulator.testing import running_simulator  # noqa: E402
from tests.simulator import openapi_schemas  # noqa: E402
from tests.simulator.seed_data import (  # noqa: E402
    HIROYUKI_SYSTEM_PROMPT,
    buta_jsonl,
    csv_to_chat_jsonl,
    hiroyuki_rows,
)

JOB_SECONDS = 0.3


@dataclass
class SchemaLog:
    """Every response an SDK client received, checked against the reference YAML."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, method: str, path: str, status: int, body: bytes, content_type: str) -> None:
        schema = openapi_schemas.schema_for(method, path, status)
        if schema is None or not content_type.startswith("application/json"):
            # The file content download (raw bytes) and SSE streams are checked elsewhere.
            return
        self.checked += 1
        for problem in openapi_schemas.problems(schema, json.loads(body)):
            self.failures.append(f"{method} {path} -> {schema}: {problem}")


@dataclass
class Simulator:
    base_url: str  # http://127.0.0.1:PORT/v1
    admin: httpx.Client  # talks to /_sim

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def state(self) -> dict[str, Any]:
        response = self.admin.get("/_sim/state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_faults(self, **faults: Any) -> None:
        self.admin.put("/_sim/faults", json=faults).raise_for_status()

    def set_job_seconds(self, seconds: float) -> None:
        self.admin.put("/_sim/time", json={"job_seconds": seconds}).raise_for_status()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    with (
        running_simulator(SimulatorConfig(job_seconds=JOB_SECONDS)) as base_url,
        httpx.Client(base_url=base_url.removesuffix("/v1"), timeout=10) as admin,
    ):
        yield Simulator(base_url, admin)


@pytest.fixture(autouse=True)
def clean_simulator(request: pytest.FixtureRequest) -> None:
    """Each test that uses the shared simulator starts from nothing."""
    if "simulator" in request.fixturenames:
        sim: Simulator = request.getfixturevalue("simulator")
        sim.admin.post("/_sim/reset").raise_for_status()


# The service behind the facade, for the conformance suite's second target -------------

SERVICE_TENANTS = 400


@dataclass
class ServiceStack:
    base_url: str  # http://127.0.0.1:PORT/v1
    behind: Simulator  # the simulator the service talks to
    keys: Iterator[str]


@pytest.fixture(scope="session")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The API (uvicorn, in a thread), a worker process and Redis, in front of a simulator.

    Tests share it and stay apart by tenant: each takes a fresh API key."""
    from service.settings import load_settings
    from tests.conftest import REPO, RedisServer, running_api

    redis_server = RedisServer(tmp_path_factory.mktemp("conformance-redis"))
    redis_server.start()
    keys = [f"conformance-key-{i:04d}" for i in range(SERVICE_TENANTS)]
    worker_log = tmp_path_factory.mktemp("conformance-worker") / "worker.log"
    with (
        running_simulator(SimulatorConfig(job_seconds=JOB_SECONDS)) as sim_url,
        httpx.Client(base_url=sim_url.removesuffix("/v1"), timeout=10) as admin,
    ):
        env = {
            "REDIS_URL": redis_server.url,
            "DATA_DIR": str(tmp_path_factory.mktemp("conformance-data")),
            "SERVICE_API_KEYS": ",".join(f"tenant{i}:{key}" for i, key in enumerate(keys)),
            "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "OPENAI_BASE_URL": sim_url,
            "POLL_MIN_SECONDS": "0.1",
            "POLL_MAX_SECONDS": "0.5",
            "RECONCILE_EVERY_SECONDS": "2",
            "WORKER_HEARTBEAT_SECONDS": "0.5",
            "WORKER_HEARTBEAT_TTL_SECONDS": "3",
            # The suite polls as fast as the simulator's own tests do.
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_FORMAT": "json",
        }
        with worker_log.open("wb") as log, contextlib.ExitStack() as stack:
            worker = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(_stop, worker)
            # The environment is read while the app starts (settings, provider keys),
            # then restored, so the rest of the session never sees it.
            with pytest.MonkeyPatch.context() as patch:
                for name, value in env.items():
                    patch.setenv(name, value)
                api_url, _ = stack.enter_context(running_api(load_settings()))
            _wait_ready(api_url, worker)
            yield ServiceStack(
                base_url=f"{api_url}/v1", behind=Simulator(sim_url, admin), keys=iter(keys)
            )
    redis_server.stop()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(api_url: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{api_url}/ready").status_code != 200:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the service's worker never became ready")
        time.sleep(0.1)


@dataclass
class Target:
    """Where the SDK points: the simulator itself, or the service's /v1 in front of one."""

    name: str
    base_url: str
    api_key: str
    behind: Simulator

    @property
    def is_service(self) -> bool:
        return self.name == "service"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def set_job_seconds(self, seconds: float) -> None:
        self.behind.set_job_seconds(seconds)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("simulator_only") is not None
        names = ["simulator"] if only else ["simulator", "service"]
        metafunc.parametrize("target", names, indirect=True)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "simulator":
        sim: Simulator = request.getfixturevalue("simulator")
        sim.admin.post("/_sim/reset").raise_for_status()
        return Target("simulator", sim.base_url, "sk-test", sim)
    stack: ServiceStack = request.getfixturevalue("service_stack")
    stack.behind.set_job_seconds(JOB_SECONDS)
    return Target("service", stack.base_url, next(stack.keys), stack.behind)


@pytest.fixture
def schema_log() -> Iterator[SchemaLog]:
    log = SchemaLog()
    yield log
    assert not log.failures, "responses off the reference schema:\n" + "\n".join(log.failures)


def _recording_hook(log: SchemaLog) -> Callable[[Any], None]:
    def hook(response: Any) -> None:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        response.read()
        log.check(
            response.request.method,
            response.request.url.path,
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )

    return hook


@pytest.fixture
def client(target: Target, schema_log: SchemaLog) -> Iterator[openai.OpenAI]:
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [_recording_hook(schema_log)]})
    with openai.OpenAI(
        base_url=target.base_url, api_key=target.api_key, http_client=http_client, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def async_client(target: Target, schema_log: SchemaLog) -> AsyncIterator[openai.AsyncOpenAI]:
    sync_hook = _recording_hook(schema_log)

    async def hook(response: Any) -> None:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        await response.aread()
        sync_hook(response)

    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [hook]})
    async with openai.AsyncOpenAI(
        base_url=target.base_url, api_key=target.api_key, http_client=http_client, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def hiroyuki_jsonl() -> bytes:
    rows = hiroyuki_rows()
    assert len(rows) == 29
    return csv_to_chat_jsonl(rows, HIROYUKI_SYSTEM_PROMPT)


@pytest.fixture(scope="session")
def three_example_jsonl() -> bytes:
    data = buta_jsonl()
    assert data.count(b"\n") == 3
    return data
