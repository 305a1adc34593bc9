"""Random identifiers in the shapes OpenAI uses (`file-…`, `ftjob-…`, `ftckpt_…`, …)."""

from __future__ import annotations

import hashlib
import secrets
import string

BASE62 = string.ascii_letters + string.digits


# Maps each byte to a base62 character in C, via bytes.translate. Bytes 0-7 map to
# characters a-h once more than the rest (256 = 4 x 62 + 8): ids need to be unique
# and unguessable enough for a simulator, not uniform.
_BYTE_TO_BASE62 = bytes(ord(BASE62[value % 62]) for value in range(256))


def base62(length: int) -> str:
    return secrets.token_bytes(length).translate(_BYTE_TO_BASE62).decode("ascii")


def file_id() -> str:
    return f"file-{base62(24)}"


def upload_id() -> str:
    return f"upload_{base62(24)}"


def upload_part_id() -> str:
    return f"part_{base62(24)}"


def job_id() -> str:
    return f"ftjob-{base62(24)}"


def job_event_id() -> str:
    return f"ftevent-{base62(24)}"


def checkpoint_id() -> str:
    return f"ftckpt_{base62(24)}"


def model_tag() -> str:
    """The 8 characters that end a tuned model's name."""
    return base62(8)


def completion_id() -> str:
    return f"chatcmpl-{base62(29)}"


def webhook_event_id() -> str:
    return f"evt_{secrets.token_hex(16)}"


def request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


def organization_id(org_slug: str) -> str:
    """A stable `org-…` id for a slug, so restarts keep answering the same id."""
    digest = int.from_bytes(hashlib.sha256(org_slug.encode()).digest(), "big")
    chars = []
    for _ in range(24):
        digest, index = divmod(digest, 62)
        chars.append(BASE62[index])
    return "org-" + "".join(chars)
