"""The worker's validation path (uploads above SYNC_VALIDATION_MAX_BYTES): every
dataset ends in exactly one final state, and a deleted one stays deleted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from service import tasks
from tests.conftest import auth
from tests.integration.test_dataset_hardening import nested_line
from tests.integration.test_datasets_api import stored_files, upload
from tests.seeds import big_chat_jsonl, chat_examples, jsonl


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # Everything bigger than 1 kB goes to the worker.
    return {**env, "SYNC_VALIDATION_MAX_BYTES": "1000"}


async def accepted(client, content: bytes, name: str = "big.jsonl") -> dict:  # type: ignore[no-untyped-def]
    response = await client.post("/datasets", headers=auth(), **upload(name, content))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "validating"
    return response.json()


async def settled(client, dataset_id: str, timeout: float = 180) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        dataset = (await client.get(f"/datasets/{dataset_id}", headers=auth())).json()
        if dataset["status"] != "validating" or time.monotonic() > deadline:
            return dataset
        await asyncio.sleep(0.1)


def task_result(redis_server, dataset_id: str, timeout: float = 180) -> object:
    """What the worker's validate_dataset returned (arq keeps it a few seconds)."""
    key = "arq:result:" + tasks.validate_job_id(dataset_id)
    deadline = time.monotonic() + timeout
    with redis_server.client() as redis:
        while time.monotonic() < deadline:
            raw = redis.get(key)
            if raw is not None:
                return json.loads(raw)["r"]
            time.sleep(0.02)
    raise AssertionError("the validation task never finished")


async def test_a_large_upload_becomes_ready_in_the_background(client, worker, data_dir) -> None:
    content = jsonl(chat_examples(40))
    dataset = await accepted(client, content)
    done = await settled(client, dataset["id"])
    assert done["status"] == "ready", done
    assert done["example_count"] == 40
    assert done["sha256"] == hashlib.sha256(content).hexdigest()
    assert not list((data_dir / "originals").glob("*"))


async def test_a_delete_while_the_worker_validates_is_final(
    client, worker, redis_server, data_dir
) -> None:
    # About 30 MB: a second or two of validation, plenty of time to delete mid-way.
    dataset = await accepted(client, await big_chat_jsonl(180_000))
    key = f"fts:dataset:{dataset['id']}"
    with redis_server.client() as redis:
        deadline = time.monotonic() + 120
        while json.loads(redis.get(key) or "{}").get("validation_attempts") != 1:
            assert time.monotonic() < deadline, "the worker never started validating"
            await asyncio.sleep(0.01)
    deleted = await client.delete(f"/datasets/{dataset['id']}", headers=auth())
    assert deleted.status_code == 204
    # The worker finished its validation after the delete, and found the tombstone.
    assert await asyncio.to_thread(task_result, redis_server, dataset["id"]) == "gone"
    await asyncio.sleep(0.3)
    assert (await client.get(f"/datasets/{dataset['id']}", headers=auth())).status_code == 404
    content = await client.get(f"/datasets/{dataset['id']}/content", headers=auth())
    assert content.status_code == 404
    job = await client.post(
        "/jobs",
        headers=auth(),
        json={"dataset_id": dataset["id"], "model": "gpt-4o-mini-2024-07-18"},
    )
    assert job.status_code == 404
    assert (await client.get("/datasets", headers=auth())).json()["data"] == []
    assert stored_files(data_dir) == []


async def test_a_deeply_nested_line_ends_invalid_naming_its_line(client, worker, data_dir) -> None:
    dataset = await accepted(client, jsonl(chat_examples(20)) + nested_line(100_000))
    done = await settled(client, dataset["id"])
    assert done["status"] == "invalid", done
    assert [(e["line"], e["code"]) for e in done["errors"]] == [(21, "too_deeply_nested")]
    assert stored_files(data_dir) == []  # the original upload is gone too


class TestTimeLimit:
    @pytest.fixture
    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "DATASET_VALIDATION_TIMEOUT_SECONDS": "1"}

    async def test_a_validation_past_its_time_limit_ends_invalid(
        self, client, worker, data_dir
    ) -> None:
        # About 50 MB: more than the 1 s this test allows a validation.
        dataset = await accepted(client, await big_chat_jsonl(300_000))
        done = await settled(client, dataset["id"])
        assert done["status"] == "invalid", done
        assert [e["code"] for e in done["errors"]] == ["validation_timeout"]
        assert stored_files(data_dir) == []


async def test_a_validation_whose_queue_entry_was_lost_is_rescheduled(
    client, settings, redis_server
) -> None:
    from worker.main import build_worker, close_worker

    dataset = await accepted(client, jsonl(chat_examples(15)))
    with redis_server.client() as redis:
        # The queue loses the task (a flushed queue, a failover): only the record remains.
        redis.zrem(tasks.QUEUE_NAME, tasks.validate_job_id(dataset["id"]))
        redis.delete("arq:job:" + tasks.validate_job_id(dataset["id"]))
    running = build_worker(
        settings, handle_signals=False, poll_delay=0.05, follow_idle_seconds=0.05
    )
    task = asyncio.create_task(running.async_run())
    try:
        done = await settled(client, dataset["id"], timeout=30)
    finally:
        await close_worker(running)
        task.cancel()
    assert done["status"] == "ready", done
