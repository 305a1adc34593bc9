"""The HTTP client that POSTs webhook deliveries, with the SSRF guard where it dials.

aiohttp, like the providers' wire client (`service.providers.wire`). A
worker sends deliveries in the same event loop as its sync steps, so their CPU
is the deliveries' latency when a thousand jobs finish together: under httpx
the POST alone was 11 % of the worker's samples in a 1,000-job run with
provider webhooks (py-spy; docs/benchmarks.md, issue #20 part 6).

The guard sits in the resolver: every address aiohttp may dial comes from
`GuardedResolver`, which refuses the lot unless all of them are public
(`outbound_guard.refuse_private`). A DNS answer that changed since the
endpoint was registered (rebinding) is checked again here, on the addresses
the connection then uses; aiohttp caches only answers that passed. aiohttp
dials an IP literal without asking the resolver, so `post` checks literals
itself. The request keeps the name for its Host header and TLS.

No proxy is used (the environment's proxy variables are ignored): a proxy
would resolve the receiver's name itself, out of the guard's reach.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from service.webhooks.outbound_guard import check_url_shape, refuse_private, resolve

USER_AGENT = "finetune-service-webhooks/1"


class GuardedResolver(AbstractResolver):
    """Resolve a receiver's name; with private networks refused, only to public addresses."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve(host, port)
        if not self._allow_private:
            refuse_private(host, addresses)
        results = []
        for address in addresses:
            kind = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=str(address),
                        port=port,
                        family=kind,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                )
        return results

    async def close(self) -> None:
        return None


class SendFailed(Exception):
    """The POST got no answer: refused, reset, a malformed response (never a timeout)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver said: its status, its Retry-After, and the start of its body."""

    status: int
    retry_after: str | None
    body: bytes


class WebhookClient:
    """One pooled aiohttp session for a process's deliveries (opened on first use)."""

    def __init__(self, *, allow_private: bool, keep_bytes: int) -> None:
        self._allow_private = allow_private
        self._keep_bytes = keep_bytes
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=GuardedResolver(allow_private=self._allow_private), limit=256
                ),
                timeout=aiohttp.ClientTimeout(total=None),  # each post has its deadline
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
                raise_for_status=False,
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, deadline: float
    ) -> Answer:
        """POST within `deadline` seconds for everything (resolve, connect, send, read), reading
        at most `keep_bytes` of the answer. Raises `UnsafeTarget` for a refused address,
        `TimeoutError` past the deadline and `SendFailed` for any other failure."""
        host, _ = check_url_shape(url)
        if not self._allow_private:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                pass  # a name: the resolver checks what it resolves to
            else:
                refuse_private(host, [literal])
        try:
            async with asyncio.timeout(deadline):
                async with self._open().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    kept = bytearray()
                    while len(kept) < self._keep_bytes:
                        chunk = await response.content.read(self._keep_bytes - len(kept))
                        if not chunk:
                            break
                        kept += chunk
                    # The rest, if any, is dropped with the connection.
                    retry_after = response.headers.get("retry-after")
                    return Answer(response.status, retry_after, bytes(kept))
        except aiohttp.ClientError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
