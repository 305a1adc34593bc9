"""Several providers at once (PROVIDERS_FILE), routed by the catalog, and the
serving phase between a provider's success and ours.

Each provider here is a real simulator process-in-a-thread over HTTP. The
adapter-loading stand-in is a small HTTP server at the outer boundary: it
forwards everything to a simulator, answers `load_lora_adapter` as a scripted
vLLM-style server would, and refuses chat with a tuned model until its adapter
is loaded, so "job.succeeded means chat works" can be checked.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from simulator.config import SimulatorConfig
from simulator.testing import running_simulator
from tests.conftest import auth
from tests.integration.conftest import create_dataset, wait_for_job
from tests.integration.test_jobs import upstream_jobs_tagged
from tests.integration.test_webhooks import wait_for
from tests.receiver import running_receiver
from tests.seeds import SYSTEM_PROMPT

pytestmark = pytest.mark.slow

A_MODEL = "gpt-4o-mini-2024-07-18"
B_MODEL = "gpt-3.5-turbo-0125"


def toml_value(value: object) -> str:
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)


def providers_toml(*entries: dict[str, object]) -> str:
    lines: list[str] = []
    for entry in entries:
        lines.append("[[provider]]")
        for key, value in entry.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def two_simulators() -> Iterator[tuple[str, str]]:
    with (
        running_simulator(SimulatorConfig(job_seconds=1.5, org="org-a")) as first,
        running_simulator(SimulatorConfig(job_seconds=1.5, org="org-b")) as second,
    ):
        yield first, second


class TestTwoProviders:
    @pytest.fixture
    def env(
        self, env: dict[str, str], two_simulators: tuple[str, str], tmp_path: Path, monkeypatch
    ) -> dict[str, str]:
        first, second = two_simulators
        monkeypatch.setenv("SIM_A_KEY", "sk-sim-a-key")
        monkeypatch.setenv("SIM_B_KEY", "sk-sim-b-key")
        path = tmp_path / "providers.toml"
        path.write_text(
            providers_toml(
                {
                    "name": "alpha",
                    "kind": "openai",
                    "base_url": first,
                    "api_key_env": "SIM_A_KEY",
                    "models": [A_MODEL],
                },
                {
                    "name": "beta",
                    "kind": "openai",
                    "base_url": second,
                    "api_key_env": "SIM_B_KEY",
                    "models": [B_MODEL],
                    "model_overrides": {B_MODEL: {"training_until": "2099-01-01"}},
                },
            )
        )
        return {**env, "PROVIDERS_FILE": str(path), "SIM_A_KEY": "sk-sim-a-key"}

    async def test_each_job_trains_and_chats_on_its_own_provider(
        self, client, worker, two_simulators
    ) -> None:
        first, second = two_simulators
        dataset = await create_dataset(client)
        jobs = {}
        for model in (A_MODEL, "gpt-3.5-turbo"):  # an alias resolves in the catalog
            created = await client.post(
                "/jobs", headers=auth(), json={"dataset_id": dataset["id"], "model": model}
            )
            assert created.status_code == 202, created.text
            jobs[model] = created.json()
        done = {
            model: await wait_for_job(client, job["id"], {"succeeded"})
            for model, job in jobs.items()
        }
        alpha, beta = done[A_MODEL], done["gpt-3.5-turbo"]
        assert (alpha["provider"]["name"], alpha["model"]) == ("alpha", A_MODEL)
        assert (beta["provider"]["name"], beta["model"]) == ("beta", B_MODEL)
        assert ":org-a:" in alpha["fine_tuned_model"]
        assert ":org-b:" in beta["fine_tuned_model"]
        # Exactly one upstream job each, on its own provider, none on the other.
        assert len(upstream_jobs_tagged(first, alpha["id"])) == 1
        assert len(upstream_jobs_tagged(second, beta["id"])) == 1
        assert upstream_jobs_tagged(first, beta["id"]) == []
        assert upstream_jobs_tagged(second, alpha["id"]) == []

        question = [{"role": "user", "content": "自己肯定感の高めかた"}]
        for job in (alpha, beta):
            # By name: the tuned model is served by the provider that trained it (the
            # other simulator does not know it and would answer 404).
            reply = await client.post(
                "/chat",
                headers=auth(),
                json={"model": job["fine_tuned_model"], "messages": question},
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["model"] == job["fine_tuned_model"]

        models = (await client.get("/models", headers=auth())).json()["data"]
        providers = {m["id"]: m["provider"] for m in models}
        assert providers[A_MODEL] == "alpha"
        assert providers[B_MODEL] == "beta"
        tuned = {m["id"]: m for m in models if m["kind"] == "tuned"}
        assert tuned[alpha["fine_tuned_model"]]["provider"] == "alpha"
        assert tuned[beta["fine_tuned_model"]]["base_model"] == B_MODEL
        other_tenant = (await client.get("/models", headers=auth("tenant-b"))).json()["data"]
        assert not [m for m in other_tenant if m["kind"] == "tuned"]

    async def test_a_model_no_provider_trains_is_refused_naming_what_can(self, client) -> None:
        dataset = await create_dataset(client)
        refused = await client.post(
            "/jobs", headers=auth(), json={"dataset_id": dataset["id"], "model": "gpt-4.1"}
        )
        assert refused.status_code == 422
        problem = refused.json()
        assert problem["code"] == "model_not_fine_tunable"
        assert A_MODEL in problem["detail"]
        assert B_MODEL in problem["detail"]


class TestTrainingWindow:
    @pytest.fixture
    def env(self, env: dict[str, str], simulator: str, tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "providers.toml"
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        path.write_text(
            providers_toml(
                {
                    "name": "openai",
                    "kind": "openai",
                    "base_url": simulator,
                    "api_key_env": "OPENAI_API_KEY",
                    "models": [A_MODEL, B_MODEL],
                    "model_overrides": {B_MODEL: {"training_until": yesterday}},
                }
            )
        )
        return {**env, "PROVIDERS_FILE": str(path)}

    async def test_a_closed_model_is_refused_at_the_first_call_naming_the_date(
        self, client
    ) -> None:
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        dataset = await client.post(
            "/datasets",
            headers=auth(),
            files={"file": ("ok.jsonl", (await _ten_lines()), "application/jsonl")},
            data={"model": "gpt-3.5-turbo"},
        )
        assert dataset.status_code == 201, dataset.text
        warnings = dataset.json()["warnings"]
        assert warnings[0]["code"] == "model_training_closed"
        assert yesterday in warnings[0]["message"]
        refused = await client.post(
            "/jobs",
            headers=auth(),
            json={"dataset_id": dataset.json()["id"], "model": "gpt-3.5-turbo"},
        )
        assert refused.status_code == 422
        problem = refused.json()
        assert problem["code"] == "model_training_closed"
        assert problem["training_until"] == yesterday
        assert problem["alternatives"] == [A_MODEL]
        assert yesterday in problem["detail"]
        assert A_MODEL in problem["detail"]
        models = {m["id"]: m for m in (await client.get("/models", headers=auth())).json()["data"]}
        assert models[B_MODEL]["training_open"] is False
        assert models[A_MODEL]["training_open"] is True


async def _ten_lines() -> bytes:
    from tests.seeds import chat_examples, jsonl

    return jsonl(chat_examples(10))


@dataclass
class AdapterServer:
    """Forwards to a simulator; `load_lora_adapter` answers from a script, and chat with
    a tuned model is refused (404) until its adapter is loaded."""

    upstream: str
    script: list[int] = field(default_factory=lambda: [503, 503, 200])
    loaded: set[str] = field(default_factory=set)
    loads: list[tuple[str, int]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def running_adapter_server(upstream: str) -> Iterator[AdapterServer]:
    state = AdapterServer(upstream=upstream)
    forward = httpx.Client(base_url=upstream.removesuffix("/v1"), timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _relay(self, method: str) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length) if length else b""
            if self.path == "/v1/load_lora_adapter":
                name = json.loads(body)["lora_name"]
                with state.lock:
                    status = state.script.pop(0) if len(state.script) > 1 else state.script[0]
                    state.loads.append((name, status))
                    if status == 200:
                        state.loaded.add(name)
                self._reply(
                    status,
                    b'{"error":{"message":"warming up","type":"server_error"}}'
                    if status >= 400
                    else b"{}",
                )
                return
            if self.path == "/v1/chat/completions":
                model = json.loads(body).get("model", "")
                if model.startswith("ft:") and model not in state.loaded:
                    self._reply(
                        404,
                        b'{"error":{"message":"The model does not exist",'
                        b'"type":"invalid_request_error","code":"model_not_found"}}',
                    )
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
            answer = forward.request(method, self.path, content=body, headers=headers)
            self._reply(answer.status_code, answer.content, answer.headers.get("content-type", ""))

        def do_GET(self) -> None:
            self._relay("GET")

        def do_POST(self) -> None:
            self._relay("POST")

        def do_DELETE(self) -> None:
            self._relay("DELETE")

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        forward.close()
        thread.join(timeout=5)


class TestDeploying:
    @pytest.fixture
    def adapter_server(self, simulator: str) -> Iterator[AdapterServer]:
        with running_adapter_server(simulator) as server:
            yield server

    @pytest.fixture
    def env(
        self, env: dict[str, str], adapter_server: AdapterServer, tmp_path: Path
    ) -> dict[str, str]:
        path = tmp_path / "providers.toml"
        path.write_text(
            providers_toml(
                {
                    "name": "adapters",
                    "kind": "trainer",
                    "base_url": adapter_server.url,
                    "api_key_env": "OPENAI_API_KEY",
                    "models": [A_MODEL],
                }
            )
        )
        return {**env, "PROVIDERS_FILE": str(path)}

    async def test_a_deploy_that_fails_twice_then_works_succeeds_once_after_chat_works(
        self, client, worker, adapter_server
    ) -> None:
        secret = (await client.post("/webhooks/job-secret", headers=auth())).json()["secret"]
        assert secret
        dataset = await create_dataset(client)
        chat_at_announcement: list[int] = []
        with running_receiver() as receiver:
            created = await client.post(
                "/jobs",
                headers=auth(),
                json={"dataset_id": dataset["id"], "model": A_MODEL, "webhook_url": receiver.url},
            )
            assert created.status_code == 202, created.text
            job = await wait_for_job(client, created.json()["id"], {"succeeded", "failed"})
            await wait_for(lambda: len(receiver.requests) >= 1)
            payload = json.loads(receiver.requests[0].body)
            tuned = payload["data"]["fine_tuned_model"]
            # The moment job.succeeded arrived, the tuned model answered chat.
            reply = await client.post(
                "/chat",
                headers=auth(),
                json={
                    "job_id": job["id"],
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": "自己肯定感の高めかた"},
                    ],
                },
            )
            chat_at_announcement.append(reply.status_code)
            await asyncio.sleep(1.0)  # nothing more should arrive
        assert job["status"] == "succeeded", job
        assert payload["type"] == "job.succeeded"
        assert len(receiver.requests) == 1
        assert [status for _, status in adapter_server.loads] == [503, 503, 200]
        assert {name for name, _ in adapter_server.loads} == {tuned}
        assert chat_at_announcement == [200]
        events = (await client.get(f"/jobs/{job['id']}/events?limit=100", headers=auth())).json()
        statuses = [e["data"]["to"] for e in reversed(events["data"]) if e["type"] == "status"]
        assert statuses[-2:] == ["deploying", "succeeded"]
