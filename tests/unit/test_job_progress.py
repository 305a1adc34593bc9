"""A job's progress from the provider's metrics events (the pure rule in domain.jobs)."""

from __future__ import annotations

from datetime import datetime

from service.domain.jobs import JobStatus, RemoteEvent, RemoteJob, follow_progress
from service.domain.pricing import training_steps
from service.domain.records import Job

T0 = 1_780_000_000


def job(estimated_steps: int | None = 30) -> Job:
    return Job(
        id="job_1",
        tenant="t",
        created_at="2026-12-01T00:00:00Z",
        updated_at="2026-12-01T00:00:00Z",
        status=JobStatus.QUEUED,
        dataset_id="ds_1",
        model="gpt-4o-mini-2024-07-18",
        provider="openai",
        method={"type": "supervised", "supervised": {"hyperparameters": {}}},
        estimated_steps=estimated_steps,
    )


def remote(status: str = "running", estimated_finish: int | None = None) -> RemoteJob:
    return RemoteJob(
        id="ftjob-1", status=status, raw_status=status, estimated_finish=estimated_finish
    )


def step(number: int, at: int, total: int | None = None) -> RemoteEvent:
    data = {"step": number, "train_loss": 1.0}
    if total is not None:
        data["total_steps"] = total
    return RemoteEvent(
        id=f"ftevent-{number}",
        created_at=at,
        level="info",
        message=f"Step {number}",
        type="metrics",
        data=data,
        metrics=None,
    )


def unix(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_nothing_before_training_starts() -> None:
    record = job()
    follow_progress(record, remote("queued"), [])
    assert record.progress is None


def test_running_without_steps_yet_shows_step_zero_of_the_estimate() -> None:
    record = job(estimated_steps=30)
    follow_progress(record, remote(), [])
    assert record.progress is not None
    assert (record.progress.step, record.progress.total_steps) == (0, 30)
    assert record.progress.percent == 0.0
    assert record.progress.estimated_finish is None


def test_the_providers_total_replaces_the_estimate_and_the_pace_gives_the_finish() -> None:
    record = job(estimated_steps=30)
    follow_progress(record, remote(), [step(1, T0, total=40), step(5, T0 + 8, total=40)])
    progress = record.progress
    assert progress is not None
    assert (progress.step, progress.total_steps, progress.percent) == (5, 40, 12.5)
    # 4 steps in 8 s: the remaining 35 steps take 70 s more.
    assert progress.estimated_finish is not None
    assert unix(progress.estimated_finish) == T0 + 8 + 70
    # A later poll keeps the first step seen as the origin of the pace.
    follow_progress(record, remote(), [step(20, T0 + 38, total=40)])
    assert progress.step == 20
    assert progress.estimated_finish is not None
    assert unix(progress.estimated_finish) == T0 + 38 + 20 * 2


def test_the_providers_own_finish_estimate_wins() -> None:
    record = job()
    follow_progress(record, remote(estimated_finish=T0 + 999), [step(1, T0), step(2, T0 + 1)])
    assert record.progress is not None
    assert record.progress.estimated_finish is not None
    assert unix(record.progress.estimated_finish) == T0 + 999


def test_events_without_a_total_count_against_the_estimate() -> None:
    record = job(estimated_steps=training_steps(20, 3, 2))
    follow_progress(record, remote(), [step(15, T0)])
    assert record.progress is not None
    assert record.progress.total_steps == 30
    assert record.progress.percent == 50.0


def test_training_done_is_the_last_step_with_nothing_left_to_estimate() -> None:
    record = job(estimated_steps=30)
    follow_progress(record, remote(), [step(1, T0, total=30), step(12, T0 + 5, total=30)])
    follow_progress(record, remote("succeeded"), [])
    assert record.progress is not None
    assert (record.progress.step, record.progress.percent) == (30, 100.0)
    assert record.progress.estimated_finish is None


def test_a_paused_job_keeps_its_step_but_no_finish() -> None:
    record = job()
    follow_progress(record, remote(), [step(1, T0, total=30), step(3, T0 + 2, total=30)])
    follow_progress(record, remote("paused"), [])
    assert record.progress is not None
    assert record.progress.step == 3
    assert record.progress.estimated_finish is None


def test_events_that_are_not_steps_change_nothing() -> None:
    record = job()
    odd = RemoteEvent(
        id="e",
        created_at=T0,
        level="info",
        message="hi",
        type="message",
        data={"step": 9},
        metrics=None,
    )
    follow_progress(record, remote(), [odd])
    assert record.progress is not None
    assert record.progress.step == 0
