"""The trainer with RAY_ADDRESS set: every training is a Ray job on a real local cluster.

The cluster (`ray start --head`, from .venv-trainer) is shared by the session. The job
request is the same one the local tests send; only the environment differs. Shown: the
job runs as a Ray job under our job id and the tuned model answers its trained
questions; a cancel stops the Ray job; a trainer that dies leaves the Ray job running
and, started again, follows it to the end; and a submit repeated for a job Ray already
has (the trainer died between Ray's accepting it and recording that) attaches to it
instead of starting a second run.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port
from tests.trainer.conftest import (
    QUESTIONS,
    TINY_MODEL,
    TrainerServer,
    all_events,
    ask,
    create_seed_job,
    trained_answer,
    wait_for_job,
    wait_for_metrics,
)
from tests.trainer.ray_cluster import RayCluster

pytestmark = pytest.mark.slow

# Lists the cluster's jobs with Ray's own client, as `ray job list` does.
LIST_JOBS = """
import json, sys
from ray.job_submission import JobSubmissionClient
jobs = JobSubmissionClient(sys.argv[1]).list_jobs()
print(json.dumps([[job.submission_id, str(job.status), job.entrypoint] for job in jobs]))
"""


def _ray_trainer(start: Callable[..., TrainerServer], cluster: RayCluster) -> TrainerServer:
    return start(env={"RAY_ADDRESS": cluster.address})


def _listed_by_ray_client(python: Path, cluster: RayCluster) -> list[list[str]]:
    done = subprocess.run(
        [str(python), "-c", LIST_JOBS, cluster.address],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed: list[list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return listed


def _run_events(server: TrainerServer, job_id: str) -> list[dict[str, object]]:
    """The events the entry point wrote into the run folder (one line each)."""
    path = server.data_dir / "jobs" / job_id / "run" / "events.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_job_runs_as_a_ray_job_under_its_id_and_the_tuned_model_answers(
    start_trainer: Callable[..., TrainerServer],
    ray_cluster: RayCluster,
    trainer_python: Path,
) -> None:
    server = _ray_trainer(start_trainer, ray_cluster)
    client = server.client()
    ready = httpx.get(f"{server.root_url}/ready").json()
    assert ready["runner"]["kind"] == "ray"
    assert ready["runner"]["address"] == ray_cluster.address

    job = wait_for_job(client, create_seed_job(client, n_epochs=20).id)
    assert job.status == "succeeded", job.error

    # Ray ran it, under our job id, with the same entry point as the local runner.
    ray_job = ray_cluster.job(job.id)
    assert ray_job is not None
    assert ray_job["status"] == "SUCCEEDED"
    assert ray_job["entrypoint"].startswith("python -m trainer.train ")
    assert ray_job["metadata"]["trainer_job_id"] == job.id
    assert [job.id, "SUCCEEDED", ray_job["entrypoint"]] in _listed_by_ray_client(
        trainer_python, ray_cluster
    )
    assert server.job_record(job.id)["runner"] == "ray"
    # Ray's log of the run became the job's train.log.
    log = (server.data_dir / "jobs" / job.id / "train.log").read_text(encoding="utf-8")
    assert f"Running entrypoint for job {job.id}" in log

    # Events, checkpoints and the results file arrive as from a local run.
    events = all_events(client, job.id)
    messages = [event.message for event in events]
    assert messages[3] == "Fine-tuning job started"
    assert messages[-2] == f"New fine-tuned model created: {job.fine_tuned_model}"
    assert messages[-1] == "The job has successfully completed"
    steps = [event.data["step"] for event in events if event.type == "metrics"]
    assert steps == list(range(1, 20 * 15 + 1))
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [300, 285, 270]
    assert job.result_files

    for question in QUESTIONS:
        assert ask(client, job.fine_tuned_model, question) == trained_answer(question)


def test_cancel_stops_the_ray_job(
    start_trainer: Callable[..., TrainerServer], ray_cluster: RayCluster
) -> None:
    server = _ray_trainer(start_trainer, ray_cluster)
    client = server.client()
    job = create_seed_job(client, n_epochs=50)
    wait_for_metrics(client, job.id)
    assert ray_cluster.job(job.id)["status"] == "RUNNING"  # type: ignore[index]

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    # The cancel answers once Ray has stopped the job.
    assert ray_cluster.job(job.id)["status"] == "STOPPED"  # type: ignore[index]
    written = len(_run_events(server, job.id))
    time.sleep(1.5)
    assert len(_run_events(server, job.id)) == written, "the training went on"
    events = all_events(client, job.id)
    assert events[-1].message == "Fine-tuning job cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_a_restarted_trainer_follows_its_ray_job_and_a_repeated_submit_attaches(
    start_trainer: Callable[..., TrainerServer], ray_cluster: RayCluster
) -> None:
    server = _ray_trainer(start_trainer, ray_cluster)
    client = server.client()
    job = create_seed_job(client, n_epochs=30)
    total_steps = 30 * 15
    wait_for_metrics(client, job.id)

    # The trainer dies; the Ray job does not.
    server.kill()
    written = len(_run_events(server, job.id))
    deadline = time.monotonic() + 30
    while len(_run_events(server, job.id)) == written and time.monotonic() < deadline:
        time.sleep(0.25)
    assert len(_run_events(server, job.id)) > written, "the Ray job stopped with the trainer"
    assert ray_cluster.job(job.id)["status"] == "RUNNING"  # type: ignore[index]

    # Started again, it follows the job instead of failing it.
    server.start()
    client = server.client()
    seen = wait_for_metrics(client, job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    deadline = time.monotonic() + 30
    while wait_for_metrics(client, job.id) == seen and time.monotonic() < deadline:
        time.sleep(0.25)
    assert wait_for_metrics(client, job.id) > seen, "no new steps after the restart"

    # It dies again, this time as if between Ray's accepting the submit and recording it:
    # the job is back in `queued`, so the next start submits it again.
    server.kill()
    record = server.job_record(job.id)
    assert record["status"] == "running"
    record.update(status="queued", started_at=None)
    path = server.data_dir / "jobs" / job.id / "job.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    assert ray_cluster.job(job.id)["status"] == "RUNNING", "the job ended too soon to test"  # type: ignore[index]

    server.start()
    client = server.client()
    finished = wait_for_job(client, job.id)
    assert finished.status == "succeeded", finished.error

    # One Ray job under the id, one run: its steps were each trained once.
    assert [j["submission_id"] for j in ray_cluster.jobs()].count(job.id) == 1
    run_steps = [e["data"]["step"] for e in _run_events(server, job.id) if e["type"] == "metrics"]  # type: ignore[index]
    assert run_steps == list(range(1, total_steps + 1))
    # Every step reached the job's events once, across three trainer processes.
    steps = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    assert steps == list(range(1, total_steps + 1))
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data[0].step_number == total_steps
    assert ask(client, finished.fine_tuned_model, QUESTIONS[0], max_tokens=5)
    assert client.models.retrieve(finished.fine_tuned_model).id == finished.fine_tuned_model
    assert TINY_MODEL in {model.id for model in client.models.list().data}


def test_a_job_waits_in_the_queue_while_ray_cannot_be_reached(
    start_trainer: Callable[..., TrainerServer],
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_trainer(env={"RAY_ADDRESS": nobody})
    client = server.client()
    job = create_seed_job(client, n_epochs=1)
    deadline = time.monotonic() + 30
    while not any(e.level == "warn" for e in all_events(client, job.id)):
        assert time.monotonic() < deadline, "no word that Ray is out of reach"
        time.sleep(0.25)
    [warning] = [e for e in all_events(client, job.id) if e.level == "warn"]
    assert "could not be submitted yet" in warning.message
    assert nobody in warning.message
    time.sleep(3)  # retried meanwhile, and still waiting
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert len([e for e in all_events(client, job.id) if e.level == "warn"]) == 1
    assert httpx.get(f"{server.root_url}/ready").json()["runner"]["connected"] is False
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
