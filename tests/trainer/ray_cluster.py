"""A real one-node Ray cluster for the tests, started from the trainer's venv and owned by them.

`ray start --head --block` runs as a child of the test session. With `--block`
Ray ties its daemons to that command (they die with it), and the command is
given Linux's parent-death signal, so the cluster also goes when the test
session dies. Stopping it is a SIGTERM to that one process (never `ray stop`,
which would stop every Ray on the machine).

Kept small for a 2-core machine: 2 logical CPUs (one training at a time with
the runner's default of 1 CPU per training, plus room for a second submit),
no GPUs, an 80 MB object store (nothing uses it), no log monitor. The
dashboard must run: it hosts the jobs API the runner submits to. Every port is
picked free, so clusters of other sessions on the machine are left alone. Ray's
`uv run` detection is turned off (see `start`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RayCluster:
    process: subprocess.Popen[bytes]
    temp_dir: Path
    dashboard_port: int
    started_in: float

    @property
    def address(self) -> str:
        """What RAY_ADDRESS holds: the jobs API (the head's dashboard port)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @classmethod
    def start(cls, venv_bin: Path, log_path: Path) -> RayCluster:
        # Ray's socket paths must stay short (AF_UNIX), so not under pytest's tmp_path.
        temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        dashboard_port = free_port()
        env = {
            name: value
            for name, value in os.environ.items()
            # `make test` runs pytest under `uv run`, and Ray, seeing `uv run` among the
            # ancestors of its processes, would start every worker (the jobs' supervisors
            # too) through `uv run` in this project's .venv, which has no Ray: the jobs
            # would stay PENDING. The cluster gets the trainer's venv and nothing of uv's.
            if not name.startswith("UV") and name not in ("VIRTUAL_ENV", "RAY_ADDRESS")
        }
        env.update(
            {
                # As an activated venv would: the entry point's `python` is the trainer's.
                "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
                "VIRTUAL_ENV": str(venv_bin.parent),
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        command = [
            str(venv_bin / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--object-store-memory=80000000",
            "--include-log-monitor=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ]
        started = time.monotonic()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        cluster = cls(process, temp_dir, dashboard_port, 0.0)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{cluster.address}/api/jobs/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError(f"the Ray head did not start; see {log_path}")
            time.sleep(0.25)
        cluster.started_in = time.monotonic() - started
        return cluster

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster has had, as the jobs API (JobSubmissionClient's) lists them."""
        found: list[dict[str, Any]] = httpx.get(f"{self.address}/api/jobs/", timeout=10).json()
        return found

    def job(self, submission_id: str) -> dict[str, Any] | None:
        return next((job for job in self.jobs() if job["submission_id"] == submission_id), None)

    def wait_for_status(self, submission_id: str, *statuses: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(submission_id)
            if job is not None and job["status"] in statuses:
                return str(job["status"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray job {submission_id}: {job and job['status']}")
            time.sleep(0.25)

    def stop_jobs(self) -> None:
        for job in self.jobs():
            if job["status"] not in TERMINAL and job.get("submission_id"):
                httpx.post(f"{self.address}/api/jobs/{job['submission_id']}/stop", timeout=10)

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.stop_jobs()
        except httpx.HTTPError:
            pass
        finally:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
