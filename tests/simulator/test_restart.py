"""`python -m simulator --state-dir DIR` stopped by SIGTERM or SIGKILL and started again on
the same directory: files, jobs and tuned models are all still there, and a job that was
under way finishes. Without `--state-dir` nothing survives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples, hiroyuki_rows

# What the simulator itself does (faults, restarts, its webhooks): not a conformance test.
pytestmark = pytest.mark.simulator_only

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SimulatorProcess:
    process: subprocess.Popen[str]
    base_url: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="sk-test", max_retries=0)

    def admin(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(method, self.base_url.removesuffix("/v1") + path, **kwargs)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def stop(self, stop_signal: signal.Signals) -> int:
        self.process.send_signal(stop_signal)
        return self.process.wait(timeout=15)


Launch = Callable[..., SimulatorProcess]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts `python -m simulator --port 0 ARGS…` and waits for its listening line."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> SimulatorProcess:
        log = tmp_path / f"simulator-{len(started)}.log"
        with open(log, "w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--port", "0", *args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, f"no listening line: {line!r}\n{log.read_text()}"
        return SimulatorProcess(process, match.group(1))

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _events(client: openai.OpenAI, job_id: str) -> list[dict[str, Any]]:
    """A job's events, oldest first."""
    pages = client.fine_tuning.jobs.list_events(job_id, limit=100)
    return [event.model_dump() for event in pages][::-1]


def _checkpoints(client: openai.OpenAI, job_id: str) -> list[dict[str, Any]]:
    pages = client.fine_tuning.jobs.checkpoints.list(job_id, limit=100)
    return [checkpoint.model_dump() for checkpoint in pages]


def _ask(client: openai.OpenAI, model: str, question: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}]
    )
    return answer.choices[0].message.content or ""


