"""Waiting on jobs in scaled time, for sync and async SDK clients."""

from __future__ import annotations

import asyncio
import time

import openai
from openai.types.fine_tuning import FineTuningJob

TERMINAL = ("succeeded", "failed", "cancelled")


def wait_for_job(
    client: openai.OpenAI, job_id: str, *, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30
) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job.status}")
        time.sleep(0.02)


async def wait_for_job_async(
    client: openai.AsyncOpenAI, job_id: str, *, timeout: float = 30
) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job.status}")
        await asyncio.sleep(0.02)
