"""The README's walkthrough, run as written against `make dev`.

The commands between the walkthrough markers are run by bash in the repository
root, against `make dev` started as a user would (no Redis, no provider key,
no caller keys configured). Only the API's and the receiver's ports and the
`.var` folder are changed, so parallel runs and a developer's own `.var` are
left alone. The trainer is left out here (its loop through the service has its
own test); the simulator runs a job in a few seconds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port
from tests.seeds import hiroyuki_csv

pytestmark = pytest.mark.slow

WALKTHROUGH = re.compile(r"<!-- walkthrough -->\s*```sh\n(.*?)```\s*<!-- /walkthrough -->", re.S)
# Variables a developer's shell or CI may carry that make dev decides on itself.
CLEARED = (
    "REDIS_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "PROVIDERS_FILE",
    "SERVICE_API_KEYS",
    "AUTH_DISABLED",
    "WEBHOOK_SIGNING_SECRET",
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
    "DATA_DIR",
)


def walkthrough() -> str:
    found = WALKTHROUGH.search((REPO / "README.md").read_text(encoding="utf-8"))
    assert found, "the README has no walkthrough block"
    return found.group(1)


def trained_answer(question: str) -> str:
    for line in hiroyuki_csv().splitlines():
        if line.startswith(question + ","):
            return line.split(",", 1)[1]
    raise AssertionError(question)


def test_the_walkthrough_runs_as_written_against_make_dev(tmp_path: Path) -> None:
    var = tmp_path / "var"
    api_port, hook_port = free_port(), free_port()
    script = walkthrough()
    for original, replacement in (
        ("API=http://localhost:8000", f"API=http://127.0.0.1:{api_port}"),
        ("HOOK_PORT=9000", f"HOOK_PORT={hook_port}"),
        (".var/", f"{var}/"),
    ):
        assert original in script, original
        script = script.replace(original, replacement)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env |= {
        "PORT": str(api_port),
        "DEV_REDIS_PORT": str(free_port()),
        "SIMULATOR_PORT": str(free_port()),
        "SIMULATOR_JOB_SECONDS": "4",
        "DEV_VAR_DIR": str(var),
        "DEV_TRAINER": "0",
    }
    log = (tmp_path / "make-dev.log").open("wb")
    dev = subprocess.Popen(
        ["make", "dev"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert dev.poll() is None, (tmp_path / "make-dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "make-dev.log").read_text()
            time.sleep(0.3)
        # make dev announces the API once it sees the port open, which can be a
        # moment after our own first successful request.
        announced = f"API on http://127.0.0.1:{api_port}"
        while announced not in (printed := (tmp_path / "make-dev.log").read_text()):
            assert time.monotonic() < deadline, printed
            time.sleep(0.2)
        assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true" in printed
        secret = (var / "webhook-signing-secret").read_text().strip()
        assert f"signed with {secret}" in printed

        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        output = run.stdout
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=60)
        log.close()

    assert '"too_few_examples"' in output
    assert "The file has 3 example(s), but fine-tuning needs at least 10" in output
    assert '"example_count": 29' in output
    assert '"model_training_closed"' in output
    assert '"training_until": "2024-06-13"' in output
    assert '"model": "gpt-3.5-turbo-0125"' in output
    assert re.search(r"verified job\.succeeded evt_\w+: .*ft:gpt-3\.5-turbo-0125:", output)
    assert trained_answer("自己肯定感の高めかた") in output
    assert '"role": "base"' in output
    # Ctrl-C (here SIGTERM to make's process group) stops everything make dev started.
    ports = [api_port, int(env["DEV_REDIS_PORT"]), int(env["SIMULATOR_PORT"])]
    deadline = time.monotonic() + 30
    while ports and time.monotonic() < deadline:
        ports = [port for port in ports if answers(port)]
        time.sleep(0.2)
    assert ports == [], f"still answering after make dev stopped: {ports}"


def answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
