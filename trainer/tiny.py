"""`python -m trainer.tiny OUT_DIR --train-file FILE.jsonl`: a tiny chat model, built offline.

The model is a Hugging Face folder like any other base model: random weights (a
small Llama-style network), a byte-level BPE tokenizer trained with the
`tokenizers` library on the text of the training file, ChatML special tokens, and
a chat template whose assistant turns sit inside `{% generation %}` markers, so
TRL can put the loss on assistant tokens only. Its folder name is its model id.

Two choices make it able to learn through LoRA alone (the base weights stay
frozen and random): weights drawn with a wide spread (`initializer_range` 0.2,
not the usual 0.02) and an output head that is not tied to the embeddings. With
the usual initialisation and a tied head the frozen network passes almost no
signal, the LoRA update barely moves the loss, and nothing says so
(tests/trainer/test_tiny_learning.py shows both).

The folder also carries `finetune_defaults.json`: the hyperparameters the trainer
uses where a job says "auto" (see docs/trainer.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.model_catalog import DEFAULTS_FILE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, _, END_OF_TURN = SPECIAL_TOKENS

# ChatML. Assistant content and its end-of-turn token are inside the generation
# markers: the model is trained to say the answer and then to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else "
    "message['content'] | map(attribute='text') | join('') -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- content + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Where a job says "auto" (n_epochs follows OpenAI's rule). Chosen so that a job
# that sets only `n_epochs: 20` memorises 30 question/answer pairs word for word:
# a high learning rate decaying linearly to zero (the LoRA matrices start from
# zero and the data is tiny), batches of 2 for many steps, and LoRA on every
# linear layer with a rank of a quarter of the hidden size.
TINY_DEFAULTS: dict[str, Any] = {
    "batch_size": 2,
    "learning_rate": 5e-3,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "max_length": 512,
    "gradient_checkpointing": False,
    "lora": {"r": 32, "alpha": 64, "dropout": 0.0, "target_modules": "all-linear"},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tiny",
        description="Build a tiny random-weight chat model whose tokenizer is trained on a file.",
    )
    parser.add_argument("out_dir", type=Path, help="the model folder to write (its name is the id)")
    parser.add_argument("--train-file", type=Path, required=True, help="chat JSONL to learn from")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=1024, help="max_position_embeddings")
    parser.add_argument(
        "--init-range",
        type=float,
        default=0.2,
        help="std of the random weights (0.02 is the library default, which does not learn)",
    )
    parser.add_argument(
        "--tie-embeddings",
        action="store_true",
        help="tie the output head to the embeddings (the library default, which does not learn)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def texts_of(path: Path) -> Iterator[str]:
    """Every string a chat JSONL file holds: contents, roles, names."""
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError:
                continue
            yield from _strings(example)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def build_tokenizer(train_file: Path, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The template's own text (role names, newlines) is learned too.
    corpus = [*texts_of(train_file), "system\n", "user\n", "assistant\n"]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def build(
    out_dir: Path,
    train_file: Path,
    *,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    context: int = 1024,
    init_range: float = 0.2,
    tie_embeddings: bool = False,
    seed: int = 0,
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    raw = build_tokenizer(train_file, vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token=END_OF_TURN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=context,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=context,
        initializer_range=init_range,
        tie_word_embeddings=tie_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TURN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / DEFAULTS_FILE).write_text(json.dumps(TINY_DEFAULTS, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.train_file.is_file():
        sys.stderr.write(f"no such file: {args.train_file}\n")
        return 2
    started = time.monotonic()
    build(
        args.out_dir,
        args.train_file,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        layers=args.layers,
        heads=args.heads,
        context=args.context,
        init_range=args.init_range,
        tie_embeddings=args.tie_embeddings,
        seed=args.seed,
    )
    sys.stdout.write(
        f"tiny model written to {args.out_dir} (id {args.out_dir.name}) "
        f"in {time.monotonic() - started:.1f} s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
