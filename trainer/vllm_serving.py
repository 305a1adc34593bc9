"""Serving tuned models through vLLM (`VLLM_BASE_URL`), as LoRA adapters loaded at run time.

vLLM runs one base model (`vllm serve <folder> --served-model-name <base id>
--enable-lora --max-lora-rank N`, with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). The
trainer is the only caller of vLLM's admin endpoints:

    POST /v1/load_lora_adapter    {"lora_name": <tuned model id>, "lora_path": <adapter folder>}
    POST /v1/unload_lora_adapter  {"lora_name": <tuned model id>}
    GET  /v1/models               the base model and every adapter vLLM holds

An adapter folder is named by its path inside the trainer's data folder, so vLLM
must see that folder at the same path (the shared volume the Ray nodes use too).

A job that succeeds has its adapter loaded into vLLM at once, in the background.
Deploying (the trainer's own `POST /v1/load_lora_adapter`) makes sure it is loaded
and asks vLLM for a one-token answer from it, so a 200 means the model answers
through vLLM; the first chat for a tuned model not loaded yet loads it too. Chat for base and
tuned models is then forwarded to vLLM as raw bytes: the request body as the client
sent it, the answer as vLLM wrote it, server-sent events passed on chunk by chunk.

vLLM keeps adapters in memory only, so a restart of vLLM forgets them. The
deployed set is kept in `DATA_DIR/vllm_adapters.json`; every `check_seconds` it is
compared with vLLM's /v1/models and what is missing is loaded again, and a chat
answered 404 "does not exist" for a deployed model loads it again and is retried
once. Deleting a tuned model unloads it (and its checkpoints); when vLLM cannot be
reached then, the unload is retried by the same check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trainer.config import VLLMSettings
from trainer.errors import APIError
from trainer.registry import ServedModel
from trainer.spec import write_json_atomic

logger = logging.getLogger("trainer.vllm")

STATE_FILE = "vllm_adapters.json"
PROBE_MESSAGE = "Hello"


@dataclass(frozen=True, slots=True)
class Listing:
    """What vLLM's /v1/models showed: its base models and the adapters it holds."""

    bases: frozenset[str]
    adapters: frozenset[str]


@dataclass(slots=True)
class UpstreamAnswer:
    """vLLM's answer to a forwarded chat: whole (`content`) or as it arrives (`chunks`)."""

    status: int
    content_type: str
    content: bytes = b""
    chunks: AsyncIterator[bytes] | None = None


