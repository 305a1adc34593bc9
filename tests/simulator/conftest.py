"""Fixtures for the simulator's tests: one simulator served over real HTTP, official SDK
clients whose every response is checked against OpenAI's published schemas, and the
seed datasets."""

from __future__ import annotations

import json
import os
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
def client(simulator: Simulator, schema_log: SchemaLog) -> Iterator[openai.OpenAI]:
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [_recording_hook(schema_log)]})
    with openai.OpenAI(
        base_url=simulator.base_url, api_key="sk-test", http_client=http_client, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def async_client(
    simulator: Simulator, schema_log: SchemaLog
) -> AsyncIterator[openai.AsyncOpenAI]:
    sync_hook = _recording_hook(schema_log)

    async def hook(response: Any) -> None:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        await response.aread()
        sync_hook(response)

    http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [hook]})
    async with openai.AsyncOpenAI(
        base_url=simulator.base_url, api_key="sk-test", http_client=http_client, max_retries=0
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
