"""The `openai` kind: OpenAI and OpenAI-compatible APIs over the official SDK (3.x).

One SDK client per provider for the rare calls, and one pooled wire client
(`service.providers.wire`) for the frequent ones: polls, uploads, job creation
and chat.
Covers OpenAI itself, Azure OpenAI's v1 API (base URL
`https://RESOURCE.openai.azure.com/openai/v1/` and `job_extra_body =
{"trainingType": "GlobalStandard"}`) and the simulator. Tuned models serve
at once, so `deploy` has nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp
import httpx2
import openai
import orjson
from openai import AsyncOpenAI

from service.providers.base import (
    Capabilities,
    JobSpec,
    ModelFacts,
    ProviderCheckpoint,
    ProviderError,
    ProviderEvent,
    ProviderFailure,
    ProviderJob,
    ProviderStatus,
    ProviderWebhookRejected,
)
from service.providers.openai.results import metrics_from_results
from service.providers.openai.webhooks import WebhookVerifier
from service.providers.wire import Wire, WireError

# Above this, files go through the Uploads API in parts (OpenAI's single-file limit).
SINGLE_UPLOAD_LIMIT = 512 * 1024 * 1024
UPLOAD_PART_SIZE = 64 * 1024 * 1024
# Up to this size a file is read once and sent from memory; a larger one is
# streamed from disk, which costs aiohttp a thread hop per chunk read.
IN_MEMORY_UPLOAD_LIMIT = 8 * 1024 * 1024
EVENTS_PAGE = 100
# A poll usually finds a few new events: its first page is small (less to send and
# parse), later pages are full ones.
FIRST_EVENTS_PAGE = 20
# Our tag on every upstream job, so a retried create can find the job it already made.
METADATA_JOB_KEY = "service_job_id"
# How far back (seconds before our job was made) a lookup for an earlier create goes.
LOOKUP_SLACK_SECONDS = 300
LOOKUP_PAGES = 20
# OpenAI's statuses in ours; "paused" exists though the spec's enum omits it.
STATUSES: dict[str, ProviderStatus] = {
    "validating_files": "validating_files",
    "queued": "queued",
    "running": "running",
    "paused": "paused",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}

T = TypeVar("T")

# The raw calls retry as the SDK's own would: statuses worth another try, a short
# exponential backoff, and the provider's Retry-After when it is reasonable.
RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
RETRY_AFTER_MAX_SECONDS = 60.0


def _retry_delay(attempt: int, headers: Mapping[str, str] | None) -> float:
    asked = _retry_after(headers)
    if asked is not None and 0 <= asked <= RETRY_AFTER_MAX_SECONDS:
        return asked
    backoff: float = min(RETRY_BASE_SECONDS * 2.0**attempt, RETRY_MAX_SECONDS)
    return backoff * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not security)


def _retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if headers is None:
        return None
    if (value := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return float(value) / 1000
    if (value := headers.get("retry-after")) is not None:
        with contextlib.suppress(ValueError):
            return float(value)
    return None


def to_provider_error(exc: openai.OpenAIError) -> ProviderError:
    """Map the SDK's exceptions onto our classified error, keeping OpenAI's words."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        error = error if isinstance(error, dict) else {}
        return ProviderError(
            str(error.get("message") or exc.message),
            status=exc.status_code,
            code=error.get("code") if isinstance(error.get("code"), str) else None,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            retry_after=_retry_after(exc.response.headers),
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("The provider did not answer in time", status=None, timeout=True)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"Could not reach the provider: {exc.message}", status=None)
    return ProviderError(str(exc), status=None)


