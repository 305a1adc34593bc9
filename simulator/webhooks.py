"""Outgoing webhooks as OpenAI sends them: a thin event, signed per Standard Webhooks.

Delivery is best effort: a few attempts with growing pauses, each re-signed with a
fresh timestamp; the event id (also the `webhook-id`) stays the same so receivers
can drop duplicates. With a state directory every delivery and attempt is saved; a
delivery still pending when the process stopped starts again (same event id, same
body) when the next one starts with a webhook URL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time

import httpx

from simulator import identifiers
from simulator.records import WebhookRecord
from simulator.state import SimulatorState

logger = logging.getLogger("simulator.webhooks")

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
# Webhooks in flight at once. The rest wait their turn here, outside the attempt's
# timeout: a burst of finishes is no failed attempt, and no queue of a thousand
# requests inside httpcore's pool (whose every hand-out scans that queue: the
# simulator spent most of its CPU there and answered polls seconds late).
CONCURRENT_DELIVERIES = 64


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the key inside `whsec_…`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


class WebhookDispatcher:
    """Sends one POST per finished job to the configured URL, in the background."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(CONCURRENT_DELIVERIES)

    async def start(self) -> None:
        if self._state.config.webhook_url is not None:
            self._client = httpx.AsyncClient(
                timeout=self._state.config.webhook_timeout_seconds,
                limits=httpx.Limits(max_connections=CONCURRENT_DELIVERIES),
                follow_redirects=False,
            )
        self._state.on_job_finished = self.notify
        for record in self._state.webhooks:
            if record.status == "pending":
                self._send(record)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def notify(self, event_type: str, job_id: str) -> None:
        if self._client is None:
            return
        record = WebhookRecord(
            identifiers.webhook_event_id(), event_type, job_id, created_at=int(time.time())
        )
        self._state.add_webhook(record)
        self._send(record)

    def _send(self, record: WebhookRecord) -> None:
        config = self._state.config
        if self._client is None or config.webhook_url is None or config.webhook_secret is None:
            return
        body = json.dumps(
            {
                "id": record.event_id,
                "object": "event",
                "created_at": record.created_at,
                "type": record.type,
                "data": {"id": record.job_id},
            },
            separators=(",", ":"),
        ).encode()
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._client, config.webhook_url, config.webhook_secret, record, body)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self,
        client: httpx.AsyncClient,
        url: str,
        secret: str,
        record: WebhookRecord,
        body: bytes,
    ) -> None:
        attempts = self._state.config.webhook_attempts
        for attempt in range(attempts):
            record.attempts += 1
            self._state.save_webhook(record)
            try:
                async with self._in_flight:
                    response = await client.post(
                        url, content=body, headers=signed_headers(secret, record.event_id, body)
                    )
            except httpx.HTTPError as exc:
                record.last_error = f"{type(exc).__name__}: {exc}"
                record.last_status_code = None
            else:
                record.last_status_code = response.status_code
                record.last_error = None
                if 200 <= response.status_code < 300:
                    record.status = "delivered"
                    self._state.save_webhook(record)
                    return
            self._state.save_webhook(record)
            if attempt + 1 < attempts:
                await asyncio.sleep(min(30.0, 0.25 * 4**attempt))
        record.status = "failed"
        self._state.save_webhook(record)
        logger.warning(
            "webhook %s for %s not delivered after %d attempts (last: %s %s)",
            record.type,
            record.job_id,
            attempts,
            record.last_status_code,
            record.last_error,
        )