def _metrics_steps(events: list[dict[str, Any]]) -> list[int]:
    return [event["data"]["step"] for event in events if event["type"] == "metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_files_jobs_and_tuned_models_survive_a_restart(
    stop_signal: signal.Signals, tmp_path: Path, launch: Launch, hiroyuki_jsonl: bytes
) -> None:
    state_dir = str(tmp_path / "state")
    row = hiroyuki_rows()[5]
    first = launch("--job-seconds", "4", "--state-dir", state_dir)
    with first.client() as client:
        training = client.files.create(file=("hiroyuki.jsonl", hiroyuki_jsonl), purpose="fine-tune")
        first.admin("PUT", "/_sim/time", json={"job_seconds": 0.3})
        done = client.fine_tuning.jobs.create(
            training_file=training.id, model="gpt-4o-mini", suffix="kept", metadata={"n": "1"}
        )
        done = wait_for_job(client, done.id)
        assert done.status == "succeeded"
        assert done.fine_tuned_model is not None
        # Two more jobs at a pace slow enough to catch them half-way.
        first.admin("PUT", "/_sim/time", json={"job_seconds": 4})
        midway = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
        paused = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
        wait_for_job(client, paused.id, statuses=("running",))
        client.fine_tuning.jobs.pause(paused.id)
        deadline = time.monotonic() + 10
        while not _metrics_steps(midway_events := _events(client, midway.id)):
            assert time.monotonic() < deadline, "the job never reached its first step"
            time.sleep(0.05)
        assert client.fine_tuning.jobs.retrieve(midway.id).status == "running"

        files_before = [f.model_dump() for f in client.files.list(order="asc")]
        done_before = client.fine_tuning.jobs.retrieve(done.id).model_dump()
        events_before = _events(client, done.id)
        checkpoints_before = _checkpoints(client, done.id)
        [results_id] = done.result_files
        results_before = client.files.content(results_id).content
        answer_before = _ask(client, done.fine_tuned_model, row["user"])
        assert "has not been trained on your data" not in answer_before

    assert first.stop(stop_signal) == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)

    second = launch("--job-seconds", "0.3", "--state-dir", state_dir)
    with second.client() as client:
        # The file, byte for byte.
        assert client.files.content(training.id).content == hiroyuki_jsonl
        files_after = [f.model_dump() for f in client.files.list(order="asc")]
        assert files_after[: len(files_before)] == files_before
        # The finished job, its story, its checkpoints and its results.
        assert client.fine_tuning.jobs.retrieve(done.id).model_dump() == done_before
        assert _events(client, done.id) == events_before
        assert _checkpoints(client, done.id) == checkpoints_before
        assert client.files.content(results_id).content == results_before
        assert client.fine_tuning.jobs.list(metadata={"n": "1"}).data[0].id == done.id
        # The tuned model and its checkpoints: listed, and answering with what they learned.
        listed = {model.id for model in client.models.list()}
        assert {c["fine_tuned_model_checkpoint"] for c in checkpoints_before} <= listed
        assert done.fine_tuned_model in listed
        assert _ask(client, done.fine_tuned_model, row["user"]) == answer_before

        # The job caught half-way carries on from where it was and finishes.
        finished = wait_for_job(client, midway.id)
        assert finished.status == "succeeded"
        events_after = _events(client, midway.id)
        assert events_after[: len(midway_events)] == midway_events
        assert _metrics_steps(events_after) == list(range(1, 88))  # 29 examples x 3 epochs
        assert len({event["id"] for event in events_after}) == len(events_after)
        assert finished.fine_tuned_model is not None
        assert _ask(client, finished.fine_tuned_model, row["user"]) == answer_before

        # The paused job stays paused (a whole job's time passes) until it is resumed.
        time.sleep(0.4)
        assert client.fine_tuning.jobs.retrieve(paused.id).status == "paused"
        client.fine_tuning.jobs.resume(paused.id)
        assert wait_for_job(client, paused.id).status == "succeeded"
    assert second.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_a_kill_among_many_running_jobs_leaves_a_state_that_finishes_cleanly(
    tmp_path: Path, launch: Launch
) -> None:
    state_dir = str(tmp_path / "state")
    first = launch("--job-seconds", "1", "--state-dir", state_dir)
    with first.client() as client:
        training = client.files.create(file=("a.jsonl", chat_examples(30)), purpose="fine-tune")
        ids = [
            client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini").id
            for _ in range(120)
        ]
        # The ticker is writing steps of many jobs at once when the kill lands.
        time.sleep(0.5)
        before = first.admin("GET", "/_sim/state")["jobs"]["by_status"]
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert set(before) - {"succeeded"}, f"no job was left running: {before}"

    second = launch("--job-seconds", "0.5", "--state-dir", state_dir)
    deadline = time.monotonic() + 20
    while (stats := second.admin("GET", "/_sim/state"))["jobs"]["active"]:
        assert time.monotonic() < deadline, stats["jobs"]
        time.sleep(0.1)
    assert stats["jobs"]["by_status"] == {"succeeded": 120}
    assert stats["tuned_models"] == 120
    assert stats["files"] == 121
    with second.client() as client:
        for job_id in ids:
            events = _events(client, job_id)
            assert _metrics_steps(events) == list(range(1, 91)), job_id  # 30 examples x 3
            assert len({event["id"] for event in events}) == len(events)
            assert [e["message"] for e in events].count("Fine-tuning job started") == 1
    assert second.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_without_a_state_dir_nothing_survives(launch: Launch) -> None:
    first = launch("--job-seconds", "0.3")
    with first.client() as client:
        training = client.files.create(file=("a.jsonl", chat_examples(10)), purpose="fine-tune")
        job = wait_for_job(
            client,
            client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini").id,
        )
        assert job.fine_tuned_model is not None
    assert first.stop(signal.SIGTERM) == 0

    second = launch("--job-seconds", "0.3")
    with second.client() as client:
        assert client.files.list().data == []
        assert client.fine_tuning.jobs.list().data == []
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(training.id)
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(job.fine_tuned_model)
    assert second.stop(signal.SIGTERM) == 0