class VLLMServing:
    def __init__(self, settings: VLLMSettings, data_dir: Path) -> None:
        self.settings = settings
        self.state_path = data_dir / STATE_FILE
        headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._admin = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.admin_timeout_seconds, connect=5.0),
        )
        self._chat = httpx.AsyncClient(
            base_url=settings.base_url,
            headers={**headers, "accept-encoding": "identity"},
            timeout=httpx.Timeout(settings.chat_timeout_seconds, connect=5.0, write=60.0),
        )
        # Tuned models deployed here: model id -> the adapter folder vLLM loads.
        self._deployed: dict[str, str] = {}
        # Unloaded here while vLLM could not be told; unloaded there by the next check.
        self._retired: set[str] = set()
        self._listing: Listing | None = None
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._keeper: asyncio.Task[None] | None = None
        self._loading: set[asyncio.Task[None]] = set()
        self._problem: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._read_state()
        self._keeper = asyncio.create_task(self._keep(), name="vllm-keeper")

    async def close(self) -> None:
        for task in [self._keeper, *self._loading]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._admin.aclose()
        await self._chat.aclose()

    def describe(self) -> dict[str, Any]:
        listing = self._listing
        return {
            "base_url": self.settings.base_url,
            "reachable": self._problem is None and listing is not None,
            "problem": self._problem,
            "base_models": sorted(listing.bases) if listing else [],
            "deployed": sorted(self._deployed),
        }

    # -- deploy and undeploy -------------------------------------------------------------

    def after_training(self, served: ServedModel) -> None:
        """A job just produced this tuned model: load it into vLLM now, in the background."""
        task = asyncio.create_task(self._load_quietly(served), name=f"vllm-load-{served.id}")
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    async def _load_quietly(self, served: ServedModel) -> None:
        try:
            await self._require_base(served)
            await self._load(served.id, _adapter_path(served), known_ok=True)
        except APIError as exc:  # the deploy call or the first chat loads it later
            logger.warning("could not load %s into vLLM after training: %s", served.id, exc.message)

    async def deploy(self, served: ServedModel) -> None:
        """Make sure a tuned model is loaded into vLLM; return once it answers there."""
        await self._require_base(served)
        await self._load(served.id, _adapter_path(served), known_ok=True)
        if await self._probe(served):
            return
        # vLLM forgot it since (a restart the periodic check has not seen yet): load again.
        logger.warning("vLLM lost %s (restarted?); loading it again", served.id)
        await self._load(served.id, _adapter_path(served), known_ok=False)
        if not await self._probe(served):
            raise APIError(
                502,
                f"vLLM loaded {served.id} but does not know it when asked for an answer.",
                type="server_error",
                param="lora_name",
                code="adapter_not_answering",
            )

    async def undeploy(self, model_id: str) -> bool:
        """Unload a tuned model from vLLM; True when it was deployed."""
        async with self._locks[model_id]:
            was_deployed = self._deployed.pop(model_id, None) is not None
            if not await self._unload(model_id):
                self._retired.add(model_id)
            self._write_state()
            return was_deployed

    async def undeploy_family(self, tuned_id: str) -> None:
        """Unload a tuned model and every checkpoint of its job (a deleted model)."""
        family = [
            model_id
            for model_id in list(self._deployed)
            if model_id == tuned_id or model_id.startswith(f"{tuned_id}:ckpt-step-")
        ]
        for model_id in family or [tuned_id]:
            await self.undeploy(model_id)

    # -- chat ---------------------------------------------------------------------------

    async def chat(self, body: bytes, served: ServedModel, stream: bool) -> UpstreamAnswer:
        """Forward a chat request's bytes to vLLM; a model vLLM forgot is loaded again."""
        await self._require_base(served)
        if served.adapter_dir is not None:
            await self._load(served.id, _adapter_path(served), known_ok=True)
        for attempt in (1, 2):
            request = self._chat.build_request(
                "POST",
                "/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
            )
            try:
                response = await self._chat.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            content_type = response.headers.get("content-type", "application/json")
            if response.status_code == 404 and served.adapter_dir is not None and attempt == 1:
                text = await _read_all(response)
                if b"does not exist" in text:
                    logger.warning("vLLM lost %s (restarted?); loading it again", served.id)
                    await self._load(served.id, _adapter_path(served), known_ok=False)
                    continue
                return UpstreamAnswer(response.status_code, content_type, content=text)
            if not stream:
                content = await _read_all(response)
                return UpstreamAnswer(response.status_code, content_type, content=content)
            return UpstreamAnswer(response.status_code, content_type, chunks=_relay(response))
        raise AssertionError("unreachable: the second attempt always returns")  # pragma: no cover

    # -- vLLM's admin calls ------------------------------------------------------------------

    async def _load(self, model_id: str, path: str, *, known_ok: bool) -> None:
        async with self._locks[model_id]:
            listed = self._listing is not None and model_id in self._listing.adapters
            if known_ok and self._deployed.get(model_id) == path and listed:
                return
            try:
                response = await self._admin.post(
                    "/v1/load_lora_adapter", json={"lora_name": model_id, "lora_path": path}
                )
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            already = response.status_code == 400 and "already been loaded" in response.text
            if response.status_code != 200 and not already:
                raise APIError(
                    502,
                    f"vLLM could not load {model_id} from {path}: {_message(response)}",
                    type="server_error",
                    param="lora_name",
                    code="adapter_load_failed",
                )
            self._deployed[model_id] = path
            self._retired.discard(model_id)
            if self._listing is not None:
                self._listing = Listing(
                    self._listing.bases, self._listing.adapters | frozenset({model_id})
                )
            self._write_state()
            logger.info("vLLM serves %s (adapter %s)", model_id, path)

    async def _unload(self, model_id: str) -> bool:
        """True once vLLM no longer holds the adapter (including when it never did)."""
        try:
            response = await self._admin.post(
                "/v1/unload_lora_adapter", json={"lora_name": model_id}
            )
        except httpx.HTTPError as exc:
            logger.warning("could not unload %s from vLLM now: %s", model_id, exc)
            return False
        if response.status_code not in (200, 404):
            logger.warning("vLLM refused to unload %s: %s", model_id, _message(response))
            return False
        if self._listing is not None:
            self._listing = Listing(
                self._listing.bases, self._listing.adapters - frozenset({model_id})
            )
        return True

    async def _probe(self, served: ServedModel) -> bool:
        """Ask for one token from the adapter (or, without a chat template, look for it).

        False when vLLM does not know the model; an APIError when it fails otherwise.
        """
        try:
            if served.base.chat_template() is not None:
                response = await self._admin.post(
                    "/v1/chat/completions",
                    json={
                        "model": served.id,
                        "messages": [{"role": "user", "content": PROBE_MESSAGE}],
                        "max_tokens": 1,
                        "temperature": 0,
                    },
                )
                if response.status_code == 404 and "does not exist" in response.text:
                    return False
                answered = response.status_code == 200
                why = _message(response)
            else:
                return served.id in (await self._list()).adapters
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if not answered:
            raise APIError(
                502,
                f"vLLM loaded {served.id} but it does not answer: {why}",
                type="server_error",
                param="lora_name",
                code="adapter_not_answering",
            )
        return True

    async def _list(self) -> Listing:
        response = await self._admin.get("/v1/models")
        response.raise_for_status()
        bases: set[str] = set()
        adapters: set[str] = set()
        for model in response.json().get("data", []):
            model_id = model.get("id")
            if isinstance(model_id, str):
                (adapters if model.get("parent") else bases).add(model_id)
        self._listing = Listing(frozenset(bases), frozenset(adapters))
        self._problem = None
        return self._listing

    async def _require_base(self, served: ServedModel) -> None:
        """vLLM serves one base model under our id for it; adapters of others cannot load."""
        listing = self._listing
        if listing is None or served.base.id not in listing.bases:
            try:
                listing = await self._list()
            except (httpx.HTTPError, ValueError) as exc:
                raise self._unreachable(exc) from exc
        if served.base.id not in listing.bases:
            raise APIError(
                400,
                f"The vLLM server serving this trainer's models does not serve the base model "
                f"{served.base.id} (it serves: {', '.join(sorted(listing.bases)) or 'none'}), "
                f"so {served.id} cannot be served. Start vLLM with --served-model-name "
                f"{served.base.id} for that model.",
                param="model",
                code="model_not_supported",
            )

    def _unreachable(self, exc: Exception) -> APIError:
        self._problem = f"{type(exc).__name__}: {exc}"
        return APIError(
            503,
            f"The model server (vLLM at {self.settings.base_url}) cannot be reached: "
            f"{self._problem}",
            type="server_error",
            code="model_server_unavailable",
        )

    # -- keeping vLLM in step ----------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            try:
                await self.reconcile()
            except APIError as exc:
                logger.warning("vLLM check: %s", exc.message)
            except Exception:
                logger.exception("vLLM check failed")
            await asyncio.sleep(self.settings.check_seconds)

    async def reconcile(self) -> None:
        """Load deployed adapters vLLM lacks (it restarted); unload retired ones it holds."""
        try:
            listing = await self._list()
        except (httpx.HTTPError, ValueError) as exc:
            if self._problem is None:
                logger.warning("vLLM at %s cannot be reached: %s", self.settings.base_url, exc)
            self._problem = f"{type(exc).__name__}: {exc}"
            return
        for model_id in sorted(self._retired):
            if model_id not in listing.adapters or await self._unload(model_id):
                self._retired.discard(model_id)
                self._write_state()
        missing = {k: v for k, v in self._deployed.items() if k not in listing.adapters}
        for model_id, path in sorted(missing.items()):
            logger.warning("vLLM no longer holds %s (restarted?); loading it again", model_id)
            try:
                await self._load(model_id, path, known_ok=False)
            except APIError as exc:
                logger.error("could not load %s into vLLM again: %s", model_id, exc.message)

    # -- the deployed set, kept in the data folder ---------------------------------------------

    def _read_state(self) -> None:
        try:
            stored = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.error("ignoring unreadable %s: %s", self.state_path, exc)
            return
        deployed = stored.get("deployed") if isinstance(stored, dict) else None
        retired = stored.get("retired") if isinstance(stored, dict) else None
        if isinstance(deployed, dict):
            self._deployed = {str(k): str(v) for k, v in deployed.items()}
        if isinstance(retired, list):
            self._retired = {str(item) for item in retired}

    def _write_state(self) -> None:
        write_json_atomic(
            self.state_path,
            {"deployed": dict(sorted(self._deployed.items())), "retired": sorted(self._retired)},
        )


def _adapter_path(served: ServedModel) -> str:
    if served.adapter_dir is None:  # base models are not loaded as adapters
        raise ValueError(f"{served.id} has no adapter")
    return str(served.adapter_dir.resolve())


def _message(response: httpx.Response) -> str:
    """vLLM's error message (OpenAI's shape, or its older flat one), else the body's start."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        return f"HTTP {response.status_code}: {text.strip()[:300]}"
    if isinstance(body, dict):
        error = body.get("error")
        found = error.get("message") if isinstance(error, dict) else body.get("message")
        if isinstance(found, str):
            return f"HTTP {response.status_code}: {found}"
    return f"HTTP {response.status_code}: {text.strip()[:300]}"


async def _read_all(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    """vLLM's bytes as they arrive; a break in the middle ends the stream with an error event."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        logger.warning("vLLM's stream broke off: %s", exc)
        error = {
            "error": {
                "message": f"The model server's answer broke off: {type(exc).__name__}",
                "type": "server_error",
                "param": None,
                "code": "model_server_unavailable",
            }
        }
        yield b"data: " + json.dumps(error).encode() + b"\n\n"
    finally:
        await response.aclose()
