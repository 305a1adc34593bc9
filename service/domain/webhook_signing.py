"""Standard Webhooks signing (https://www.standardwebhooks.com/). Pure logic.

Signature: base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")) where the
key is the base64 part of a `whsec_…` secret. The header may carry several
space-separated `v1,<sig>` entries, one per active secret, so receivers keep
verifying while a secret rotates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from service.domain.records import SigningSecret

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class SigningError(ValueError):
    """The secret cannot sign (its key part is not base64)."""


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise SigningError("the signing secret is not valid base64 after whsec_") from None


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
    }


def active_secrets(entries: Sequence[SigningSecret], now: float) -> list[str]:
    """The secrets that still sign: the current one and any inside its rotation overlap."""
    return [e.secret for e in entries if e.expires_at is None or e.expires_at > now]


def rotated(
    entries: Sequence[SigningSecret], new: str, now: float, overlap_seconds: float
) -> list[SigningSecret]:
    """`new` first; the secrets still active keep signing for `overlap_seconds` more."""
    kept = [
        SigningSecret(
            secret=e.secret,
            created_at=e.created_at,
            expires_at=e.expires_at if e.expires_at is not None else now + overlap_seconds,
        )
        for e in entries
        if e.expires_at is None or e.expires_at > now
    ]
    return [SigningSecret(secret=new, created_at=now), *kept]


def is_valid_secret(secret: str) -> bool:
    """A `whsec_` secret whose key part is base64 (what signing needs)."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        return False
    return True
