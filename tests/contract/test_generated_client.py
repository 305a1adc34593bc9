"""A client generated from a fresh export of the contract drives the real stack.

openapi-python-client writes a package into a temporary folder (it must not
warn: a warning means part of the API is missing from the client), then the
test imports it and runs dataset -> job -> chat through it against the API
and a worker running as real processes, with the OpenAI simulator upstream.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEYS
from tests.contract.conftest import running_stack
from tests.seeds import chat_examples, jsonl

pytestmark = pytest.mark.slow

PACKAGE = "fts_generated_client"
# Vendor media types the generator does not know by name, mapped to how to read them:
# the normalized dataset (JSONL) as bytes, the loss chart (SVG) as text.
GENERATOR_CONFIG = """\
post_hooks: []
content_type_overrides:
  application/jsonl: application/octet-stream
  image/svg+xml: text/plain
"""
JOB_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def generated_client(tmp_path: Path) -> Iterator[Any]:
    """Generate the client package from a fresh export and import it."""
    from service.openapi_export import export

    spec = tmp_path / "openapi.json"
    spec.write_text(export(), encoding="utf-8")
    config = tmp_path / "openapi-python-client.yaml"
    config.write_text(GENERATOR_CONFIG, encoding="utf-8")
    generator = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(tmp_path / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture
def stack(env: dict[str, str], process_log_dir: Path) -> Iterator[str]:
    from simulator.config import SimulatorConfig
    from simulator.testing import running_simulator

    with running_simulator(SimulatorConfig(job_seconds=1.5)) as simulator_url:
        full_env = {**env, "OPENAI_BASE_URL": simulator_url}
        with running_stack(full_env, process_log_dir, name="client", with_worker=True) as url:
            yield url


def _module(package: Any, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def _body_class(endpoint: Any, *, multipart: bool) -> type:
    """The request model of `endpoint` for multipart or JSON, whatever the generator named it."""
    hints = typing.get_type_hints(endpoint.sync_detailed)
    for member in typing.get_args(hints["body"]):
        if isinstance(member, type) and hasattr(member, "to_dict"):
            if hasattr(member, "to_multipart") == multipart and (
                multipart or "examples" in member.__annotations__
            ):
                return member
    raise AssertionError(f"{endpoint.__name__} takes no {'multipart' if multipart else 'JSON'}")


def _as_dict(value: Any) -> dict[str, Any]:
    return value.to_dict() if hasattr(value, "to_dict") else value


def test_dataset_job_chat_through_the_generated_client(generated_client: Any, stack: str) -> None:
    client_module = _module(generated_client, "client")
    with ExitStack() as closing:
        client = closing.enter_context(
            client_module.AuthenticatedClient(
                base_url=stack, token=API_KEYS["tenant-a"], timeout=httpx.Timeout(30.0)
            )
        )
        other_tenant = closing.enter_context(
            client_module.AuthenticatedClient(
                base_url=stack, token=API_KEYS["tenant-b"], timeout=httpx.Timeout(30.0)
            )
        )
        _dataset_job_chat(generated_client, client, other_tenant)


def _dataset_job_chat(generated_client: Any, client: Any, other_tenant: Any) -> None:
    models = _module(generated_client, "models")
    types = _module(generated_client, "types")
    create_dataset = _module(generated_client, "api.datasets.create_dataset")
    get_dataset = _module(generated_client, "api.datasets.get_dataset")
    create_job = _module(generated_client, "api.jobs.create_job")
    get_job = _module(generated_client, "api.jobs.get_job")
    chat = _module(generated_client, "api.chat.create_chat_completion")

    # Dataset: a multipart upload, as the generator expresses it.
    upload = _body_class(create_dataset, multipart=True)
    payload = jsonl(chat_examples(12))
    created = create_dataset.sync_detailed(
        client=client,
        body=upload(
            file=types.File(
                payload=io.BytesIO(payload), file_name="ok.jsonl", mime_type="application/jsonl"
            ),
            name="contract-client",
        ),
    )
    assert created.status_code == 201, created.content
    dataset = created.parsed
    assert isinstance(dataset, models.Dataset)
    assert dataset.name == "contract-client"
    assert dataset.example_count == 12
    assert isinstance(dataset.token_count, int)
    assert dataset.token_count > 0

    # The JSON form of the same route works through the client too.
    json_body = _body_class(create_dataset, multipart=False)
    pairs = [{"user": f"q{i}", "assistant": f"a{i}"} for i in range(10)]
    from_json = create_dataset.sync_detailed(
        client=client, body=json_body.from_dict({"name": "from-json", "examples": pairs})
    )
    assert from_json.status_code == 201, from_json.content
    assert from_json.parsed.example_count == 10

    # Another tenant's id answers 404 with a problem document.
    hidden = get_dataset.sync_detailed(client=other_tenant, dataset_id=dataset.id)
    assert hidden.status_code == 404
    assert isinstance(hidden.parsed, models.Problem)
    assert hidden.parsed.status == 404

    # Job: created, then followed by the worker to the end.
    started = create_job.sync_detailed(
        client=client,
        body=models.JobCreate(
            dataset_id=dataset.id, model="gpt-4o-mini-2024-07-18", suffix="contract"
        ),
    )
    assert started.status_code == 202, started.content
    job = started.parsed
    assert isinstance(job, models.Job)
    assert job.dataset_id == dataset.id
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while str(getattr(job.status, "value", job.status)) != "succeeded":
        assert str(getattr(job.status, "value", job.status)) not in {"failed", "cancelled"}, job
        assert time.monotonic() < deadline, f"job stayed {job.status}"
        time.sleep(0.2)
        job = get_job.sync(client=client, job_id=job.id)
        assert isinstance(job, models.Job)
    assert isinstance(job.fine_tuned_model, str)
    assert job.fine_tuned_model

    # Chat with the tuned model by job id.
    answered = chat.sync_detailed(
        client=client,
        body=models.ChatRequest.from_dict(
            {"job_id": job.id, "messages": [{"role": "user", "content": "q1"}]}
        ),
    )
    assert answered.status_code == 200, answered.content
    completion = _as_dict(answered.parsed)
    assert completion["model"] == job.fine_tuned_model
    assert isinstance(completion["choices"][0]["message"]["content"], str)
    assert completion["usage"]["total_tokens"] > 0