def status_error(status: int, content: bytes, headers: Mapping[str, str]) -> ProviderError:
    """A non-2xx answer as a ProviderError, keeping OpenAI's error fields."""
    error: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        parsed = json.loads(content)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    return ProviderError(
        str(error.get("message") or f"HTTP {status}"),
        status=status,
        code=error.get("code") if isinstance(error.get("code"), str) else None,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
        retry_after=_retry_after(headers),
    )


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    """A request body as UTF-8 JSON: orjson (a tenth of `json`'s time on a chat
    body), or `json` for what orjson refuses (an integer past 64 bits, say)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False).encode()


async def _call(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except openai.OpenAIError as exc:
        raise to_provider_error(exc) from exc


def _job(job: Mapping[str, Any]) -> ProviderJob:
    """A job as the provider's JSON gives it (a dict, never an SDK model: polls are hot)."""
    error = None
    failure = job.get("error")
    # The real API sends `error: {}` on jobs that have not failed.
    if isinstance(failure, dict) and failure.get("code"):
        error = ProviderFailure(
            code=str(failure["code"]),
            message=str(failure.get("message") or ""),
            param=failure.get("param") if isinstance(failure.get("param"), str) else None,
        )
    raw_status = str(job.get("status"))
    status = STATUSES.get(raw_status)
    if status is None:
        raise ProviderError(f"The provider reported an unknown status {raw_status!r}", status=None)
    return ProviderJob(
        id=str(job["id"]),
        status=status,
        raw_status=raw_status,
        fine_tuned_model=job.get("fine_tuned_model"),
        trained_tokens=job.get("trained_tokens"),
        finished_at=job.get("finished_at"),
        estimated_finish=job.get("estimated_finish"),
        error=error,
        result_refs=tuple(job.get("result_files") or ()),
        hyperparameters=_resolved_hyperparameters(job),
    )


def _sdk_job(job: Any) -> ProviderJob:
    """A job the SDK returned (create, list, cancel: rare calls), read like the JSON."""
    return _job(job.model_dump(mode="json"))


