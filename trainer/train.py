"""`python -m trainer.train SPEC.json`: one LoRA training run, from a spec to a folder.

The run reads a `TrainingSpec` (see `trainer/spec.py` for the folder it writes and
the exit codes), trains a PEFT LoRA adapter on the base model's Hugging Face
folder with TRL's `SFTTrainer`, and reports as it goes: a `metrics` event per
step, an adapter and a checkpoint event per epoch (the last three kept), then
the final adapter, the results CSV and `result.json`. It needs nothing from the
server that launched it, so the same command runs by hand or as a Ray job.

The loss is on assistant tokens only when the chat template marks them with
`{% generation %}` (or TRL knows how to add the markers for that template);
otherwise it is on whole conversations and a `warn` event says so.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import ids, training_data
from trainer.spec import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    CHECKPOINTS_FILE,
    ERROR_FILE,
    EVENT_LINE_PREFIX,
    EVENTS_FILE,
    EVENTS_TO_STDOUT_ENV,
    EXIT_BAD_DATA,
    EXIT_BAD_SPEC,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    PARENT_PID_ENV,
    RESULT_FILE,
    RESULTS_CSV,
    TrainingSpec,
    write_json_atomic,
)

RESULTS_HEADER = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
# Validation runs about this many times over a job (and never more than once a step).
EVALUATIONS_PER_JOB = 20


class DataError(Exception):
    """A training or validation file that cannot be trained on; carries the job's error."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


