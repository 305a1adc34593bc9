"""The contract between the server and one training run: a JSON spec in, a folder out.

`python -m trainer.train SPEC.json` reads a `TrainingSpec`, trains, and writes
into `spec.output_dir` (the run folder):

    events.jsonl        one OpenAI-shaped event per line (metrics, checkpoints), appended
    checkpoints.jsonl   the kept checkpoints (OpenAI checkpoint objects), rewritten whole
    checkpoints/step-N/ a PEFT adapter per kept non-final epoch
    adapter/            the final PEFT adapter (the tuned model)
    results.csv         step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy
    result.json         written last, only on success: trained tokens, timings
    error.json          on a handled failure: {"code", "message", "param"}

and exits with one of the `EXIT_*` codes. Nothing in the run depends on the
server's memory, so the same spec can be run by hand, by the local runner, or
as a Ray job (trainer/runners/).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer.errors import APIError, invalid_type, out_of_range, unknown_parameter

EVENTS_FILE = "events.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
RESULTS_CSV = "results.csv"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"

EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected error; error.json says which
EXIT_BAD_SPEC = 2  # the spec could not be read; nothing was trained
EXIT_BAD_DATA = 3  # a training or validation file is not usable
EXIT_OUT_OF_MEMORY = 4

# The launcher sets this so the run stops when the server that started it dies
# (a Ray job or a run by hand does not, and is not tied to any parent).
PARENT_PID_ENV = "TRAINER_PARENT_PID"
# When "1", each event is also printed on stdout as one line, EVENT_LINE_PREFIX then
# its JSON. The Ray runner sets it: Ray's job logs then carry the events too, so they
# reach the trainer even when it cannot (yet) read the run folder.
EVENTS_TO_STDOUT_ENV = "TRAINER_EVENTS_TO_STDOUT"
EVENT_LINE_PREFIX = "trainer-event: "


@dataclass(frozen=True, slots=True)
class LoraSettings:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    # "all-linear" (PEFT's every linear layer but the output head) or module names.
    target_modules: str | tuple[str, ...] = "all-linear"

    def to_dict(self) -> dict[str, Any]:
        modules = self.target_modules
        return {
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": modules if isinstance(modules, str) else list(modules),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> LoraSettings:
        modules = value.get("target_modules", "all-linear")
        return cls(
            r=int(value.get("r", 16)),
            alpha=float(value.get("alpha", 32.0)),
            dropout=float(value.get("dropout", 0.05)),
            target_modules=modules if isinstance(modules, str) else tuple(map(str, modules)),
        )


MODULE_NAME = re.compile(r"^[A-Za-z0-9_.*]{1,128}$")
MAX_LORA_RANK = 1024


def parse_lora(value: Any, param: str, base: LoraSettings) -> LoraSettings:
    """The `lora` extension object of a request (or a defaults file) over `base`.

    Keys: `r` (1-1024), `alpha` (> 0), `dropout` (0 <= d < 1), `target_modules`
    ("all-linear" or a list of module names). Missing keys keep `base`'s values;
    "auto" does too.
    """
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    settings = base
    for key, item in value.items():
        where = f"{param}.{key}"
        if item == "auto":
            continue
        if key == "r":
            if not isinstance(item, int) or isinstance(item, bool):
                raise invalid_type(where, "'auto' or an integer", item)
            if not 1 <= item <= MAX_LORA_RANK:
                raise out_of_range(where, item, 1, MAX_LORA_RANK)
            settings = replace(settings, r=item)
        elif key == "alpha":
            if not isinstance(item, int | float) or isinstance(item, bool):
                raise invalid_type(where, "'auto' or a number", item)
            if not 0 < item <= 100_000:
                raise out_of_range(where, item, 0, 100_000)
            settings = replace(settings, alpha=float(item))
        elif key == "dropout":
            if not isinstance(item, int | float) or isinstance(item, bool):
                raise invalid_type(where, "'auto' or a number", item)
            if not 0 <= item < 1:
                raise APIError(
                    400,
                    f"Invalid '{where}': expected a number >= 0 and < 1, but got {item} instead.",
                    param=where,
                    code="invalid_value",
                )
            settings = replace(settings, dropout=float(item))
        elif key == "target_modules":
            settings = replace(settings, target_modules=_target_modules(item, where))
        else:
            raise unknown_parameter(where)
    return settings


def _target_modules(value: Any, param: str) -> str | tuple[str, ...]:
    if value == "all-linear":
        return "all-linear"
    if not isinstance(value, list) or not value:
        raise invalid_type(param, "'all-linear' or a non-empty array of module names", value)
    if len(value) > 64:
        raise APIError(
            400,
            f"Invalid '{param}': at most 64 module names, got {len(value)}.",
            param=param,
            code="array_above_max_length",
        )
    for item in value:
        if not isinstance(item, str) or not MODULE_NAME.match(item):
            raise APIError(
                400,
                f"Invalid '{param}': {item!r} is not a module name (letters, digits, '_', '.').",
                param=param,
                code="invalid_value",
            )
    return tuple(value)


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    job_id: str
    model: str  # the base model's id
    model_path: str  # its Hugging Face folder
    training_file: str  # a chat JSONL path
    validation_file: str | None
    output_dir: str  # the run folder
    fine_tuned_model: str  # the tuned model's name, for checkpoint names and events
    n_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    max_length: int
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    checkpoints_kept: int = 3  # OpenAI keeps the last three epochs

    def to_json(self) -> str:
        body = asdict(self)
        body["lora"] = self.lora.to_dict()
        return json.dumps(body, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("a training spec is a JSON object")
        body["lora"] = LoraSettings.from_dict(body.get("lora") or {})
        return cls(**body)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)


def write_json_atomic(path: Path, value: Any) -> None:
    """Replace `path` with `value` as JSON so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
