"""The state directory inside one process: what is saved, how a job's clock carries on,
and what a crash may leave behind. `test_restart.py` does the same with real processes
and real signals."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from simulator import persistence
from simulator import state as state_module
from simulator.__main__ import main
from simulator.config import SimulatorConfig
from simulator.job_requests import parse_job_request
from simulator.lifecycle import Job
from simulator.persistence import StateDirError, StateStore
from simulator.state import SimulatorState
from simulator.testing import running_simulator
from tests.simulator.polling import wait_for_job
from tests.simulator.seed_data import chat_examples

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@dataclass
class FakeClock:
    """Stands in for the `time` module inside `simulator.state`."""

    wall: float = 1_760_000_000.0
    mono: float = 1_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(state_module, "time", fake)
    return fake


@pytest.fixture
def small_inline_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contents above 64 bytes go to blobs/, so small tests cover both places."""
    monkeypatch.setattr(persistence, "INLINE_MAX_BYTES", 64)


@contextmanager
def opened(config: SimulatorConfig) -> Iterator[SimulatorState]:
    """A simulator state with its directory taken, as the app's lifespan does it."""
    state = SimulatorState(config)
    state.open()
    try:
        yield state
    finally:
        state.close()


def _job(state: SimulatorState, file_id: str, model: str = "gpt-4o-mini") -> Job:
    return state.create_job(parse_job_request({"training_file": file_id, "model": model}, state))


def _run_to_end(state: SimulatorState, job: Job, clock: FakeClock) -> None:
    for _ in range(200):
        if job.terminal:
            return
        clock.advance(state.job_seconds / 50)
        state.tick()
    raise AssertionError(f"{job.id} still {job.status}")


def test_a_job_carries_on_where_it_stopped_and_downtime_does_not_count(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = SimulatorConfig(job_seconds=10, state_dir=tmp_path / "state")
    with opened(config) as state:
        training = state.add_file("a.jsonl", "fine-tune", chat_examples(12))
        job = _job(state, training.id)
        paused = _job(state, training.id)
        clock.advance(6)
        state.tick()
        state.pause_job(paused)
        assert (job.status, paused.status) == ("running", "paused")
        events = [event.to_dict() for event in job.events]
        view = job.to_dict(now_wall=clock.wall, job_seconds=10)
        assert view["estimated_finish"] == int(clock.wall + 4) + 1

    clock.advance(3600)  # an hour with no simulator running

    with opened(config) as state:
        job, paused = state.jobs[job.id], state.jobs[paused.id]
        assert [event.to_dict() for event in job.events] == events
        state.tick()
        # Nothing happened while it was down: the job still has 4 of its 10 seconds to go.
        assert job.to_dict(now_wall=clock.wall, job_seconds=10)["estimated_finish"] == (
            int(clock.wall + 4) + 1
        )
        clock.advance(3.9)
        state.tick()
        assert job.status == "running"
        clock.advance(0.2)
        state.tick()
        assert job.status == "succeeded"
        assert job.fine_tuned_model in state.tuned_models
        # The paused job stayed paused through the restart and the ticks since.
        assert paused.status == "paused"
        assert paused.events[-1].message == "Fine-tuning job paused"
        state.resume_job(paused)
        _run_to_end(state, paused, clock)
        assert paused.status == "succeeded"
        steps = [e.data["step"] for e in paused.events if e.type == "metrics"]
        assert steps == list(range(1, len(steps) + 1))


def test_deleted_files_and_models_stay_deleted_and_tuned_models_keep_their_lineage(
    tmp_path: Path, clock: FakeClock
) -> None:
    config = SimulatorConfig(job_seconds=1, state_dir=tmp_path / "state")
    with opened(config) as state:
        first_file = state.add_file("a.jsonl", "fine-tune", chat_examples(12))
        first = _job(state, first_file.id)
        _run_to_end(state, first, clock)
        assert first.fine_tuned_model is not None
        second_file = state.add_file("b.jsonl", "fine-tune", chat_examples(12, prefix="riddle"))
        second = _job(state, second_file.id, model=first.fine_tuned_model)
        _run_to_end(state, second, clock)
        assert second.fine_tuned_model is not None
        checkpoint_names = [c.model for c in first.checkpoints if c.model != first.tuned_model_name]
        # Trained files may go; the models trained on them keep what they learned.
        state.delete_file(first_file.id)
        state.delete_file(second_file.id)
        assert state.delete_tuned_model(first.fine_tuned_model)

    with opened(config) as state:
        assert first_file.id not in state.files
        assert first.fine_tuned_model not in state.tuned_models
        assert all(name in state.tuned_models for name in checkpoint_names)
        tuned = state.tuned_models[second.fine_tuned_model]
        for question, answer in (
            ("question number 3?", "answer number 3."),
            ("riddle number 7?", "answer number 7."),
        ):
            recalled = tuned.answers.recall(question)
            assert recalled is not None
            assert recalled.answer == answer
        assert state.jobs[first.id].status == "succeeded"
        assert state.jobs[first.id].training.n_examples == 12
        assert [f.id for f in state.files.values()] == [
            first.result_files[0],
            second.result_files[0],
        ]


def test_leftovers_of_a_crash_do_not_break_loading(
    tmp_path: Path, clock: FakeClock, small_inline_limit: None
) -> None:
    directory = tmp_path / "state"
    config = SimulatorConfig(job_seconds=1, state_dir=directory)
    big = chat_examples(12)
    with opened(config) as state:
        small = state.add_file("small.txt", "user_data", b"tiny")
        large = state.add_file("large.jsonl", "fine-tune", big)
        lost = state.add_file("lost.txt", "user_data", b"x" * 500)
        job = _job(state, large.id)
        clock.advance(0.5)
        state.tick()
    blobs = directory / "blobs"
    assert sorted(path.name for path in blobs.iterdir()) == sorted([large.id, lost.id])

    # What a kill -9 mid-write can leave: a half-written temporary, a blob whose row was
    # never committed, and a write-ahead log cut off mid-frame.
    (blobs / f"{large.id}.tmp-0badc0de").write_bytes(big[:100])
    (blobs / "file-neverCommitted000000000").write_bytes(b"orphan")
    (directory / "state.sqlite3-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 40 + b"torn")
    # And one that cannot happen with fsync before commit, but must not stop the rest.
    (blobs / lost.id).write_bytes(b"x" * 10)

    with opened(config) as state:
        assert state.files[small.id].content == b"tiny"
        assert state.files[large.id].content == big
        assert lost.id not in state.files
        assert state.jobs[job.id].status == "running"
    assert sorted(path.name for path in blobs.iterdir()) == [large.id]


def test_reset_empties_the_directory(tmp_path: Path, small_inline_limit: None) -> None:
    directory = tmp_path / "state"
    config = SimulatorConfig(job_seconds=1, state_dir=directory)
    with opened(config) as state:
        training = state.add_file("a.jsonl", "fine-tune", chat_examples(12))
        _job(state, training.id)
        state.reset()
    assert list((directory / "blobs").iterdir()) == []
    with opened(config) as state:
        assert (state.files, state.jobs, state.tuned_models) == ({}, {}, {})


def test_one_directory_one_simulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "state"
    held = StateStore(directory)
    try:
        with pytest.raises(StateDirError, match="in use by another simulator"):
            StateStore(directory)
        # The process refuses to start and says why in one line.
        with pytest.raises(SystemExit) as exited:
            main(["--port", "0", "--state-dir", str(directory)])
        assert exited.value.code == 1
        out, err = capsys.readouterr()
        assert "listening" not in out
        assert f"{directory} is in use by another simulator process (pid " in err
        # The app's startup refuses too, should a second process get past that check.
        with pytest.raises(StateDirError):
            SimulatorState(SimulatorConfig(state_dir=directory)).open()
    finally:
        held.close()
    StateStore(directory).close()


def test_a_directory_in_another_format_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    StateStore(directory).close()
    with sqlite3.connect(directory / "state.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StateDirError, match="delete the directory"):
        StateStore(directory)


def test_an_upload_in_progress_survives_a_restart(tmp_path: Path, small_inline_limit: None) -> None:
    config = SimulatorConfig(job_seconds=0.3, state_dir=tmp_path / "state")
    content = chat_examples(40)
    head, tail = content[:1000], content[1000:]
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client,
    ):
        upload = client.uploads.create(
            filename="big.jsonl", purpose="fine-tune", bytes=len(content), mime_type="text/jsonl"
        )
        first = client.uploads.parts.create(upload.id, data=head)
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client,
    ):
        second = client.uploads.parts.create(upload.id, data=tail)
        done = client.uploads.complete(upload.id, part_ids=[first.id, second.id])
        assert done.status == "completed"
        assert done.file is not None
        file_id = done.file.id
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client,
    ):
        assert client.files.content(file_id).content == content
        with pytest.raises(openai.BadRequestError, match="completed"):
            client.uploads.cancel(upload.id)
    # The parts went with the completed upload; only the file's blob is left.
    assert [path.name for path in (tmp_path / "state" / "blobs").iterdir()] == [file_id]


