"""`python -m simulator` as its own process: the listening line, the API, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.__main__ import _parser, config_from_args, main

REPO = Path(__file__).resolve().parents[2]


def _start() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--job-seconds", "0.2", "--org", "acme"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_the_process_listens_serves_and_stops_cleanly_on_sigterm_and_sigint() -> None:
    # Both start at once: most of the time is the interpreter importing.
    processes = {signal.SIGTERM: _start(), signal.SIGINT: _start()}
    try:
        for stop_signal, process in processes.items():
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
            assert match, line
            response = httpx.get(f"{match.group(1)}/models", headers={"Authorization": "Bearer k"})
            assert response.status_code == 200
            assert response.headers["openai-organization"] == "acme"
            process.send_signal(stop_signal)
        for process in processes.values():
            assert process.wait(timeout=10) == 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


def test_bad_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--webhook-url", "http://x", "--webhook-secret", "nope"])
    assert exited.value.code == 2
    assert "whsec_" in capsys.readouterr().err


def test_flags_build_the_config() -> None:
    config = config_from_args(
        _parser().parse_args(
            [
                "--job-seconds",
                "2.5",
                "--org",
                "acme",
                "--fault-rate-429",
                "0.25",
                "--fault-latency-ms",
                "30",
            ]
        )
    )
    assert (config.job_seconds, config.org) == (2.5, "acme")
    assert (config.faults.rate_429, config.faults.latency_ms) == (0.25, 30)
