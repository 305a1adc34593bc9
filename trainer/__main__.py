"""`python -m trainer --port 8200 --models-dir DIR --data-dir DIR`: the trainer server.

OpenAI's files, fine-tuning, models and chat paths under `/v1`; `/health` and
`/ready` outside it. `TRAINER_API_KEY`, when set, is the bearer key every `/v1`
call must carry. `RAY_ADDRESS` runs trainings as Ray jobs and `VLLM_BASE_URL`
serves tuned models through vLLM. See docs/trainer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn

from trainer.app import create_app
from trainer.config import (
    RaySettings,
    TrainerConfig,
    VLLMSettings,
    api_key_from_environment,
    parse_runtime_env,
    ray_address_from_environment,
    vllm_from_environment,
)
from trainer.store import DataDirLocked, lock_data_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Self-hosted LoRA fine-tuning with OpenAI's API (files, jobs, models, chat).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200, help="0 picks a free port")
    parser.add_argument(
        "--models-dir", type=Path, required=True, help="base models: one HF folder each"
    )
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="files, jobs, events and adapters"
    )
    parser.add_argument(
        "--max-concurrent-trainings",
        type=int,
        default=1,
        help="trainings that run at once on the CPU or the one visible GPU (default 1)",
    )
    parser.add_argument(
        "--gpus",
        default="",
        help="comma-separated GPU ids; one training per GPU at a time (overrides the above)",
    )
    parser.add_argument("--max-loaded-models", type=int, default=2, help="base models in memory")
    parser.add_argument(
        "--max-loaded-adapters", type=int, default=8, help="LoRA adapters in memory, all bases"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="completion tokens when a chat sets none"
    )
    parser.add_argument("--max-upload-mb", type=int, default=512)
    parser.add_argument("--log-level", default="info")
    ray = parser.add_argument_group("Ray (when RAY_ADDRESS is set: trainings are Ray jobs)")
    ray.add_argument(
        "--ray-num-cpus", type=float, default=1.0, help="CPUs Ray reserves per training (1)"
    )
    ray.add_argument(
        "--ray-num-gpus", type=float, default=0.0, help="GPUs Ray reserves per training (0)"
    )
    ray.add_argument(
        "--ray-runtime-env",
        default="",
        help="extra Ray runtime_env for each training: a JSON object, or @file.json",
    )
    ray.add_argument(
        "--ray-python",
        default="python",
        help="the interpreter on the Ray nodes that runs the entry point (default: python)",
    )
    vllm = parser.add_argument_group("vLLM (when VLLM_BASE_URL is set: tuned models served there)")
    vllm.add_argument(
        "--vllm-check-seconds",
        type=float,
        default=10.0,
        help="how often vLLM is checked for adapters it lost (a restart) (default 10)",
    )
    return parser


def _ray_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RaySettings | None:
    address = ray_address_from_environment()
    if address is None:
        return None
    if args.gpus:
        parser.error("--gpus is for local trainings; with RAY_ADDRESS use --ray-num-gpus")
    try:
        runtime_env = parse_runtime_env(args.ray_runtime_env)
    except (OSError, ValueError) as exc:
        parser.error(f"--ray-runtime-env: {exc}")
    if args.ray_num_cpus < 0 or args.ray_num_gpus < 0:
        parser.error("--ray-num-cpus and --ray-num-gpus cannot be negative")
    return RaySettings(
        address=address,
        num_cpus=args.ray_num_cpus,
        num_gpus=args.ray_num_gpus,
        runtime_env=runtime_env,
        python=args.ray_python,
    )


def _vllm_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> VLLMSettings | None:
    url, key = vllm_from_environment()
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        parser.error(f"VLLM_BASE_URL must be an http(s) URL, got {url!r}")
    if args.vllm_check_seconds <= 0:
        parser.error("--vllm-check-seconds must be positive")
    return VLLMSettings(base_url=url, api_key=key, check_seconds=args.vllm_check_seconds)


class _Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGINT/SIGTERM and exiting with status 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop_signal, self._stop)
        try:
            yield
        finally:
            for stop_signal in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(stop_signal)

    def _stop(self) -> None:
        if self.should_exit:  # a second signal skips waiting for open connections
            self.force_exit = True
        self.should_exit = True


async def _serve(config: TrainerConfig, host: str, port: int, log_level: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    bound_port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(
            create_app(config),
            log_level=log_level,
            timeout_graceful_shutdown=10,
            lifespan="on",
        )
    )
    runs = f"Ray jobs at {config.ray.address}" if config.ray else "local subprocesses"
    serves = f"vLLM at {config.vllm.base_url}" if config.vllm else "built-in"
    sys.stdout.write(
        f"trainer listening on http://{host}:{bound_port}/v1 "
        f"(models {config.models_dir}, data {config.data_dir}, "
        f"auth {'on' if config.api_key else 'off'}, trainings: {runs}, serving: {serves})\n"
    )
    sys.stdout.flush()
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.models_dir.is_dir():
        parser.error(f"--models-dir {args.models_dir} is not a folder")
    gpus = tuple(item.strip() for item in args.gpus.split(",") if item.strip())
    config = TrainerConfig(
        models_dir=args.models_dir.resolve(),
        data_dir=args.data_dir.resolve(),
        api_key=api_key_from_environment(),
        max_concurrent_trainings=max(1, args.max_concurrent_trainings),
        gpus=gpus,
        max_loaded_models=args.max_loaded_models,
        max_loaded_adapters=args.max_loaded_adapters,
        default_max_tokens=args.max_tokens,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        ray=_ray_settings(args, parser),
        vllm=_vllm_settings(args, parser),
    )
    # Refuse at once (not inside the lifespan) when another server holds the folder.
    try:
        lock_data_dir(config.data_dir).close()
    except DataDirLocked as exc:
        parser.error(str(exc))
    asyncio.run(_serve(config, args.host, args.port, args.log_level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
