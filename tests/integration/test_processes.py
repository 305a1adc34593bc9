"""The run contract: `python -m service` and `python -m worker` as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output.decode(errors="replace")


def test_api_and_worker_processes_become_ready_and_stop_cleanly(env: dict[str, str]) -> None:
    port = free_port()
    proc_env = {**env, "PORT": str(port)}
    api = _spawn("service", proc_env)
    worker = _spawn("worker", proc_env)
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                status = response.status_code
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert status == 200, "the API never answered /ready with 200"
        assert response.json()["workers"] == 1
    finally:
        api_rc, api_out = _stop(api)
        worker_rc, worker_out = _stop(worker)
    # uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is a clean exit.
    assert api_rc in (0, -signal.SIGTERM), api_out
    assert "Application shutdown complete" in api_out
    assert worker_rc == 0, worker_out
    assert '"worker stopped"' in worker_out


def test_several_api_and_worker_processes_from_one_command_each(env: dict[str, str]) -> None:
    """API_PROCESSES and WORKER_PROCESSES: one command each, several processes serving,
    every one of them gone after SIGTERM to the command."""
    port = free_port()
    proc_env = {**env, "PORT": str(port), "API_PROCESSES": "2", "WORKER_PROCESSES": "3"}
    api = _spawn("service", proc_env)
    worker = _spawn("worker", proc_env)
    try:
        deadline = time.monotonic() + 60
        workers = 0
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                workers = response.json().get("workers", 0) if response.status_code == 200 else 0
                if workers == 3:
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.3)
        assert workers == 3, "three worker processes never reported in"
        api_children = [pid for pid in _children(api.pid) if _is_python(pid)]
        worker_children = [pid for pid in _children(worker.pid) if _is_python(pid)]
    finally:
        api_rc, api_out = _stop(api)
        worker_rc, worker_out = _stop(worker)
    assert api_rc in (0, -signal.SIGTERM), api_out
    assert worker_rc == 0, worker_out
    assert worker_out.count('"worker stopped"') == 3, worker_out
    # uvicorn's processes (and multiprocessing's resource tracker) are children too.
    assert len(worker_children) >= 2
    assert len(api_children) >= 2
    time.sleep(0.5)
    assert not [pid for pid in api_children + worker_children if _is_python(pid)], (
        "a child process outlived its command"
    )


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _is_python(pid: int) -> bool:
    try:
        return "python" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize(
    ("module", "overrides", "variable"),
    [
        ("service", {"REDIS_URL": "http://localhost:6379"}, "REDIS_URL"),
        ("service", {"REDIS_URL": "redis://localhost:notaport"}, "REDIS_URL"),
        ("service", {"WEBHOOK_SIGNING_SECRET": "whsec_not*base64!"}, "WEBHOOK_SIGNING_SECRET"),
        ("service", {"WEBHOOK_SIGNING_SECRET": "whsec_c2hvcnQ="}, "WEBHOOK_SIGNING_SECRET"),
        ("service", {"OPENAI_WEBHOOK_SECRET": "not-whsec"}, "OPENAI_WEBHOOK_SECRET"),
        ("service", {"SERVICE_API_KEYS": ""}, "SERVICE_API_KEYS"),
        ("service", {"SERVICE_API_KEYS": "a:short-key"}, "SERVICE_API_KEYS"),
        (
            "service",
            {"SERVICE_API_KEYS": "a:same-key-0123456789,b:same-key-0123456789"},
            "SERVICE_API_KEYS",
        ),
        ("worker", {"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
        ("service", {"PORT": "99999"}, "PORT"),
        ("service", {"PROVIDERS_FILE": "/nonexistent/providers.toml"}, "PROVIDERS_FILE"),
        ("worker", {"PROVIDERS_FILE": "/nonexistent/providers.toml"}, "PROVIDERS_FILE"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line_naming_the_variable(
    env: dict[str, str], module: str, overrides: dict[str, str], variable: str
) -> None:
    proc_env = {**os.environ, **env, **overrides}
    for name, value in overrides.items():
        if value == "":
            proc_env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env=proc_env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: ")
    assert variable in lines[0]
    # The line names the variable, never a secret's value.
    assert env["SERVICE_API_KEYS"] not in lines[0]
    for value in overrides.values():
        assert "key" not in value or value.split(":")[-1] not in lines[0]


def _env_file(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


def test_env_example_as_is_starts_the_api(env: dict[str, str]) -> None:
    """`cp .env.example .env` must give a configuration that starts: blanks mean unset."""
    example = _env_file(REPO / ".env.example")
    assert "" in example.values()  # the point of the test: blank values are present
    port = free_port()
    proc_env = {k: v for k, v in os.environ.items() if k not in example and k not in env}
    proc_env |= example | {"PORT": str(port), "REDIS_URL": env["REDIS_URL"]}
    proc_env["DATA_DIR"] = env["DATA_DIR"]
    api = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env=proc_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and api.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
                if status == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    finally:
        _, output = _stop(api)
    assert status == 200, output
