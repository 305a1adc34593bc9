"""Loads the session-wide log capture (tests/log_capture.py) if tests/conftest.py has not.

pytest only honours `pytest_plugins` in the top-level conftest, so this registers
the plugin by hand; `pytest_configure` is a historic hook, so the plugin is
configured on registration. Collection of every directory ends before the
first test runs, so the capture still sees every test's log lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

PLUGIN = "tests.log_capture"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)


# --- The real stack over HTTP: `python -m service` / `python -m worker` subprocesses ---------
# (used by test_generated_client.py and test_schemathesis.py)

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0


class Spawned:
    """A child process whose stderr/stdout go to a file the secret scan reads."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def wait_until_healthy(base_url: str, api: Spawned) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if api.process.poll() is not None:
            raise RuntimeError(f"{api.module} exited early:\n{api.output()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{api.module} did not answer /health:\n{api.output()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def running_stack(
    env: dict[str, str], log_dir: Path, *, name: str, with_worker: bool
) -> Iterator[str]:
    """The API (and optionally a worker) as real processes; yields the API's base URL."""
    from tests.conftest import free_port

    port = free_port()
    process_env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    started: list[Spawned] = []
    try:
        api = Spawned("service", process_env, log_dir / f"{name}-api.log")
        started.append(api)
        if with_worker:
            started.append(Spawned("worker", process_env, log_dir / f"{name}-worker.log"))
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(base_url, api)
        yield base_url
    finally:
        for process in reversed(started):
            process.stop()
