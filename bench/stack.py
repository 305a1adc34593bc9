"""Processes a benchmark runs: its own redis-server, the API, workers, the simulator.

Everything listens on 127.0.0.1 on a free port and lives under one scratch
directory; `Stack` stops whatever it started, in reverse order, when the
`with` block ends (also on errors and Ctrl-C). Each process writes its
output to a log file in the scratch directory, and the tail of that log is
shown when a process fails to come up.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
SHARED_TIKTOKEN = REPO.parent / "shared" / "tiktoken"
if SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN))

API_KEY = "bench-key-0123456789"
TENANT = "bench"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench-signing-secret-0123456789").decode()
OPENAI_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-openai-webhook-secret-42").decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:g} s")
        time.sleep(every)


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return httpx.get(url, headers=headers, timeout=2).status_code == 200


@dataclass
class Proc:
    """One child process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class Stack:
    """Owns the scratch directory and every process started through it."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ft-bench-")))
    procs: list[Proc] = field(default_factory=list)
    keep: bool = False
    redis_port: int = 0

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        handle.close()
        proc = Proc(name, process, log)
        self.procs.append(proc)
        return proc

    def started(self, proc: Proc, check: Callable[[], bool], timeout: float = 60) -> Proc:
        """Wait for `check`; on failure show the process's log."""
        try:
            wait_until(
                lambda: (proc.alive() or _raise_exited(proc)) and check(),
                timeout=timeout,
                what=f"{proc.name} ready",
                every=0.1,
            )
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n--- {proc.name} log ---\n{proc.tail()}") from None
        return proc

    # Redis -----------------------------------------------------------------

    def redis(self) -> str:
        """Start redis-server with production-like persistence (AOF, fsync every second)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.redis_port = free_port()
        workdir = self.root / "redis"
        workdir.mkdir(exist_ok=True)
        argv = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(workdir), "--save", "", "--appendonly", "yes"]
        argv += ["--appendfsync", "everysec", "--loglevel", "warning"]
        proc = self.spawn("redis", argv)
        self.started(proc, lambda: bool(redis.Redis(port=self.redis_port).ping()), timeout=15)
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, decode_responses=True)

    # Service ---------------------------------------------------------------

    def service_env(self, redis_url: str, **extra: str) -> dict[str, str]:
        data_dir = self.root / "data"
        data_dir.mkdir(exist_ok=True)
        env = {
            "REDIS_URL": redis_url,
            "DATA_DIR": str(data_dir),
            "SERVICE_API_KEYS": f"{TENANT}:{API_KEY}",
            "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            "OPENAI_WEBHOOK_SECRET": OPENAI_WEBHOOK_SECRET,
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "text",
        }
        env.update(extra)
        return env

    def api(self, env: dict[str, str]) -> tuple[Proc, str]:
        port = free_port()
        proc = self.spawn(
            "api",
            [sys.executable, "-m", "service"],
            {**env, "HOST": "127.0.0.1", "PORT": str(port)},
        )
        base = f"http://127.0.0.1:{port}"
        self.started(proc, lambda: http_ok(f"{base}/health"))
        return proc, base

    def hello(self) -> str:
        """`bench/hello_app.py` on a free port; returns its base URL (the route is /hello)."""
        port = free_port()
        proc = self.spawn(
            "hello",
            [sys.executable, "-m", "bench.hello_app"],
            {"HOST": "127.0.0.1", "PORT": str(port)},
        )
        base = f"http://127.0.0.1:{port}"
        self.started(proc, lambda: http_ok(f"{base}/hello"))
        return base

    def worker(self, env: dict[str, str], *, wait_api: str | None = None) -> Proc:
        proc = self.spawn("worker", [sys.executable, "-m", "worker"], env)
        if wait_api:
            self.started(proc, lambda: http_ok(f"{wait_api}/ready"))
        return proc

    # Simulator -------------------------------------------------------------

    def simulator(self, *args: str) -> tuple[Proc, str]:
        """`python -m simulator` on a free port; returns (process, base URL without /v1)."""
        port = free_port()
        argv = [sys.executable, "-m", "simulator", "--port", str(port), *args]
        proc = self.spawn("simulator", argv)
        base = f"http://127.0.0.1:{port}"
        self.started(proc, lambda: http_ok(f"{base}/_sim/time"))
        return proc, base


def _raise_exited(proc: Proc) -> bool:
    raise RuntimeError(f"{proc.name} exited with code {proc.process.returncode}")


# Memory and CPU from /proc ---------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int:
    """A `VmXXX` field of /proc/<pid>/status in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs). False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    """Direct children of `pid` (for the API's process pool)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children...)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = [child for parent in frontier for child in children(parent)]
        found += below
        frontier = below
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and every live process below it (WORKER_PROCESSES children)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def redis_round_trips(client: redis.Redis) -> int:
    """Requests Redis has read from its clients so far (`total_reads_processed`): a
    pipeline or a script is one, as it is one round trip for the client."""
    return int(client.info("stats")["total_reads_processed"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"-- {title} ...", flush=True)
    yield
    print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
