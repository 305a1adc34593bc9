"""The self-hosted trainer on this CPU: a real LoRA fine-tune of the tiny model, end to end.

    python -m bench.bench_trainer [--rounds 2] [--epochs 20] [--timeout 900]

Builds the tiny model from the seed data (`python -m trainer.tiny`), starts
`python -m trainer` from `.venv-trainer` on a free port, and per round:

- uploads the 29 seed questions as chat JSONL and creates a job with only
  `n_epochs` set (everything else from the model's defaults), then measures the
  wall time from the create call to `succeeded`, split into validation and
  queueing, process start (imports and model load, up to the first step) and
  training proper;
- reads the run's `result.json` for trained tokens and tokens per second of
  training (the trainer's own clock around `trainer.train()`);
- asks the tuned model and the base model every trained question at
  temperature 0 and counts answers that match the trained answer exactly.

Correctness (exit 1): the job must succeed and the tuned model must answer at
least two trained questions word for word while the base model answers none.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.report import block

REPO = Path(__file__).resolve().parents[1]
TRAINER_PYTHON = REPO / ".venv-trainer" / "bin" / "python"
SYSTEM_PROMPT = "西村ひろゆきBot"
MODEL = "tiny-chat"


def _seed_rows() -> list[dict[str, str]]:
    local = REPO / "tests" / "unit" / "data" / "hiroyuki.csv"
    if local.exists():
        text = local.read_text(encoding="utf-8")
    else:
        seed = next((REPO.parent / "shared" / "seeds").glob("003_*.txt"))
        raw = seed.read_text(encoding="utf-8")
        start = raw.index("user,assistant")
        text = raw[start : raw.index("```", start)]
    return list(csv.DictReader(io.StringIO(text)))


def _chat_jsonl(rows: list[dict[str, str]]) -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": row["user"]},
                    {"role": "assistant", "content": row["assistant"]},
                ]
            },
            ensure_ascii=False,
        )
        for row in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Round:
    total_s: float
    queued_s: float
    startup_s: float
    training_s: float
    trained_tokens: int
    tokens_per_s: float
    steps: int
    first_loss: float
    last_loss: float
    tuned_exact: int
    base_exact: int
    questions: int
    chat_p50_ms: float


def _wait(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} still {job['status']}")
        time.sleep(0.2)


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = client.get(f"/fine_tuning/jobs/{job_id}/events", params=params).json()
        found.extend(page["data"])
        if not page["has_more"]:
            return found[::-1]
        after = page["data"][-1]["id"]


def _ask(client: httpx.Client, model: str, question: str, max_tokens: int) -> str:
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    response = client.post("/chat/completions", json=body)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def _one_round(
    client: httpx.Client, data_dir: Path, rows: list[dict[str, str]], epochs: int, timeout: float
) -> Round:
    uploaded = client.post(
        "/files",
        data={"purpose": "fine-tune"},
        files={"file": ("seed.jsonl", _chat_jsonl(rows), "application/jsonl")},
    ).json()
    started = time.monotonic()
    job = client.post(
        "/fine_tuning/jobs",
        json={
            "model": MODEL,
            "training_file": uploaded["id"],
            "suffix": "bench",
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": epochs}},
            },
        },
    ).json()
    job = _wait(client, job["id"], timeout)
    total = time.monotonic() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
    events = _events(client, job["id"])
    at = {event["message"]: event["created_at"] for event in events if event["type"] == "message"}
    metrics = [event for event in events if event["type"] == "metrics"]
    result = json.loads((data_dir / "jobs" / job["id"] / "run" / "result.json").read_text())
    startup = metrics[0]["created_at"] - at["Fine-tuning job started"]
    queued = at["Fine-tuning job started"] - job["created_at"]

    tuned_exact = base_exact = 0
    latencies: list[float] = []
    for row in rows:
        asked = time.perf_counter()
        tuned = _ask(client, job["fine_tuned_model"], row["user"], 400)
        latencies.append((time.perf_counter() - asked) * 1000)
        tuned_exact += tuned == row["assistant"]
        base_exact += _ask(client, MODEL, row["user"], 60) == row["assistant"]
    latencies.sort()
    return Round(
        total_s=total,
        queued_s=float(queued),
        startup_s=float(startup),
        training_s=float(result["train_runtime_seconds"]),
        trained_tokens=int(result["trained_tokens"]),
        tokens_per_s=float(result["tokens_per_second"]),
        steps=len(metrics),
        first_loss=float(metrics[0]["data"]["train_loss"]),
        last_loss=float(metrics[-1]["data"]["train_loss"]),
        tuned_exact=tuned_exact,
        base_exact=base_exact,
        questions=len(rows),
        chat_p50_ms=latencies[len(latencies) // 2],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_trainer")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900, help="per job, seconds")
    args = parser.parse_args(argv)
    if not TRAINER_PYTHON.is_file():
        print(f"{TRAINER_PYTHON} is missing: run `make install` first")
        return 2
    rows = _seed_rows()
    scratch = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        seed_file = scratch / "seed.jsonl"
        seed_file.write_bytes(_chat_jsonl(rows))
        built = time.monotonic()
        model_dir = scratch / "models" / MODEL
        subprocess.run(
            [
                str(TRAINER_PYTHON),
                "-m",
                "trainer.tiny",
                str(model_dir),
                "--train-file",
                str(seed_file),
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        build_s = time.monotonic() - built
        port = _free_port()
        data_dir = scratch / "data"
        log = (scratch / "trainer.log").open("wb")
        command = [str(TRAINER_PYTHON), "-m", "trainer", "--port", str(port)]
        command += ["--models-dir", str(scratch / "models"), "--data-dir", str(data_dir)]
        process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TRAINER_API_KEY": ""},
        )
        log.close()
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                print("the trainer did not start")
                return 1
            time.sleep(0.1)
        rounds: list[Round] = []
        with httpx.Client(base_url=f"{base_url}/v1", timeout=300) as client:
            for _ in range(args.rounds):
                rounds.append(_one_round(client, data_dir, rows, args.epochs, args.timeout))
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)

    rows_out = [("tiny model build", f"{build_s:.1f} s")]
    for number, item in enumerate(rounds, start=1):
        rows_out += [
            (
                f"round {number}: create -> succeeded",
                f"{item.total_s:.1f} s (validate+queue {item.queued_s:.0f} s, "
                f"process start to step 1 {item.startup_s:.0f} s, "
                f"training {item.training_s:.1f} s for {item.steps} steps)",
            ),
            (
                f"round {number}: training throughput",
                f"{item.tokens_per_s:,.0f} tokens/s ({item.trained_tokens:,} tokens, "
                f"loss {item.first_loss:.2f} -> {item.last_loss:.3f})",
            ),
            (
                f"round {number}: exact answers at temperature 0",
                f"tuned {item.tuned_exact}/{item.questions}, base {item.base_exact}/"
                f"{item.questions} (tuned chat p50 {item.chat_p50_ms:.0f} ms)",
            ),
        ]
    block(f"trainer: tiny model, {len(rows)} examples, {args.epochs} epochs", rows_out)
    good = all(item.tuned_exact >= 2 and item.base_exact == 0 for item in rounds)
    if not good:
        print("correctness: the tuned model did not learn, or the base model knew the answers")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
