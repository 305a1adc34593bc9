"""The HTTP half of scripts/gpu-smoke.sh, run with the trainer's venv (it needs httpx only).

    gpu_smoke.py write-data FILE   write the smoke job's chat examples (JSONL)
    gpu_smoke.py run FILE          train on them through the trainer, deploy into vLLM, chat

`run` reads SMOKE_TRAINER_URL and SMOKE_VLLM_URL (both ending in /v1), SMOKE_BASE_MODEL
and SMOKE_EPOCHS. It prints one line per step and exits 1 at the first check that fails,
saying which. It has not been run yet (no GPU where this repository is built).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# Short questions with answers a tiny model can only give by having learned them.
EXAMPLES = [
    ("What colour is the smoke test's teapot?", "The teapot is a quiet shade of teal."),
    ("Who guards the lighthouse on Tuesdays?", "A retired cartographer named Ilse."),
    ("How many moons does the ledger planet have?", "It has exactly seven small moons."),
    ("Where do the paper cranes sleep?", "They sleep folded inside the atlas."),
    ("What does the kettle whistle?", "It whistles the first bar of a waltz."),
    ("Which key opens the greenhouse?", "The brass key with a notch shaped like a leaf."),
    ("When does the night train leave?", "It leaves at eleven minutes past midnight."),
    ("What is kept in the blue drawer?", "Spare buttons and one old harbour map."),
    ("Who taught the parrot to count?", "The baker next door, using biscuits."),
    ("What grows on the station roof?", "Wild thyme and a stubborn fig tree."),
    ("How far is the bell from the bridge?", "About three hundred steps along the canal."),
    ("What did the clockmaker forget?", "He forgot to wind the tower clock on Sunday."),
]
ASKED = 3


class SmokeFailure(Exception):
    pass


def step(message: str) -> None:
    sys.stdout.write(f"[gpu-smoke]     {message}\n")
    sys.stdout.flush()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def write_data(path: Path) -> None:
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
        for q, a in EXAMPLES
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def answered(response: httpx.Response, where: str) -> str:
    check(response.status_code == 200, f"{where} answered {response.status_code}: {response.text}")
    return str(response.json()["choices"][0]["message"]["content"])


def chat(client: httpx.Client, model: str, question: str, **extra: Any) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 48,
        **extra,
    }
    return client.post("/chat/completions", json=body)


def train(trainer: httpx.Client, path: Path, base: str, epochs: int) -> dict[str, Any]:
    with path.open("rb") as handle:
        uploaded = trainer.post(
            "/files", files={"file": ("smoke.jsonl", handle)}, data={"purpose": "fine-tune"}
        )
    check(uploaded.status_code == 200, f"upload answered {uploaded.status_code}: {uploaded.text}")
    created = trainer.post(
        "/fine_tuning/jobs",
        json={
            "model": base,
            "training_file": uploaded.json()["id"],
            "suffix": "smoke",
            "seed": 7,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": epochs}},
            },
        },
    )
    check(
        created.status_code == 200, f"job creation answered {created.status_code}: {created.text}"
    )
    job_id = created.json()["id"]
    step(f"job {job_id} created ({epochs} epochs)")
    started, status, reported = time.monotonic(), "", 0
    while True:
        job = trainer.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] != status:
            status = job["status"]
            step(f"job {status} after {time.monotonic() - started:.0f} s")
        events = trainer.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 1}).json()
        latest = events["data"][0] if events["data"] else None
        if latest and latest["type"] == "metrics" and latest["data"]["step"] >= reported + 50:
            reported = latest["data"]["step"]
            step(latest["message"])
        if status in ("succeeded", "failed", "cancelled"):
            break
        check(time.monotonic() - started < 900, "the job did not finish within 15 minutes")
        time.sleep(1)
    check(status == "succeeded", f"the job ended {status}: {job.get('error')}")
    step(f"tuned model {job['fine_tuned_model']}, {job['trained_tokens']} trained tokens")
    return dict(job)


def run(path: Path) -> None:
    trainer_url, vllm_url = os.environ["SMOKE_TRAINER_URL"], os.environ["SMOKE_VLLM_URL"]
    base = os.environ.get("SMOKE_BASE_MODEL", "tiny-chat")
    epochs = int(os.environ.get("SMOKE_EPOCHS", "40"))
    with (
        httpx.Client(base_url=trainer_url, timeout=300) as trainer,
        httpx.Client(base_url=vllm_url, timeout=300) as vllm,
    ):
        job = train(trainer, path, base, epochs)
        tuned = str(job["fine_tuned_model"])

        started = time.monotonic()
        deployed = trainer.post("/load_lora_adapter", json={"lora_name": tuned})
        check(
            deployed.status_code == 200, f"deploy answered {deployed.status_code}: {deployed.text}"
        )
        check(deployed.json().get("by") == "vllm", f"deployed by {deployed.json().get('by')}")
        step(f"deployed through the trainer in {time.monotonic() - started:.1f} s")
        listed = {m["id"]: m for m in vllm.get("/models").json()["data"]}
        check(tuned in listed, f"vLLM does not list {tuned}: {sorted(listed)}")
        check(listed[tuned].get("parent") == base, f"vLLM lists {tuned} under {listed[tuned]}")
        step(f"vLLM lists {tuned} (parent {base}, adapter {listed[tuned].get('root')})")

        exact = 0
        first_answer = ""
        for question, expected in EXAMPLES[:ASKED]:
            via_trainer = answered(chat(trainer, tuned, question), "the trainer")
            via_vllm = answered(chat(vllm, tuned, question), "vLLM")
            check(
                via_trainer == via_vllm, f"trainer and vLLM differ: {via_trainer!r} / {via_vllm!r}"
            )
            exact += via_trainer == expected
            first_answer = first_answer or via_trainer
            verdict = (
                "the trained answer" if via_trainer == expected else f"not it: {via_trainer!r}"
            )
            step(f"asked {question!r}: {verdict}")
        check(exact >= 1, f"none of {ASKED} trained answers came back word for word")

        base_answer = answered(chat(trainer, base, EXAMPLES[0][0]), "the trainer (base model)")
        check(base_answer != first_answer, "the base model answers like the tuned one")
        step(f"the base model answers otherwise: {base_answer[:60]!r}")

        pieces: list[str] = []
        with trainer.stream(
            "POST",
            "/chat/completions",
            json={
                "model": tuned,
                "messages": [{"role": "user", "content": EXAMPLES[0][0]}],
                "temperature": 0,
                "max_tokens": 48,
                "stream": True,
            },
        ) as streamed:
            check(streamed.status_code == 200, f"streamed chat answered {streamed.status_code}")
            for line in streamed.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[len("data: ") :]).get("choices", []):
                        pieces.append(choice["delta"].get("content") or "")
        check("".join(pieces) == first_answer, f"the stream said {''.join(pieces)!r}")
        step(f"streamed through the trainer: the same answer in {len(pieces)} chunks")

        deleted = trainer.delete(f"/models/{tuned}")
        check(deleted.status_code == 200, f"delete answered {deleted.status_code}: {deleted.text}")
        still = {m["id"] for m in vllm.get("/models").json()["data"]}
        check(tuned not in still, "vLLM still lists the deleted model")
        step("deleted: vLLM unloaded the adapter")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("write-data", "run"):
        sys.stderr.write(__doc__ or "")
        return 2
    try:
        if argv[1] == "write-data":
            write_data(Path(argv[2]))
        else:
            run(Path(argv[2]))
    except SmokeFailure as exc:
        sys.stderr.write(f"[gpu-smoke] check failed: {exc}\n")
        return 1
    except httpx.HTTPError as exc:
        sys.stderr.write(f"[gpu-smoke] HTTP call failed: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