class EventLog:
    """Appends OpenAI-shaped events to the run's `events.jsonl`, one line each.

    With `TRAINER_EVENTS_TO_STDOUT=1` each event is also printed on stdout (one
    `trainer-event: {json}` line), so a runner that only sees the process's output
    (Ray's job logs) still receives the events.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.to_stdout = os.environ.get(EVENTS_TO_STDOUT_ENV) == "1"

    def write(
        self,
        message: str,
        *,
        level: str = "info",
        type_: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        event = {
            "id": ids.event_id(),
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "type": type_,
            "data": data or {},
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
        if self.to_stdout:
            # ASCII-escaped, so the line survives whatever encoding the log is read in.
            sys.stdout.write(EVENT_LINE_PREFIX + json.dumps(event) + "\n")
            sys.stdout.flush()


@dataclass
class StepMetrics:
    step: int
    train_loss: float
    train_accuracy: float | None
    valid_loss: float | None = None
    valid_accuracy: float | None = None

    def event_data(self, total_steps: int) -> dict[str, Any]:
        data: dict[str, Any] = {
            "step": self.step,
            "total_steps": total_steps,
            "train_loss": round(self.train_loss, 6),
            "train_mean_token_accuracy": _rounded(self.train_accuracy),
        }
        if self.valid_loss is not None:
            data["valid_loss"] = round(self.valid_loss, 6)
            data["valid_mean_token_accuracy"] = _rounded(self.valid_accuracy)
        return data

    def csv_row(self) -> str:
        def cell(value: float | None) -> str:
            return "" if value is None else f"{value:.5f}"

        return ",".join(
            [
                str(self.step),
                cell(self.train_loss),
                cell(self.train_accuracy),
                cell(self.valid_loss),
                cell(self.valid_accuracy),
            ]
        )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass
class RunRecord:
    """What the run has reported so far; the callback fills it in."""

    steps: list[StepMetrics] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    latest_valid: tuple[float, float | None] | None = None


def _exit_with_parent() -> None:
    """When launched by the server, stop if the server dies (Linux's parent-death signal)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # the server died before the signal was armed
        sys.exit(EXIT_FAILED)


def _offline() -> None:
    """Nothing is downloaded at run time: the model folder is all there is."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _conversations(path: str, param: str) -> list[dict[str, Any]]:
    try:
        conversations = training_data.load_conversations(Path(path))
    except ValueError as exc:
        kind = "training" if param == "training_file" else "validation"
        raise DataError(
            f"invalid_{param}",
            f"The job failed due to an invalid {kind} file. {exc}",
            param,
        ) from exc
    except OSError as exc:
        raise DataError(f"invalid_{param}", f"The {param} could not be read: {exc}", param) from exc
    return [{"messages": messages} for messages in conversations]


def _save_adapter(model: Any, target: Path) -> None:
    """Write an adapter folder whole, so a reader never finds half of one."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _make_reporter(spec: TrainingSpec, events: EventLog, record: RunRecord) -> Any:
    from transformers import TrainerCallback

    run_dir = spec.run_dir

    class Reporter(TrainerCallback):  # type: ignore[misc]
        """Turns the trainer's logs into events, checkpoints and results rows."""

        def __init__(self) -> None:
            self.pending: StepMetrics | None = None
            self.total_steps = 0

        def on_train_begin(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            self.total_steps = int(state.max_steps)

        def on_log(self, _args: Any, state: Any, _control: Any, logs: Any = None, **_: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                self._flush()
                accuracy = logs.get("mean_token_accuracy")
                self.pending = StepMetrics(
                    step=int(state.global_step),
                    train_loss=float(logs["loss"]),
                    train_accuracy=None if accuracy is None else float(accuracy),
                )
            elif "eval_loss" in logs:
                valid_accuracy = logs.get("eval_mean_token_accuracy")
                valid = (
                    float(logs["eval_loss"]),
                    None if valid_accuracy is None else float(valid_accuracy),
                )
                record.latest_valid = valid
                if self.pending is not None and self.pending.step == state.global_step:
                    self.pending.valid_loss, self.pending.valid_accuracy = valid
                    self._flush()

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self._flush()

        def on_train_end(self, *_: Any, **__: Any) -> None:
            self._flush()

        def on_epoch_end(
            self, _args: Any, state: Any, _control: Any, model: Any = None, **_: Any
        ) -> None:
            self._flush()
            step = int(state.global_step)
            final = step >= self.total_steps
            name = (
                spec.fine_tuned_model
                if final
                else ids.checkpoint_model_name(spec.fine_tuned_model, step)
            )
            target = run_dir / (ADAPTER_DIR if final else f"{CHECKPOINTS_DIR}/step-{step}")
            target.parent.mkdir(parents=True, exist_ok=True)
            _save_adapter(model, target)
            metrics: dict[str, float] = {"step": float(step)}
            if record.steps:
                last = record.steps[-1]
                metrics["train_loss"] = round(last.train_loss, 6)
                if last.train_accuracy is not None:
                    metrics["train_mean_token_accuracy"] = round(last.train_accuracy, 6)
            if record.latest_valid is not None:
                metrics["valid_loss"] = round(record.latest_valid[0], 6)
                if record.latest_valid[1] is not None:
                    metrics["valid_mean_token_accuracy"] = round(record.latest_valid[1], 6)
            record.checkpoints.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": ids.checkpoint_id(),
                    "created_at": int(time.time()),
                    "fine_tuned_model_checkpoint": name,
                    "fine_tuning_job_id": spec.job_id,
                    "metrics": metrics,
                    "step_number": step,
                    # Not OpenAI's: where the adapter lies inside the run folder.
                    "adapter_dir": str(target.relative_to(run_dir)),
                }
            )
            self._prune_checkpoints()
            if not final:
                events.write(f"Checkpoint created at step {step} with Snapshot ID: {name}")

        def _prune_checkpoints(self) -> None:
            kept = record.checkpoints[-spec.checkpoints_kept :]
            for dropped in record.checkpoints[: -spec.checkpoints_kept]:
                if dropped["adapter_dir"] != ADAPTER_DIR:
                    shutil.rmtree(run_dir / dropped["adapter_dir"], ignore_errors=True)
            record.checkpoints[:] = kept
            lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in kept)
            staging = run_dir / f".{CHECKPOINTS_FILE}.tmp"
            staging.write_text(lines, encoding="utf-8")
            os.replace(staging, run_dir / CHECKPOINTS_FILE)

        def _flush(self) -> None:
            metrics, self.pending = self.pending, None
            if metrics is None:
                return
            record.steps.append(metrics)
            message = (
                f"Step {metrics.step}/{self.total_steps}: training loss={metrics.train_loss:.2f}"
            )
            if metrics.valid_loss is not None:
                message += f", validation loss={metrics.valid_loss:.2f}"
            events.write(message, type_="metrics", data=metrics.event_data(self.total_steps))

    return Reporter()


def _assistant_only_loss(tokenizer: Any, events: EventLog, model: str) -> bool:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template and has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        events.write(
            f"The chat template of {model} does not mark assistant turns with "
            "{% generation %}, so the loss covers whole conversations, not only the "
            "assistant's answers.",
            level="warn",
        )
        return False
    return True


