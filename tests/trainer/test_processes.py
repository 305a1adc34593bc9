"""Each training is its own process: cancel stops it, and a trainer killed mid-job
leaves a clear final state after a restart."""

from __future__ import annotations

import time

from tests.trainer.conftest import (
    TINY_MODEL,
    TrainerServer,
    all_events,
    group_alive,
    process_running,
    seed_chat_jsonl,
    wait_for_job,
    wait_for_metrics,
)

# Long enough that the job is still training when the test acts on it.
LONG_JOB = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}}


def _start_long_job(server: TrainerServer) -> tuple[str, int]:
    client = server.client()
    uploaded = client.files.create(file=("seed.jsonl", seed_chat_jsonl()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY_MODEL,
        training_file=uploaded.id,
        method=LONG_JOB,  # type: ignore[arg-type]
    )
    wait_for_metrics(client, job.id)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running"
    assert running.estimated_finish is not None
    assert running.estimated_finish > time.time()
    pid = server.job_record(job.id)["pid"]
    assert isinstance(pid, int)
    assert process_running(pid)
    return job.id, pid


def test_cancel_stops_the_training_process(trainer_server: TrainerServer) -> None:
    client = trainer_server.client()
    job_id, pid = _start_long_job(trainer_server)
    # One training at a time: a second job waits in the queue.
    waiting = client.fine_tuning.jobs.create(
        model=TINY_MODEL,
        training_file=client.fine_tuning.jobs.retrieve(job_id).training_file,
        method=LONG_JOB,  # type: ignore[arg-type]
    )
    assert wait_for_job(client, waiting.id, statuses=("queued",), timeout=30).status == "queued"
    time.sleep(1)
    assert client.fine_tuning.jobs.retrieve(waiting.id).status == "queued"

    cancelled = client.fine_tuning.jobs.cancel(job_id)
    assert cancelled.status == "cancelled"
    # The cancel call returns once the whole process group has stopped.
    assert not process_running(pid)
    assert not group_alive(pid)
    # The freed slot goes to the queued job, which is cancelled in turn.
    wait_for_job(client, waiting.id, statuses=("running",), timeout=30)
    next_pid = trainer_server.job_record(waiting.id)["pid"]
    assert client.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
    assert not process_running(next_pid)
    steps_then = len([e for e in all_events(client, job_id) if e.type == "metrics"])
    time.sleep(1.5)
    events = all_events(client, job_id)
    assert len([e for e in events if e.type == "metrics"]) == steps_then
    assert events[-1].message == "Fine-tuning job cancelled"
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "cancelled"
    assert job.fine_tuned_model is None
    assert job.finished_at is not None


def test_a_trainer_killed_mid_job_fails_the_job_clearly_on_restart(
    trainer_server: TrainerServer,
) -> None:
    job_id, pid = _start_long_job(trainer_server)
    client = trainer_server.client()
    files_before = [f.id for f in client.files.list().data]

    trainer_server.kill()
    # The training does not outlive the server that launched it.
    deadline = time.monotonic() + 20
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_running(pid)

    trainer_server.start()
    client = trainer_server.client()
    job = wait_for_job(client, job_id, timeout=30)
    assert job.status == "failed"
    assert job.error.code == "trainer_stopped"
    assert "The trainer stopped while this job was running" in job.error.message
    assert "Create a new job" in job.error.message
    assert job.finished_at is not None
    events = all_events(client, job_id)
    assert any(event.type == "metrics" for event in events), "steps before the kill are kept"
    assert events[-1].level == "error"
    assert [f.id for f in client.files.list().data] == files_before
    assert trainer_server.job_record(job_id)["pid"] is None
