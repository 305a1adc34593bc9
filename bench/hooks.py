"""Two loopback HTTP servers for the lifecycle and chaos benchmarks.

`Receiver` plays the customer: it gets the service's signed job webhooks and
records each one (arrival time, `webhook-id`, type, our job id, the upstream
job id, how long after the job's `updated_at` it arrived) and answers 200.

`Tap` stands between the simulator and the service. The simulator sends its
OpenAI-style `fine_tuning.job.*` webhooks here; the tap records when each
arrived, which is as close as one can get from outside to the moment the
provider's job finished (the simulator sends it within one tick, at most
0.25 s). With `forward` on it passes the request on unchanged (same body,
same signature headers) to the service's `POST /webhooks/openai`; with it off
the service only learns by polling.

Both run `ThreadingHTTPServer` in a daemon thread; `time.monotonic()` is read
as the request arrives, before anything else is done with it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass
class Delivery:
    at: float
    webhook_id: str
    type: str
    job_id: str
    upstream_job_id: str | None
    status: str | None
    # Seconds from the job's last change as the payload shows it (`updated_at`: for
    # job.succeeded, the moment we recorded success) to this arrival.
    since_announced: float | None = None


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, at: float, headers: dict[str, str], body: bytes) -> None:
        try:
            payload = json.loads(body)
            data = payload.get("data") or {}
            provider = data.get("provider") or {}
            updated = data.get("updated_at")
            since = (
                time.time() - datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp()
                if isinstance(updated, str)
                else None
            )
            delivery = Delivery(
                at=at,
                webhook_id=headers.get("webhook-id", ""),
                type=str(payload.get("type")),
                job_id=str(data.get("id")),
                upstream_job_id=provider.get("job_id"),
                status=data.get("status"),
                since_announced=since,
            )
        except (ValueError, AttributeError):
            return
        with self.lock:
            self.deliveries.append(delivery)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)


@dataclass
class Tap:
    forward_to: str | None = None
    url: str = ""
    finished_at: dict[str, float] = field(default_factory=dict)  # upstream job id -> first arrival
    seen: int = 0
    forward_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15))

    def record(self, at: float, headers: dict[str, str], body: bytes) -> int:
        try:
            payload: dict[str, Any] = json.loads(body)
            upstream_id = str((payload.get("data") or {}).get("id"))
        except (ValueError, AttributeError):
            return 400
        with self.lock:
            self.seen += 1
            self.finished_at.setdefault(upstream_id, at)
        if self.forward_to is None:
            return 200
        wanted = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")
        try:
            response = self.client.post(
                self.forward_to,
                content=body,
                headers={k: v for k, v in headers.items() if k in wanted},
            )
        except httpx.HTTPError:
            with self.lock:
                self.forward_failures += 1
            return 502
        if response.status_code >= 300:
            with self.lock:
                self.forward_failures += 1
        return response.status_code


def _serve(record: Any) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            at = time.monotonic()
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            status = record(at, {k.lower(): v for k, v in self.headers.items()}, body) or 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server, thread = _serve(receiver.record)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def running_tap(forward_to: str | None = None) -> Iterator[Tap]:
    tap = Tap(forward_to=forward_to)
    server, thread = _serve(tap.record)
    tap.url = f"http://127.0.0.1:{server.server_address[1]}/openai"
    try:
        yield tap
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        tap.client.close()