def train(spec: TrainingSpec, events: EventLog) -> dict[str, Any]:
    """Run the training; returns what `result.json` records."""
    # The files first: a bad one fails in a moment, before the heavy imports.
    training_rows = _conversations(spec.training_file, "training_file")
    validation_rows = (
        _conversations(spec.validation_file, "validation_file") if spec.validation_file else None
    )
    _offline()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(spec.seed)
    cuda = torch.cuda.is_available()
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    assistant_only = _assistant_only_loss(tokenizer, events, spec.model)
    model = AutoModelForCausalLM.from_pretrained(
        spec.model_path,
        local_files_only=True,
        # On a GPU the weights stay as stored (a bf16 checkpoint loads in bf16, the tiny
        # model's float32 stays float32) and compute runs under bf16 autocast; on a CPU
        # everything is float32.
        dtype="auto" if cuda else torch.float32,
    )
    steps_per_epoch = -(-len(training_rows) // spec.batch_size)
    total_steps = steps_per_epoch * spec.n_epochs
    evaluate_every = max(1, total_steps // EVALUATIONS_PER_JOB)
    output = spec.run_dir / "hf"
    config = SFTConfig(
        output_dir=str(output),
        num_train_epochs=spec.n_epochs,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup_ratio,
        weight_decay=spec.weight_decay,
        max_length=spec.max_length,
        assistant_only_loss=assistant_only,
        gradient_checkpointing=spec.gradient_checkpointing,
        bf16=bf16,
        use_cpu=not cuda,
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="steps" if validation_rows else "no",
        eval_steps=evaluate_every if validation_rows else None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = spec.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules
        if isinstance(lora.target_modules, str)
        else list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    record = RunRecord()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(training_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_make_reporter(spec, events, record)],
    )
    tokens_per_epoch = sum(len(row) for row in trainer.train_dataset["input_ids"])
    started = time.monotonic()
    trainer.train()
    runtime = time.monotonic() - started
    shutil.rmtree(output, ignore_errors=True)  # the trainer's own scratch folder

    trained_tokens = tokens_per_epoch * spec.n_epochs
    results = [RESULTS_HEADER, *(step.csv_row() for step in record.steps)]
    (spec.run_dir / RESULTS_CSV).write_text("\n".join(results) + "\n", encoding="utf-8")
    return {
        "fine_tuned_model": spec.fine_tuned_model,
        "trained_tokens": trained_tokens,
        "total_steps": int(trainer.state.max_steps),
        "train_runtime_seconds": round(runtime, 3),
        "tokens_per_second": round(trained_tokens / runtime, 1) if runtime > 0 else None,
        "final_train_loss": record.steps[-1].train_loss if record.steps else None,
        "assistant_only_loss": assistant_only,
        "device": "cuda" if cuda else "cpu",
    }


def _fail(run_dir: Path, code: str, message: str, param: str | None = None) -> None:
    write_json_atomic(run_dir / ERROR_FILE, {"code": code, "message": message, "param": param})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.train", description="Run one LoRA training from a JSON spec."
    )
    parser.add_argument("spec", type=Path, help="the training spec (JSON)")
    args = parser.parse_args(argv)
    try:
        spec = TrainingSpec.from_json(args.spec.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        sys.stderr.write(f"cannot read the training spec {args.spec}: {exc}\n")
        return EXIT_BAD_SPEC
    _exit_with_parent()
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, ERROR_FILE):
        (spec.run_dir / stale).unlink(missing_ok=True)
    events = EventLog(spec.run_dir / EVENTS_FILE)
    try:
        result = train(spec, events)
    except DataError as exc:
        _fail(spec.run_dir, exc.code, exc.message, exc.param)
        return EXIT_BAD_DATA
    except MemoryError:
        _fail(spec.run_dir, "out_of_memory", "Training ran out of memory.")
        return EXIT_OUT_OF_MEMORY
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
            _fail(spec.run_dir, "out_of_memory", f"Training ran out of memory: {exc}")
            return EXIT_OUT_OF_MEMORY
        traceback.print_exc()
        _fail(spec.run_dir, "training_error", f"Training failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    write_json_atomic(spec.run_dir / RESULT_FILE, result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