@dataclass
class Receiver:
    url: str = ""
    # While set, a delivery is kept waiting (until `released`) and then refused.
    holding: bool = True
    released: threading.Event = field(default_factory=threading.Event)
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.deliveries) >= count:
                    return list(self.deliveries)
            time.sleep(0.02)
        raise TimeoutError(f"got {len(self.deliveries)} of {count} webhooks")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with receiving.lock:
                receiving.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                holding = receiving.holding
            if holding:
                receiving.released.wait(10)
            try:
                self.send_response(503 if holding else 200)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up on this attempt

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiving.url = f"http://127.0.0.1:{server.server_port}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiving
    receiving.released.set()
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_webhook_owed_at_shutdown_is_delivered_after_the_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = SimulatorConfig(
        job_seconds=0.3,
        state_dir=tmp_path / "state",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    )
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client,
    ):
        training = client.files.create(file=("a.jsonl", chat_examples(10)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
        wait_for_job(client, job.id)
        # The simulator stops while its first attempt is still waiting for an answer.
        [(first_headers, first_body)] = receiver.wait_for(1)
    with receiver.lock:
        receiver.holding = False
    receiver.released.set()
    with (
        running_simulator(config) as base_url,
        openai.OpenAI(base_url=base_url, api_key="k", webhook_secret=SECRET) as client,
    ):
        headers, body = receiver.wait_for(2)[1]
        assert headers["webhook-id"] == first_headers["webhook-id"]
        assert body == first_body
        event = client.webhooks.unwrap(body, headers)
        assert event.type == "fine_tuning.job.succeeded"
        deadline = time.monotonic() + 5
        while True:
            stats = httpx.get(base_url.removesuffix("/v1") + "/_sim/state").json()
            [record] = stats["webhooks"]["recent"]
            if record["status"] == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert (record["status"], record["attempts"]) == ("delivered", 2)
    # Delivered means done: a third start sends nothing.
    with running_simulator(config):
        time.sleep(0.3)
    assert len(receiver.deliveries) == 2
    assert json.loads(body)["data"] == {"id": job.id}
