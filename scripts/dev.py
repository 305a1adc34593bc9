"""`make dev`: everything on one machine, stopped together with Ctrl-C.

Starts what is missing and nothing more:
- a local redis-server (AOF on, data in .var/redis) when REDIS_URL is unset;
- the OpenAI simulator when OPENAI_API_KEY and PROVIDERS_FILE are unset (files,
  jobs and tuned models kept in .var/simulator), and, when `.venv-trainer`
  exists, the self-hosted trainer with a tiny model built on first start, both
  as providers (.var/providers.toml);
- the API (`python -m service`) and one worker (`python -m worker`).

With no SERVICE_API_KEYS it runs with AUTH_DISABLED=true (one tenant); jobs'
own webhook_url deliveries are then signed with WEBHOOK_SIGNING_SECRET, made
once and kept in .var/webhook-signing-secret. Private webhook targets are
allowed (a receiver on this machine) unless WEBHOOK_ALLOW_PRIVATE_NETWORKS is set.
DEV_VAR_DIR moves .var; DEV_TRAINER=0 leaves the trainer out; SIMULATOR_JOB_SECONDS,
and the *_PORT variables (PORT, DEV_REDIS_PORT, SIMULATOR_PORT, TRAINER_PORT) tune it.

Each child runs in its own process group; on Ctrl-C, SIGTERM, or any child
exiting, every group gets SIGTERM, then SIGKILL after a grace period, so
nothing is left running.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project is not installed as a package

from service.settings import DEFAULT_FINE_TUNABLE_MODELS  # noqa: E402

# Everything make dev keeps between runs (DEV_VAR_DIR moves it, for tests).
VAR = Path(os.environ.get("DEV_VAR_DIR") or ROOT / ".var")
GRACE_SECONDS = 12
TRAINER_PYTHON = ROOT / ".venv-trainer" / "bin" / "python"
TINY_MODEL = "tiny-chat"
SEED_CSV = ROOT / "docs" / "examples" / "hiroyuki.csv"
SEED_SYSTEM_PROMPT = "西村ひろゆきBot"


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


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def signing_secret() -> str:
    """The local tenant's webhook signing secret, made once and kept across restarts."""
    path = VAR / "webhook-signing-secret"
    if path.exists():
        return path.read_text().strip()
    VAR.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def seed_chat_jsonl(dest: Path) -> Path:
    """The seed post's Q&A rows as chat JSONL: what the tiny model's tokenizer learns from."""
    with SEED_CSV.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": SEED_SYSTEM_PROMPT},
                    {"role": "user", "content": row["user"]},
                    {"role": "assistant", "content": row["assistant"]},
                ]
            },
            ensure_ascii=False,
        )
        for row in rows
    ]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


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


def start_redis(supervisor: Supervisor, env: dict[str, str]) -> bool:
    binary = shutil.which("redis-server")
    if binary is None:
        say("REDIS_URL is unset and redis-server is not installed")
        say("install it: sudo apt-get install -y redis-server (or set REDIS_URL)")
        return False
    # The same port every time when it is free, so a REDIS_URL noted once keeps working.
    port = pick_port(int(env.get("DEV_REDIS_PORT", "6380")))
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    process = supervisor.start("redis", argv, env)
    if not wait_for_port(port, process):
        say("redis-server did not start")
        return False
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    say(f"Redis on {env['REDIS_URL']} (data in .var/redis)")
    return True


def start_simulator(supervisor: Supervisor, env: dict[str, str]) -> str | None:
    port = pick_port(int(env.get("SIMULATOR_PORT", "8100")))
    argv = [sys.executable, "-m", "simulator", "--port", str(port)]
    argv += ["--job-seconds", env.get("SIMULATOR_JOB_SECONDS", "30")]
    # Files, jobs and tuned models outlive a restart of `make dev`.
    argv += ["--state-dir", env.get("SIMULATOR_STATE_DIR", str(VAR / "simulator"))]
    process = supervisor.start("simulator", argv, env)
    if not wait_for_port(port, process):
        say("the simulator did not start")
        return None
    return f"http://127.0.0.1:{port}/v1"