def _resolved_hyperparameters(job: Mapping[str, Any]) -> dict[str, float]:
    """The numbers the provider settled on ("auto" values are left out until resolved)."""
    method = job.get("method")
    chosen = None
    if isinstance(method, dict) and isinstance(method.get("type"), str):
        chosen = method.get(method["type"])
    hyper = chosen.get("hyperparameters") if isinstance(chosen, dict) else None
    if not hyper:
        hyper = job.get("hyperparameters")
    if not isinstance(hyper, dict):
        return {}
    return {
        name: value
        for name, value in hyper.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _event(event: Mapping[str, Any]) -> ProviderEvent:
    data = event.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    kind = event.get("type") or "message"
    metrics = None
    if kind == "metrics" and "step" in data:
        metrics = {k: v for k, v in data.items() if isinstance(v, int | float)}
    message = str(event.get("message") or "")
    return ProviderEvent(
        id=str(event["id"]),
        created_at=int(event["created_at"]),
        level=str(event.get("level") or "info"),
        message=message,
        type=kind,
        data=data,
        metrics=metrics,
        # OpenAI announces checkpoints only in the message text.
        checkpoint_saved=message.startswith("Checkpoint created"),
    )


def _checkpoint(item: Mapping[str, Any]) -> ProviderCheckpoint:
    metrics = item.get("metrics")
    return ProviderCheckpoint(
        id=str(item["id"]),
        created_at=int(item["created_at"]),
        step_number=int(item["step_number"]),
        fine_tuned_model_checkpoint=str(item["fine_tuned_model_checkpoint"]),
        metrics={k: v for k, v in metrics.items() if v is not None}
        if isinstance(metrics, dict)
        else {},
    )


class OpenAICompatibleProvider:
    kind = "openai"
    capabilities = Capabilities(pause_resume=True, webhooks=True)

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        job_extra_body: Mapping[str, Any] | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.name = name
        self._max_retries = max_retries
        # The SDK's own client, for its rare calls (cancel, pause, resume, the lookup
        # after a crash, chunked uploads); the frequent ones go over `self._wire`.
        self._http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, connect=10.0),
            limits=httpx2.Limits(max_connections=16, max_keepalive_connections=4),
        )
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            timeout=timeout,
            max_retries=max_retries,
            http_client=self._http,
        )
        self._wire = Wire(str(self._client.base_url), timeout=timeout)
        self._job_extra_body = dict(job_extra_body or {})
        self._read_headers = self._auth_headers()
        self._chat_headers = {**self._read_headers, "Content-Type": "application/json"}
        self._webhooks = WebhookVerifier(webhook_secret) if webhook_secret else None
        if self._webhooks is None:
            self.capabilities = Capabilities(pause_resume=True, webhooks=False)

    async def aclose(self) -> None:
        await self._client.close()
        await self._wire.aclose()
        if self._webhooks is not None:
            self._webhooks.close()

    async def stage_file(self, path: Path, *, filename: str) -> str:
        size = path.stat().st_size  # noqa: ASYNC240 - one stat call
        if size > SINGLE_UPLOAD_LIMIT:
            upload = await _call(
                lambda: self._client.uploads.upload_file_chunked(
                    file=path,
                    mime_type="application/jsonl",
                    purpose="fine-tune",
                    bytes=size,
                    part_size=UPLOAD_PART_SIZE,
                )
            )
            if upload.file is None:
                raise ProviderError("The upload completed without a file", status=None)
            return str(upload.file.id)

        if size <= IN_MEMORY_UPLOAD_LIMIT:
            content = await asyncio.to_thread(path.read_bytes)

            def from_memory() -> aiohttp.FormData:
                return _upload_form(content, filename)

            created = await self._request_json("POST", "/files", form=from_memory)
            return str(created["id"])
        with path.open("rb") as handle:

            def from_disk() -> aiohttp.FormData:
                handle.seek(0)  # a retried upload sends its file from the start again
                return _upload_form(handle, filename)

            created = await self._request_json("POST", "/files", form=from_disk)
        return str(created["id"])

    async def _find_created(self, spec: JobSpec) -> ProviderJob | None:
        """The job an earlier attempt created for `spec.key`, matched on our metadata tag
        here (no reliance on the server filtering by metadata), newest first back to
        shortly before our job existed."""
        oldest = (spec.created_after or 0) - LOOKUP_SLACK_SECONDS

        async def lookup() -> ProviderJob | None:
            after: str | None = None
            for _ in range(LOOKUP_PAGES):
                page = await self._client.fine_tuning.jobs.list(
                    limit=100, after=after if after else openai.omit
                )
                for job in page.data:
                    if (job.metadata or {}).get(METADATA_JOB_KEY) == spec.key:
                        return _sdk_job(job)
                if not page.has_more or not page.data or page.data[-1].created_at < oldest:
                    return None
                after = page.data[-1].id
            return None

        return await _call(lookup)

    async def start_job(self, spec: JobSpec) -> ProviderJob:
        return await self._start(spec, extra_body=self._job_extra_body)

    async def _start(self, spec: JobSpec, *, extra_body: Mapping[str, Any]) -> ProviderJob:
        if spec.maybe_created:
            found = await self._find_created(spec)
            if found is not None:
                return found
        body: dict[str, Any] = {
            "model": spec.model,
            "training_file": spec.training_file,
            "metadata": {**spec.metadata, METADATA_JOB_KEY: spec.key},
        }
        if spec.validation_file:
            body["validation_file"] = spec.validation_file
        if spec.method:
            body["method"] = dict(spec.method)
        if spec.suffix:
            body["suffix"] = spec.suffix
        if spec.seed is not None:
            body["seed"] = spec.seed
        body.update(extra_body)
        created = await self._request_json(
            "POST",
            "/fine_tuning/jobs",
            json_body=body,
            # Honoured where the API supports it; the lookup above covers the rest.
            headers={"Idempotency-Key": f"create-job-{spec.key}"},
        )
        return _job(created)

    # Following a job is the hot path (every poll of every job), and staging and
    # creating happen once per job: these calls go over the wire client with the
    # SDK's URL and headers, and the JSON is read as dicts, without the SDK's
    # request building and response models.
    async def _get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return await self._request_json("GET", path, params=params)

    async def _request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        content = await self._request_bytes(
            method, path, params=params, json_body=json_body, form=form, headers=headers
        )
        try:
            return json.loads(content)
        except ValueError:
            raise ProviderError(
                f"The provider answered {path} with a body that is not JSON", status=None
            ) from None

    async def _request_bytes(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        sent_headers = {**self._read_headers, **(headers or {})}
        body = None
        if json_body is not None:
            body = _json_bytes(json_body)
            sent_headers["Content-Type"] = "application/json"
        for attempt in range(self._max_retries + 1):
            last = attempt == self._max_retries
            try:
                answer = await self._wire.send(
                    method, path, params=params, body=body, form=form, headers=sent_headers
                )
            except WireError as exc:
                if not last:
                    await asyncio.sleep(_retry_delay(attempt, None))
                    continue
                raise exc.provider_error("provider") from None
            if answer.status >= 400:
                if not last and _retryable(answer.status):
                    await asyncio.sleep(_retry_delay(attempt, answer.headers))
                    continue
                raise status_error(answer.status, answer.body, answer.headers)
            return answer.body
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get_job(self, job_id: str) -> ProviderJob:
        found = await self._get_json(f"/fine_tuning/jobs/{job_id}")
        return _job(found)

    async def cancel_job(self, job_id: str) -> ProviderJob:
        return _sdk_job(await _call(lambda: self._client.fine_tuning.jobs.cancel(job_id)))

    async def pause_job(self, job_id: str) -> ProviderJob:
        return _sdk_job(await _call(lambda: self._client.fine_tuning.jobs.pause(job_id)))

    async def resume_job(self, job_id: str) -> ProviderJob:
        return _sdk_job(await _call(lambda: self._client.fine_tuning.jobs.resume(job_id)))

    async def events_since(self, job_id: str, cursor: str | None) -> list[ProviderEvent]:
        newest_first: list[ProviderEvent] = []
        params: dict[str, str | int] = {"limit": FIRST_EVENTS_PAGE if cursor else EVENTS_PAGE}
        while True:
            page = await self._get_json(f"/fine_tuning/jobs/{job_id}/events", params)
            data = page.get("data") or []
            for event in data:
                if event.get("id") == cursor:
                    return newest_first[::-1]
                newest_first.append(_event(event))
            if not page.get("has_more") or not data:
                return newest_first[::-1]
            params = {"limit": EVENTS_PAGE, "after": str(data[-1]["id"])}

    async def checkpoints(self, job_id: str) -> list[ProviderCheckpoint]:
        found: list[ProviderCheckpoint] = []
        params: dict[str, str | int] = {"limit": 100}
        while True:
            page = await self._get_json(f"/fine_tuning/jobs/{job_id}/checkpoints", params)
            data = page.get("data") or []
            found += [_checkpoint(item) for item in data]
            if not page.get("has_more") or not data:
                return sorted(found, key=lambda c: c.step_number)
            params = {"limit": 100, "after": str(data[-1]["id"])}

    async def final_metrics(self, job: ProviderJob) -> list[dict[str, float]]:
        if job.status != "succeeded" or not job.result_refs:
            return []
        content = await self._request_bytes("GET", f"/files/{job.result_refs[0]}/content")
        return metrics_from_results(content)

    async def deploy(self, fine_tuned_model: str) -> bool:  # noqa: ARG002 - the seam's shape
        return True  # OpenAI serves a tuned model as soon as the job succeeds

    async def describe_model(self, model: str) -> ModelFacts | None:  # noqa: ARG002
        return None  # every model this kind trains is in the packaged catalog

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        if self._webhooks is None:
            raise ProviderWebhookRejected(
                f"Provider {self.name} has no webhook secret configured", code="not_configured"
            )
        return self._webhooks.job_id(body, headers)

    # Chat is the latency-sensitive proxy path: it goes over the wire client with the
    # SDK's URL and auth headers, without the SDK's request building and response
    # models (see docs/benchmarks.md). The body is passed through as the provider
    # sent it.
    def _auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._client.api_key}"}
        if self._client.organization:
            headers["OpenAI-Organization"] = self._client.organization
        if self._client.project:
            headers["OpenAI-Project"] = self._client.project
        return headers

    async def chat_bytes(self, body: Mapping[str, Any]) -> bytes:
        """The provider's chat completion, as the raw JSON bytes it sent."""
        try:
            answer = await self._wire.send(
                "POST", "/chat/completions", body=_json_bytes(body), headers=self._chat_headers
            )
        except WireError as exc:
            raise exc.provider_error("provider") from None
        if answer.status >= 400:
            raise status_error(answer.status, answer.body, answer.headers)
        return answer.body

    async def chat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        parsed = json.loads(await self.chat_bytes(body))
        return parsed if isinstance(parsed, dict) else {}

    async def chat_stream(self, body: Mapping[str, Any]) -> AsyncIterator[bytes]:
        sent = _json_bytes({**body, "stream": True})
        started = False
        try:
            async with self._wire.stream(
                "POST", "/chat/completions", body=sent, headers=self._chat_headers
            ) as opened:
                if opened.status >= 400:
                    raise status_error(opened.status, await opened.read(), opened.headers)
                started = True
                async for chunk in opened.chunks():
                    yield chunk
        except WireError as exc:
            if started:
                raise ProviderError(f"The provider stream broke: {exc}", status=None) from exc
            raise exc.provider_error("provider") from None


def _upload_form(file: bytes | BinaryIO, filename: str) -> aiohttp.FormData:
    built = aiohttp.FormData()
    built.add_field("purpose", "fine-tune")
    built.add_field("file", file, filename=filename, content_type="application/jsonl")
    return built
