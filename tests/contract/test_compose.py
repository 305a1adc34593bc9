"""No Docker engine runs here, so check that compose and the Dockerfile only
name things that exist in the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.conftest import REPO
from trainer.config import ENVIRONMENT_VARIABLES as TRAINER_VARIABLES

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
KNOWN_VARIABLES = {name.upper() for name in Settings.model_fields} | {"TIKTOKEN_CACHE_DIR"}
# The trainer is its own program with its own (small) set of variables.
VARIABLES_BY_SERVICE = {"trainer": TRAINER_VARIABLES}
# Ray nodes run Ray's own CLI from the trainer's image, not a module of this project.
RAY_NODES = ("ray-head", "ray-worker")
# What the vLLM container is given: vLLM's runtime LoRA switch and API key, offline hub.
VLLM_VARIABLES = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING", "VLLM_API_KEY", "HF_HUB_OFFLINE"}


def _services_with_build() -> list[tuple[str, dict]]:
    return [(name, spec) for name, spec in COMPOSE["services"].items() if "build" in spec]


def _project_processes() -> list[tuple[str, dict]]:
    return [(name, spec) for name, spec in _services_with_build() if name not in RAY_NODES]


def _flag(command: list[str], name: str) -> str:
    """The value of `--name=value` in a command."""
    return next(item.split("=", 1)[1] for item in command if item.startswith(f"{name}="))


def test_redis_has_aof_and_a_healthcheck() -> None:
    redis = COMPOSE["services"]["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "healthcheck" in redis


@pytest.mark.parametrize(("name", "spec"), _services_with_build())
def test_build_context_and_dockerfile_exist(name: str, spec: dict) -> None:
    context = REPO / spec["build"]["context"]
    assert context.is_dir(), name
    assert (context / spec["build"].get("dockerfile", "Dockerfile")).is_file(), name


@pytest.mark.parametrize(("name", "spec"), _project_processes())
def test_commands_name_runnable_modules(name: str, spec: dict) -> None:
    command = spec["command"]
    assert command[:2] == ["python", "-m"], name
    module = command[2]
    assert (REPO / module / "__main__.py").is_file(), f"{name}: no module {module}"


@pytest.mark.parametrize(("name", "spec"), _services_with_build())
def test_environment_names_are_settings_the_code_reads(name: str, spec: dict) -> None:
    known = VARIABLES_BY_SERVICE.get(name, KNOWN_VARIABLES)
    for variable in spec.get("environment", {}):
        assert variable in known, f"{name}: {variable} is read by nothing"


def test_api_and_worker_share_one_image_and_the_dataset_volume() -> None:
    api, worker = COMPOSE["services"]["api"], COMPOSE["services"]["worker"]
    assert api["build"] == worker["build"]
    assert api["command"] != worker["command"]
    assert set(api["volumes"]) & set(worker["volumes"])
    for spec in (api, worker):
        assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    assert COMPOSE["services"]["simulator"]["profiles"] == ["dev"]


@pytest.mark.parametrize(("name", "spec"), _services_with_build())
def test_dockerfile_copies_only_paths_that_exist(name: str, spec: dict) -> None:
    context = REPO / spec["build"]["context"]
    dockerfile = context / spec["build"].get("dockerfile", "Dockerfile")
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"COPY\s+(?!--)(.+)\s+\S+$", line)
        if match:
            for source in match.group(1).split():
                assert (context / source).exists(), f"{dockerfile} copies missing {source}"


def test_the_trainer_has_its_own_image_and_the_api_image_has_no_torch() -> None:
    trainer, api = COMPOSE["services"]["trainer"], COMPOSE["services"]["api"]
    assert trainer["build"] != api["build"]
    assert trainer["command"][:3] == ["python", "-m", "trainer"]
    assert "--models-dir" in trainer["command"]
    assert "--data-dir" in trainer["command"]
    assert any(volume.endswith(":/models:ro") for volume in trainer["volumes"])
    # torch and its kin belong to the trainer's requirements, never to uv.lock.
    locked = set(re.findall(r'^name = "([^"]+)"', (REPO / "uv.lock").read_text(), re.M))
    assert not locked & {"torch", "transformers", "peft", "trl", "accelerate"}
    assert "torch" not in (REPO / "Dockerfile").read_text()


def test_env_example_names_only_known_variables() -> None:
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            variable = line.split("=", 1)[0]
            assert variable in KNOWN_VARIABLES | TRAINER_VARIABLES, variable


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"make ([a-z-]+)", readme):
        assert target in targets, target
    assert Path(REPO / ".ci" / "run").read_text().count("make test") == 1


def test_ray_nodes_run_the_trainers_image_with_its_volumes_at_the_same_paths() -> None:
    services = COMPOSE["services"]
    trainer = services["trainer"]
    requirements = (REPO / "trainer" / "requirements.txt").read_text()
    assert re.search(r"^ray\[default\]==\d+\.\d+\.\d+$", requirements, re.M)
    for name in RAY_NODES:
        node = services[name]
        assert node["profiles"] == ["ray"], name
        assert node["build"] == trainer["build"], f"{name}: not the trainer's image"
        # --block: the container lives as long as its Ray processes do.
        assert node["command"][:2] == ["ray", "start"], name
        assert "--block" in node["command"], name
        # Run folders are written by the workers and read by the trainer at the same paths.
        assert set(node["volumes"]) == set(trainer["volumes"]), name
        assert "ports" not in node, f"{name}: the jobs API runs any command; keep it off the host"
    head, worker = services["ray-head"]["command"], services["ray-worker"]["command"]
    assert "--head" in head
    assert "--num-cpus=0" in head, "trainings belong on the workers"
    assert f"--address=ray-head:{_flag(head, '--port')}" in worker
    # The RAY_ADDRESS the compose file and the docs give is the head's jobs API.
    address = f"RAY_ADDRESS=http://ray-head:{_flag(head, '--dashboard-port')}"
    assert address in (REPO / "docker-compose.yml").read_text()
    assert address in (REPO / "docs" / "trainer.md").read_text()


def test_vllm_serves_the_shared_adapters_on_a_gpu_and_only_inside_the_network() -> None:
    services = COMPOSE["services"]
    vllm = services["vllm"]
    assert vllm["profiles"] == ["vllm"]
    image = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)", vllm["image"])
    assert image, "pin the vLLM image"
    # The GPU smoke script installs the same vLLM the image carries.
    smoke = (REPO / "scripts" / "gpu-smoke.sh").read_text()
    assert re.search(rf"^VLLM_VERSION={re.escape(image.group(1))}\b", smoke, re.M)
    assert '"vllm==$VLLM_VERSION"' in smoke
    command = vllm["command"]
    for flag in ("--enable-lora", "--max-lora-rank", "--served-model-name", "--model"):
        assert flag in command, flag
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert set(vllm["environment"]) <= VLLM_VARIABLES
    # Admin endpoints have one caller, the trainer: nothing published on the host.
    assert "ports" not in vllm
    assert "trainer-data:/data:ro" in vllm["volumes"]
    assert "trainer-data:/data" in services["trainer"]["volumes"]
    assert any(volume.endswith(":/models:ro") for volume in vllm["volumes"])
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    # The trainer passes the switches on from the environment, empty by default.
    for variable in ("RAY_ADDRESS", "VLLM_BASE_URL", "VLLM_API_KEY"):
        assert services["trainer"]["environment"][variable] == f"${{{variable}:-}}"


@pytest.mark.parametrize(("name", "spec"), _project_processes())
def test_writable_named_volumes_are_folders_the_image_gives_its_user(name: str, spec: dict) -> None:
    """A fresh named volume takes the image folder's owner; a missing folder is root's,
    and the image's unprivileged user could not write its state there."""
    dockerfile = (REPO / spec["build"]["context"] / spec["build"]["dockerfile"]).read_text()
    owned = {
        path
        for line in dockerfile.splitlines()
        if "chown" in line
        for path in line.split("chown", 1)[1].split()[1:]
    }
    for volume in spec.get("volumes", []):
        source, target, *mode = volume.split(":")
        if source in COMPOSE["volumes"] and mode != ["ro"]:
            assert target in owned, f"{name}: {target} is not created and owned in the image"
