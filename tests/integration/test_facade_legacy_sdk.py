"""The second source post's code as it was written in 2023, against /v1.

It used `openai==0.28` (module-level `openai.File.create`, `openai.FineTuningJob`,
`openai.ChatCompletion`), which cannot share an environment with today's SDK, so
the test makes its own virtual environment with uv (kept under .var/ between
runs) and runs the post's script there as a subprocess, while this test's event
loop keeps serving the API and running the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

from tests.conftest import API_KEYS, auth
from tests.seeds import hiroyuki_csv

REPO = Path(__file__).resolve().parents[2]
LEGACY_VERSION = "0.28.1"
VENV = REPO / ".var" / "test-venvs" / f"openai-{LEGACY_VERSION}"

# The post's three steps (convert the CSV, upload and start the job, read the job
# until `fine_tuned_model` appears, then ask the tuned model), in its own calls.
# Only the two lines that point the module at the service are new.
SCRIPT = r"""
import csv, json, os, sys, time
import openai

openai.api_key = os.environ["LEGACY_API_KEY"]
openai.api_base = os.environ["LEGACY_API_BASE"]

def csv_to_jsonl(input_file, output_file):
    with open(input_file, mode="r", encoding="utf-8") as csvfile:
        reader = csv.DictReader(csvfile)
        with open(output_file, mode="w", encoding="utf-8") as jsonlfile:
            for row in reader:
                message = []
                message.append({"role": "system", "content": "西村ひろゆきBot"})
                message.append({"role": "user", "content": row["user"]})
                message.append({"role": "assistant", "content": row["assistant"]})
                data = {"messages": message}
                jsonlfile.write(json.dumps(data, ensure_ascii=False) + "\n")

csv_to_jsonl("test_data.csv", "test_data.jsonl")

test_data_file_object = openai.File.create(
    file=open("test_data.jsonl", "rb"),
    purpose="fine-tune",
)
file_id = test_data_file_object.id
job_response = openai.FineTuningJob.create(training_file=file_id, model="gpt-3.5-turbo")
job_id = job_response.id

deadline = time.monotonic() + 120
while True:
    response_retrieve = openai.FineTuningJob.retrieve(job_id)
    if response_retrieve.fine_tuned_model or response_retrieve.status in ("failed", "cancelled"):
        break
    if time.monotonic() > deadline:
        sys.exit("the job never finished: " + str(response_retrieve))
    time.sleep(0.2)
fine_tuned_model = response_retrieve.fine_tuned_model

question = sys.argv[1]
response = openai.ChatCompletion.create(
    model=fine_tuned_model,
    messages=[{"role": "user", "content": question}],
)
try:
    openai.FineTuningJob.retrieve("ftjob-not-ours")
    missing = None
except openai.error.InvalidRequestError as error:
    missing = {"status": error.http_status, "message": str(error)}

print(json.dumps({
    "file_id": file_id,
    "job_id": job_id,
    "status": response_retrieve.status,
    "fine_tuned_model": fine_tuned_model,
    "answer": response["choices"][0]["message"]["content"],
    "missing": missing,
}, ensure_ascii=False))
"""


async def legacy_python() -> Path:
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv makes the test's own environment; `make install` needs it too"
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(VENV)],
        [uv, "pip", "install", "--quiet", "--python", str(python), f"openai=={LEGACY_VERSION}"],
    ):
        made = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await made.communicate()
        if made.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            raise AssertionError(f"{command} failed: {output.decode()}")
    return python


async def test_the_2023_post_runs_unchanged_but_for_api_base(client, worker, tmp_path) -> None:
    python = await legacy_python()
    (tmp_path / "test_data.csv").write_text(hiroyuki_csv(), encoding="utf-8")
    (tmp_path / "post.py").write_text(SCRIPT, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LEGACY_API_KEY": API_KEYS["tenant-a"],
        "LEGACY_API_BASE": f"{client.base_url}/v1",
    }
    question = "自己肯定感の高めかた"
    run = await asyncio.create_subprocess_exec(
        str(python),
        "post.py",
        question,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(run.communicate(), timeout=180)
    assert run.returncode == 0, err.decode()
    result = json.loads(out)

    assert result["status"] == "succeeded"
    assert result["fine_tuned_model"].startswith("ft:gpt-3.5-turbo")
    # The simulator's tuned model answers a trained question with its trained answer.
    trained = next(
        line.split(",", 1)[1] for line in hiroyuki_csv().splitlines() if line.startswith(question)
    )
    assert result["answer"] == trained
    # 0.28 raises its own error class from OpenAI's error body.
    assert result["missing"]["status"] == 404
    assert "No such fine-tuning job" in result["missing"]["message"]

    # The same job and file, seen through the native API.
    job = (await client.get(f"/jobs/{result['job_id']}", headers=auth())).json()
    assert (job["dataset_id"], job["fine_tuned_model"]) == (
        result["file_id"],
        result["fine_tuned_model"],
    )
    dataset = (await client.get(f"/datasets/{result['file_id']}", headers=auth())).json()
    assert dataset["example_count"] == len(hiroyuki_csv().splitlines()) - 1
