"""Sending a chat request to the provider that serves the model, whole or streamed.

Both `/chat` and `/v1/chat/completions` go through here; each translates a
`ProviderError` into its own error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from service.providers.base import Provider


async def complete_bytes(provider: Provider, body: dict[str, Any]) -> bytes:
    """The provider's chat completion, as the bytes it sent."""
    return await provider.chat_bytes(body)


async def open_stream(provider: Provider, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """Open the upstream stream and read its first chunk before answering, so an upstream
    refusal raises `ProviderError` here (an error response) rather than breaking a 200
    already sent. Closing the returned generator (a client that went away) closes the
    upstream request."""
    chunks = provider.chat_stream(body)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""

    async def relay() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    return relay()