def start_trainer(supervisor: Supervisor, env: dict[str, str]) -> str | None:
    """The self-hosted trainer, when its environment is installed (make install)."""
    if os.environ.get("DEV_TRAINER", "").lower() in ("0", "false", "no"):
        say("DEV_TRAINER=0: running without the trainer")
        return None
    if not TRAINER_PYTHON.exists():
        say("no .venv-trainer (make install builds it): running without the trainer")
        return None
    models = VAR / "models"
    if not (models / TINY_MODEL / "config.json").exists():
        say(f"building the tiny model {TINY_MODEL} from the seed Q&A (first start only)")
        train_file = seed_chat_jsonl(VAR / "tiny-chat-seed.jsonl")
        subprocess.run(  # noqa: S603
            [
                str(TRAINER_PYTHON),
                *("-m", "trainer.tiny", str(models / TINY_MODEL)),
                *("--train-file", str(train_file)),
            ],
            cwd=ROOT,
            check=True,
        )
    port = pick_port(int(env.get("TRAINER_PORT", "8200")))
    argv = [str(TRAINER_PYTHON), "-m", "trainer", "--port", str(port)]
    argv += ["--models-dir", str(models), "--data-dir", str(VAR / "trainer")]
    process = supervisor.start("trainer", argv, env)
    if not wait_for_port(port, process, timeout=120):
        say("the trainer did not start; running without it")
        return None
    return f"http://127.0.0.1:{port}/v1"


def providers_file(simulator: str, trainer: str | None) -> Path:
    """The simulator trains OpenAI's models; the trainer, when running, the tiny model."""
    lines = [
        "# Written by `make dev` at each start.",
        "[[provider]]",
        'name = "openai"',
        'kind = "openai"',
        f'base_url = "{simulator}"',
        'api_key_env = "OPENAI_API_KEY"',
        "models = [",
    ]
    lines += [f'  "{model}",' for model in DEFAULT_FINE_TUNABLE_MODELS] + ["]"]
    if trainer is not None:
        lines += [
            "",
            "[[provider]]",
            'name = "local"',
            'kind = "trainer"',
            f'base_url = "{trainer}"',
            f'models = ["{TINY_MODEL}"]',
        ]
    path = VAR / "providers.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    env = dict(os.environ)
    supervisor = Supervisor()

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        # Stop once: the same Ctrl-C or SIGTERM often arrives twice (from the
        # terminal or killpg, and forwarded by make and uv), and a second one
        # raised inside stop_all would leave the children running.
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        VAR.mkdir(parents=True, exist_ok=True)
        if not env.get("REDIS_URL") and not start_redis(supervisor, env):
            return 2
        if not env.get("OPENAI_API_KEY") and not env.get("PROVIDERS_FILE"):
            simulator = start_simulator(supervisor, env)
            if simulator is None:
                return 1
            env["OPENAI_API_KEY"] = "sk-simulator-local"
            env["OPENAI_BASE_URL"] = simulator
            trainer = start_trainer(supervisor, env)
            env["PROVIDERS_FILE"] = str(providers_file(simulator, trainer))
            with_trainer = f", the trainer at {trainer}" if trainer else ""
            say(f"providers: the simulator at {simulator}{with_trainer}")
        if not env.get("SERVICE_API_KEYS") and not env.get("AUTH_DISABLED"):
            say("SERVICE_API_KEYS is unset: running with AUTH_DISABLED=true (local only)")
            env["AUTH_DISABLED"] = "true"
        auth_disabled = env.get("AUTH_DISABLED", "").lower() == "true"
        if auth_disabled and not env.get("WEBHOOK_SIGNING_SECRET"):
            env["WEBHOOK_SIGNING_SECRET"] = signing_secret()
            say(
                "jobs' webhook_url deliveries are signed with "
                f"{env['WEBHOOK_SIGNING_SECRET']} (kept in .var/webhook-signing-secret)"
            )
        if "WEBHOOK_ALLOW_PRIVATE_NETWORKS" not in env:
            env["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
            say(
                "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true: webhooks may go to this machine "
                "(production refuses private and loopback targets)"
            )
        env.setdefault("DATA_DIR", str(VAR / "data"))
        env.setdefault("LOG_FORMAT", "text")
        supervisor.start("worker", [sys.executable, "-m", "worker"], env)
        host, port = env.get("HOST", "127.0.0.1"), int(env.get("PORT", "8000"))
        api = supervisor.start("api", [sys.executable, "-m", "service"], env)
        if not wait_for_port(port, api):
            say("the API did not start listening")
            return 1
        say(f"API on http://{host}:{port} (docs at /docs, console at /console)")
        say("Ctrl-C stops everything")
        return supervisor.watch()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        supervisor.stop_all()


if __name__ == "__main__":
    sys.exit(main())
