"""The queue contract: JSON entries, deterministic ids, request ids carried into tasks."""

from __future__ import annotations

import asyncio
import json

from service import tasks
from service.logs import request_id_var
from service.resources import open_resources


async def test_enqueued_work_is_json_and_carries_the_request_id(settings, worker) -> None:
    async with open_resources(settings) as resources:
        token = request_id_var.set("req_from_api_42")
        try:
            assert await tasks.enqueue_ping(resources.queue, "t1") is True
        finally:
            request_id_var.reset(token)
        for _ in range(100):
            seen = await resources.redis.get(resources.keys.ping("t1"))
            if seen is not None:
                break
            await asyncio.sleep(0.05)
        assert seen == "req_from_api_42"


async def test_queue_entries_are_plain_json_and_dedupe_by_id(settings) -> None:
    async with open_resources(settings) as resources:
        assert await tasks.enqueue_ping(resources.queue, "same") is True
        # Same deterministic id while queued: a no-op, not a second job.
        assert await tasks.enqueue_ping(resources.queue, "same") is False
        raw = await resources.queue.get(tasks.ARQ_JOB_KEY_PREFIX + "ping:same")
        entry = json.loads(raw)
        assert entry["f"] == "ping"
        assert entry["a"] == ["same"]
        assert await tasks.is_scheduled(resources.queue, "ping:same")


async def test_a_pickled_queue_entry_is_refused_not_executed(settings) -> None:
    import pickle

    import pytest

    with pytest.raises(ValueError, match=r"JSON|Expecting|decode|codec"):
        tasks.deserialize(pickle.dumps({"f": "ping", "a": ["x"]}))
