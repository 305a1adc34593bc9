"""The providers' HTTP client for their frequent calls: polls, job creation, chat.

Every poll of every job and every proxied chat goes through here, so its cost
per request is much of what the worker and the chat proxy spend. It runs on
aiohttp: per request it costs about a quarter of the client CPU of an
`httpx2.AsyncClient` with one request in flight and about a ninth with 16, and
less than half of the SDK's own aiohttp transport under httpx2
(`python -m bench.bench_http_client`, docs/benchmarks.md). The SDK keeps its
httpx2 client for its rare calls.

The session is made on first use, inside the running loop. Proxies come from
the usual environment variables, read once for the provider's base URL (aiohttp's
own `trust_env` would look for a `.netrc` in a thread on every request).
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from service.providers.base import ProviderError

USER_AGENT = "finetune-service/1"


class WireError(Exception):
    """No answer: the connection failed or the provider did not answer in time."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout

    def provider_error(self, who: str) -> ProviderError:
        """As the providers report it: `who` is "provider" or "trainer"."""
        if self.timeout:
            return ProviderError(f"The {who} did not answer in time", status=None, timeout=True)
        return ProviderError(f"Could not reach the {who}: {self}", status=None)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class OpenStream:
    """An answer whose body is read inside `Wire.stream`'s block (a broken connection
    comes out of the block as a WireError)."""

    status: int
    headers: Mapping[str, str]
    _response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        return self._response.content.iter_any()


def _proxy_for(base_url: str) -> str | None:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if not host or urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _wire_error(exc: BaseException) -> WireError:
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return WireError("no answer in time", timeout=True)
    return WireError(str(exc) or type(exc).__name__, timeout=False)


class Wire:
    """One pooled aiohttp session for one provider's base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.proxy = _proxy_for(self.base_url)
        self._max_connections = max_connections
        # `connect` bounds the wait for a pooled connection plus its opening,
        # `sock_read` each wait for the next bytes of the answer (httpx's read timeout).
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                raise_for_status=False,
            )
        return self._session

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None,
        body: bytes | aiohttp.FormData | None,
        headers: Mapping[str, str],
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        # An aiohttp error raised while the caller reads the answer inside the block
        # comes back through the `yield`, so it is translated here too.
        try:
            async with self._open().request(
                method,
                self.base_url + path,
                params=params,
                data=body,
                headers=headers,
                proxy=self.proxy,
                allow_redirects=False,
            ) as response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _wire_error(exc) from exc

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> Answer:
        """One exchange, the whole answer read. `form` builds a multipart body (a new
        one per call: aiohttp's form data can be sent only once)."""
        sent = form() if form is not None else body
        async with self._request(
            method, path, params=params, body=sent, headers=headers
        ) as response:
            return Answer(response.status, response.headers, await response.read())

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[OpenStream]:
        """An exchange whose body is read as it arrives; leaving the block early
        drops the connection rather than returning it to the pool half-read."""
        async with self._request(method, path, params=None, body=body, headers=headers) as response:
            yield OpenStream(response.status, response.headers, response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
