"""Fixtures for the trainer's tests: its own virtual environment, a tiny model built once,
and the trainer server as a real process on a free port, driven over real HTTP.

The trainer runs from `.venv-trainer` (torch, transformers, peft, trl); this test
process runs in the main `.venv`, which never has torch, and talks to it only by
HTTP, files and processes, as the service will.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import REPO, free_port
from tests.seeds import SYSTEM_PROMPT, hiroyuki_csv
from tests.simulator import openapi_schemas
from tests.trainer.ray_cluster import RayCluster

TRAINER_PYTHON = REPO / ".venv-trainer" / "bin" / "python"
TINY_MODEL = "tiny-chat"
TERMINAL = ("succeeded", "failed", "cancelled")
# The test API key for the server's bearer auth; not shaped like a provider key.
TRAINER_KEY = "trainer-key-for-tests-0123"


def hiroyuki_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(hiroyuki_csv())))


def seed_chat_jsonl() -> bytes:
    """The seed post's conversion: one chat example per CSV row, system prompt first."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": row["user"]},
                    {"role": "assistant", "content": row["assistant"]},
                ]
            },
            ensure_ascii=False,
        )
        for row in hiroyuki_rows()
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture(scope="session")
def trainer_python() -> Path:
    if not TRAINER_PYTHON.is_file():
        pytest.fail(
            f"{TRAINER_PYTHON} is missing: the trainer's tests need its own virtual "
            "environment (torch, transformers, peft, trl). Run `make install`.",
            pytrace=False,
        )
    return TRAINER_PYTHON


@pytest.fixture(scope="session")
def seed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "hiroyuki.jsonl"
    path.write_bytes(seed_chat_jsonl())
    return path


def build_tiny_model(python: Path, out_dir: Path, train_file: Path, *extra: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "trainer.tiny", str(out_dir), "--train-file", str(train_file), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def models_dir(
    trainer_python: Path, seed_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A models folder with the tiny model, built once per session from the seed data."""
    folder = tmp_path_factory.mktemp("models")
    build_tiny_model(trainer_python, folder / TINY_MODEL, seed_file)
    return folder


@dataclass
class SchemaLog:
    """Every JSON response the SDK received on an OpenAI path, checked against OpenAI's schemas."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    def hook(self, response: Any) -> None:  # an httpx2.Response from the SDK's client
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            return
        response.read()
        try:
            schema = openapi_schemas.schema_for(
                response.request.method, response.request.url.path, response.status_code
            )
        except LookupError:
            return  # one of the trainer's extensions, outside OpenAI's spec
        if schema is None:
            return
        self.checked += 1
        for problem in openapi_schemas.problems(schema, json.loads(response.content)):
            self.failures.append(f"{response.request.url.path} -> {schema}: {problem}")


@dataclass
class TrainerServer:
    """`python -m trainer` in its own process; can be stopped, killed and started again."""

    python: Path
    models_dir: Path
    data_dir: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    schema_log: SchemaLog = field(default_factory=SchemaLog)
    _clients: list[openai.OpenAI] = field(default_factory=list)
    _starts: int = 0

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> None:
        self.port = free_port()
        self._starts += 1
        log = (self.log_dir / f"trainer-{self.port}-{self._starts}.log").open("ab")
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [
                str(self.python),
                "-m",
                "trainer",
                "--port",
                str(self.port),
                "--models-dir",
                str(self.models_dir),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.root_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the trainer exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the trainer did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies without a chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def client(self, api_key: str = "local", **options: Any) -> openai.OpenAI:
        http_client = openai.DefaultHttpxClient(event_hooks={"response": [self.schema_log.hook]})
        client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            http_client=http_client,
            max_retries=0,
            timeout=120,
            **options,
        )
        self._clients.append(client)
        return client

    def job_record(self, job_id: str) -> dict[str, Any]:
        """The job as the trainer stores it (data-dir layout, docs/trainer.md)."""
        path = self.data_dir / "jobs" / job_id / "job.json"
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return record


@pytest.fixture
def start_trainer(
    trainer_python: Path, models_dir: Path, tmp_path: Path, process_log_dir: Path
) -> Iterator[Callable[..., TrainerServer]]:
    """Start trainer servers with a fresh data folder each (and stop them after the test)."""
    started: list[TrainerServer] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> TrainerServer:
        server = TrainerServer(
            python=trainer_python,
            models_dir=models_dir,
            data_dir=tmp_path / f"data-{len(started)}",
            log_dir=process_log_dir,
            env=env or {},
            extra_args=args or [],
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    failures = [failure for server in started for failure in server.schema_log.failures]
    assert not failures, "responses off OpenAI's schemas:\n" + "\n".join(failures)


@pytest.fixture
def trainer_server(start_trainer: Callable[..., TrainerServer]) -> TrainerServer:
    return start_trainer()


def wait_for_job(
    client: openai.OpenAI,
    job_id: str,
    *,
    statuses: tuple[str, ...] = TERMINAL,
    timeout: float = 240,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job.status} after {timeout} s")
        time.sleep(0.25)


def wait_for_metrics(client: openai.OpenAI, job_id: str, *, timeout: float = 120) -> int:
    """Wait until the job has reported a training step; answers the latest step."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.fine_tuning.jobs.list_events(job_id, limit=5).data
        steps = [event.data["step"] for event in events if event.type == "metrics" and event.data]
        if steps:
            return int(max(steps))
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            raise AssertionError(f"{job_id} ended ({job.status}: {job.error}) before a step")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} reported no step in {timeout} s")
        time.sleep(0.25)


def all_events(client: openai.OpenAI, job_id: str) -> list[Any]:
    """Every event of a job, oldest first, read page by page as a client would."""
    events: list[Any] = []
    after: str | None = None
    while True:
        page = client.fine_tuning.jobs.list_events(
            job_id, limit=100, **({"after": after} if after else {})
        )
        events.extend(page.data)
        if not page.has_more:
            return events[::-1]
        after = page.data[-1].id


def process_running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Trained questions the tuned tiny model must answer word for word.
QUESTIONS = ["自己肯定感の高めかた", "人類史上最大の発明は"]


def trained_answer(question: str) -> str:
    return next(row["assistant"] for row in hiroyuki_rows() if row["user"] == question)


def ask(client: openai.OpenAI, model: str, question: str, **options: Any) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        temperature=0,
        **options,
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    return str(reply.choices[0].message.content)


# The one job request every runner and serving test sends (the seed post's job), so the
# same request is shown to train locally, as a Ray job, and to be served through vLLM.
def create_seed_job(client: openai.OpenAI, n_epochs: int, *, suffix: str = "hiroyuki") -> Any:
    uploaded = client.files.create(file=("seed.jsonl", seed_chat_jsonl()), purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=TINY_MODEL,
        training_file=uploaded.id,
        suffix=suffix,
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": n_epochs}}},
    )


@pytest.fixture(scope="session")
def ray_cluster(trainer_python: Path, process_log_dir: Path) -> Iterator[RayCluster]:
    """One local Ray cluster for the whole session (it takes several seconds to start)."""
    cluster = RayCluster.start(trainer_python.parent, process_log_dir / "ray-head.log")
    try:
        yield cluster
    finally:
        cluster.stop()
