"""An evaluation on the self-hosted trainer: the tiny model, tuned on the seed CSV,
against the same model untuned, on the questions it was trained on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import auth
from tests.integration.conftest import wait_for_job
from tests.seeds import SYSTEM_PROMPT, hiroyuki_csv
from tests.trainer.conftest import TINY_MODEL, TrainerServer

pytestmark = pytest.mark.slow

EPOCHS = 20


@pytest.fixture
def trainer(start_trainer: Callable[..., TrainerServer]) -> TrainerServer:
    return start_trainer()


@pytest.fixture
def env(env: dict[str, str], trainer: TrainerServer, tmp_path: Path) -> dict[str, str]:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[[provider]]\n"
        'name = "local"\n'
        'kind = "trainer"\n'
        f'base_url = "{trainer.base_url}"\n'
        f'models = ["{TINY_MODEL}"]\n'
    )
    overrides = {
        **env,
        "PROVIDERS_FILE": str(providers),
        "POLL_MAX_SECONDS": "0.5",
        # The built-in server answers one request at a time on CPU: a short queue, and
        # runs long enough for an answer that waited its turn.
        "EVALUATION_CONCURRENCY_PER_PROVIDER": "2",
        "TASK_TIMEOUT_SECONDS": "120",
    }
    overrides.pop("OPENAI_API_KEY", None)
    return overrides


async def wait_for_evaluation(client, evaluation_id: str, timeout: float = 600) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = (await client.get(f"/evaluations/{evaluation_id}", headers=auth())).json()
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return dict(found)
        assert asyncio.get_running_loop().time() < deadline, f"still {found['status']}"
        await asyncio.sleep(0.5)


async def test_the_tuned_tiny_model_beats_its_base_on_the_trained_questions(client, worker) -> None:
    dataset = await client.post(
        "/datasets",
        headers=auth(),
        files={"file": ("hiroyuki.csv", hiroyuki_csv().encode(), "text/csv")},
        data={"system_prompt": SYSTEM_PROMPT, "model": TINY_MODEL},
    )
    assert dataset.status_code == 201, dataset.text
    created = await client.post(
        "/jobs",
        headers=auth(),
        json={
            "dataset_id": dataset.json()["id"],
            "model": TINY_MODEL,
            "suffix": "hiroyuki",
            "method": {"type": "supervised", "hyperparameters": {"n_epochs": EPOCHS}},
        },
    )
    assert created.status_code == 202, created.text
    job = await wait_for_job(client, created.json()["id"], {"succeeded"}, timeout=900)
    # The dataset has no validation split: nothing is evaluated unasked.
    assert job["evaluation"] is None

    response = await client.post(
        "/evaluations",
        headers=auth(),
        json={"dataset_id": job["dataset_id"], "job_id": job["id"], "max_tokens": 200},
    )
    assert response.status_code == 202, response.text
    done = await wait_for_evaluation(client, response.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == 29
    scores = {m["model"]: m["scores"] for m in done["summary"]["models"]}
    tuned, base = scores[job["fine_tuned_model"]], scores[TINY_MODEL]
    assert tuned["chrf"]["mean"] > base["chrf"]["ci_high"]
    assert tuned["exact_match"]["mean"] > base["exact_match"]["mean"]
    assert done["summary"]["win_rate"]["rate"] > 0.8
