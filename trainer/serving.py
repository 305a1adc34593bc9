"""Built-in serving with transformers + PEFT: base models and their LoRA adapters.

One thread owns every model (a single-worker executor), so generation never blocks
the event loop and no two requests touch a model at once. Base models load on
first use and stay in memory up to `max_loaded_models`; adapters attach to their
base as named PEFT adapters on first use, up to `max_loaded_adapters` in all; the
least recently used go first. A base-model request on a base that carries
adapters runs with the adapters disabled.

torch and transformers are imported the first time a model is needed, so the
server starts (and answers everything but chat) without paying for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import APIError
from trainer.model_catalog import BaseModel


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    model: str  # the id the caller named: a base model, a tuned model or a checkpoint
    base: BaseModel
    adapter_dir: Path | None
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    n: int


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    finish_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A streamed fragment of choice `index`."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    index: int
    generation: Generation


@dataclass(slots=True)
class _LoadedBase:
    model: Any
    tokenizer: Any
    device: str
    peft: bool = False
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # model id -> key


def _adapter_key(model_id: str) -> str:
    # PEFT adapter names become module keys: no dots or colons.
    return "adapter_" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


def context_too_long(prompt_tokens: int, context: int) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {context} tokens. However, your messages "
        f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


class _TextStream:
    """Receives generated tokens (transformers' streamer protocol) and turns them into text.

    Text is released only when it can no longer change: not while the last
    character is an incomplete UTF-8 sequence, and not while the end of the text
    could still turn out to be the start of a stop sequence. A stop sequence ends
    the text before it and asks generation to stop.
    """

    def __init__(
        self, tokenizer: Any, stops: tuple[str, ...], emit: Callable[[str], None] | None
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.emit = emit
        self.token_ids: list[int] = []
        self.released = ""
        self.stopped = False
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() hands over the prompt first
            self._prompt_seen = True
            return
        self.token_ids.extend(int(token) for token in value.reshape(-1).tolist())
        self._advance(final=False)

    def end(self) -> None:
        self._advance(final=True)

    def _advance(self, *, final: bool) -> None:
        if self.stopped:
            return
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if not final:
            text = text.rstrip("\ufffd")
        cut = min((i for i in (text.find(stop) for stop in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped = text[:cut], True
        elif not final:
            text = text[: len(text) - self._held_back(text)]
        if not text.startswith(self.released) or len(text) <= len(self.released):
            return
        new, self.released = text[len(self.released) :], text
        if self.emit is not None:
            self.emit(new)

    def _held_back(self, text: str) -> int:
        """How many trailing characters might begin a stop sequence."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    longest = max(longest, size)
                    break
        return longest


class ModelServer:
    def __init__(self, max_loaded_models: int, max_loaded_adapters: int, max_tokens: int) -> None:
        self.max_loaded_models = max(1, max_loaded_models)
        self.max_loaded_adapters = max(1, max_loaded_adapters)
        self.default_max_tokens = max_tokens
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._bases: OrderedDict[str, _LoadedBase] = OrderedDict()
        # Every attached adapter, least recently used first: model id -> base id.
        self._adapters: OrderedDict[str, str] = OrderedDict()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the event loop's side -------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        try:
            return await loop.run_in_executor(
                self._executor, self._generate_all, request, None, cancelled
            )
        finally:
            cancelled.set()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Piece | Finished]:
        """Pieces of text as they are generated, then each choice's totals."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Piece | Finished | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: Piece | Finished | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._generate_all(request, put, cancelled)
            except BaseException as exc:  # handed to the event loop, raised there
                put(exc)
            else:
                put(None)

        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()  # a client that went away stops the generation
            if future.done():
                future.result()

    async def prepare(self, base: BaseModel, model_id: str, adapter_dir: Path | None) -> None:
        """Load a base model (and an adapter) now, ahead of the first chat."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._prepare, base, model_id, adapter_dir)

    async def unload(self, model_id: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._detach, model_id)

    def loaded(self) -> dict[str, list[str]]:
        """Base model id -> the tuned model ids attached to it (a snapshot)."""
        return {base: list(loaded.adapters) for base, loaded in list(self._bases.items())}

    # -- the model thread's side -----------------------------------------------------

    def _prepare(self, base: BaseModel, model_id: str, adapter_dir: Path | None) -> None:
        loaded = self._base(base)
        if adapter_dir is not None:
            self._attach(loaded, base.id, model_id, adapter_dir)

    def _base(self, base: BaseModel) -> _LoadedBase:
        found = self._bases.get(base.id)
        if found is not None:
            self._bases.move_to_end(base.id)
            return found
        while len(self._bases) >= self.max_loaded_models:
            _, evicted = self._bases.popitem(last=False)
            for model_id in evicted.adapters:
                self._adapters.pop(model_id, None)
            del evicted
            gc.collect()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(base.path),
            local_files_only=True,
            # As stored on a GPU (bf16 checkpoints stay bf16); float32 on a CPU.
            dtype="auto" if device == "cuda" else torch.float32,
        )
        model.to(device)
        model.eval()
        loaded = _LoadedBase(model=model, tokenizer=tokenizer, device=device)
        self._bases[base.id] = loaded
        return loaded

    def _attach(self, loaded: _LoadedBase, base_id: str, model_id: str, adapter_dir: Path) -> str:
        key = _adapter_key(model_id)
        if model_id in loaded.adapters:
            loaded.adapters.move_to_end(model_id)
            self._adapters.move_to_end(model_id)
            return key
        while len(self._adapters) >= self.max_loaded_adapters:
            self._detach(next(iter(self._adapters)))
        if not loaded.peft:
            from peft import PeftModel

            loaded.model = PeftModel.from_pretrained(
                loaded.model, str(adapter_dir), adapter_name=key, is_trainable=False
            )
            loaded.peft = True
        else:
            loaded.model.load_adapter(str(adapter_dir), adapter_name=key, is_trainable=False)
        loaded.model.to(loaded.device)
        loaded.model.eval()
        loaded.adapters[model_id] = key
        self._adapters[model_id] = base_id
        return key

    def _detach(self, model_id: str) -> bool:
        base_id = self._adapters.pop(model_id, None)
        if base_id is None:
            return False
        loaded = self._bases.get(base_id)
        if loaded is None:
            return True
        key = loaded.adapters.pop(model_id)
        if loaded.adapters:
            loaded.model.delete_adapter(key)
        else:
            # The last adapter: take the LoRA layers out and keep the plain base model.
            loaded.model = loaded.model.unload()
            loaded.peft = False
        gc.collect()
        return True

    @contextlib.contextmanager
    def _selected(self, request: GenerationRequest) -> Iterator[_LoadedBase]:
        loaded = self._base(request.base)
        if request.adapter_dir is not None:
            key = self._attach(loaded, request.base.id, request.model, request.adapter_dir)
            loaded.model.set_adapter(key)
            yield loaded
        elif loaded.peft:
            with loaded.model.disable_adapter():
                yield loaded
        else:
            yield loaded

    def _generate_all(
        self,
        request: GenerationRequest,
        put: Callable[[Piece | Finished | BaseException | None], None] | None,
        cancelled: threading.Event,
    ) -> list[Generation]:
        results: list[Generation] = []
        with self._selected(request) as loaded:
            for index in range(request.n):
                if cancelled.is_set():
                    break

                def emit(text: str, index: int = index) -> None:
                    if put is not None:
                        put(Piece(index, text))

                generation = self._generate_one(loaded, request, index, emit, cancelled)
                results.append(generation)
                if put is not None:
                    put(Finished(index, generation))
        return results

    def _generate_one(
        self,
        loaded: _LoadedBase,
        request: GenerationRequest,
        index: int,
        emit: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Generation:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer = loaded.tokenizer
        encoded = tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        input_ids = encoded["input_ids"].to(loaded.device)
        prompt_tokens = int(input_ids.shape[1])
        room = request.base.context_length - prompt_tokens
        if room <= 0:
            raise context_too_long(prompt_tokens, request.base.context_length)
        limit = min(request.max_tokens or self.default_max_tokens, room)
        text = _TextStream(tokenizer, request.stop, emit)

        class StopWhenAsked(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, ids: Any, _scores: Any, **__: Any) -> Any:
                done = text.stopped or cancelled.is_set()
                return torch.full((ids.shape[0],), done, dtype=torch.bool, device=ids.device)

        eos = loaded.model.generation_config.eos_token_id or tokenizer.eos_token_id
        options: dict[str, Any] = {
            "max_new_tokens": limit,
            "streamer": text,
            "stopping_criteria": StoppingCriteriaList([StopWhenAsked()]),
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
            "eos_token_id": eos,
        }
        if request.temperature > 0:
            options.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
            if request.seed is not None:
                torch.manual_seed(request.seed + index)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = loaded.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(loaded.device),
                **options,
            )
        generated = output[0][prompt_tokens:].tolist()
        end_ids = set(eos if isinstance(eos, list) else [eos])
        ended = bool(generated) and generated[-1] in end_ids
        completion_tokens = len(generated) - (1 if ended else 0)
        finish = "stop" if ended or text.stopped or len(generated) < limit else "length"
        return Generation(text.released, finish, prompt_tokens, completion_tokens)
