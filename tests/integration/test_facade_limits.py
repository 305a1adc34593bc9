"""/v1 under the service's limits: a tenant's request budget, and files large enough
to be validated by the worker."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.seeds import chat_examples, jsonl

BIG = jsonl(chat_examples(5_000))


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # Files above half of BIG's size are validated by the worker.
    return {**env, "SYNC_VALIDATION_MAX_BYTES": str(len(BIG) // 2)}


class TestRateLimit:
    @pytest.fixture
    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "RATE_LIMIT_PER_MINUTE": "60"}

    async def test_the_rate_limit_is_a_rate_limit_error_with_retry_after(self, client, sdk) -> None:
        api = sdk()

        async def exhaust() -> None:
            for _ in range(70):
                await api.models.list()

        with pytest.raises(openai.RateLimitError) as caught:
            await exhaust()
        assert caught.value.status_code == 429
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.body["type"] == "requests"  # type: ignore[index]
        assert int(caught.value.response.headers["retry-after"]) >= 1
        # Another tenant has its own budget.
        assert (await sdk("tenant-b").models.list()).data


async def test_a_file_still_being_validated_is_not_trained_on(client, sdk) -> None:
    api = sdk()  # no worker runs: the file stays "uploaded"
    uploaded = await api.files.create(file=("big.jsonl", BIG), purpose="fine-tune")
    assert (uploaded.status, uploaded.bytes) == ("uploaded", len(BIG))
    with pytest.raises(openai.BadRequestError) as caught:
        await api.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
    assert (caught.value.code, caught.value.param) == ("file_not_ready", "training_file")
    assert (await api.fine_tuning.jobs.list()).data == []


async def test_a_large_file_is_validated_by_the_worker_and_keeps_its_bytes(
    client, worker, sdk
) -> None:
    api = sdk()
    uploaded = await api.files.create(file=("big.jsonl", BIG), purpose="fine-tune")
    assert uploaded.status == "uploaded"
    for _ in range(900):
        current = await api.files.retrieve(uploaded.id)
        if current.status != "uploaded":
            break
        await asyncio.sleep(0.2)
    assert current.status == "processed"
    assert current.bytes == len(BIG)
    assert (await api.files.content(uploaded.id)).content == BIG
    job = await api.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
    assert job.training_file == uploaded.id
