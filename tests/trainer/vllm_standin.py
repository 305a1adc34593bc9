"""A stand-in for vLLM's OpenAI server at the HTTP boundary (vLLM itself needs a GPU).

A small real HTTP server that answers the calls the trainer makes, shaped as vLLM
answers them (vLLM 0.33, started with --enable-lora and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): `POST /v1/load_lora_adapter` (200 with a plain
text body; 400 "has already been loaded"; 404 when the folder holds no adapter), `POST
/v1/unload_lora_adapter` (404 "cannot be found" for an unknown name), `GET /v1/models`
(the base model, then each adapter with `parent`), and `POST /v1/chat/completions`
(404 "The model `x` does not exist." for an unknown model; JSON, or server-sent events
with chunked transfer encoding). Every call is recorded, and every answer body is kept
as sent, so a test can compare bytes. `restart()` forgets the loaded adapters, as a
restarted vLLM does. A stream sends its first event, then waits for `stream_gate`
before the rest, so a test can see that the first bytes reach it before the last
are written.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None
    status: int

    @property
    def name(self) -> str | None:
        """The model or adapter the call was about."""
        if not self.body:
            return None
        found = self.body.get("lora_name", self.body.get("model"))
        return str(found) if found is not None else None


@dataclass
class VLLMStandIn:
    base_model: str
    api_key: str | None = None
    calls: list[Call] = field(default_factory=list)
    adapters: dict[str, str] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)
    stream_gate: threading.Event = field(default_factory=threading.Event)
    streams_finished: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set[socket.socket] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.stream_gate.set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Gone, as a stopped vLLM is: its open (keep-alive) connections are cut too."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        """What a vLLM restart does to adapters loaded at run time: it forgets them."""
        with self._lock:
            self.adapters.clear()

    def posts(self) -> list[tuple[str, str | None, int]]:
        """(path, model or adapter, status) of every POST so far, in order."""
        with self._lock:
            return [
                (call.path, call.name, call.status) for call in self.calls if call.method == "POST"
            ]

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def keep(self, body: bytes) -> None:
        with self._lock:
            self.sent.append(body)


def _error(message: str, kind: str, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Handler(BaseHTTPRequestHandler):
    owner: VLLMStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:  # quiet: the calls are recorded instead
        return

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # -- plumbing --------------------------------------------------------------------

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _authorised(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": "Unauthorized"})
        return False

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path != "/v1/models":
            self._json(404, {"detail": "Not Found"})
            return
        owner = self.owner
        with owner._lock:
            adapters = dict(owner.adapters)
        data = [{"id": owner.base_model, "object": "model", "root": "/models/base", "parent": None}]
        data += [
            {"id": name, "object": "model", "root": path, "parent": owner.base_model}
            for name, path in adapters.items()
        ]
        owner.record(Call("GET", self.path, None, 200))
        self._json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        body = self._body()
        if not self._authorised():
            return
        status = {
            "/v1/load_lora_adapter": self._load,
            "/v1/unload_lora_adapter": self._unload,
            "/v1/chat/completions": self._chat,
        }.get(self.path, self._not_found)(body or {})
        self.owner.record(Call("POST", self.path, body, status))

    def _not_found(self, _: dict[str, Any]) -> int:
        self._json(404, {"detail": "Not Found"})
        return 404

    def _load(self, body: dict[str, Any]) -> int:
        name, path = body.get("lora_name"), body.get("lora_path")
        owner = self.owner
        if not name or not path:
            self._json(
                400,
                _error(
                    "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400
                ),
            )
            return 400
        if name in owner.adapters:
            message = (
                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                "adapter in place, set 'load_inplace' to True."
            )
            self._json(400, _error(message, "InvalidUserInput", 400))
            return 400
        if not (Path(path) / "adapter_config.json").is_file():
            self._json(
                404,
                _error(
                    f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404
                ),
            )
            return 404
        with owner._lock:
            owner.adapters[name] = path
        self._send(
            200,
            f"Success: LoRA adapter '{name}' added successfully.".encode(),
            "text/plain; charset=utf-8",
        )
        return 200

    def _unload(self, body: dict[str, Any]) -> int:
        name = body.get("lora_name")
        owner = self.owner
        if name not in owner.adapters:
            self._json(
                404, _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            )
            return 404
        with owner._lock:
            del owner.adapters[name]
        self._send(
            200,
            f"Success: LoRA adapter '{name}' removed successfully.".encode(),
            "text/plain; charset=utf-8",
        )
        return 200

    def _chat(self, body: dict[str, Any]) -> int:
        owner = self.owner
        model = body.get("model")
        if model != owner.base_model and model not in owner.adapters:
            self._json(
                404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")
            )
            return 404
        source = "the base model" if model == owner.base_model else Path(owner.adapters[model]).name
        text = f"stand-in answer from {model} ({source})"
        created = int(time.time())
        if body.get("stream"):
            self._stream(str(model), text, created)
            return 200
        answer = {
            "id": f"chatcmpl-standin{len(owner.sent)}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
        }
        # Spaced and ended as no JSON encoder of the trainer would write it: equal bytes
        # on the client's side mean the answer was passed on, not re-encoded.
        raw = json.dumps(answer, indent=1).encode() + b"\n"
        owner.keep(raw)
        self._send(200, raw, "application/json")
        return 200

    def _stream(self, model: str, text: str, created: int) -> None:
        owner = self.owner

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": "chatcmpl-standin-stream",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": word + " "}) for word in text.split()]
        events += [event({}, "stop"), b"data: [DONE]\n\n"]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._chunk(events[0])
        owner.stream_gate.wait(timeout=30)
        for data in events[1:]:
            self._chunk(data)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        owner.keep(b"".join(events))
        with owner._lock:
            owner.streams_finished += 1
