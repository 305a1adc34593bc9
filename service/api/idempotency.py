"""`Idempotency-Key` for POSTs that create something.

The first request with a key claims it (SET NX) with a fingerprint of its
body; when it finishes, its status, body and Location are stored for 24 hours.

- same key, same body, finished  -> the stored response is replayed
  (with `Idempotent-Replayed: true`);
- same key, same body, still running -> 409, try again shortly;
- same key, different body -> 422;
- the first request failed (any error) -> nothing was created and the key is
  released, so a retry runs again.

Keys are scoped to the tenant and the route, so two tenants never collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response

from service.errors import Conflict, InvalidContent, MalformedRequest
from service.resources import Resources

HEADER = "idempotency-key"
TTL_SECONDS = 24 * 3600
IN_FLIGHT_SECONDS = 300
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: Any
    headers: dict[str, str]
    # What a replay answers, when it must differ from the first answer (a secret
    # shown once is not kept in Redis for replays). None: the body itself.
    replay_body: Any = None


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def key_of(request: Request[Any, Any, Any]) -> str | None:
    value = request.headers.get(HEADER)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise MalformedRequest(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
            code="invalid_idempotency_key",
        )
    return value


async def run_once(
    request: Request[Any, Any, Any],
    resources: Resources,
    tenant: str,
    body_fingerprint: str,
    produce: Callable[[], Awaitable[Outcome]],
) -> Response[Any]:
    """Run `produce` at most once per (tenant, route, Idempotency-Key)."""
    key = key_of(request)
    if key is None:
        outcome = await produce()
        return Response(outcome.body, status_code=outcome.status, headers=outcome.headers)
    store = resources.requests
    scoped = f"{tenant}:{request.url.path}:{key}"
    claim = {"state": "running", "fingerprint": body_fingerprint}
    if not await store.claim_key(scoped, claim, ttl=IN_FLIGHT_SECONDS):
        stored = await store.read_key(scoped)
        if stored.get("fingerprint") != body_fingerprint:
            raise InvalidContent(
                "This Idempotency-Key was used with a different request body",
                code="idempotency_key_reused",
            )
        if stored.get("state") != "done":
            raise Conflict(
                "A request with this Idempotency-Key is still being processed; retry shortly",
                code="idempotency_in_progress",
                retry_after=1,
            )
        return Response(
            stored["body"],
            status_code=int(stored["status"]),
            headers={**stored.get("headers", {}), "Idempotent-Replayed": "true"},
        )
    try:
        outcome = await produce()
    except BaseException:
        # Nothing was created (errors are raised before anything is stored), so
        # release the key: a retry runs again and gets the same answer.
        await store.release_key(scoped)
        raise
    await store.finish_key(scoped, _replay_record(body_fingerprint, outcome), ttl=TTL_SECONDS)
    return Response(outcome.body, status_code=outcome.status, headers=outcome.headers)


def _replay_record(body_fingerprint: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "state": "done",
        "fingerprint": body_fingerprint,
        "status": outcome.status,
        "body": outcome.body if outcome.replay_body is None else outcome.replay_body,
        "headers": {k: v for k, v in outcome.headers.items() if k.lower() in {"location"}},
    }
