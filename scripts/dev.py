"""`make dev`: everything on one machine, stopped together with Ctrl-C.

Starts what is missing and nothing more:
- a local redis-server (AOF on, data in .var/redis) when REDIS_URL is unset;
- the OpenAI simulator when OPENAI_API_KEY is unset (and points the SDK at it),
  keeping its files, jobs and tuned models in .var/simulator;
- the API (`python -m service`) and one worker (`python -m worker`).

Each child runs in its own process group; on Ctrl-C, SIGTERM, or any child
exiting, every group gets SIGTERM, then SIGKILL after a grace period, so
nothing is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / ".var"
GRACE_SECONDS = 12


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)  # noqa: T201


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    if port_is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


class Supervisor:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        say(f"starting {name}: {' '.join(argv)}")
        process = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
        self.children.append((name, process))
        return process

    def stop_all(self) -> None:
        # A second Ctrl-C (make forwards one too) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _name, process in reversed(self.children):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + GRACE_SECONDS
        for name, process in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in time; killing it")
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()

    def watch(self) -> int:
        while True:
            for name, process in self.children:
                code = process.poll()
                if code is not None:
                    say(f"{name} exited with {code}; stopping everything")
                    return code or 1
            time.sleep(0.3)


def main() -> int:
    env = dict(os.environ)
    python = sys.executable
    supervisor = Supervisor()

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not env.get("REDIS_URL"):
            binary = shutil.which("redis-server")
            if binary is None:
                say("REDIS_URL is unset and redis-server is not installed")
                say("install it (Debian: apt-get install redis-server) or set REDIS_URL")
                return 2
            port = pick_port(int(env.get("DEV_REDIS_PORT", "6380")))
            data = VAR / "redis"
            data.mkdir(parents=True, exist_ok=True)
            supervisor.start(
                "redis",
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(data),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                ],
                env,
            )
            if not wait_for_port(port):
                say("redis-server did not start")
                return 1
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        if not env.get("OPENAI_API_KEY"):
            port = pick_port(int(env.get("SIMULATOR_PORT", "8100")))
            supervisor.start(
                "simulator",
                [
                    python,
                    "-m",
                    "simulator",
                    "--port",
                    str(port),
                    "--job-seconds",
                    env.get("SIMULATOR_JOB_SECONDS", "30"),
                    # Files, jobs and tuned models outlive a restart of `make dev`.
                    "--state-dir",
                    env.get("SIMULATOR_STATE_DIR", str(VAR / "simulator")),
                ],
                env,
            )
            if not wait_for_port(port):
                say("the simulator did not start")
                return 1
            env["OPENAI_API_KEY"] = "sk-simulator-local"
            env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        if not env.get("SERVICE_API_KEYS") and not env.get("AUTH_DISABLED"):
            say("SERVICE_API_KEYS is unset: running with AUTH_DISABLED=true (local only)")
            env["AUTH_DISABLED"] = "true"
        env.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        env.setdefault("DATA_DIR", str(VAR / "data"))
        env.setdefault("LOG_FORMAT", "text")
        supervisor.start("worker", [python, "-m", "worker"], env)
        supervisor.start("api", [python, "-m", "service"], env)
        say(
            f"API on http://{env.get('HOST', '127.0.0.1')}:{env.get('PORT', '8000')} "
            "(docs at /docs); Ctrl-C stops everything"
        )
        return supervisor.watch()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
