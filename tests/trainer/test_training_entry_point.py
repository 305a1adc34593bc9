"""`python -m trainer.train SPEC.json` on its own: the tiny model learns only when it is
built to, and the entry point's exit codes and files say what happened."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.trainer.conftest import build_tiny_model

EPOCHS = 8


def _spec(model_dir: Path, train_file: Path, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    spec = {
        "job_id": "ftjob-entrypoint",
        "model": model_dir.name,
        "model_path": str(model_dir),
        "training_file": str(train_file),
        "validation_file": None,
        "output_dir": str(run_dir),
        "fine_tuned_model": f"ft:{model_dir.name}::testtest",
        "n_epochs": EPOCHS,
        "batch_size": 2,
        "learning_rate": 5e-3,
        "seed": 3,
        "max_length": 512,
        "lr_scheduler": "linear",
        "lora": {"r": 32, "alpha": 64, "dropout": 0.0, "target_modules": "all-linear"},
    }
    spec.update(overrides)
    return spec


def _train(python: Path, spec: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return subprocess.run(
        [str(python), "-m", "trainer.train", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _losses(run_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [event["data"]["train_loss"] for event in events if event["type"] == "metrics"]


def _tail_mean(values: list[float], count: int = 10) -> float:
    return sum(values[-count:]) / count


def test_default_init_with_a_tied_head_stalls_and_the_tiny_recipe_learns(
    trainer_python: Path, seed_file: Path, models_dir: Path, tmp_path: Path
) -> None:
    """The known trap: LoRA on a default-initialised, tied, random model barely moves the
    loss and nothing says so; a wide initialisation and an untied head learn."""
    stalled_model = tmp_path / "models" / "tiny-default-init"
    build_tiny_model(
        trainer_python, stalled_model, seed_file, "--init-range", "0.02", "--tie-embeddings"
    )
    runs = {}
    for name, model_dir in (("default", stalled_model), ("ours", models_dir / "tiny-chat")):
        run_dir = tmp_path / name / "run"
        done = _train(trainer_python, _spec(model_dir, seed_file, run_dir), tmp_path / name)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _losses(run_dir)

    default, ours = runs["default"], runs["ours"]
    assert len(default) == len(ours) == EPOCHS * 15
    # Ours loses most of its starting loss; the default barely moves from its own.
    assert _tail_mean(ours) < 0.25 * ours[0], (ours[0], _tail_mean(ours))
    assert _tail_mean(default) > 0.8 * default[0], (default[0], _tail_mean(default))


def test_the_run_folder_holds_the_adapter_results_and_checkpoints(
    trainer_python: Path, seed_file: Path, models_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    spec = _spec(models_dir / "tiny-chat", seed_file, run_dir, n_epochs=4)
    done = _train(trainer_python, spec, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["total_steps"] == 4 * 15
    assert result["trained_tokens"] > 0
    assert result["assistant_only_loss"] is True
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    checkpoints = [
        json.loads(line) for line in (run_dir / "checkpoints.jsonl").read_text().splitlines()
    ]
    # The last three epochs are kept; older checkpoint folders are removed.
    assert [c["step_number"] for c in checkpoints] == [30, 45, 60]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-30", "step-45"]
    assert not (run_dir / "error.json").exists()


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (
            b'{"messages": [{"role": "user", "content": "hi"}]}\n',
            "invalid_training_file",
            "Example 1 is missing an assistant message.",
        ),
        (b"not json\n", "invalid_training_file", "Example 1 is not valid JSON."),
    ],
)
def test_a_bad_training_file_exits_3_with_the_job_error(
    trainer_python: Path,
    models_dir: Path,
    tmp_path: Path,
    content: bytes,
    code: str,
    message: str,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    run_dir = tmp_path / "run"
    done = _train(trainer_python, _spec(models_dir / "tiny-chat", bad, run_dir), tmp_path)
    assert done.returncode == 3, done.stderr[-3000:]
    error = json.loads((run_dir / "error.json").read_text())
    assert error["code"] == code
    assert error["param"] == "training_file"
    assert error["message"].endswith(message)
    assert not (run_dir / "result.json").exists()


def test_an_unreadable_spec_exits_2(trainer_python: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text('{"job_id": "x"}')
    done = subprocess.run(
        [str(trainer_python), "-m", "trainer.train", str(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot read the training spec" in done.stderr
