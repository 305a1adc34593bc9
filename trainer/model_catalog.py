"""The base models: Hugging Face folders under `--models-dir`, one model per folder.

A folder counts when it holds `config.json` and `tokenizer.json`; its name is the
model id. Nothing is downloaded: the folder is all there is. A folder may carry
`finetune_defaults.json`, the hyperparameters used where a job says "auto":

    {"n_epochs": 3, "batch_size": 4, "learning_rate": 2e-4, "lr_scheduler": "linear",
     "warmup_ratio": 0.03, "weight_decay": 0.0, "max_length": 2048,
     "gradient_checkpointing": true,
     "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}}

Every key is optional; a missing `n_epochs` or `batch_size` follows OpenAI's rule
for the number of examples. Reading the catalog never imports torch.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer.errors import APIError
from trainer.spec import LoraSettings, parse_lora

logger = logging.getLogger("trainer.models")

DEFAULTS_FILE = "finetune_defaults.json"
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SCHEDULERS = (
    "linear",
    "cosine",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
)
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True, slots=True)
class Defaults:
    n_epochs: int | None = None  # None: OpenAI's rule by example count
    batch_size: int | None = None  # None: OpenAI's rule by example count
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_length: int = 2048
    gradient_checkpointing: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs if self.n_epochs is not None else "auto",
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
            "learning_rate": self.learning_rate,
            "lr_scheduler": self.lr_scheduler,
            "warmup_ratio": self.warmup_ratio,
            "weight_decay": self.weight_decay,
            "max_length": self.max_length,
            "gradient_checkpointing": self.gradient_checkpointing,
            "lora": self.lora.to_dict(),
        }


def auto_epochs(n_examples: int) -> int:
    """OpenAI's default: 3, raised for small files and lowered for huge ones."""
    epochs = 3
    if n_examples * epochs < 100:
        epochs = min(25, 100 // max(1, n_examples))
    elif n_examples * epochs > 25_000:
        epochs = max(1, 25_000 // n_examples)
    return epochs


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples per batch, the small batches OpenAI picks."""
    return max(1, min(256, math.ceil(n_examples * 0.002)))


@dataclass(frozen=True, slots=True)
class BaseModel:
    id: str
    path: Path
    created: int
    context_length: int
    architecture: str
    defaults: Defaults

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    def chat_template(self) -> str | None:
        """The chat template, from `chat_template.jinja` or `tokenizer_config.json`."""
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        config = _read_json(self.path / "tokenizer_config.json")
        template = config.get("chat_template") if config else None
        return template if isinstance(template, str) else None

    def special_tokens(self) -> dict[str, str | None]:
        config = _read_json(self.path / "tokenizer_config.json") or {}
        found: dict[str, str | None] = {}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = config.get(name)
            if isinstance(value, dict):  # the older AddedToken form
                value = value.get("content")
            found[name] = value if isinstance(value, str) else None
        return found


class DefaultsError(ValueError):
    pass


def parse_defaults(value: Any, context_length: int) -> Defaults:
    """A `finetune_defaults.json` body, checked; raises DefaultsError naming the bad key."""
    if not isinstance(value, dict):
        raise DefaultsError("must be a JSON object")
    known = {
        "n_epochs",
        "batch_size",
        "learning_rate",
        "lr_scheduler",
        "warmup_ratio",
        "weight_decay",
        "max_length",
        "gradient_checkpointing",
        "lora",
    }
    unknown = sorted(set(value) - known)
    if unknown:
        raise DefaultsError(f"unknown key {unknown[0]!r}")
    overrides: dict[str, Any] = {}
    for key in ("n_epochs", "batch_size", "max_length"):
        if key in value and value[key] != "auto":
            number = value[key]
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise DefaultsError(f"{key} must be a positive integer or 'auto'")
            overrides[key] = number
    for key in ("learning_rate", "warmup_ratio", "weight_decay"):
        if key in value:
            number = value[key]
            if not isinstance(number, int | float) or isinstance(number, bool) or number < 0:
                raise DefaultsError(f"{key} must be a number >= 0")
            overrides[key] = float(number)
    if overrides.get("learning_rate", 1.0) <= 0:
        raise DefaultsError("learning_rate must be above 0")
    if overrides.get("warmup_ratio", 0.0) >= 1:
        raise DefaultsError("warmup_ratio must be below 1")
    if "lr_scheduler" in value:
        if value["lr_scheduler"] not in SCHEDULERS:
            raise DefaultsError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}")
        overrides["lr_scheduler"] = value["lr_scheduler"]
    if "gradient_checkpointing" in value:
        if not isinstance(value["gradient_checkpointing"], bool):
            raise DefaultsError("gradient_checkpointing must be true or false")
        overrides["gradient_checkpointing"] = value["gradient_checkpointing"]
    if "lora" in value:
        try:
            overrides["lora"] = parse_lora(value["lora"], "lora", LoraSettings())
        except APIError as exc:
            raise DefaultsError(exc.message) from exc
    defaults = replace(Defaults(max_length=min(2048, context_length)), **overrides)
    return replace(defaults, max_length=min(defaults.max_length, context_length))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _context_length(config: dict[str, Any]) -> int:
    for source in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return 2048


def _load(path: Path) -> BaseModel | None:
    config = _read_json(path / "config.json")
    if config is None or not (path / "tokenizer.json").is_file():
        return None
    if not MODEL_ID.match(path.name):
        logger.warning("skipping model folder %s: the name is not a usable model id", path)
        return None
    context_length = _context_length(config)
    defaults = Defaults(max_length=min(2048, context_length))
    defaults_path = path / DEFAULTS_FILE
    if defaults_path.exists():
        try:
            body = json.loads(defaults_path.read_text(encoding="utf-8"))
            defaults = parse_defaults(body, context_length)
        except (ValueError, OSError) as exc:
            logger.error("skipping model %s: %s is not usable: %s", path.name, defaults_path, exc)
            return None
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    return BaseModel(
        id=path.name,
        path=path,
        created=int((path / "config.json").stat().st_mtime),
        context_length=context_length,
        architecture=str(architectures[0]),
        defaults=defaults,
    )


class ModelCatalog:
    """The base models in one folder, re-read when the folder changes."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._stamp: int | None = None
        self._models: dict[str, BaseModel] = {}

    def _refresh(self) -> None:
        try:
            stamp = self.models_dir.stat().st_mtime_ns
        except OSError:
            self._models, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        found: dict[str, BaseModel] = {}
        for child in sorted(self.models_dir.iterdir()):
            if child.is_dir():
                model = _load(child)
                if model is not None:
                    found[model.id] = model
        self._models, self._stamp = found, stamp

    def all(self) -> list[BaseModel]:
        self._refresh()
        return list(self._models.values())

    def get(self, model_id: str) -> BaseModel | None:
        self._refresh()
        return self._models.get(model_id)
